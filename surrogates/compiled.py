"""Compiled step tables: evaluate an operator-latency predictor once on grids so the
simulator pays a few array lookups per step, not a model call.

A step's time is split by what it scales with:
* token-wise operators (GEMMs, norms, activations, TP collectives) — total new tokens;
* LM head — sequences in the batch;
* decode attention — decoding sequences x their mean KV length;
* prefill attention — each chunk's new tokens x its context.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import pandas as pd

from profiling.hardware import HardwareSpec
from profiling.models import ModelSpec
from profiling.operators import (ATTN_DECODE, ATTN_PREFILL, GEMM, BatchShape, Operator,
                                 attention_ops, expand_step, layer_ops)
from profiling.roofline import roofline_ms


class OpLatencyModel(Protocol):
    """Anything that predicts kernel latency (ms) for rows of one operator kind."""

    def predict_ms(self, kind: str, shapes: pd.DataFrame, hw: HardwareSpec) -> np.ndarray: ...


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


def _ops_ms(ops: Sequence[Operator], hw: HardwareSpec, predictor: OpLatencyModel) -> float:
    """Predicted time (ms) of a list of operators, batched per kind."""
    total = 0.0
    by_kind: dict[str, list[Operator]] = {}
    for o in ops:
        by_kind.setdefault(o.kind, []).append(o)
    for kind, group in by_kind.items():
        frame = pd.DataFrame([o.shape for o in group])
        frame["dtype"] = group[0].dtype
        frame["kv_dtype"] = group[0].kv_dtype
        ms = predictor.predict_ms(kind, frame, hw)
        total += float(np.dot(ms, [o.count for o in group]))
    return total


def _grid(lo: int, hi: int, points: int) -> np.ndarray:
    return np.unique(np.round(np.geomspace(lo, hi, points)).astype(np.int64))


def _interp1(xs: list[float], ys: list[float], x: float) -> float:
    """Piecewise-linear, clamped below; linear extrapolation above (costs keep growing)."""
    i = bisect_right(xs, x)
    if i <= 0:
        return ys[0]
    if i >= len(xs):
        i = len(xs) - 1
    x0, x1 = xs[i - 1], xs[i]
    return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - x0) / (x1 - x0)


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
    pre_kv: list[float]
    pre_y: np.ndarray           # [q, kv] prefill attention of one chunk, all layers, s
    pp_hop_s: float = 0.0       # activation send between stages per step

    def _bilinear(self, xs: list[float], ys: list[float], grid: np.ndarray, x: float, y: float) -> float:
        i = min(max(bisect_right(xs, x), 1), len(xs) - 1)
        j = min(max(bisect_right(ys, y), 1), len(ys) - 1)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[j - 1], ys[j]
        tx, ty = (x - x0) / (x1 - x0), (y - y0) / (y1 - y0)
        tx = tx if tx > 0 else 0.0
        ty = ty if ty > 0 else 0.0
        g = grid
        return ((g[i - 1, j - 1] * (1 - tx) + g[i, j - 1] * tx) * (1 - ty)
                + (g[i - 1, j] * (1 - tx) + g[i, j] * tx) * ty)

    def decode_attention(self, seqs: int, kv_sum: float) -> float:
        if seqs <= 0:
            return 0.0
        return self._bilinear(self.dec_b, self.dec_kv, self.dec_y, seqs, kv_sum / seqs)

    def prefill_attention(self, q: int, kv: int) -> float:
        return self._bilinear(self.pre_q, self.pre_kv, self.pre_y, q, kv)

    def step_time(self, tokens: int, decode_seqs: int = 0, decode_kv_sum: float = 0.0,
                  prefill: Sequence[tuple[int, int]] = ()) -> float:
        """Seconds of one stage's forward for a batch: ``tokens`` new tokens in all,
        ``decode_seqs`` decoding sequences holding ``decode_kv_sum`` KV tokens, and
        prefill chunks as (new tokens, context after the chunk)."""
        if tokens <= 0:
            return 0.0
        t = _interp1(self.tok_x, self.tok_y, tokens)
        t += _interp1(self.seq_x, self.seq_y, decode_seqs + len(prefill))
        if decode_seqs:
            t += self.decode_attention(decode_seqs, decode_kv_sum)
        for q, kv in prefill:
            t += self.prefill_attention(q, kv)
        return t + self.pp_hop_s * (self.pp > 1)


def compile_step_table(model: ModelSpec, hw: HardwareSpec, predictor: OpLatencyModel, *,
                       dtype: str | None = None, kv_dtype: str | None = None, tp: int = 1,
                       pp: int = 1, max_tokens: int = 65536, max_batch: int = 2048,
                       max_kv: int | None = None, points: int = 40) -> StepTable:
    """Evaluate ``predictor`` on the grids a simulation of this deployment will query."""
    dtype = dtype or model.dtype
    max_kv = max_kv or max(model.max_context, 2048)
    layers = model.num_layers // pp
    expand_step(model, BatchShape(decode_kv=(1,)), dtype=dtype, tp=tp, pp=pp)  # validates TP/PP
    tok = _grid(1, max_tokens, points)
    tok_y = [_ops_ms(layer_ops(model, int(t), tp, dtype), hw, predictor) * layers * 1e-3 for t in tok]
    seq = _grid(1, max_batch, points // 2)
    head = [o for o in expand_step(model, BatchShape(decode_kv=(1,)), dtype=dtype, tp=tp, pp=pp)
            if o.name == "lm_head"]
    seq_y = []
    for s in seq:
        ops = [Operator(GEMM, "lm_head", {**o.shape, "m": int(s)}, o.dtype) for o in head]
        seq_y.append(_ops_ms(ops, hw, predictor) * 1e-3)
    dec_b, dec_kv = _grid(1, max_batch, points // 2), _grid(1, max_kv, points // 2)
    pre_q, pre_kv = _grid(1, max_tokens, points // 2), _grid(1, max_kv, points // 2)
    dec_y = _attention_grid(model, hw, predictor, ATTN_DECODE, dec_b, dec_kv, dtype, kv_dtype, tp) * layers
    pre_y = _attention_grid(model, hw, predictor, ATTN_PREFILL, pre_q, pre_kv, dtype, kv_dtype, tp) * layers
    hop = 0.0
    if pp > 1:
        bw, lat = hw.link(1)
        hop = lat + model.hidden_size * 2 / max(bw, 1.0)
    return StepTable(model.name, hw.name, tp, pp, tok.astype(float).tolist(), tok_y,
                     seq.astype(float).tolist(), seq_y, dec_b.astype(float).tolist(),
                     dec_kv.astype(float).tolist(), dec_y, pre_q.astype(float).tolist(),
                     pre_kv.astype(float).tolist(), pre_y, hop)


def _attention_grid(model, hw, predictor, kind, xs, kvs, dtype, kv_dtype, tp) -> np.ndarray:
    proto = attention_ops(model, BatchShape(decode_kv=(1,)), tp, dtype, kv_dtype)[0].shape
    rows = []
    for x in xs:
        for kv in kvs:
            if kind == ATTN_DECODE:
                rows.append({**proto, "batch": int(x), "kv_len": int(kv)})
            else:  # a chunk's context is at least the chunk
                rows.append({**proto, "batch": 1, "q_len": int(x), "kv_len": int(max(kv, x))})
    frame = pd.DataFrame(rows)
    frame["dtype"], frame["kv_dtype"] = dtype, kv_dtype
    return predictor.predict_ms(kind, frame, hw).reshape(len(xs), len(kvs)) * 1e-3
