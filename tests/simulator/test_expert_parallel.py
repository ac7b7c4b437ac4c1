"""Mixture-of-experts pricing: expert parallelism across data-parallel engines (each device
holds E / ep experts and meets the other engines' tokens through an all-gather and a
reduce-scatter), its memory, its validation, and the grouped expert GEMM factor."""
from __future__ import annotations

import pytest

from hermes_sim.cli import main
from profiling.hardware import load_catalog
from profiling.models import resolve_model
from profiling.operators import BatchShape, expand_step, layer_ops
from simulator.engine.config import Deployment
from simulator.engine.deployment import memory_plan
from surrogates.grouped_gemm import GROUPED_GEMM, GroupedGemm

QWEN_MOE = "Qwen3-30B-A3B"



def test_expert_parallel_halves_the_expert_weights_a_device_reads():
    """At 1024 tokens every expert is hit: with ep 2 over two data-parallel engines a device
    reads half the expert weights it reads holding them all (FLOPs unchanged per device with
    balanced loads), and the TP all-reduce gives way to an all-gather + reduce-scatter of the
    two engines' tokens."""
    m = resolve_model(QWEN_MOE)
    one = layer_ops(m, 1024, 1, "bf16")
    two = layer_ops(m, 1024, 1, "bf16", ep=2)
    weights = lambda ops: sum(o.shape["n"] * o.shape["k"] for o in ops if o.name in ("mlp_up_proj", "mlp_down_proj"))
    assert weights(two) == pytest.approx(weights(one) / 2, rel=0.02)
    flops = lambda ops: sum(o.flops for o in ops if o.name in ("mlp_up_proj", "mlp_down_proj"))
    assert flops(two) == pytest.approx(flops(one), rel=1e-9)
    names = [o.name for o in two]
    assert "moe_dispatch" in names and "moe_combine" in names and "mlp_all_reduce" not in names
    gather = next(o for o in two if o.name == "moe_dispatch")
    assert gather.shape["collective"] == "all_gather" and gather.shape["world"] == 2
    assert gather.shape["msg_bytes"] == 2 * 1024 * m.hidden_size * 2     # both engines' tokens, bf16


def test_expert_parallel_within_tp_prices_as_tp():
    """ep equal to tp (one engine) spreads whole experts over the TP group, which reads and
    computes what TP-sharded experts do: the operators are those of plain TP."""
    m = resolve_model(QWEN_MOE)
    assert layer_ops(m, 256, 2, "bf16", ep=2) == layer_ops(m, 256, 2, "bf16")


def test_expert_parallel_leaves_more_memory_for_kv():
    """A device holding half the experts has more room for KV blocks than one holding them all."""
    hw = load_catalog().get("h100_sxm")
    m = resolve_model(QWEN_MOE)
    base = Deployment(model=QWEN_MOE, hardware="h100_sxm", replicas=2)
    spread = base.model_copy(update={"ep": 2})
    full, half = memory_plan(base, m, hw, 1), memory_plan(spread, m, hw, 1)
    assert half.weights == pytest.approx(full.weights - m.expert_weight_bytes("bf16") / 2)
    assert half.num_blocks > full.num_blocks


def test_ep_must_be_tp_times_a_divisor_of_the_replicas(tmp_path, capsys):
    """ep 3 over TP 1 x 2 replicas cannot be laid out: one line naming the field, exit 2."""
    with pytest.raises(ValueError, match="ep 3 must be tp"):
        Deployment(model=QWEN_MOE, hardware="h100_sxm", replicas=2, ep=3)
    bad = tmp_path / "ep.yaml"
    bad.write_text(f"deployments:\n  - model: {QWEN_MOE}\n    hardware: h100_sxm\n    replicas: 2\n    ep: 3\n"
                   "workload:\n  num_requests: 5\n")
    assert main(["simulate", str(bad), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ep" in err[0] and "ep.yaml" in err[0]


def test_grouped_gemm_factor_spares_decode_and_few_experts():
    """The factor is 1 while each expert gets a decode batch's few rows, the full factor once
    its rows fill a tile, monotone in between, and 1 for a model with a few large experts
    (Mixtral's 8 active experts), whatever the rows."""
    g = GroupedGemm(factor=2.5, rows_from=8, rows_full=24, min_groups=32)
    assert g(2.0, 128) == g(8.0, 128) == 1.0
    assert g(24.0, 128) == g(500.0, 256) == 2.5
    mid = [g(r, 128) for r in (9, 12, 16, 20, 23)]
    assert all(1.0 < a < b < 2.5 for a, b in zip(mid, mid[1:]))
    assert g(230.0, 8) == 1.0


def test_step_expansion_carries_the_grouped_gemm_factor():
    """A prefill-sized MoE step's expert GEMMs carry their expert count through expand_step (so
    the direct sum and the compiled table price the same factor), decode-sized ones price at 1."""
    m = resolve_model(QWEN_MOE)
    pre = [o for o in expand_step(m, BatchShape(prefill=((2048, 2048),))) if o.name == "mlp_up_proj"][0]
    dec = [o for o in expand_step(m, BatchShape(decode_kv=(1000,) * 8)) if o.name == "mlp_up_proj"][0]
    assert pre.groups == m.num_experts and pre.count == m.num_layers
    assert GROUPED_GEMM(pre.shape["m"], pre.groups) == GROUPED_GEMM.factor
    assert GROUPED_GEMM(dec.shape["m"], dec.groups) == 1.0


@pytest.mark.parametrize("engine,arg,field", [("vllm", "tensor_parallel_size", "'tp'"),
                                              ("vllm", "enable_expert_parallel", "'ep'"),
                                              ("sglang", "dp_size", "'replicas'"),
                                              ("trtllm", "moe_expert_parallel_size", "'ep'")])
def test_engine_argument_that_places_the_engine_is_refused(engine, arg, field):
    """An engine argument that the deployment's own field says (TP, DP, EP, dtypes, model) would
    otherwise be accepted and change nothing: it is refused, naming the field to use."""
    version = {"vllm": "0.15.1", "sglang": "0.5.9", "trtllm": "1.1.0"}[engine]
    with pytest.raises(ValueError, match=f"'{arg}' is set by the deployment: write {field}"):
        Deployment.model_validate({"model": "Llama-3.1-8B", "hardware": "h100_sxm",
                                   "engine": {"name": engine, "version": version, arg: 2}})
