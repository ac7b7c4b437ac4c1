"""PyTorch profiler traces (Kineto Chrome-trace JSON, ``torch.profiler`` with ``record_shapes``).

GPU traces: every kernel (``cat`` "kernel"/"gpu_op") is attributed to the CPU op that
launched it through its ``External id`` (or the launching runtime call's ``correlation``);
one row per CPU op instance, latency = the sum of its kernels' ``dur`` (µs -> ms).
CPU-only traces (no kernel events): the recognised ``aten::`` ops' own ``dur``.

Shapes come from the op's ``Input Dims``:

* ``aten::mm`` [m,k]x[k,n], ``aten::addmm`` (bias, [m,k], [k,n]), ``aten::matmul`` and
  ``aten::linear`` ([..., k] x weight [n, k]) -> ``gemm``; ``aten::bmm`` [b,m,k]x[b,k,n]
  -> ``gemm`` with the batch folded into m (same FLOPs; fewer bytes, so still a bound).
* ``aten::_scaled_dot_product_*attention*`` q [b,h,sq,d], k [b,hk,sk,d] ->
  ``attn_prefill`` (sq > 1) or ``attn_decode``.
* elementwise/normalisation ops -> ``elementwise`` (elements = largest input; bytes =
  all inputs read + one output written).

Kernels of any other op are quarantined as "unknown op '<name>'" with the kernel name.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..jsonfile import read_json
from ..schema import quarantine_rows
from .base import FormatReader, ReadOptions, ReadOutput, source_label

FORMAT = "torch"
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm")
ATTN_PREFIX = "aten::_scaled_dot_product"
ATTN_OPS = ("aten::scaled_dot_product_attention",)
ELEMENTWISE_OPS = ("aten::add", "aten::add_", "aten::mul", "aten::mul_", "aten::sub", "aten::div", "aten::silu",
                   "aten::silu_", "aten::gelu", "aten::relu", "aten::sigmoid", "aten::tanh", "aten::exp",
                   "aten::neg", "aten::pow", "aten::rsqrt", "aten::copy_", "aten::softmax", "aten::_softmax",
                   "aten::layer_norm", "aten::native_layer_norm", "aten::rms_norm", "aten::_fused_rms_norm",
                   "aten::embedding", "aten::cat", "aten::clone", "aten::contiguous", "aten::fill_")
KERNEL_CATS = ("kernel", "gpu_op")
CPU_CATS = ("cpu_op", "operator")
TYPE_DTYPES = {"float": "fp32", "c10::bfloat16": "bf16", "c10::half": "fp16", "half": "fp16",
               "c10::float8_e4m3fn": "fp8", "double": "fp32", "signed char": "int8", "int8": "int8"}
TYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}


def matches(path: Path) -> bool:
    return path.suffix == ".json" or path.name.endswith(".pt.trace.json")


def _dtype(types: list) -> str | None:
    for t in types or []:
        d = TYPE_DTYPES.get(str(t).strip().lower())
        if d:
            return d
    return None


def _prod(dims) -> float:
    return float(np.prod(dims)) if dims else 0.0


def shape_of(name: str, dims: list, types: list) -> dict | None:
    """Canonical op and shape of one CPU op from its input dims, or None if not modelled."""
    dims = [d if isinstance(d, list) else [] for d in (dims or [])]
    dtype = _dtype(types) or "fp32"
    try:
        if name in GEMM_OPS:
            t = [d for d in dims if d]
            if name in ("aten::addmm", "aten::baddbmm"):
                t = t[1:]  # bias first
            a, b = t[0], t[1]
            if name in ("aten::bmm", "aten::baddbmm"):
                return {"op": "gemm", "m": a[0] * a[1], "k": a[2], "n": b[2], "dtype": dtype}
            if name == "aten::linear":  # weight is [n, k]
                return {"op": "gemm", "m": _prod(a[:-1]), "k": a[-1], "n": b[0], "dtype": dtype}
            return {"op": "gemm", "m": _prod(a[:-1]), "k": a[-1], "n": b[-1], "dtype": dtype}
        if name.startswith(ATTN_PREFIX) or name in ATTN_OPS:
            q, k = dims[0], dims[1]
            shape = {"batch": q[0], "heads": q[1], "q_len": q[2], "head_dim": q[3], "kv_heads": k[1],
                     "kv_len": k[2], "dtype": dtype}
            return {"op": "attn_prefill" if q[2] > 1 else "attn_decode", **shape}
        if name in ELEMENTWISE_OPS:
            sizes = [_prod(d) for d in dims if d]
            if not sizes:
                return None
            b = TYPE_BYTES.get(dtype, 4)
            return {"op": "elementwise", "elements": max(sizes), "io_bytes": (sum(sizes) + max(sizes)) * b,
                    "dtype": dtype}
    except (IndexError, TypeError):
        return None
    return None


def _load(path: Path) -> list[dict]:
    doc = read_json(path, kind="PyTorch profiler JSON trace")
    events = doc.get("traceEvents") if isinstance(doc, dict) else None
    if not isinstance(events, list):
        raise InputError("not a PyTorch profiler JSON trace: no 'traceEvents' list", file=path)
    return [e for e in events if isinstance(e, dict) and e.get("ph") == "X"]


def _device(events_doc_path: Path) -> str | None:
    try:
        props = json.loads(events_doc_path.read_text()).get("deviceProperties") or []
    except (json.JSONDecodeError, AttributeError):
        return None
    return str(props[0].get("name", "")).replace("NVIDIA ", "") or None if props else None


def read(path: Path, opts: ReadOptions) -> ReadOutput:
    events = _load(path)
    cpu = {}
    runtime_ext = {}
    for i, e in enumerate(events):
        args = e.get("args") or {}
        if e.get("cat") in CPU_CATS:
            cpu[args.get("External id", ("row", i))] = (i, e)
        elif e.get("cat") == "cuda_runtime" and "correlation" in args:
            runtime_ext[args["correlation"]] = args.get("External id")
    kernels = [(i, e) for i, e in enumerate(events) if e.get("cat") in KERNEL_CATS]
    src = source_label(FORMAT, path)
    rows, bad = [], []
    if kernels:  # GPU trace: group kernel time by the op that launched it
        per_op: dict = {}
        for i, e in kernels:
            args = e.get("args") or {}
            ext = args.get("External id") or runtime_ext.get(args.get("correlation"))
            per_op.setdefault(ext, []).append((i, e))
        for ext, ks in per_op.items():
            dur_ms = sum(float(k.get("dur", np.nan)) for _, k in ks) / 1e3
            op = cpu.get(ext)
            shape = shape_of(op[1].get("name", ""), (op[1].get("args") or {}).get("Input Dims"),
                             (op[1].get("args") or {}).get("Input type")) if op else None
            first = ks[0][0]
            if shape is None:
                what = op[1].get("name") if op else "no launching op"
                bad.append({"source_row": first, "reason": f"unknown op '{what}' (kernel {ks[0][1].get('name', '?')})"})
                continue
            rows.append({**shape, "name": op[1]["name"], "latency_ms": dur_ms, "samples": 1,
                         "kernel": ks[0][1].get("name"), "source_row": first})
    else:  # CPU trace: recognised ops timed on the host
        for i, e in cpu.values():
            args = e.get("args") or {}
            shape = shape_of(e.get("name", ""), args.get("Input Dims"), args.get("Input type"))
            if shape is not None:
                rows.append({**shape, "name": e["name"], "latency_ms": float(e.get("dur", np.nan)) / 1e3,
                             "samples": 1, "source_row": i})
    if not rows and not bad:
        raise InputError("no kernel or shaped aten:: op events (was record_shapes=True?)", file=path)
    table = pd.DataFrame(rows)
    if len(table):
        table["hardware"] = opts.hardware or _device(path)
        table["source"] = src
        table["stack"] = "pytorch"
    q = quarantine_rows(pd.DataFrame({"source": src, "source_row": [float(b["source_row"]) for b in bad]}),
                        "name", pd.Series([b["reason"] for b in bad], dtype=object)) if bad else None
    return ReadOutput.of(table, q)


READER = FormatReader(FORMAT, "PyTorch profiler Chrome-trace JSON (Kineto)", matches, read)
