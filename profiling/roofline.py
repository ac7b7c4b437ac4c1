"""Roofline features: the fastest a kernel could run on a device's spec sheet.

``t_roofline = max(FLOPs / peak, bytes / bandwidth)``; collectives use the link the
ring crosses (NVLink-class within a node, the NIC across nodes) plus per-hop latency.

L2-resident working sets: microbenchmarks repeat the same kernel on the same buffers, so
the part of a GEMM's, attention's or elementwise op's working set that fits in L2 is served warm from
L2 and the op can beat ``bytes / DRAM bandwidth`` (the L40S traces do by up to 4.2x, B200
by 1.3x). The memory bound is therefore ``max(bytes / L2_bw, (bytes - L2) / DRAM_bw)``
with ``L2_bw = L2_BW_FACTOR x DRAM_bw`` unless the device spec gives ``l2_bw_gb_s``;
``l2_resident`` is the fraction of the working set that fits (a surrogate feature).
Collectives get a bandwidth-only bound; sliding-window attention counts only the keys
inside the window.

Elementwise kernels (norms, rotary, activations, gathers) spend a few instructions per
element, so on a GPU with little compute per byte of bandwidth they run slower than its
bandwidth says: ``t_issue_ms`` is one compute-unit cycle per element over the device's
issue rate (SMs x clock). It is not part of the bound: one cycle is an empirical scale
(Vidur's A100 norms, rotary and activations take 0.7-1 cycle per element in all, the
embedding gather 2). The transfer model adds it to the roofline as its prior
(``surrogates.features``).

Whole-step rows (``step_prefill`` / ``step_decode``) get the serial sum of the roofline
of every operator of the step, expanded from the model catalog (``expand_step``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from .errors import HermesError
from .hardware import HardwareCatalog, HardwareSpec
from .operators import (ATTN_DECODE, ATTN_PREFILL, COLLECTIVE, ELEMENTWISE, GEMM, STEP_DECODE, STEP_PREFILL, BatchShape,
                        expand_step, op_cost)

FEATURE_COLUMNS = ("flops", "bytes", "arith_intensity", "t_compute_ms", "t_memory_ms",
                   "t_roofline_ms", "l2_resident", "hw_peak_tflops", "hw_mem_bw_gb_s", "hw_link_bw_gb_s",
                   "hw_link_latency_us", "t_issue_ms", "hw_compute_units")
# Compute-unit cycles an elementwise kernel spends per element (see the module docstring).
ISSUE_CYCLES_PER_ELEMENT = 1.0
# L2 bandwidth as a multiple of DRAM bandwidth, an upper estimate so the bound stays a
# bound: A100 ~3.5x (5120 B/clk), H100 ~2-3x, Ada (L40S) ~5x by public microbenchmarks;
# the L40S traces need >= 4x (100 MB fp8 weights read in 28 us).
L2_BW_FACTOR = 4.0
L2_KINDS = (GEMM, ELEMENTWISE, ATTN_PREFILL, ATTN_DECODE)
STEP_KINDS = (STEP_PREFILL, STEP_DECODE)
# Columns an operator's cost can depend on (numeric shape plus the text ones).
SHAPE_COLUMNS = ("m", "n", "k", "batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim", "window",
                 "elements", "io_bytes", "msg_bytes", "world", "nodes", "corpus", "dim", "topk", "nprobe",
                 "params", "tp", "pp", "collective", "index", "model")


def _window_adjust(kind: str, shape: Mapping[str, object], flops: np.ndarray) -> tuple[Mapping, np.ndarray]:
    """Sliding-window attention: each query sees at most ``window`` keys (0/NaN = full)."""
    if kind not in (ATTN_PREFILL, ATTN_DECODE) or "window" not in shape:
        return shape, flops
    w = np.asarray(shape["window"], dtype=float) + 0 * flops
    kv = np.asarray(shape["kv_len"], dtype=float) + 0 * flops
    windowed = np.isfinite(w) & (w > 0) & (w < kv)
    if not windowed.any():
        return shape, flops
    shape = dict(shape)
    if kind == ATTN_DECODE:  # only the last `window` keys are read and multiplied
        shape["kv_len"] = np.where(windowed, w, kv)
        return shape, np.asarray(op_cost(kind, shape, "bf16")[0], dtype=float)
    q = np.asarray(shape["q_len"], dtype=float) + 0 * flops
    ctx = kv - q  # cached keys before the first query
    full = q * ctx + q * (q + 1) / 2
    # query i (1-based) sees min(ctx + i, w) keys
    i0 = np.clip(w - ctx, 0, q)  # queries that still see fewer than w keys
    seen = i0 * ctx + i0 * (i0 + 1) / 2 + (q - i0) * w
    scale = np.where(windowed, seen / np.maximum(full, 1), 1.0)
    return shape, flops * scale


def roofline_ms(kind: str, shape: Mapping[str, object], dtype: str, kv_dtype: str | None,
                hw: HardwareSpec, *, warm_l2: bool = True) -> dict[str, np.ndarray]:
    """Roofline columns for operators of one kind on one device (vectorised over shape).

    ``warm_l2``: the op repeats on the same buffers (a microbenchmark), so the part of its
    working set that fits in L2 is read from L2. False inside a whole model step, where
    the other layers' weights evict it.
    """
    flops, _ = op_cost(kind, shape, dtype, kv_dtype)
    shape, flops = _window_adjust(kind, shape, np.asarray(flops, dtype=float))
    _, nbytes = op_cost(kind, shape, dtype, kv_dtype)
    flops = np.asarray(flops, dtype=float)
    nbytes = np.asarray(nbytes, dtype=float) + 0 * flops
    peak = hw.peak_flops(dtype)
    nodes = np.asarray(shape.get("nodes", 1), dtype=float) + 0 * flops
    nodes = np.where(np.isnan(nodes), 1, nodes)
    intra_bw, intra_lat = hw.link(1)
    inter_bw, inter_lat = hw.link(2)
    link_bw = np.where(nodes > 1, inter_bw, intra_bw)
    link_lat = np.where(nodes > 1, inter_lat, intra_lat)
    l2 = np.zeros_like(flops)
    t_issue = np.zeros_like(flops)
    if kind == ELEMENTWISE and "elements" in shape:
        el = np.nan_to_num(np.asarray(shape["elements"], dtype=float) + 0 * flops, nan=0.0)
        t_issue = el * ISSUE_CYCLES_PER_ELEMENT / hw.issue_rate
    if kind == COLLECTIVE:
        # Bandwidth term only: the spec-sheet per-hop latency is an empirical fudge that
        # one-shot custom all-reduce kernels beat, so it cannot be part of a lower bound;
        # it stays available as the hw_link_latency_us feature.
        bw = np.where(link_bw > 0, link_bw, hw.pcie_bw_gb_s * 1e9)  # PCIe cards ring over PCIe
        t_mem = nbytes / np.maximum(bw, 1.0)
        t_cmp = np.zeros_like(t_mem)
    else:
        t_cmp = flops / peak
        t_mem = nbytes / hw.mem_bw
        if warm_l2 and kind in L2_KINDS and hw.l2_cache_mb > 0:
            # Warm repeats: the part of the working set that fits in L2 streams from L2.
            cap = hw.l2_cache_mb * 1e6
            l2 = np.minimum(1.0, cap / np.maximum(nbytes, 1.0))
            l2_bw = (getattr(hw, "l2_bw_gb_s", 0.0) or 0.0) * 1e9 or L2_BW_FACTOR * hw.mem_bw
            t_mem = np.maximum(nbytes / l2_bw, np.maximum(nbytes - cap, 0.0) / hw.mem_bw)
    return {
        "flops": flops, "bytes": nbytes,
        "arith_intensity": flops / np.maximum(nbytes, 1.0),
        "t_compute_ms": t_cmp * 1e3, "t_memory_ms": t_mem * 1e3,
        "t_roofline_ms": np.maximum(t_cmp, t_mem) * 1e3,
        "l2_resident": l2,
        "hw_peak_tflops": np.full_like(flops, peak / 1e12),
        "hw_mem_bw_gb_s": np.full_like(flops, hw.mem_bw_gb_s),
        "hw_link_bw_gb_s": np.asarray(link_bw, dtype=float) / 1e9 + 0 * flops,
        "hw_link_latency_us": np.asarray(link_lat, dtype=float) * 1e6 + 0 * flops,
        "t_issue_ms": t_issue * 1e3,
        "hw_compute_units": np.full_like(flops, hw.compute_units or np.nan),  # NaN: not in the catalog
    }


def _step_roofline(model: str, kind: str, tp: int, batch: int, length: int, dtype: str | None,
                   kv_dtype: str | None, hw: HardwareSpec) -> tuple[float, float, float, float, float]:
    """(flops, bytes, t_compute_s, t_memory_s, t_roofline_s) of one whole step, summed serially."""
    from .models import resolve_model  # catalogs load lazily: most tables have no step rows
    spec = resolve_model(model)
    if kind == STEP_PREFILL:
        shape = BatchShape(prefill=tuple((length, length) for _ in range(batch)))
    else:
        shape = BatchShape(decode_kv=(length,) * batch)
    fl = by = tc = tm = tr = 0.0
    for op in expand_step(spec, shape, dtype=dtype or None, tp=tp, kv_dtype=kv_dtype or None):
        r = roofline_ms(op.kind, op.shape, op.dtype, op.kv_dtype, hw, warm_l2=False)
        fl += float(r["flops"]) * op.count
        by += float(r["bytes"]) * op.count
        tc += float(r["t_compute_ms"]) * 1e-3 * op.count
        tm += float(r["t_memory_ms"]) * 1e-3 * op.count
        tr += float(r["t_roofline_ms"]) * 1e-3 * op.count
    return fl, by, tc, tm, tr


def step_roofline_ms(kind: str, part: pd.DataFrame, dtype: str | None, kv_dtype: str | None,
                     hw: HardwareSpec) -> dict[str, np.ndarray]:
    """Roofline columns of whole-step rows: every row expanded with ``expand_step``."""
    length_col = "q_len" if kind == STEP_PREFILL else "kv_len"
    rows, cache = [], {}
    for key in zip(part["model"].astype(str), part["tp"].astype(int), part["batch"].astype(int),
                   part[length_col].round().astype(int)):
        if key not in cache:  # step tables repeat shapes: expand each once
            cache[key] = _step_roofline(key[0], kind, *key[1:], dtype, kv_dtype, hw)
        rows.append(cache[key])
    a = np.asarray(rows, dtype=float).reshape(-1, 5)
    fl, by, tc, tm, tr = a.T
    intra_bw, intra_lat = hw.link(1)
    n = len(part)
    peak = hw.peak_flops(dtype or "bf16")
    return {"flops": fl, "bytes": by, "arith_intensity": fl / np.maximum(by, 1.0),
            "t_compute_ms": tc * 1e3, "t_memory_ms": tm * 1e3, "t_roofline_ms": tr * 1e3,
            "l2_resident": np.zeros(n), "hw_peak_tflops": np.full(n, peak / 1e12),
            "hw_mem_bw_gb_s": np.full(n, hw.mem_bw_gb_s), "hw_link_bw_gb_s": np.full(n, intra_bw / 1e9),
            "hw_link_latency_us": np.full(n, intra_lat * 1e6), "t_issue_ms": np.zeros(n),
            "hw_compute_units": np.full(n, hw.compute_units or np.nan)}


def add_roofline_features(df: pd.DataFrame, catalog: HardwareCatalog) -> pd.DataFrame:
    """Return ``df`` with FEATURE_COLUMNS filled for every row (grouped by op, dtype, device).

    Rows on a device the catalog does not know, or whose model cannot be expanded, keep
    NaN features; ``roofline_problems`` says why so the caller can quarantine them.
    """
    out = df.reset_index(drop=True)
    feats = {c: np.full(len(out), np.nan) for c in FEATURE_COLUMNS}
    if out.empty:
        return out.assign(**feats)
    keys = ["op", "hardware", "dtype", "kv_dtype"]
    for c in keys:
        if c not in out:
            out[c] = None
    filled = out[keys].astype(object).where(out[keys].notna(), "")
    shape_cols = [c for c in SHAPE_COLUMNS if c in out]
    for (kind, hw_name, dtype, kv_dtype), pos in filled.groupby(keys, sort=False).indices.items():
        try:
            hw = catalog.get(hw_name)
        except HermesError:
            continue  # unknown device: roofline_problems reports these rows
        shape = {c: out[c].to_numpy()[pos] for c in shape_cols}  # only the shape, not 40 columns
        try:
            if kind in STEP_KINDS:
                r = step_roofline_ms(kind, pd.DataFrame(shape), dtype or None, kv_dtype or None, hw)
            else:
                r = roofline_ms(kind, shape, dtype or "bf16", kv_dtype or None, hw)
        except HermesError:
            continue  # e.g. a step row of a model the catalog lacks
        for c, v in r.items():
            feats[c][pos] = v
    return out.assign(**feats)


def roofline_problems(df: pd.DataFrame, catalog: HardwareCatalog,
                      sheets: dict[str, Path] | None = None) -> pd.Series:
    """Per row: why the roofline could not be computed ('' when it was). ``sheets``: spec-sheet
    files that came with the traces, by hardware name, named in the reason."""
    why = pd.Series("", index=df.index, dtype=object)
    missing = df["t_roofline_ms"].isna()
    if not missing.any():
        return why
    for name in df.loc[missing, "hardware"].dropna().unique():
        if name not in catalog:
            sheet = (sheets or {}).get(name)
            why[missing & (df["hardware"] == name)] = (
                f"hardware '{name}' is not in the catalog (add it with --catalog "
                + (f"{sheet}, its spec sheet that came with these traces)" if sheet else "FILE)"))
    for model in df.loc[missing & (why == ""), "model"].dropna().unique():
        try:
            from .models import resolve_model
            resolve_model(str(model))
        except HermesError as e:
            why[missing & (why == "") & (df["model"] == model)] = str(e).split(" (known")[0]
    why[missing & (why == "")] = "roofline could not be computed for this shape"
    return why
