"""Which few kernels to measure on a new GPU: a greedy optimal design over shape space.

A new GPU's latencies are the spec-sheet transfer prediction times a correction, the log
ratio ``r(x)`` of measured to predicted; ``surrogates/few_rows.py`` fits ``r`` with a
Gaussian process on the rows measured. Before anything is measured that process already
says how much a measurement would narrow its interval: its posterior variance depends on
the shapes measured, never on their latencies. ``greedy_plan`` picks, one kernel at a time,
the candidate (of any op kind) whose measurement lowers the mean posterior variance over
all of its kind's candidates the most, relative to that kind's prior (integrated-variance,
or I-optimal, sequential design; the prior's size comes from the surrogate's transfer
interval, its ratio to the noise decides when a kind stops paying).

The candidates are the shapes the user's deployments run (``deployment_candidates``: every
GEMM, attention core and all-reduce of the step-table grids of each model and TP) or any
table of shapes (a trace table of another GPU). The process's inputs are fixed (``embed``:
log2 shape columns and FLOPs per byte in units of a factor of 4, the kernel variant, and
``basis_`` columns a caller may add), so the plan and the correction that uses its rows see
the same space.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import HermesError
from .hardware import HardwareSpec
from .models import ModelSpec
from .operators import ATTN_DECODE, ATTN_PREFILL, COLLECTIVE, GEMM, BatchShape, attention_ops, layer_ops, op_cost
from .roofline import roofline_ms
from .schema import COLUMNS, conform

PLAN_KINDS = (GEMM, ATTN_PREFILL, ATTN_DECODE, COLLECTIVE)
# Shape columns the correction's kernel compares, per kind (the regressors' shape columns,
# less the elementwise kinds a plan does not profile).
SPACE_COLUMNS: dict[str, tuple[str, ...]] = {
    GEMM: ("m", "n", "k"),
    ATTN_PREFILL: ("batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim"),
    ATTN_DECODE: ("batch", "kv_len", "heads", "kv_heads", "head_dim"),
    COLLECTIVE: ("msg_bytes", "world"),
}
# One unit of the embedding: a factor of 4 in a shape column.
LOG_UNIT = 2.0
# Columns of a candidate table that enter the covariance linearly (``GPPrior.basis``).
BASIS_PREFIX = "basis_"
# What measuring one kernel costs on the GPU (``kernel_ms``, what ``--minutes`` spends): its
# untimed and timed runs, each the roofline time plus a launch-and-sync, and a fixed set-up per
# shape (allocating and filling the inputs, the library's first-call algorithm choice, the
# Python between shapes). SETUP_MS is an assumed figure: no GPU here to measure it on.
LAUNCH_MS = 0.01
WARMUP_RUNS, TIMED_RUNS = 3, 10
SETUP_MS = 50.0


@dataclass(frozen=True)
class GPPrior:
    """Prior of the log correction ``r(x)`` of one op kind, as variances in log units:
    a level shared by all shapes, an offset per kernel variant, a smooth curve over shape
    (RBF with ``lengthscale`` embedding units) and measurement noise."""

    level: float = 0.06
    variant: float = 0.03
    shape: float = 0.03
    lengthscale: float = 1.5
    # What the smooth curve leaves (tile and wave steps, a 3% measurement) acts as noise: ~10%.
    noise: float = 0.01
    # Weight of the linear kernel on ``BASIS_PREFIX`` columns (log ratios of what measured
    # GPUs would take to the transfer prediction: the new GPU as a blend of their curves).
    basis: float = 0.5

    def scaled(self, q90: float) -> "GPPrior":
        """This prior with its total sd set from a 90% interval half-width ``q90`` (log)."""
        if not np.isfinite(q90) or q90 <= 0:
            return self
        total = (q90 / 1.645) ** 2
        f = total / (self.level + self.variant + self.shape)
        return GPPrior(self.level * f, self.variant * f, self.shape * f, self.lengthscale, self.noise, self.basis)


def variant_of(frame: pd.DataFrame) -> np.ndarray:
    """Kernel variant of each row: the stack's name (without version) and the kernel."""
    stack = frame["stack"] if "stack" in frame else pd.Series("", index=frame.index)
    kernel = frame["kernel"] if "kernel" in frame else pd.Series("", index=frame.index)
    s = stack.fillna("").astype(str).str.split(" ").str[0]
    return (s + "|" + kernel.fillna("").astype(str)).to_numpy(dtype=object)


