"""Step time: the lookup tables equal StepTable.step_time plus the overhead model."""
from __future__ import annotations

import pytest

from profiling import load_catalog, resolve_model
from simulator.scenario import OverheadConfig
from simulator.engine.stepcost import StepCost, step_table


@pytest.mark.parametrize("tp, pp", [(1, 1), (2, 2)])
def test_lookup_matches_step_table(tp, pp):
    """Decode-only, prefill-only and mixed steps agree with the compiled table to 1e-9."""
    model, hw = resolve_model("Llama-3.1-8B"), load_catalog().get("H100-SXM")
    table = step_table("roofline", model, hw, dtype="bf16", kv_dtype=None, tp=tp, pp=pp)
    oh = OverheadConfig(step_s=1e-3, per_seq_s=1e-5, per_token_s=1e-7)
    cost = StepCost(table, oh, max_tokens=4096, max_seqs=256)
    cases = [(1, 1, 300, ()), (64, 64, 64 * 1500.0, ()), (200, 200, 200 * 37.0, ()),
             (512, 0, 0, [(512, 512)]), (700, 188, 188 * 900.0, [(300, 2300), (212, 212)]),
             (9000, 100, 100 * 50.0, [(8900, 8900)])]
    for tokens, n, kv, pre in cases:
        ref = table.step_time(tokens, n, kv, list(pre)) * pp + oh.step_s + oh.per_seq_s * (n + len(pre)) \
            + oh.per_token_s * tokens
        assert cost(tokens, n, kv, pre) == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_overhead_adds_linearly_and_tables_are_memoized():
    """More overhead per sequence costs exactly that per sequence; one table per key."""
    model, hw = resolve_model("Llama-2-7B"), load_catalog().get("H100-SXM")
    t1 = step_table("roofline", model, hw, dtype="bf16", kv_dtype=None, tp=1, pp=1)
    t2 = step_table("roofline", model, hw, dtype="bf16", kv_dtype=None, tp=1, pp=1)
    assert t1 is t2
    a = StepCost(t1, OverheadConfig(step_s=0, per_seq_s=0, per_token_s=0), 1024, 64)
    b = StepCost(t1, OverheadConfig(step_s=0, per_seq_s=2e-4, per_token_s=0), 1024, 64)
    assert b(32, 32, 32 * 100.0) - a(32, 32, 32 * 100.0) == pytest.approx(32 * 2e-4)


def test_fused_kernels_cost_nothing_and_the_scenario_knows_every_fusion():
    """A table compiled with fusions is cheaper per token by exactly the fused kernels'
    predicted time (x layers); the scenario field accepts every fusion the operator
    taxonomy defines and nothing else."""
    import typing

    import pandas as pd

    from profiling.operators import FUSIONS, layer_ops
    from simulator.scenario import Deployment
    from surrogates.compiled import RooflinePredictor
    model, hw = resolve_model("Llama-3.1-8B"), load_catalog().get("H100-SXM")
    plain = step_table("roofline", model, hw, dtype="bf16", kv_dtype=None, tp=2, pp=1)
    fused = step_table("roofline", model, hw, dtype="bf16", kv_dtype=None, tp=2, pp=1, fusions=tuple(FUSIONS))
    assert fused is not plain
    gone = [o for o in layer_ops(model, int(plain.tok_x[10]), 2, "bf16")
            if o.name in {"attn_rope", "residual_add", "input_norm", "post_attn_norm"}]
    frame = pd.DataFrame([o.shape for o in gone]).assign(dtype="bf16", kv_dtype=None, name=[o.name for o in gone])
    saved = RooflinePredictor().predict_ms("elementwise", frame, hw).sum() * 1e-3 * model.num_layers
    assert saved > 0
    assert plain.tok_y[10] - fused.tok_y[10] == pytest.approx(saved, rel=1e-9)
    (inner,) = typing.get_args(Deployment.model_fields["fusions"].annotation)
    assert set(typing.get_args(inner)) == set(FUSIONS)
