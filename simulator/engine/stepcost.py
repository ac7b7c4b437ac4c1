"""Step time of one replica: compiled surrogate table + framework overhead, by list lookup.

``StepTable.step_time`` costs a few microseconds; a simulation calls it ~10^5 times, so
``StepCost`` pre-evaluates the token-wise and per-sequence parts on every integer up to
the scheduler's limits and the decode attention on every batch size, leaving one bisect
per step. Results equal ``StepTable.step_time`` (tested) plus the overhead model.

Pipeline parallelism: a step passes through the ``pp`` stages in sequence (stage time x pp,
with the activation hop between stages); micro-batch interleaving across stages, which
raises PP throughput in real engines, is not modelled — PP figures are conservative.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from functools import lru_cache

import numpy as np

from profiling.errors import HermesError
from profiling.hardware import HardwareSpec
from profiling.models import ModelSpec
from surrogates.compiled import CollectiveKernel, OpLatencyModel, RooflinePredictor, StepTable, compile_step_table

from .config import OverheadConfig as Overhead


@lru_cache(maxsize=8)
def load_predictor(ref: str | None) -> OpLatencyModel:
    """The operator-latency model a scenario names: ``builtin``/None (shipped bundle),
    ``roofline`` (spec-sheet baseline), a path, or an MLflow run id."""
    if ref == "roofline":
        return RooflinePredictor()
    try:
        from surrogates import load_surrogate  # type: ignore[attr-defined]
    except ImportError:
        if ref in (None, "builtin"):
            return RooflinePredictor()  # no trained bundle shipped yet
        raise HermesError(f"surrogate '{ref}': loading trained surrogates is not available "
                          "in this installation (use 'builtin' or 'roofline')") from None
    return load_surrogate(None if ref in (None, "builtin") else ref)


_TABLES: dict[tuple, StepTable] = {}


def step_table(surrogate: str | None, model: ModelSpec, hw: HardwareSpec, *, dtype: str | None,
               kv_dtype: str | None, tp: int, pp: int, fusions: tuple[str, ...] = (),
               collective_kernel: CollectiveKernel | None = None, ep: int = 1) -> StepTable:
    """Compiled table for one (surrogate, model, hardware, dtype, kv_dtype, tp, pp, fusions,
    all-reduce kernel choice), memoized: compiling is a pure function of these, so trials and
    replicas share it. ``collective_kernel`` (hashable, e.g. ``engines.AllReduceRule``) names
    the all-reduce kernel per message; None leaves the choice to the surrogate."""
    fusions = tuple(sorted(fusions))
    key = (surrogate, model.model_dump_json(warnings=False), hw.model_dump_json(warnings=False), dtype, kv_dtype, tp, pp,
           fusions, collective_kernel, ep)
    table = _TABLES.get(key)
    if table is None:
        if len(_TABLES) > 64:
            _TABLES.clear()
        table = compile_step_table(model, hw, load_predictor(surrogate), dtype=dtype,
                                   kv_dtype=kv_dtype, tp=tp, pp=pp, fusions=fusions,
                                   collective_kernel=collective_kernel, ep=ep)
        _TABLES[key] = table
    return table


_COSTS: dict[tuple, tuple[StepTable, StepCost]] = {}


def step_cost(table: StepTable, overhead: Overhead, max_tokens: int, max_seqs: int, *,
              graph_sizes: tuple[int, ...] = (), async_overlap: bool = False) -> StepCost:
    """``StepCost`` of these, memoized like ``step_table``: building one takes milliseconds,
    it is a pure function of its arguments and nothing changes it once built, so runs share it."""
    key = (id(table), overhead, int(max_tokens), int(max_seqs), tuple(graph_sizes), bool(async_overlap))
    hit = _COSTS.get(key)
    if hit is not None and hit[0] is table:     # the table held in the entry keeps its id unique
        return hit[1]
    if len(_COSTS) > 64:
        _COSTS.clear()
    cost = StepCost(table, overhead, max_tokens, max_seqs, graph_sizes=graph_sizes, async_overlap=async_overlap)
    _COSTS[key] = (table, cost)
    return cost


def with_overhead(stage_s: float, pp: int, o: Overhead, tokens: int, seqs: int) -> float:
    """Replica step seconds from one stage's kernel time: ``pp`` stages in sequence, the
    kernel-replay factor and the framework overhead (per step, sequence and token)."""
    return stage_s * pp * o.kernel_scale + o.step_s + o.per_seq_s * seqs + o.per_token_s * tokens


class StepCost:
    """Seconds of one step of a replica (all ``pp`` stages in sequence, plus overhead).

    Two engine effects, both off by default (a scenario's ``engine:`` block turns them on):

    * ``graph_sizes`` (CUDA-graph capture sizes, ascending): a decode-only step of ``b``
      sequences replays the graph of the smallest size >= ``b``, so its token-wise and
      per-sequence kernels are priced at that padded batch; the padded slots hold no context,
      so decode attention stays at ``b``. Above the largest size the step runs eager, unpadded.
      ``_tokd``/``_seqd`` are the decode-only rows (the same lists as ``_tok``/``_seq`` without
      graphs).
    * ``async_overlap`` (async scheduling): the lookups hold kernel time only and ``cpu`` /
      ``_cpud`` the host time of a step (``step_s + per_seq_s x seqs + per_token_s x tokens``),
      which the replica overlaps with the previous step's kernels.
    """

    def __init__(self, table: StepTable, overhead: Overhead, max_tokens: int, max_seqs: int, *,
                 graph_sizes: tuple[int, ...] = (), async_overlap: bool = False) -> None:
        self.table, self.overhead, self.pp = table, overhead, table.pp
        self.max_tokens, self.max_seqs = int(max_tokens), int(max_seqs)
        self.asyn = bool(async_overlap)
        # the host part leaves the lookups when it overlaps the kernels (charged by the replica)
        o = overhead.model_copy(update={"step_s": 0.0, "per_seq_s": 0.0, "per_token_s": 0.0}) if self.asyn \
            else overhead
        self._ov = o
        pp = float(table.pp) * overhead.kernel_scale   # kernel time multiplier (stages x scale)
        self._ks = overhead.kernel_scale
        hop = table.pp_hop_s if table.pp > 1 else 0.0
        toks = np.arange(self.max_tokens + 1, dtype=float)
        tok = np.interp(toks, table.tok_x, table.tok_y) + hop
        tok[0] = 0.0
        self._tok = (tok * pp + o.per_token_s * toks + o.step_s).tolist()
        seqs = np.arange(self.max_seqs + 1, dtype=float)
        self._seq = (np.interp(seqs, table.seq_x, table.seq_y) * pp + o.per_seq_s * seqs).tolist()
        self._seq[0] = 0.0
        self.graph_sizes = tuple(sorted(int(g) for g in graph_sizes))
        self._tokd, self._seqd = self._tok, self._seq
        if self.graph_sizes:
            padded = np.array([self.padded(n) for n in range(self.max_seqs + 1)], dtype=float)
            tok_p = np.interp(padded, table.tok_x, table.tok_y) + hop
            tok_p[0] = 0.0
            # kernels at the padded batch, the host's per-token and per-step work at the real one
            self._tokd = (tok_p * pp + o.per_token_s * seqs + o.step_s).tolist()
            self._seqd = (np.interp(padded, table.seq_x, table.seq_y) * pp + o.per_seq_s * seqs).tolist()
            self._seqd[0] = 0.0
        h = overhead
        self._cpud = (h.step_s + (h.per_seq_s + h.per_token_s) * seqs).tolist()
        # decode attention rows: batch interpolated exactly as StepTable's bilinear does
        self._kv = list(table.dec_kv)
        rows = np.empty((self.max_seqs + 1, len(self._kv)))
        b = table.dec_b
        for n in range(1, self.max_seqs + 1):
            i = min(max(bisect_right(b, n), 1), len(b) - 1)
            tx = max((n - b[i - 1]) / (b[i] - b[i - 1]), 0.0)
            rows[n] = table.dec_y[i - 1] * (1 - tx) + table.dec_y[i] * tx
        rows[0] = 0.0
        self._dec = (rows * pp).tolist()
        self._pre_prefix = list(table.pre_prefix)
        self._pre = self._rows(table.pre_q, table.pre_y * pp, self.max_tokens)

    @staticmethod
    def _rows(xs: list[float], grid: np.ndarray, upto: int) -> list[list[float]]:
        """Rows of a [x, y] grid interpolated at every integer x <= upto, as
        StepTable._bilinear does along x (clamped below, extrapolated above)."""
        out = np.zeros((upto + 1, grid.shape[1]))
        for v in range(1, upto + 1):
            i = min(max(bisect_right(xs, v), 1), len(xs) - 1)
            tx = max((v - xs[i - 1]) / (xs[i] - xs[i - 1]), 0.0)
            out[v] = grid[i - 1] * (1 - tx) + grid[i] * tx
        return out.tolist()

    def prefill(self, q: int, kv: int) -> float:
        """Prefill attention of a ``q``-token chunk with context ``kv`` after it (all stages)."""
        if q > self.max_tokens:
            return self.table.prefill_attention(q, kv) * self.pp * self._ks
        ys = self._pre_prefix
        c = kv - q  # the table's second axis: context before the chunk
        j = bisect_right(ys, c)
        if j < 1:
            j = 1
        elif j >= len(ys):
            j = len(ys) - 1
        row = self._pre[q]
        y0 = ys[j - 1]
        ty = (c - y0) / (ys[j] - y0)
        if ty < 0:
            ty = 0.0
        return row[j - 1] + (row[j] - row[j - 1]) * ty

    def __call__(self, tokens: int, decode_seqs: int, decode_kv_sum: float, prefill=()) -> float:
        """Step seconds: ``tokens`` new tokens, ``decode_seqs`` decoders holding
        ``decode_kv_sum`` KV tokens, prefill chunks as (new tokens, context after)."""
        seqs = decode_seqs + len(prefill)
        if tokens > self.max_tokens or seqs > self.max_seqs:
            return self.exact(tokens, decode_seqs, decode_kv_sum, prefill)
        if prefill:
            t = self._tok[tokens] + self._seq[seqs]
        else:
            t = self._tokd[tokens] + self._seqd[seqs]
        if decode_seqs:
            t += self.decode(decode_seqs, decode_kv_sum)
        for q, kv in prefill:
            t += self.prefill(q, kv)
        return t

    def padded(self, n: int) -> int:
        """The batch a decode-only step of ``n`` sequences runs as: the smallest captured
        CUDA-graph size >= ``n``, or ``n`` itself (eager) above the largest or without graphs."""
        sizes = self.graph_sizes
        if not sizes or n <= 0 or n > sizes[-1]:
            return n
        return sizes[bisect_left(sizes, n)]

    def cpu(self, tokens: int, seqs: int) -> float:
        """Host seconds of a step (scheduling, input preparation, sampling bookkeeping)."""
        o = self.overhead
        return o.step_s + o.per_seq_s * seqs + o.per_token_s * tokens

    def decode(self, n: int, kv_sum: float) -> float:
        xs = self._kv
        x = kv_sum / n
        j = bisect_right(xs, x)
        if j < 1:
            j = 1
        elif j >= len(xs):
            j = len(xs) - 1
        row = self._dec[n]
        x0 = xs[j - 1]
        ty = (x - x0) / (xs[j] - x0)
        if ty < 0:
            ty = 0.0
        return row[j - 1] + (row[j] - row[j - 1]) * ty

    def exact(self, tokens: int, decode_seqs: int, decode_kv_sum: float, prefill=()) -> float:
        """Reference path through ``StepTable.step_time`` (used beyond the lookup range)."""
        stage = self.table.step_time(tokens, decode_seqs, decode_kv_sum, list(prefill))
        return with_overhead(stage, self.pp, self._ov, tokens, decode_seqs + len(prefill))