def embed(kind: str, frame: pd.DataFrame) -> np.ndarray:
    """Rows of ``frame`` as points of the kind's shape space (log2 units of ``LOG_UNIT``;
    a missing column or value counts as 1), plus FLOPs per byte for the compute kinds (at
    the first row's dtype: a plan is per dtype)."""
    cols = []
    for c in SPACE_COLUMNS[kind]:
        v = frame[c].to_numpy(dtype=float) if c in frame else np.ones(len(frame))
        cols.append(np.log2(np.maximum(np.nan_to_num(v, nan=1.0), 1.0)) / LOG_UNIT)
    if kind != COLLECTIVE:  # FLOPs per byte: compute- or memory-bound, on any GPU
        shape = {c: frame[c].to_numpy(dtype=float) for c in frame.columns if c in SPACE_COLUMNS[kind]}
        dt = str(frame["dtype"].iloc[0]) if "dtype" in frame and len(frame) and pd.notna(frame["dtype"].iloc[0]) \
            else "bf16"
        fl, by = op_cost(kind, {**{"window": np.zeros(len(frame))}, **shape}, dt, None)
        ai = np.asarray(fl, dtype=float) / np.maximum(np.asarray(by, dtype=float), 1.0)
        cols.append(np.log2(np.maximum(np.nan_to_num(ai, nan=1.0), 1e-3)) / LOG_UNIT)
    return np.column_stack(cols) if cols else np.zeros((len(frame), 0))


def basis_of(frame: pd.DataFrame) -> np.ndarray:
    """The rows' ``BASIS_PREFIX`` columns (none: an empty matrix)."""
    cols = sorted(c for c in frame.columns if str(c).startswith(BASIS_PREFIX))
    return frame[cols].to_numpy(dtype=float) if cols else np.zeros((len(frame), 0))


def covariance(za: np.ndarray, va: np.ndarray, zb: np.ndarray, vb: np.ndarray, prior: GPPrior,
               xa: np.ndarray | None = None, xb: np.ndarray | None = None) -> np.ndarray:
    """Prior covariance of ``r`` between two sets of points (shape ``z``, variant ``v``,
    basis columns ``x``)."""
    d2 = ((za[:, None, :] - zb[None, :, :]) ** 2).sum(-1)
    same = (va[:, None] == vb[None, :]).astype(float)
    out = prior.level + prior.variant * same + prior.shape * np.exp(-0.5 * d2 / prior.lengthscale ** 2)
    if xa is not None and xb is not None and xa.shape[1] and prior.basis:
        out = out + prior.basis * (xa @ xb.T)
    return out


class _Greedy:
    """Posterior covariance of ``r`` over one kind's candidates as points are added; each
    candidate's score is how much measuring it would lower the mean variance over all the
    candidates (integrated variance: it prefers shapes that stand for many others over the
    extreme corners plain maximum variance picks), relative to the prior's."""

    def __init__(self, kind: str, frame: pd.DataFrame, prior: GPPrior, weight: float,
                 target: pd.DataFrame | None = None):
        z, v, x = embed(kind, frame), variant_of(frame), basis_of(frame)
        center = np.median(x, axis=0) if len(x) else 0.0  # the level term owns the offset
        x = x - center
        self.cov = covariance(z, v, z, v, prior, x, x)
        self.prior, self.chosen = prior, []
        self.norm = weight / float(np.trace(self.cov))
        # Shapes the deployments query (``targets``): half the score is their variance, so a
        # pool of another GPU's table is measured where the step tables will look, not only
        # where that table happens to be dense.
        self.cross = None
        if target is not None and len(target):
            zt, vt = embed(kind, target), variant_of(target)
            xt = basis_of(target) - center if x.shape[1] else None
            self.cross = covariance(zt, vt, z, v, prior, xt, x if x.shape[1] else None)
            prior_t = prior.level + prior.variant + prior.shape + (
                prior.basis * (xt ** 2).sum(1) if xt is not None else 0.0)
            self.norm_t = weight / float(np.sum(prior_t))
        self._best: tuple[float, int] | None = None  # only the kind just added to changes

    def best(self) -> tuple[float, int]:
        if self._best is None:
            denom = np.diag(self.cov) + self.prior.noise
            gain = (self.cov ** 2).sum(0) / denom * self.norm
            if self.cross is not None:
                gain = 0.5 * gain + 0.5 * (self.cross ** 2).sum(0) / denom * self.norm_t
            gain[self.chosen] = -np.inf
            i = int(np.argmax(gain))
            self._best = (float(gain[i]), i)
        return self._best

    def add(self, i: int) -> None:
        c = self.cov[:, i].copy()
        if self.cross is not None:
            self.cross -= np.outer(self.cross[:, i], c) / (c[i] + self.prior.noise)
        self.cov -= np.outer(c, c) / (c[i] + self.prior.noise)
        self.chosen.append(i)
        self._best = None


