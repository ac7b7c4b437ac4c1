"""Compiled step tables: evaluate an operator-latency predictor once on grids so the
simulator pays a few array lookups per step, not a model call.

A step's time is split by what it scales with:
* token-wise operators (GEMMs, norms, activations, TP collectives) — total new tokens;
* LM head — sequences in the batch;
* decode attention — decoding sequences x their mean KV length;
* prefill attention — each chunk's new tokens x the context before it (every grid point
  is a real chunk, so bilinear interpolation never mixes in a clamped corner).
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression

from profiling.dtypes import dtype_bytes
from profiling.hardware import HardwareSpec
from profiling.models import ModelSpec
from profiling.operators import (ATTN_DECODE, ATTN_PREFILL, COLLECTIVE, GEMM, BatchShape, Operator,
                                 activation_dtype, attention_ops, expand_step, layer_ops, stage_layers,
                                 windowed_prefill)
from profiling.roofline import roofline_ms

from .grouped_gemm import GROUPED_GEMM


class OpLatencyModel(Protocol):
    """Anything that predicts kernel latency (ms) for rows of one operator kind."""

    def predict_ms(self, kind: str, shapes: pd.DataFrame, hw: HardwareSpec) -> np.ndarray: ...


class CollectiveKernel(Protocol):
    """The all-reduce kernel a serving engine runs for a message of ``msg_bytes``: (stack,
    kernel) as the kernel traces name them, or None for the predictor's own choice. Hashable
    (step tables are memoized on it); ``edges``, if present, lists the message sizes (bytes)
    where the choice changes, so the token grid holds both sides of each."""

    def __call__(self, msg_bytes: float) -> tuple[str, str] | None: ...


@dataclass(frozen=True)
class RooflinePredictor:
    """Spec-sheet baseline: roofline time divided by a fixed achievable efficiency."""

    compute_eff: float = 0.7
    memory_eff: float = 0.8
    link_eff: float = 0.75

    def predict_ms(self, kind: str, shapes: pd.DataFrame, hw: HardwareSpec) -> np.ndarray:
        cols = {c: shapes[c].to_numpy() for c in shapes.columns}
        dtype = str(shapes["dtype"].iloc[0]) if "dtype" in shapes else "bf16"
        kv = shapes["kv_dtype"].iloc[0] if "kv_dtype" in shapes else None
        r = roofline_ms(kind, cols, dtype, kv if isinstance(kv, str) else None, hw)
        eff_mem = self.link_eff if kind == "collective" else self.memory_eff
        return np.maximum(r["t_compute_ms"] / self.compute_eff, r["t_memory_ms"] / eff_mem)


def dram_floor_ms(kind: str, frame: pd.DataFrame, hw: HardwareSpec) -> np.ndarray:
    """The least time (ms) a step's GEMM can take to read its weights, and a decode attention
    its KV cache, from DRAM. Kernel microbenchmarks repeat one kernel on the same buffers, so
    a working set that fits in L2 is served warm and a regressor learns times below this; in a
    model step every other layer's weights and KV pass through L2 in between, so these bytes
    come from DRAM. 0 for the other kinds (their activations are the previous kernel's output,
    warm in L2 in a step too)."""
    n = len(frame)
    if kind not in (GEMM, ATTN_DECODE) or not n or hw.mem_bw <= 0:
        return np.zeros(n)
    col = lambda c: frame[c].to_numpy(dtype=float) if c in frame else np.ones(n)  # noqa: E731
    dt = frame["dtype"].iloc[0] if "dtype" in frame else "bf16"
    if kind == GEMM:
        nbytes = col("n") * col("k") * dtype_bytes(str(dt))
    else:
        kv = frame["kv_dtype"].iloc[0] if "kv_dtype" in frame else None
        kvb = dtype_bytes(str(kv)) if isinstance(kv, str) and kv else dtype_bytes(str(dt))
        kv_len = col("kv_len")
        if "window" in frame:  # a sliding-window layer reads only its last ``window`` keys
            w = np.nan_to_num(col("window"), nan=0.0)
            kv_len = np.where((w > 0) & (w < kv_len), w, kv_len)
        nbytes = col("batch") * 2 * kv_len * col("kv_heads") * col("head_dim") * kvb
    return np.nan_to_num(nbytes) / hw.mem_bw * 1e3


def ops_ms(ops: Sequence[Operator], hw: HardwareSpec, predictor: OpLatencyModel) -> float:
    """Predicted time (ms) of a list of operators, summed without a step table (the direct
    figure a compiled table's lookup is checked against)."""
    return float(_ops_ms_each([ops], hw, predictor)[0])


_ops_ms = ops_ms  # the earlier private name, still imported by tests


def _ops_ms_each(op_lists: Sequence[Sequence[Operator]], hw: HardwareSpec,
                 predictor: OpLatencyModel, collective_kernel: CollectiveKernel | None = None,
                 log: set[str] | None = None) -> np.ndarray:
    """Predicted time (ms) of each list of operators, with one predictor call per kind and
    dtypes for all lists together (a frame carries one dtype: a quantized MoE step has
    16-bit router and attention GEMMs beside fp4 expert GEMMs). With ``collective_kernel``
    each all-reduce is priced on the kernel it names (``_collective_ms``; ``log`` collects how)."""
    by_kind: dict[tuple, list[tuple[int, Operator]]] = {}
    for i, ops in enumerate(op_lists):
        for o in ops:
            by_kind.setdefault((o.kind, o.dtype, o.kv_dtype), []).append((i, o))
    total = np.zeros(len(op_lists))
    for (kind, dtype, kv_dtype), group in by_kind.items():
        frame = pd.DataFrame([o.shape for _, o in group])
        frame["dtype"] = dtype
        frame["kv_dtype"] = kv_dtype
        frame["name"] = [o.name for _, o in group]  # elementwise kernel family (norm, rope, ...)
        if kind == COLLECTIVE and collective_kernel is not None:
            picks = [collective_kernel(o.shape["msg_bytes"]) if o.shape.get("collective") == "all_reduce"
                     else None for _, o in group]
            ms = _collective_ms(predictor, frame, hw, picks, log if log is not None else set())
        else:
            ms = np.maximum(predictor.predict_ms(kind, frame, hw), dram_floor_ms(kind, frame, hw))
        # a grouped expert GEMM runs slower than the dense GEMM of its shape (grouped_gemm.py)
        ms = ms * np.array([o.count * (GROUPED_GEMM(o.shape["m"], o.groups) if o.groups > 1 else 1.0)
                            for _, o in group], dtype=float)
        total += np.bincount([i for i, _ in group], weights=ms, minlength=len(op_lists))
    return total


# A collective moves bytes: a kernel traced only in the other 16-bit dtype (AIConfigurator's
# NCCL tables are fp16) prices a message of the same size.
_SAME_WIDTH = {"bf16": "fp16", "fp16": "bf16"}


def _collective_ms(predictor: OpLatencyModel, frame: pd.DataFrame, hw: HardwareSpec,
                   picks: Sequence[tuple[str, str] | None], log: set[str]) -> np.ndarray:
    """Latency (ms) of collective rows, each row with a (stack, kernel) in ``picks`` priced on
    that kernel where the predictor measured it on ``hw`` (in the row's dtype, else the other
    16-bit one); where it did not, the predictor's own choice (its fastest measured kernel).
    Whether a kernel was measured is read from the provenance of the rows the predictor's own
    choice prices as trained; with none (a GPU without collective traces) the named kernel's
    extrapolation stands. A predictor without provenance (the roofline) has no kernels: its
    figure stands. ``log`` gets one line per kernel saying how it was priced."""
    predict = getattr(predictor, "predict", None)
    kernels = sorted({p for p in picks if p is not None})
    if predict is None:
        log.update(f"{k}: not modelled by {type(predictor).__name__}" for _, k in kernels)
        return predictor.predict_ms(COLLECTIVE, frame, hw)
    plain = predict(COLLECTIVE, frame, hw)
    ms = np.asarray(plain.ms, dtype=float).copy()
    known = np.asarray(plain.provenance) == "trained"
    for stack, kernel in kernels:
        idx = np.flatnonzero([p == (stack, kernel) for p in picks])
        sub = frame.iloc[idx].reset_index(drop=True).assign(stack=stack, kernel=kernel)
        probe = known[idx]
        how = "extrapolated (no collective traces of these sizes on this GPU)"
        for dt in (None, *sorted(set(sub["dtype"].map(_SAME_WIDTH).dropna()))):
            q = sub if dt is None else sub.assign(dtype=dt)
            named = predict(COLLECTIVE, q, hw)
            measured = bool((np.asarray(named.provenance)[probe] == "trained").any())
            if measured or not probe.any():  # measured here, or nothing is to tell
                ms[idx] = named.ms
                how = ("trained" if dt is None else f"trained on its {dt} traces") if measured else how
                break
        else:
            how = f"not measured on {hw.name}: priced as the predictor's fastest measured kernel"
        log.add(f"{kernel}: {how}")
    return ms


def _grid(lo: int, hi: int, points: int) -> np.ndarray:
    return np.unique(np.round(np.geomspace(lo, hi, points)).astype(np.int64))


# GEMM latency steps up just past each multiple of the kernels' tile rows (m = 512 and 513
# differ by a whole tile row: +11% for Llama-2-7B's layer at TP2 on H100): the token and
# sequence grids hold every tile edge and the row after it (as the measured GEMM grids
# do), so interpolating between grid points never smears a step over hundreds of tokens.
_TILE_EDGES = ((16, 128), (32, 256), (64, 4096), (256, 16384))  # (spacing, up to)


def _edge_grid(lo: int, hi: int, points: int) -> np.ndarray:
    """The geometric grid plus each tile edge ``e`` and ``e + 1`` up to ``hi``."""
    edges = [np.arange(step, min(upto, hi) + 1, step) for step, upto in _TILE_EDGES]
    e = np.concatenate(edges) if edges else np.zeros(0, np.int64)
    both = np.concatenate([_grid(lo, hi, points), e, e + 1])
    return np.unique(both[(both >= lo) & (both <= hi)])


_DENSE_TOKENS, _DENSE_SEQS = 16384, 4096


@dataclass
class StepTable:
    """Step latency of one deployment (model, hardware, dtype, TP, PP) by array lookup.

    Times are seconds for one forward step through one pipeline stage; ``pp`` stages
    in sequence make a full forward. Framework overhead is the simulator's business.
    """

    model: str
    hardware: str
    tp: int
    pp: int
    tok_x: list[float]
    tok_y: list[float]          # token-wise ops of all layers in a stage, s
    seq_x: list[float]
    seq_y: list[float]          # LM head by sequences, s
    dec_b: list[float]
    dec_kv: list[float]
    dec_y: np.ndarray           # [batch, kv] decode attention of all layers, s
    pre_q: list[float]
    pre_prefix: list[float]     # context before the chunk (0 = a prompt's first chunk)
    pre_y: np.ndarray           # [q, prefix] prefill attention of one chunk, all layers, s
    pp_hop_s: float = 0.0       # activation send between stages per step
    # how each all-reduce kernel the engine names was priced ("<kernel>: trained", ...); () = none named
    collective_kernels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Plain Python floats and nested lists: indexing a numpy array per query costs
        # more than the arithmetic. Results are identical to the array formulas.
        self._tok = (list(map(float, self.tok_x)), list(map(float, self.tok_y)))
        self._seq = (list(map(float, self.seq_x)), list(map(float, self.seq_y)))
        self._dec = np.asarray(self.dec_y, dtype=float).tolist()
        self._pre = np.asarray(self.pre_y, dtype=float).tolist()
        self._dec_b, self._dec_kv = list(map(float, self.dec_b)), list(map(float, self.dec_kv))
        self._pre_q, self._pre_prefix = list(map(float, self.pre_q)), list(map(float, self.pre_prefix))
        self._hop = self.pp_hop_s if self.pp > 1 else 0.0
        # Dense per-integer values for the common small counts: one list index per query.
        self._tok_d = [0.0] + [self._lin(*self._tok, float(v)) for v in range(1, _DENSE_TOKENS)]
        self._seq_d = [self._lin(*self._seq, float(v)) for v in range(_DENSE_SEQS)]

    @staticmethod
    def _lin(xs: list[float], ys: list[float], x: float) -> float:
        """Piecewise-linear, clamped below; linear extrapolation above (costs keep growing)."""
        i = bisect_right(xs, x)
        if i <= 0:
            return ys[0]
        i = i if i < len(xs) else len(xs) - 1
        return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - xs[i - 1]) / (xs[i] - xs[i - 1])

    def _bilinear(self, xs: list[float], ys: list[float], grid, x: float, y: float) -> float:
        """Bilinear on a [x, y] grid: clamped below, linear extrapolation above."""
        i = bisect_right(xs, x)
        i = 1 if i < 1 else (len(xs) - 1 if i >= len(xs) else i)
        j = bisect_right(ys, y)
        j = 1 if j < 1 else (len(ys) - 1 if j >= len(ys) else j)
        x0, y0 = xs[i - 1], ys[j - 1]
        tx, ty = (x - x0) / (xs[i] - x0), (y - y0) / (ys[j] - y0)
        tx = tx if tx > 0 else 0.0
        ty = ty if ty > 0 else 0.0
        r0, r1 = grid[i - 1], grid[i]
        return ((r0[j - 1] * (1 - tx) + r1[j - 1] * tx) * (1 - ty)
                + (r0[j] * (1 - tx) + r1[j] * tx) * ty)

    def decode_attention(self, seqs: int, kv_sum: float) -> float:
        if seqs <= 0:
            return 0.0
        return self._bilinear(self._dec_b, self._dec_kv, self._dec, seqs, kv_sum / seqs)

    def prefill_attention(self, q: int, kv: int) -> float:
        """A ``q``-token chunk with ``kv`` tokens of context after it."""
        return self._bilinear(self._pre_q, self._pre_prefix, self._pre, q, kv - q)

    def step_time(self, tokens: int, decode_seqs: int = 0, decode_kv_sum: float = 0.0,
                  prefill: Sequence[tuple[int, int]] = ()) -> float:
        """Seconds of one stage's forward for a batch: ``tokens`` new tokens in all,
        ``decode_seqs`` decoding sequences holding ``decode_kv_sum`` KV tokens, and
        prefill chunks as (new tokens, context after the chunk)."""
        if tokens <= 0:
            return 0.0
        t = self._tok_d[tokens] if tokens < _DENSE_TOKENS else self._lin(*self._tok, tokens)
        s = decode_seqs + len(prefill)
        t += self._seq_d[s] if s < _DENSE_SEQS else self._lin(*self._seq, s)
        if decode_seqs:
            t += self._bilinear(self._dec_b, self._dec_kv, self._dec, decode_seqs, decode_kv_sum / decode_seqs)
        for q, kv in prefill:
            t += self._bilinear(self._pre_q, self._pre_prefix, self._pre, q, kv - q)
        return t + self._hop


