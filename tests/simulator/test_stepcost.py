"""Step time: the lookup tables equal StepTable.step_time plus the overhead model."""
from __future__ import annotations

import pytest

from profiling import load_catalog, resolve_model
from simulator.scenario import OverheadConfig
from simulator.stepcost import StepCost, step_table


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
