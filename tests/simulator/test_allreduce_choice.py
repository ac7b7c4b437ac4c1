"""The all-reduce kernel an engine runs (simulator.engine.engines.AllReduceRule: vLLM's custom
all-reduce by world size, interconnect, message size and CUDA graph, else NCCL) and its
pricing in the step table (surrogates.compiled: the surrogate is asked for that kernel)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from profiling.models import resolve_model
from simulator.engine.config import Deployment
from simulator.engine.deployment import build_pool
from simulator.engine.engines import (
    AllReduceRule,
    all_reduce_impl,
    device,
    resolve_engine,
)
from simulator.engine.stepcost import load_predictor, step_table
from surrogates.compiled import RooflinePredictor, compile_step_table

MiB = 2 ** 20
GRAPH, EAGER, NCCL = ("vllm", "vLLM_custom_graph"), ("vllm", "vLLM_custom_eager"), ("nccl", "NCCL")


def _vllm(hardware: str, tp: int, model: str = "Llama-3.1-70B", version: str = "0.19.0", **args):
    return resolve_engine("vllm", version, args, model=resolve_model(model), hw=device(hardware), tp=tp)


def test_nvlink_h100_tp4_small_message_runs_the_custom_graph_kernel():
    """vLLM 0.19 on four NVLink H100s: custom all-reduce, a decode-sized message in the CUDA
    graph kernel, and the summary says which kernel runs for which sizes."""
    r = _vllm("H100-SXM", 4)
    assert r.all_reduce == "custom"
    assert r.all_reduce_rule(64 * 8192 * 2) == GRAPH
    assert r.summary()["all_reduce_kernels"].startswith("vLLM_custom_graph up to")


def test_l40s_tp4_runs_nccl_for_every_message():
    """Four PCIe-only L40S: vLLM disables its custom all-reduce (more than two PCIe GPUs)."""
    r = _vllm("L40S", 4, model="Qwen3-32B")
    assert r.all_reduce == "nccl"
    assert {r.all_reduce_rule(b) for b in (16, 64 * 1024, 8 * MiB, 64 * MiB)} == {NCCL}


def test_message_above_the_size_limit_runs_nccl():
    """Custom up to max_size (8 MiB by default, <= as vLLM compares it), NCCL above; with
    symmetric memory (vLLM >= 0.11 on NVLink Hopper) the TP8 limit drops to 256 KiB."""
    r = _vllm("L40S", 2, model="Qwen3-32B")
    assert r.all_reduce_rule.custom_max_bytes == 8 * MiB
    assert r.all_reduce_rule(8 * MiB) != NCCL and r.all_reduce_rule(8 * MiB + 16) == NCCL
    assert _vllm("H100-SXM", 8).all_reduce_rule.custom_max_bytes == 256 * 1024
    assert _vllm("H100-SXM", 8).all_reduce_rule(512 * 1024) == NCCL
    assert _vllm("H100-SXM", 8, version="0.10.1").all_reduce_rule(512 * 1024) == GRAPH


def test_tp2_over_pcie_is_custom_only_with_peer_to_peer():
    """Two PCIe GPUs run custom all-reduce when the driver allows P2P (L40S, RTX PRO 6000),
    NCCL on GeForce cards (no P2P), with --disable-custom-all-reduce, or on a world size the
    custom kernels lack."""
    assert _vllm("L40S", 2, model="Qwen3-32B").all_reduce == "custom"
    assert _vllm("RTX-PRO-6000", 2, model="Qwen3-32B").all_reduce == "custom"
    r = _vllm("RTX-4090", 2, model="Llama-3.1-8B")
    assert r.all_reduce == "nccl" and r.all_reduce_rule(1024) == NCCL
    off = _vllm("L40S", 2, model="Qwen3-32B", disable_custom_all_reduce=True)
    assert off.all_reduce == "nccl" and off.all_reduce_rule(1024) == NCCL
    assert all_reduce_impl("vllm", device("H100-SXM"), 3, False) == "nccl"


def test_graph_kernel_up_to_the_largest_captured_batch_then_eager():
    """A message of the largest CUDA-graph batch runs the graph kernel, one token more the
    eager one (below 8 MiB); with enforce_eager every custom message is eager."""
    r = _vllm("L40S", 2, model="Qwen3-32B")
    per_token = 5120 * 2
    top = max(r.cuda_graph_sizes)
    assert r.all_reduce_rule(top * per_token) == GRAPH
    assert r.all_reduce_rule((top + 1) * per_token) == EAGER
    eager = _vllm("L40S", 2, model="Qwen3-32B", enforce_eager=True)
    assert eager.all_reduce_rule(per_token) == EAGER


def test_trtllm_names_its_own_kernel_and_tp1_none():
    """TensorRT-LLM runs its own all-reduce op (traced as TRTLLM); one GPU has no rule."""
    r = resolve_engine("trtllm", "1.1.0", {}, model=resolve_model("Llama-3.1-70B"), hw=device("H100-SXM"), tp=4)
    assert r.all_reduce_rule(1024) == ("trtllm", "TRTLLM")
    assert _vllm("H100-SXM", 1, model="Llama-3.1-8B").all_reduce_rule is None


def _direct_ms(kernel: tuple[str, str], dtype: str, msg: int, world: int, hw) -> float:
    f = pd.DataFrame({"collective": ["all_reduce"], "msg_bytes": [msg], "world": [world], "dtype": [dtype],
                      "kv_dtype": [None], "name": ["attn_all_reduce"], "stack": [kernel[0]], "kernel": [kernel[1]]})
    return float(load_predictor(None).predict_ms("collective", f, hw)[0])


def test_the_chosen_kernel_reaches_the_surrogate_query():
    """On L40S (custom graph and NCCL both measured) a TP4 step table priced with NCCL differs
    from one priced with the custom graph kernel by exactly the surrogate's per-kernel
    difference times the all-reduces of a step, and each says it used measured traces."""
    model, hw = resolve_model("Llama-3.1-8B"), device("L40S")
    kw = {"dtype": None, "kv_dtype": None, "tp": 4, "pp": 1}
    nccl = step_table(None, model, hw, **kw, collective_kernel=AllReduceRule("nccl"))
    custom = step_table(None, model, hw, **kw, collective_kernel=AllReduceRule("custom", 1 << 40, 1 << 40))
    assert nccl.collective_kernels == ("NCCL: trained on its fp16 traces",)
    assert custom.collective_kernels == ("vLLM_custom_graph: trained",)
    for tokens in (256, 1024):
        msg = tokens * model.hidden_size * 2
        one = _direct_ms(NCCL, "fp16", msg, 4, hw) - _direct_ms(GRAPH, "bf16", msg, 4, hw)
        per_step = model.num_layers * 2 * 1e-3 * one  # two all-reduces per layer, ms -> s
        diff = nccl.step_time(tokens) - custom.step_time(tokens)
        assert abs(diff) > 0.01 * custom.step_time(tokens)
        assert diff == pytest.approx(per_step, rel=0.02)


def test_a_kernel_the_gpu_never_ran_falls_back_and_says_so():
    """A30's collective traces hold no vLLM custom kernel: the table keeps the surrogate's own
    choice and its provenance says the kernel was not measured there."""
    model, hw = resolve_model("Llama-2-7B"), device("A30")
    kw = {"dtype": "fp16", "kv_dtype": None, "tp": 2, "pp": 1}
    plain = step_table(None, model, hw, **kw)
    named = step_table(None, model, hw, **kw, collective_kernel=AllReduceRule("custom", 1 << 40, 1 << 40))
    assert named.collective_kernels == (
        "vLLM_custom_graph: not measured on A30: priced as the predictor's fastest measured kernel",)
    assert named.tok_y == plain.tok_y


def test_roofline_has_no_kernels_so_the_table_is_unchanged():
    """The spec-sheet roofline knows no kernels: a named kernel changes no figure and says so."""
    model, hw = resolve_model("Llama-3.1-8B"), device("L40S")
    plain = compile_step_table(model, hw, RooflinePredictor(), tp=2, max_tokens=4096)
    named = compile_step_table(model, hw, RooflinePredictor(), tp=2, max_tokens=4096,
                               collective_kernel=AllReduceRule("nccl"))
    assert named.collective_kernels == ("NCCL: not modelled by RooflinePredictor",)
    assert named.tok_y == plain.tok_y and plain.collective_kernels == ()


def test_no_engine_block_leaves_the_step_table_unchanged():
    """A deployment without an engine block prices all-reduces as before (the surrogate's own
    choice, no kernel named); the same deployment with vLLM 0.19 on L40S TP4 prices NCCL."""
    model, hw = resolve_model("Llama-3.1-8B"), device("L40S")
    plain = build_pool(Deployment.model_validate({"model": "Llama-3.1-8B", "hardware": "L40S", "tp": 4}), None)
    fresh = compile_step_table(model, hw, load_predictor(None), tp=4)
    assert plain.cost.table.collective_kernels == ()
    assert np.array_equal(plain.cost.table.tok_y, fresh.tok_y) and plain.cost.table.tok_x == fresh.tok_x
    eng = build_pool(Deployment.model_validate({"model": "Llama-3.1-8B", "hardware": "L40S", "tp": 4,
                                                "engine": {"name": "vllm", "version": "0.19.0"}}), None)
    assert eng.cost.table.collective_kernels == ("NCCL: trained on its fp16 traces",)
    assert not np.array_equal(eng.cost.table.tok_y, fresh.tok_y)