def compile_step_table(model: ModelSpec, hw: HardwareSpec, predictor: OpLatencyModel, *,
                       dtype: str | None = None, kv_dtype: str | None = None, tp: int = 1,
                       pp: int = 1, max_tokens: int = 65536, max_batch: int = 2048,
                       max_kv: int | None = None, points: int = 40,
                       fusions: tuple[str, ...] = (),
                       collective_kernel: CollectiveKernel | None = None, ep: int = 1) -> StepTable:
    """Evaluate ``predictor`` on the grids a simulation of this deployment will query
    (without the kernels the engine's ``fusions`` fold into their neighbours; each TP
    all-reduce on the kernel ``collective_kernel`` names for its message, if given)."""
    dtype = dtype or model.dtype
    max_kv = max_kv or max(model.max_context, 2048)
    layers = model.num_layers // pp
    expand_step(model, BatchShape(decode_kv=(1,)), dtype=dtype, tp=tp, pp=pp)  # validates TP/PP
    tok = _edge_grid(1, max_tokens, points)
    log: set[str] = set()
    if collective_kernel is not None and tp > 1:
        # the last token count of each kernel's message range and the first of the next
        per_token = model.hidden_size * dtype_bytes(activation_dtype(model, dtype))
        cuts = [int(e // per_token) + d for e in getattr(collective_kernel, "edges", ()) for d in (0, 1)]
        tok = np.unique(np.concatenate([tok, [c for c in cuts if 1 <= c <= max_tokens]])).astype(np.int64)
    tok_y = _ops_ms_each([layer_ops(model, int(t), tp, dtype, fusions, ep) for t in tok], hw, predictor,
                         collective_kernel if tp > 1 else None, log) * layers * 1e-3
    seq = _edge_grid(1, max_batch, points // 2)
    head = [o for o in expand_step(model, BatchShape(decode_kv=(1,)), dtype=dtype, tp=tp, pp=pp)
            if o.name == "lm_head"]
    seq_y = _ops_ms_each([[Operator(GEMM, "lm_head", {**o.shape, "m": int(s)}, o.dtype) for o in head]
                          for s in seq], hw, predictor) * 1e-3
    dec_b, dec_kv = _grid(1, max_batch, points), _grid(1, max_kv, points)
    pre_q, pre_prefix = _edge_grid(1, max_tokens, points), np.concatenate([[0], _grid(1, max_kv, points)])
    dec_y = np.zeros((len(dec_b), len(dec_kv)))
    pre_y = np.zeros((len(pre_q), len(pre_prefix)))
    for n, window in zip(stage_layers(model, pp), (None, model.sliding_window)):
        if n:
            dec_y = dec_y + n * _attention_grid(model, hw, predictor, ATTN_DECODE, dec_b, dec_kv, dtype, kv_dtype,
                                                tp, window)
            pre_y = pre_y + n * _attention_grid(model, hw, predictor, ATTN_PREFILL, pre_q, pre_prefix, dtype, kv_dtype,
                                                tp, window)
    # More tokens or sequences never cost less in the simulator. Kernels have dips (a full
    # tile at 512 tokens beats a ragged one at 449): the closest nondecreasing curve in log
    # time (isotonic regression) spreads a dip over its neighbours, where a running max
    # would lift the dip's whole span to its left edge.
    tok_y, seq_y = _nondecreasing(tok_y), _nondecreasing(seq_y)
    # Physics: more batch or context never costs less (running max).
    dec_y = np.maximum.accumulate(np.maximum.accumulate(dec_y, axis=0), axis=1)
    # A chunk with context before it is an extrapolation wherever only prompts from scratch
    # were measured (AIConfigurator), and small chunks after long contexts come out dearer
    # than bigger ones: a running max over chunk sizes would lift every bigger chunk to them
    # (+62% on a 215-token chunk after 2330 tokens, Llama-2-7B TP2 on H100). So a chunk
    # costs at most any bigger chunk (running min from the top), after more context never
    # costing less; a min of rows nondecreasing in context stays nondecreasing.
    pre_y = np.minimum.accumulate(np.maximum.accumulate(pre_y, axis=1)[::-1], axis=0)[::-1]
    hop = 0.0
    if pp > 1:
        bw, lat = hw.link(1)
        hop = lat + model.hidden_size * 2 / max(bw, 1.0)
    return StepTable(model.name, hw.name, tp, pp, tok.astype(float).tolist(), tok_y,
                     seq.astype(float).tolist(), seq_y, dec_b.astype(float).tolist(),
                     dec_kv.astype(float).tolist(), dec_y, pre_q.astype(float).tolist(),
                     pre_prefix.astype(float).tolist(), pre_y, hop, tuple(sorted(log)))


def _nondecreasing(y) -> list[float]:
    """Least-squares nondecreasing fit of ``log y`` (isotonic regression), back in time units."""
    ly = np.log(np.maximum(np.asarray(y, dtype=float), 1e-30))
    fit = IsotonicRegression(increasing=True).fit_transform(np.arange(len(ly)), ly)
    return np.exp(fit).tolist()


def _attention_grid(model, hw, predictor, kind, xs, kvs, dtype, kv_dtype, tp, window=None) -> np.ndarray:
    # The operator attention_ops builds for ``kind`` carries its shape and math/KV dtypes;
    # a sliding-window layer's op sees at most ``window`` keys (decode) or is the blocked
    # equivalent of its chunk (prefill, ``windowed_prefill``).
    op = next(o for o in attention_ops(model, BatchShape(prefill=((1, 1),), decode_kv=(1,)), tp, dtype, kv_dtype)
              if o.kind == kind)
    proto = op.shape
    rows = []
    for x in xs:
        for kv in kvs:
            if kind == ATTN_DECODE:
                rows.append({**proto, "batch": int(x), "kv_len": int(min(kv, window) if window else kv)})
            else:  # ``kv`` is the context before the chunk here
                bs, q, k = windowed_prefill(int(x), int(x + kv), window)
                rows.append({**proto, "batch": bs, "q_len": q, "kv_len": k})
    frame = pd.DataFrame(rows)
    frame["dtype"], frame["kv_dtype"] = op.dtype, op.kv_dtype
    ms = np.maximum(predictor.predict_ms(kind, frame, hw), dram_floor_ms(kind, frame, hw))
    return ms.reshape(len(xs), len(kvs)) * 1e-3
