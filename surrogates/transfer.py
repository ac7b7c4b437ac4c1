"""Pricing an operator on a GPU never measured: the transfer policy.

A GPU without training rows of a kind is priced by that kind's ``transfer`` pipeline, which
reads only roofline-normalised features of the GPU's spec sheet. That regressor saw only a
few values of each hardware feature, so on its own it extrapolates freely; this module holds
the rules that tie its answer back to the GPUs that were measured, applied in this order:

1. Dominance bounds (``dominance_bounds``): a GPU at least as good as a measured one on every
   spec a kernel can use is no slower than it (``DOMINANCE_KINDS``), and for ``FLOOR_KINDS``
   a GPU a measured one beats on every spec is no faster. Physics the regressor cannot know.
2. Sibling anchoring (``nearest_sibling``, ``anchor``): a GPU of the same chip family close on
   spec to a measured one (H200 ~ H100, B300 ~ B200) keeps that GPU's measured behaviour,
   blended in by spec distance. Never across families: their stacks and small-kernel
   overheads differ more than their spec sheets say.
3. Transfer intervals (``transfer_quantiles``, ``row_quantiles``): split-conformal quantiles
   of leave-one-GPU-out residuals, per dtype and kernel variant where there are enough of
   them, since dtypes and kernels transfer very differently.

``SurrogateModel.fit`` calls ``transfer_quantiles``; ``SurrogateModel.predict`` calls
``price_unseen``, ``row_quantiles`` (through ``KindModel.transfer_quantile``) and
``anchored_note``. The measurements behind each rule are in ``benchmarks/README.md``
(``surrogate_accuracy.py``, unseen-GPU hold-out).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from profiling.dtypes import normalize_dtype
from profiling.hardware import HardwareSpec

from .features import variant_keys

# Kinds whose prediction on a GPU never measured is capped by that of a measured GPU it
# dominates on spec. Not prefill: the engines' prefill kernels differ more across GPU
# generations than the spec sheets do, so the cap cost accuracy there.
DOMINANCE_KINDS = ("gemm", "attn_decode", "collective", "elementwise")
# Kinds also floored by a measured GPU that dominates them (no faster than a GPU better on
# every spec): it helped GEMMs, whose small kernels were priced too fast, and hurt the rest.
FLOOR_KINDS = ("gemm",)
# Sibling weight exp(-(d / SIBLING_SCALE)^2) at spec distance d (``spec_distance``): a renamed
# copy of a measured GPU (d = 0) is priced exactly as measured, and a far member of the family
# (A30 from A100, d = 1.35) gets no weight, where anchoring did not help.
SIBLING_SCALE = 0.5
SIBLING_MIN_WEIGHT = 0.01
# Leave-one-GPU-out residuals a dtype, or a dtype and kernel variant, needs for a transfer
# quantile of its own: one quantile pooled over all of them made a bf16 GEMM's interval far
# wider than its errors, because fp8 and fp4 kernels transfer much worse.
TRANSFER_QUANTILE_MIN_ROWS = 200

# The prediction on a measured GPU (by its spec sheet), and an anchor: (GPU, weight).
MeasuredMs = Callable[[HardwareSpec], np.ndarray]
Sibling = tuple[HardwareSpec, float]


def dominates(a: HardwareSpec, b: HardwareSpec, dtypes, link: bool) -> bool:
    """``a`` has at least ``b``'s memory bandwidth, board power (a lower power cap lowers
    sustained clocks, as Splitwise's power-capped H100 shows) and native peak FLOP/s in
    every dtype (a dtype ``b`` only emulates does not count), and with ``link`` at least
    its link."""
    if a.tdp_w < b.tdp_w:
        return False
    for d in dtypes:
        d = normalize_dtype(d)
        if d not in b.peak_tflops or a.peak_tflops.get(d, 0.0) < b.peak_tflops[d]:
            return False
    if link and (a.intra_node_bw_gb_s < b.intra_node_bw_gb_s or a.intra_node_latency_us > b.intra_node_latency_us):
        return False
    return a.mem_bw_gb_s >= b.mem_bw_gb_s


def spec_distance(a: HardwareSpec, b: HardwareSpec, dtypes, link: bool) -> float:
    """Log-space distance of two spec sheets on what a kernel can use: peak FLOP/s of each
    dtype the rows run (the farthest one counts), memory bandwidth, board power (a lower
    cap means lower sustained clocks) and with ``link`` the link bandwidth; infinite
    across chip families (or when either family is unknown) or when either lacks one of
    the dtypes natively."""
    arch = getattr(a, "arch", "")  # spec sheets pickled before the field: unknown
    if not arch or arch != getattr(b, "arch", "") or a.kind != b.kind:
        return float("inf")
    base = np.log(a.mem_bw_gb_s / b.mem_bw_gb_s) ** 2 + np.log(a.tdp_w / b.tdp_w) ** 2
    if link:
        if min(a.intra_node_bw_gb_s, b.intra_node_bw_gb_s) <= 0:
            return float("inf")
        base += np.log(a.intra_node_bw_gb_s / b.intra_node_bw_gb_s) ** 2
    worst = 0.0
    for d in dtypes:
        d = normalize_dtype(d)
        if d not in a.peak_tflops or d not in b.peak_tflops:
            return float("inf")
        worst = max(worst, np.log(a.peak_tflops[d] / b.peak_tflops[d]) ** 2)
    return float(np.sqrt(base + worst))


def nearest_sibling(hw: HardwareSpec, specs: Mapping[str, HardwareSpec], measured: Iterable[str],
                    dtypes=("bf16",), link: bool = False) -> Sibling | None:
    """The measured GPU (of ``measured``, with a spec sheet in ``specs``) that ``hw`` is
    anchored to, and the weight: the nearest on spec in the same chip family, None when its
    weight is negligible."""
    near = sorted((spec_distance(hw, specs[h], dtypes, link), h) for h in measured if h in specs)
    if not near or not np.isfinite(near[0][0]):
        return None
    w = float(np.exp(-(near[0][0] / SIBLING_SCALE) ** 2))
    return (specs[near[0][1]], w) if w >= SIBLING_MIN_WEIGHT else None


def dominance_bounds(kind: str, hw: HardwareSpec, specs: Mapping[str, HardwareSpec], measured: Iterable[str],
                     dtypes, ms: np.ndarray, measured_ms: MeasuredMs) -> np.ndarray:
    """``ms`` on a GPU never measured, no slower than a measured one it beats on every spec
    the kernel can use (memory bandwidth, board power, peak FLOP/s of each dtype the rows
    run, and for collectives the link), and for ``FLOOR_KINDS`` no faster than one that
    beats it. Where the measured GPUs contradict each other (floor above cap) the geometric
    mean of the two."""
    if kind not in DOMINANCE_KINDS:
        return ms
    hi, lo = np.full(len(ms), np.inf), np.zeros(len(ms))
    link = kind == "collective"
    for name in sorted(measured):
        ref = specs.get(name)  # absent in bundles pickled before spec sheets were kept
        if ref is None:
            continue
        if dominates(hw, ref, dtypes, link):
            hi = np.minimum(hi, measured_ms(ref))
        if kind in FLOOR_KINDS and dominates(ref, hw, dtypes, link):
            lo = np.maximum(lo, measured_ms(ref))
    # min(hi, lo) is hi where the bounds clash and lo elsewhere: never 0 x inf.
    return np.where(lo > hi, np.sqrt(lo * np.minimum(hi, lo)), np.clip(ms, lo, hi))


def anchor(kind: str, hw: HardwareSpec, sibling: Sibling, dtypes, raw: np.ndarray, bounded: np.ndarray,
           measured_ms: MeasuredMs, transfer_ms: MeasuredMs) -> np.ndarray:
    """``bounded`` (the dominance-bounded transfer prediction) blended in log space with the
    sibling's weight toward the sibling estimate: the sibling's measured-model prediction
    times the transfer model's ratio between the two GPUs (``raw`` / ``transfer_ms(sibling)``),
    no slower than the sibling when ``hw`` dominates it. The blend is the last step: a bound
    from a measured GPU of another family must not pull a twin of H100 off H100's
    measurements."""
    ref, w = sibling
    est = measured_ms(ref) * raw / transfer_ms(ref)
    if kind in DOMINANCE_KINDS and dominates(hw, ref, dtypes, kind == "collective"):
        est = np.minimum(est, measured_ms(ref))
    return np.exp((1 - w) * np.log(bounded) + w * np.log(est))


def price_unseen(kind: str, hw: HardwareSpec, shapes: pd.DataFrame, raw: np.ndarray,
                 specs: Mapping[str, HardwareSpec], measured: Iterable[str], measured_ms: MeasuredMs,
                 transfer_ms: MeasuredMs) -> tuple[np.ndarray, Sibling | None]:
    """Latency (ms) of ``shapes`` on ``hw``, a GPU without training rows of ``kind``: the
    transfer pipeline's ``raw`` prediction bounded by the measured GPUs (names ``measured``,
    spec sheets ``specs``, predictions ``measured_ms``) and anchored to the nearest sibling,
    whose transfer-pipeline prediction is ``transfer_ms``. Returns (ms, (sibling, weight) or
    None)."""
    dtypes = shape_dtypes(shapes)
    measured = list(measured)
    bounded = dominance_bounds(kind, hw, specs, measured, dtypes, raw, measured_ms)
    sibling = nearest_sibling(hw, specs, measured, dtypes, kind == "collective")
    if sibling is None:
        return bounded, None
    return anchor(kind, hw, sibling, dtypes, raw, bounded, measured_ms, transfer_ms), sibling


def anchored_note(sibling: Sibling | None) -> str:
    """The note's clause naming the measured GPU a prediction is anchored to."""
    return f", anchored to the measured {sibling[0].name} (weight {sibling[1]:.2f})" if sibling else ""


