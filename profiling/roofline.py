"""Roofline features: the fastest a kernel could run on a device's spec sheet.

``t_roofline = max(FLOPs / peak, bytes / bandwidth)``; collectives use the link the
ring crosses (NVLink-class within a node, the NIC across nodes) plus per-hop latency.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from .errors import HermesError
from .hardware import HardwareCatalog, HardwareSpec
from .operators import COLLECTIVE, Operator, op_cost

FEATURE_COLUMNS = ("flops", "bytes", "arith_intensity", "t_compute_ms", "t_memory_ms",
                   "t_roofline_ms", "hw_peak_tflops", "hw_mem_bw_gb_s", "hw_link_bw_gb_s",
                   "hw_link_latency_us")


def roofline_ms(kind: str, shape: Mapping[str, object], dtype: str, kv_dtype: str | None,
                hw: HardwareSpec) -> dict[str, np.ndarray]:
    """Roofline columns for operators of one kind on one device (vectorised over shape)."""
    flops, nbytes = op_cost(kind, shape, dtype, kv_dtype)
    peak = hw.peak_flops(dtype)
    nodes = np.asarray(shape.get("nodes", 1) if hasattr(shape, "get") else 1, dtype=float)
    nodes = np.where(np.isnan(nodes), 1, nodes)
    intra_bw, intra_lat = hw.link(1)
    inter_bw, inter_lat = hw.link(2)
    link_bw = np.where(nodes > 1, inter_bw, intra_bw)
    link_lat = np.where(nodes > 1, inter_lat, intra_lat)
    if kind == COLLECTIVE:
        world = np.asarray(shape["world"], dtype=float)
        hops = np.where(np.asarray(shape["collective"]) == "send_recv", 1.0, np.maximum(world - 1, 1))
        # A device with no fast link (PCIe cards) rings over PCIe.
        bw = np.where(link_bw > 0, link_bw, hw.pcie_bw_gb_s * 1e9)
        t_mem = nbytes / np.maximum(bw, 1.0) + hops * link_lat
        t_cmp = np.zeros_like(t_mem)
    else:
        t_cmp = flops / peak
        t_mem = nbytes / hw.mem_bw
    flops = np.asarray(flops, dtype=float)
    return {
        "flops": flops, "bytes": np.asarray(nbytes, dtype=float),
        "arith_intensity": flops / np.maximum(nbytes, 1.0),
        "t_compute_ms": t_cmp * 1e3, "t_memory_ms": t_mem * 1e3,
        "t_roofline_ms": np.maximum(t_cmp, t_mem) * 1e3,
        "hw_peak_tflops": np.full_like(flops, peak / 1e12),
        "hw_mem_bw_gb_s": np.full_like(flops, hw.mem_bw_gb_s),
        "hw_link_bw_gb_s": np.asarray(link_bw, dtype=float) / 1e9 + 0 * flops,
        "hw_link_latency_us": np.asarray(link_lat, dtype=float) * 1e6 + 0 * flops,
    }


def operator_roofline_s(op: Operator, hw: HardwareSpec) -> float:
    """Roofline time in seconds of one operator instance times its count."""
    r = roofline_ms(op.kind, op.shape, op.dtype, op.kv_dtype, hw)
    return float(r["t_roofline_ms"]) * 1e-3 * op.count


def add_roofline_features(df: pd.DataFrame, catalog: HardwareCatalog) -> pd.DataFrame:
    """Return ``df`` with FEATURE_COLUMNS filled for every row (grouped by op, dtype, device)."""
    out = df.copy()
    for c in FEATURE_COLUMNS:
        out[c] = np.nan
    if out.empty:
        return out
    keys = ["op", "hardware", "dtype", "kv_dtype"]
    filled = out[keys].astype(object).where(out[keys].notna(), "")
    for (kind, hw_name, dtype, kv_dtype), idx in filled.groupby(keys, dropna=False).groups.items():
        try:
            hw = catalog.get(hw_name)
        except HermesError:
            continue  # unknown device: the caller reports these rows
        part = out.loc[idx]
        shape = {c: part[c].to_numpy() for c in part.columns}
        feats = roofline_ms(kind, shape, dtype or "bf16", kv_dtype or None, hw)
        for c, v in feats.items():
            out.loc[idx, c] = v
    return out
