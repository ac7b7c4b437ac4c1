"""PyTorch profiler (Kineto Chrome-trace JSON) reader on a realistic generated trace."""
from __future__ import annotations

import json

import pytest

from profiling.errors import InputError
from profiling.ingest import read_traces


def _trace(tmp_path, with_kernels=True):
    """A Kineto-shaped trace: CPU ops with record_shapes args, runtime launches, kernels."""
    ev, ext, corr = [], 100, 5000
    ops = [("aten::mm", [[128, 4096], [4096, 11008]], ["c10::BFloat16"] * 2, ["sm90_xmma_gemm_bf16"], [41.5]),
           ("aten::addmm", [[11008], [64, 4096], [4096, 11008]], ["c10::BFloat16"] * 3, ["cutlass_gemm"], [30.0]),
           ("aten::_scaled_dot_product_flash_attention", [[2, 32, 512, 128], [2, 8, 512, 128], [2, 8, 512, 128]],
            ["c10::BFloat16"] * 3, ["flash_fwd_kernel"], [88.0]),
           ("aten::add", [[128, 4096], [128, 4096], []], ["c10::BFloat16", "c10::BFloat16", "Scalar"],
            ["vectorized_elementwise_kernel"], [3.2]),
           ("aten::topk", [[128, 32000], []], ["float", "Scalar"], ["topk_kernel_a", "topk_kernel_b"], [5.0, 6.0])]
    ts = 1000
    for name, dims, types, kernels, durs in ops:
        ext += 1
        ev.append({"ph": "X", "cat": "cpu_op", "name": name, "ts": ts, "dur": 50, "pid": 1, "tid": 1,
                   "args": {"External id": ext, "Input Dims": dims, "Input type": types}})
        for k, d in zip(kernels, durs):
            corr += 1
            ev.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": ts + 1, "dur": 4,
                       "pid": 1, "tid": 1, "args": {"correlation": corr, "External id": ext}})
            if with_kernels:
                ev.append({"ph": "X", "cat": "kernel", "name": k, "ts": ts + 10, "dur": d, "pid": 0, "tid": 7,
                           "args": {"correlation": corr, "External id": ext, "device": 0, "stream": 7}})
        ts += 100
    doc = {"schemaVersion": 1, "deviceProperties": [{"id": 0, "name": "NVIDIA H100 80GB HBM3"}],
           "traceEvents": ev}
    f = tmp_path / "worker0.pt.trace.json"
    f.write_text(json.dumps(doc))
    return f


def test_gpu_trace_maps_ops_to_kinds(tmp_path):
    """mm/addmm -> gemm(m,n,k); SDPA -> attn_prefill with GQA heads; add -> elementwise; µs -> ms."""
    res = read_traces(_trace(tmp_path), "torch", hardware="H100-SXM")
    t = res.table.set_index("name")
    mm = t.loc["aten::mm"]
    assert (mm["op"], mm["m"], mm["n"], mm["k"], mm["dtype"]) == ("gemm", 128, 11008, 4096, "bf16")
    assert mm["latency_ms"] == pytest.approx(0.0415)
    addmm = t.loc["aten::addmm"]
    assert (addmm["m"], addmm["n"], addmm["k"]) == (64, 11008, 4096)
    at = t.loc["aten::_scaled_dot_product_flash_attention"]
    assert (at["op"], at["batch"], at["heads"], at["kv_heads"], at["q_len"], at["kv_len"], at["head_dim"]) == (
        "attn_prefill", 2, 32, 8, 512, 512, 128)
    add = t.loc["aten::add"]
    assert add["op"] == "elementwise" and add["elements"] == 128 * 4096
    assert add["io_bytes"] == 3 * 128 * 4096 * 2


def test_unknown_op_kernels_are_quarantined_by_name(tmp_path):
    """topk's two kernels are one quarantined op, named with its kernel."""
    res = read_traces(_trace(tmp_path), "torch", hardware="H100-SXM")
    assert len(res.table) == 4 and len(res.quarantine) == 1
    assert "unknown op 'aten::topk'" in res.quarantine["reason"].iloc[0]
    assert "topk_kernel_a" in res.quarantine["reason"].iloc[0]


def test_cpu_only_trace_times_the_ops_themselves(tmp_path):
    """Without kernel events the shaped aten ops' own durations are used (a CPU run)."""
    res = read_traces(_trace(tmp_path, with_kernels=False), "torch", hardware="H100-SXM")
    assert set(res.table["name"]) == {"aten::mm", "aten::addmm", "aten::add",
                                      "aten::_scaled_dot_product_flash_attention"}
    assert (res.table["latency_ms"] == 0.05).all()


def test_not_a_trace(tmp_path):
    """A JSON without traceEvents is one clear error naming the file."""
    f = tmp_path / "x.json"
    f.write_text('{"hello": 1}')
    with pytest.raises(InputError, match=r"x\.json.*traceEvents"):
        read_traces(f, "torch")