def shape_dtypes(shapes: pd.DataFrame) -> np.ndarray:
    """The distinct dtypes the rows run (bf16 where none is given)."""
    return shapes["dtype"].fillna("bf16").astype(str).unique() if "dtype" in shapes else np.array(["bf16"])


def row_dtypes(frame: pd.DataFrame) -> np.ndarray:
    """Each row's dtype (bf16 where none is given)."""
    if "dtype" not in frame:
        return np.full(len(frame), "bf16", dtype=object)
    return frame["dtype"].fillna("bf16").astype(str).to_numpy(dtype=object)


def named_variants(kind: str, shapes: pd.DataFrame, frame: pd.DataFrame) -> np.ndarray:
    """Kernel variant of each query row that named a stack or kernel, else "" (the engine's
    choice, filled into ``frame``: sized by its dtype's quantile, since what it is scored
    against is the fastest kernel measured, not the chosen variant's own times)."""
    named = np.zeros(len(shapes), bool)
    for c in ("stack", "kernel"):
        if c in shapes:
            named |= shapes[c].notna().to_numpy()
    return np.where(named, variant_keys(kind, frame).to_numpy(dtype=object), "")


def transfer_quantiles(kind: str, train: pd.DataFrame, fit: Callable[[pd.DataFrame], Pipeline],
                       quantile: Callable[[np.ndarray], float]) -> tuple[float, dict[str, float]]:
    """Interval half-widths (log) for a GPU never measured, from honest residuals: each GPU of
    ``train`` left out once, predicted by ``fit`` (a transfer pipeline trained on the rows of
    the others). Returns the pooled ``quantile`` of the absolute log residuals, and one per
    "dtype" and per "dtype|kernel variant" with at least ``TRANSFER_QUANTILE_MIN_ROWS``."""
    resid, dts, var = [], [], []
    for h in sorted(train["hardware"].unique()):
        tr, te = train[train["hardware"] != h], train[train["hardware"] == h]
        p = fit(tr)
        resid.append(np.abs(np.log(te["latency_ms"].to_numpy() / p.predict(te))))
        dts.append(row_dtypes(te))
        var.append(variant_keys(kind, te).to_numpy(dtype=object))
    r, d = np.concatenate(resid), np.concatenate(dts)
    dv = d + "|" + np.concatenate(var)
    by = {str(x): quantile(r[key == x]) for key in (d, dv) for x in np.unique(key)
          if (key == x).sum() >= TRANSFER_QUANTILE_MIN_ROWS}
    return quantile(r), by


def row_quantiles(by: Mapping[str, float], pooled: float, dtypes: np.ndarray, variants: np.ndarray) -> np.ndarray:
    """Per-row interval half-width (log) on a GPU never measured: that of the row's dtype and
    kernel variant ("" for none) in ``by``, else of its dtype, else ``pooled``."""
    return np.array([by.get(f"{d}|{v}", by.get(str(d), pooled)) for d, v in zip(dtypes, variants)], dtype=float)