def greedy_plan(pools: Mapping[str, pd.DataFrame], budget: int | None, priors: Mapping[str, GPPrior] | None = None,
                weights: Mapping[str, float] | None = None, *, cost_ms: Mapping[str, np.ndarray] | None = None,
                max_ms: float | None = None, targets: Mapping[str, pd.DataFrame] | None = None
                ) -> list[tuple[str, int]]:
    """Up to ``budget`` (None: no cap) (kind, position in that kind's pool) pairs in the order
    chosen, each the candidate whose measurement lowers its kind's mean posterior variance
    most, relative to the kind's prior, times its kind's ``weights`` (default 1). With
    ``cost_ms`` (per kind, per candidate) and ``max_ms`` the plan stops before the first
    choice whose cost would take the total past ``max_ms``: a prefix of the same order, so a
    larger ``max_ms`` never plans fewer kernels. With ``targets`` (per kind, the shapes the
    deployments' step tables query, e.g. ``deployment_candidates``; same columns as the pool)
    half of each score is the variance lowered on them: the pool is what can be measured,
    the targets what must be predicted. Deterministic: ties go to the first."""
    if budget is not None and budget < 1:
        raise HermesError(f"budget must be at least 1 kernel (got {budget})")
    if max_ms is not None and (cost_ms is None or max_ms <= 0):
        raise HermesError(f"a time budget needs a positive limit and each candidate's cost (got {max_ms} ms)")
    state = {k: _Greedy(k, p.reset_index(drop=True), (priors or {}).get(k, GPPrior()), (weights or {}).get(k, 1.0),
                        (targets or {}).get(k))
             for k, p in pools.items() if len(p)}
    order: list[tuple[str, int]] = []
    total = sum(len(p) for p in pools.values())
    spent = 0.0
    for _ in range(total if budget is None else min(budget, total)):
        _, kind, i = _pick(state)
        if i < 0:
            break
        if max_ms is not None:
            spent += float(cost_ms[kind][i])
            if spent > max_ms:
                break
        state[kind].add(i)
        order.append((kind, i))
    return order


def by_kind(order: Iterable[tuple[str, int]]) -> dict[str, np.ndarray]:
    """A plan's order as positions per kind."""
    out: dict[str, list[int]] = {}
    for k, i in order:
        out.setdefault(k, []).append(i)
    return {k: np.array(v, dtype=int) for k, v in out.items()}


def _pick(state: Mapping[str, _Greedy]) -> tuple[float, str, int]:
    best = (-np.inf, "", -1)
    for k in sorted(state):
        s, i = state[k].best()
        if s > best[0]:
            best = (s, k, i)
    return best


# ---- candidates -------------------------------------------------------------

def _geom(lo: int, hi: int, points: int) -> np.ndarray:
    return np.unique(np.round(np.geomspace(lo, hi, points)).astype(np.int64))


