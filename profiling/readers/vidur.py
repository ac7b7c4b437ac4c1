"""Vidur profiling CSVs (microsoft/vidur and the AKafakA A30 fork).

``compute/<device>/<org>/<model>/mlp.csv`` has one row per (model, TP, tokens) with
``time_stats.<op>.{min,max,mean,median,std}`` (ms) for the named ops of one transformer
layer, profiled in fp16 with 20 timed repeats (``vidur/profiling/mlp``). Each named op
becomes a generic operator with its TRUE TP-sharded shape (T tokens, h = n_embd,
d = h / n_head, I = n_expanded_embd, tp workers, b = 2 bytes):

====================  =========================================================
attn_pre_proj         gemm m=T, n=(n_head + 2 n_kv_head) d / tp, k=h   (fused QKV)
attn_post_proj        gemm m=T, n=h, k=n_head d / tp
mlp_up_proj           gemm m=T, n=(2 if gated else 1) I / tp, k=h
mlp_down_proj         gemm m=T, n=h, k=I / tp
emb                   elementwise T h; reads T int64 ids and T rows of h, writes T h
                      (every elementwise op carries its T rows as batch 1 x q_len T)
input_layernorm,      elementwise T h; reads T h, writes T h (weights negligible)
post_attention_layernorm
attn_rope             elementwise T (n_head + n_kv_head) d / tp; q and k read and
                      written in place, plus T int64 positions
mlp_act               elementwise T I / tp; SiluAndMul reads 2 T I / tp, writes T I / tp;
                      GELU (not gated) reads and writes T I / tp
add                   elementwise T h; residual + x: reads 2 T h, writes T h; models
                      without a post-attention norm (phi-2, parallel residual) add
                      attn + mlp + residual: reads 3 T h, writes T h
====================  =========================================================

``attention.csv`` (A30 fork): ``batch_size`` sequences; prefill rows process
``prefill_chunk_size`` new tokens on top of ``kv_cache_size`` cached ones (q_len = chunk,
kv_len = cache + chunk), decode rows one token over ``kv_cache_size`` (kv_len = cache).
``attn_kv_cache_save`` writes the new tokens' K and V into the paged cache (elementwise;
batch x q_len = new tokens, as every elementwise op's token count: the rows it works on).
``attn_input_reshape``/``attn_output_reshape`` are views (no kernel, always 0): not read.

``network/<net>/{all_reduce,send_recv}.csv``: ``size`` in BYTES over ``num_workers`` GPUs
with ``devices_per_node`` of them per node -> nodes = ceil(world / devices_per_node). The
network directory (``h100_dgx``, ``a100_pairwise_nvlink``...) names the GPU by its prefix
and the topology, which goes into ``stack`` so DGX and pairwise-NVLink points stay apart.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..schema import quarantine_rows
from .base import FormatReader, ReadOptions, ReadOutput, read_csv, require_columns, source_label, to_bool

FORMAT = "vidur"
FILES = ("mlp.csv", "attention.csv", "all_reduce.csv", "send_recv.csv")
DEVICES = {"h100": "H100-SXM", "a100": "A100-80GB", "a30": "A30", "a40": "A40", "l40": "L40", "l40s": "L40S",
           "h200": "H200", "b200": "B200", "mi300x": "MI300X"}
DTYPE, BYTES, SAMPLES = "fp16", 2.0, 20
STACK = "vidur"
MLP_SHAPE = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "use_gated_mlp", "num_tokens",
             "num_tensor_parallel_workers")
ATTN_SHAPE = ("n_embd", "n_q_head", "n_kv_head", "num_tensor_parallel_workers", "batch_size",
              "prefill_chunk_size", "kv_cache_size", "is_prefill")
NET_SHAPE = ("num_workers", "size", "devices_per_node")
_NO_KERNEL = ("attn_input_reshape", "attn_output_reshape")
_STAT = re.compile(r"^time_stats\.(?P<op>.+)\.(?P<stat>min|max|mean|median|std)$")


def matches(path: Path) -> bool:
    return path.name in FILES


def _ops(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(m["op"] for c in df.columns if (m := _STAT.match(c)) and m["stat"] == "median"))


def _device(path: Path, opts: ReadOptions, kind: str) -> str:
    if opts.hardware:
        return opts.hardware
    parts = path.resolve().parts
    if kind in ("mlp", "attention") and "compute" in parts:
        i = len(parts) - 1 - parts[::-1].index("compute")
        if i + 1 < len(parts) - 1:
            dev = parts[i + 1]
            return DEVICES.get(dev.lower(), dev)
    if kind == "network":
        net = path.parent.name
        prefix = net.split("_")[0].lower()
        return DEVICES.get(prefix, prefix)
    raise InputError("cannot tell the GPU from the path (expected compute/<device>/... or "
                     "network/<gpu>_<topology>/): pass --hardware", file=path)


def _model(path: Path) -> str | None:
    parts = path.resolve().parts
    if "compute" in parts:
        i = len(parts) - 1 - parts[::-1].index("compute")
        rest = parts[i + 2:-1]  # <org>/<model>
        return "/".join(rest) if rest else None
    return None


def _long(df: pd.DataFrame, op: str, frame: dict, path: Path) -> pd.DataFrame:
    """One canonical row per source row for named op ``op``."""
    n = len(df)
    med, std = f"time_stats.{op}.median", f"time_stats.{op}.std"
    out = pd.DataFrame(frame, index=pd.RangeIndex(n))
    out["name"] = op
    out["latency_ms"] = pd.to_numeric(df[med], errors="coerce").to_numpy() if med in df else np.nan
    out["latency_std_ms"] = pd.to_numeric(df[std], errors="coerce").to_numpy() if std in df else np.nan
    out["source_row"] = np.arange(n, dtype=float)
    return out


def _mlp(df: pd.DataFrame, path: Path) -> tuple[list[pd.DataFrame], list[str]]:
    require_columns(df, MLP_SHAPE, path, "Vidur mlp.csv")
    f = lambda c: pd.to_numeric(df[c], errors="coerce").to_numpy(float)  # noqa: E731
    T, h, nh, nkv, inter, tp = (f(c) for c in ("num_tokens", "n_embd", "n_head", "n_kv_head",
                                               "n_expanded_embd", "num_tensor_parallel_workers"))
    gated = to_bool(df["use_gated_mlp"]).to_numpy()
    d = h / nh
    ops = _ops(df)
    add_inputs = 2.0 if "post_attention_layernorm" in ops else 3.0
    rope_el = T * (nh + nkv) * d / tp
    act_el = T * inter / tp
    shapes = {
        "attn_pre_proj": {"op": "gemm", "m": T, "n": (nh + 2 * nkv) * d / tp, "k": h},
        "attn_post_proj": {"op": "gemm", "m": T, "n": h, "k": nh * d / tp},
        "mlp_up_proj": {"op": "gemm", "m": T, "n": np.where(gated, 2, 1) * inter / tp, "k": h},
        "mlp_down_proj": {"op": "gemm", "m": T, "n": h, "k": inter / tp},
        "emb": {"op": "elementwise", "elements": T * h, "io_bytes": 2 * T * h * BYTES + 8 * T},
        "input_layernorm": {"op": "elementwise", "elements": T * h, "io_bytes": 2 * T * h * BYTES},
        "post_attention_layernorm": {"op": "elementwise", "elements": T * h, "io_bytes": 2 * T * h * BYTES},
        "attn_rope": {"op": "elementwise", "elements": rope_el, "io_bytes": 2 * rope_el * BYTES + 8 * T},
        "mlp_act": {"op": "elementwise", "elements": act_el,
                    "io_bytes": np.where(gated, 3, 2) * act_el * BYTES},
        "add": {"op": "elementwise", "elements": T * h, "io_bytes": (add_inputs + 1) * T * h * BYTES},
    }
    common = {"tp": tp, "batch": np.ones_like(T), "q_len": T}
    frames, unknown = [], []
    for op in ops:
        if op not in shapes:
            unknown.append(op)
            continue
        frames.append(_long(df, op, {**common, **shapes[op]}, path))
    return frames, unknown


def _attention(df: pd.DataFrame, path: Path) -> tuple[list[pd.DataFrame], list[str]]:
    require_columns(df, ATTN_SHAPE, path, "Vidur attention.csv")
    f = lambda c: pd.to_numeric(df[c], errors="coerce").to_numpy(float)  # noqa: E731
    h, nq, nkv, tp, bs, chunk, cache = (f(c) for c in ("n_embd", "n_q_head", "n_kv_head",
                                                       "num_tensor_parallel_workers", "batch_size",
                                                       "prefill_chunk_size", "kv_cache_size"))
    prefill = to_bool(df["is_prefill"]).to_numpy()
    d = h / nq
    heads = {"heads": nq / tp, "kv_heads": np.maximum(nkv / tp, 1), "head_dim": d, "tp": tp, "batch": bs}
    kernel = df["attention_backend"].astype(str).str.replace("AttentionBackend.", "").to_numpy() \
        if "attention_backend" in df else None
    new_tokens = np.where(prefill, bs * chunk, bs)
    kv_el = new_tokens * 2 * np.maximum(nkv / tp, 1) * d
    shapes = {
        "attn_prefill": ({"op": "attn_prefill", **heads, "q_len": chunk, "kv_len": cache + chunk}, prefill),
        "attn_decode": ({"op": "attn_decode", **heads, "q_len": 1.0, "kv_len": cache}, ~prefill),
        "attn_kv_cache_save": ({"op": "elementwise", "tp": tp, "batch": bs, "q_len": np.where(prefill, chunk, 1.0),
                                "elements": kv_el, "io_bytes": 2 * kv_el * BYTES}, np.ones(len(df), bool)),
    }
    frames, unknown = [], []
    for op in _ops(df):
        if op in _NO_KERNEL:
            continue
        if op not in shapes:
            unknown.append(op)
            continue
        shape, rows = shapes[op]
        part = _long(df, op, {**shape, "kernel": kernel}, path)
        frames.append(part[rows])
    return frames, unknown


def _network(df: pd.DataFrame, path: Path) -> tuple[list[pd.DataFrame], list[str]]:
    require_columns(df, NET_SHAPE, path, "Vidur network CSV")
    ops = _ops(df)
    if not ops:
        raise InputError("not a Vidur network CSV: no time_stats.<collective>.median column", file=path)
    f = lambda c: pd.to_numeric(df[c], errors="coerce").to_numpy(float)  # noqa: E731
    world, per_node = f("num_workers"), f("devices_per_node")
    frames = []
    for op in ops:
        shape = {"op": "collective", "collective": op, "msg_bytes": f("size"), "world": world,
                 "nodes": np.ceil(world / np.maximum(per_node, 1))}
        part = _long(df, op, shape, path)
        if "collective" in df:  # a row of another collective in this file has no time for `op`
            part = part[df["collective"].astype(str).to_numpy() == op]
        frames.append(part)
    return frames, []


def read(path: Path, opts: ReadOptions) -> ReadOutput:
    df = read_csv(path, FORMAT)
    if not any(_STAT.match(c) for c in df.columns):
        raise InputError("not a Vidur profiling CSV: no time_stats.<op>.median columns", file=path)
    if path.name == "attention.csv" or "is_prefill" in df:
        kind, (frames, unknown) = "attention", _attention(df, path)
    elif path.name in ("all_reduce.csv", "send_recv.csv") or "num_workers" in df:
        kind, (frames, unknown) = "network", _network(df, path)
    else:
        kind, (frames, unknown) = "mlp", _mlp(df, path)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    src = source_label(FORMAT, path)
    table["source"] = src
    table["hardware"] = _device(path, opts, kind)
    table["dtype"] = DTYPE
    table["model"] = _model(path) if kind != "network" else None
    table["stack"] = f"{STACK} {path.parent.name}" if kind == "network" else STACK
    if kind == "mlp":
        table["samples"] = SAMPLES
    quarantine = []
    for op in unknown:  # named ops we have no shape for: every row of them, with the name
        rows = pd.DataFrame({"source": src, "source_row": np.arange(len(df), dtype=float)})
        quarantine.append(quarantine_rows(rows, f"time_stats.{op}.median", f"unknown Vidur op '{op}'"))
    q = pd.concat(quarantine, ignore_index=True) if quarantine else None
    return ReadOutput.of(table, q)


READER = FormatReader(FORMAT, "Vidur profiling CSVs (mlp, attention, all_reduce, send_recv)", matches, read)