def deployment_candidates(models: Iterable[ModelSpec], tps: Iterable[int], *, dtype: str = "bf16",
                          max_tokens: int = 16384, max_batch: int = 512, max_kv: int | None = None,
                          points: int = 16) -> dict[str, pd.DataFrame]:
    """Distinct kernel shapes per kind that the step tables of each (model, TP) query:
    the token-wise GEMMs and all-reduces over a token grid, the LM head over a sequence
    grid, decode attention over (sequences, KV length), prefill over (chunk, context)."""
    rows: dict[str, list[dict]] = {k: [] for k in PLAN_KINDS}
    tok = _geom(1, max_tokens, points)
    for model in models:
        kv_hi = max_kv or min(max(model.max_context, 2048), 131072)
        for tp in tps:
            for t in tok:
                for o in layer_ops(model, int(t), tp, dtype):
                    if o.kind in (GEMM, COLLECTIVE):
                        rows[o.kind].append({**o.shape, "dtype": o.dtype, "name": o.name})
            for b in _geom(1, max_batch, points):
                rows[GEMM].append({"m": int(b), "n": -(-model.vocab_size // tp), "k": model.hidden_size,
                                   "dtype": dtype, "name": "lm_head"})
                for kv in _geom(16, kv_hi, points):
                    for o in attention_ops(model, BatchShape(decode_kv=(int(kv),) * int(b)), tp, dtype):
                        rows[o.kind].append({**o.shape, "dtype": o.dtype, "kv_dtype": o.kv_dtype, "name": o.name})
            for q in tok:
                for prefix in np.concatenate([[0], _geom(16, kv_hi, points // 2)]):
                    if q + prefix > kv_hi:
                        continue
                    for o in attention_ops(model, BatchShape(prefill=((int(q), int(q + prefix)),)), tp, dtype):
                        rows[o.kind].append({**o.shape, "dtype": o.dtype, "kv_dtype": o.kv_dtype, "name": o.name})
    out = {}
    for k, r in rows.items():
        if r:
            f = pd.DataFrame(r)
            keys = [c for c in (*SPACE_COLUMNS[k], "collective", "dtype", "kv_dtype") if c in f]
            out[k] = f.assign(op=k).drop_duplicates(subset=keys).reset_index(drop=True)
    if not out:
        raise HermesError("no kernel shapes to plan from (no models or TP degrees)")
    return out


def estimated_ms(kind: str, frame: pd.DataFrame, hw: HardwareSpec) -> np.ndarray:
    """Roofline time of one run of each row on ``hw`` (ms), floored by a launch."""
    dt = frame["dtype"].fillna("bf16").astype(str) if "dtype" in frame else pd.Series("bf16", index=frame.index)
    kv = frame["kv_dtype"] if "kv_dtype" in frame else pd.Series(None, index=frame.index, dtype=object)
    out = np.zeros(len(frame))
    for (d, k), idx in pd.DataFrame({"d": dt, "k": kv.fillna("")}).groupby(["d", "k"]).indices.items():
        part = frame.iloc[idx]
        shape = {c: part[c].to_numpy() for c in part.columns}
        out[idx] = roofline_ms(kind, shape, d, k or None, hw)["t_roofline_ms"]
    return np.maximum(out, 0.0) + LAUNCH_MS


def kernel_ms(kind: str, frame: pd.DataFrame, hw: HardwareSpec) -> np.ndarray:
    """Estimated GPU time of measuring each row on ``hw`` (ms): ``SETUP_MS`` plus
    ``WARMUP_RUNS + TIMED_RUNS`` runs of ``estimated_ms``."""
    return SETUP_MS + (WARMUP_RUNS + TIMED_RUNS) * estimated_ms(kind, frame, hw)


def plan_table(pools: Mapping[str, pd.DataFrame], order: list[tuple[str, int]], hw: HardwareSpec) -> pd.DataFrame:
    """The chosen rows (``greedy_plan``'s order) as a canonical trace table without
    latencies, on ``hw``, with each kernel's estimated GPU time of measuring it (``est_gpu_ms``,
    ``kernel_ms``) and the order chosen (``plan_rank``: measure from the top if time
    runs short, the first rows narrow the intervals most)."""
    if not order:
        return conform(pd.DataFrame(columns=list(COLUMNS)))
    parts = []
    for rank, (kind, i) in enumerate(order):
        parts.append(pools[kind].reset_index(drop=True).iloc[[i]].assign(op=kind, plan_rank=rank))
    frame = pd.concat(parts, ignore_index=True)
    est = np.zeros(len(frame))
    for kind, idx in frame.groupby("op").indices.items():
        est[idx] = kernel_ms(kind, frame.iloc[idx], hw)
    rank = frame["plan_rank"].to_numpy()
    frame = frame.assign(hardware=hw.name, latency_ms=np.nan, source="plan")
    out = conform(frame[[c for c in frame.columns if c in COLUMNS]])
    out["est_gpu_ms"] = est
    out["plan_rank"] = rank
    return out
