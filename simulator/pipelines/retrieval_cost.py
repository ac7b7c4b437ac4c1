"""Cost models of the RAG stages: vector search (flat, IVF, IVF-PQ, HNSW) and encoder /
cross-encoder forwards.

Vector search: the work of a batch of queries in FLOPs and bytes, per index kind —

* ``flat``: every vector, corpus streamed once per batch (faiss uses a GEMM);
* ``ivf``: the ``nlist`` centroids, then ``nprobe`` of ``nlist`` inverted lists per query;
* ``ivfpq``: as ivf, but list entries are ``m``-byte PQ codes scanned with lookup tables;
* ``hnsw``: about ``(ef + log2 N) * 2M`` neighbour distances per query at random addresses —

turned into time as ``overhead + roofline / efficiency`` on the hardware's spec sheet. The
two constants per kind (``overhead_s``, ``efficiency``) are fitted on measurements of a real
ANN library on the local machine (``fit_vector_search``, ``benchmarks/retrieval_fit.py``),
and carry over to another CPU through its roofline, as the surrogates do.

Encoders are costed through the compiled step tables of the surrogate (or roofline): one
forward over a batch of sequences is a prefill of each sequence with no decode.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from profiling.hardware import HardwareSpec
from profiling.models import ModelSpec

INDEX_KINDS = ("flat", "ivf", "ivfpq", "hnsw")


@dataclass(frozen=True)
class IndexSpec:
    """A vector index: kind, corpus size, dimension, search breadth and result count."""

    kind: str = "ivf"
    corpus: int = 1_000_000
    dim: int = 768
    k: int = 10
    nprobe: int = 16           # ivf / ivfpq lists probed
    nlist: int | None = None   # default 4 sqrt(N), as the profiler builds it
    ef: int = 64               # hnsw efSearch
    m: int = 32                # hnsw neighbours per node / ivfpq code bytes

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"unknown index kind '{self.kind}' (known: {', '.join(INDEX_KINDS)})")

    @property
    def lists(self) -> int:
        return self.nlist or max(1, int(4 * math.sqrt(self.corpus)))


BLAS_MIN_BATCH = 20   # faiss: below this many queries flat search scans per query, else one GEMM


def search_work(ix: IndexSpec, batch: int) -> tuple[float, float]:
    """(FLOPs, bytes) of searching ``batch`` queries."""
    n, d, b = float(ix.corpus), float(ix.dim), float(batch)
    if ix.kind == "flat":
        scans = 1.0 if batch >= BLAS_MIN_BATCH else b
        return 2 * b * n * d, scans * n * d * 4 + b * d * 4
    if ix.kind == "hnsw":
        visited = (ix.ef + math.log2(max(n, 2))) * 2 * ix.m
        return 2 * b * visited * d, b * visited * (d * 4 + 64)   # vector + its cache line of links
    nlist = ix.lists
    scanned = n * min(ix.nprobe, nlist) / nlist
    coarse_f, coarse_b = 2 * b * nlist * d, nlist * d * 4
    if ix.kind == "ivf":
        return coarse_f + 2 * b * scanned * d, coarse_b + b * scanned * d * 4
    # ivfpq: a 256 x d lookup table per probed list, then m lookups+adds per code
    lut = 2 * b * min(ix.nprobe, nlist) * 256 * d
    return coarse_f + lut + 2 * b * scanned * ix.m, coarse_b + b * scanned * (ix.m + 8)


def random_accesses(ix: IndexSpec, batch: int) -> float:
    """Dependent DRAM accesses (pointer chasing) that no bandwidth hides: one per visited
    graph node (HNSW), one per probed inverted list (IVF)."""
    if ix.kind == "hnsw":
        return batch * (ix.ef + math.log2(max(ix.corpus, 2))) * 2 * ix.m
    if ix.kind in ("ivf", "ivfpq"):
        return batch * min(ix.nprobe, ix.lists)
    return 0.0


def roofline_s(flops: float, nbytes: float, hw: HardwareSpec) -> float:
    return max(flops / hw.peak_flops("fp32"), nbytes / hw.mem_bw)


@dataclass(frozen=True)
class VectorSearchModel:
    """``overhead_s + roofline / efficiency + accesses * access_s`` per batch, per index kind."""

    efficiency: dict = field(default_factory=lambda: dict(DEFAULT_EFFICIENCY))
    overhead_s: dict = field(default_factory=lambda: dict(DEFAULT_OVERHEAD_S))
    access_s: dict = field(default_factory=lambda: dict(DEFAULT_ACCESS_S))

    def time_s(self, ix: IndexSpec, batch: int, hw: HardwareSpec) -> float:
        f, b = search_work(ix, batch)
        k = ix.kind
        return (self.overhead_s[k] + roofline_s(f, b, hw) / self.efficiency[k]
                + random_accesses(ix, batch) * self.access_s[k])


def fit_vector_search(rows: list[tuple[IndexSpec, int, float]], hw: HardwareSpec) -> tuple[VectorSearchModel, dict]:
    """Fit (overhead, efficiency) per index kind to measured ``(index, batch, seconds)`` rows
    on hardware ``hw`` by least squares on relative error with non-negative coefficients.
    Returns the model and per-kind error figures (MAPE, max APE, points)."""
    from scipy.optimize import nnls

    eff, over, acc = dict(DEFAULT_EFFICIENCY), dict(DEFAULT_OVERHEAD_S), dict(DEFAULT_ACCESS_S)
    report = {}
    for kind in INDEX_KINDS:
        pts = [(ix, b, y) for ix, b, y in rows if ix.kind == kind]
        if not pts:
            continue
        r = np.array([roofline_s(*search_work(ix, b), hw) for ix, b, _ in pts])
        m = np.array([random_accesses(ix, b) for ix, b, _ in pts])
        y = np.array([y for *_, y in pts])
        a = np.c_[np.ones_like(r), r, m] / y[:, None]
        coef, _ = nnls(a, np.ones_like(y))
        c0, c1, c2 = coef
        c1 = max(c1, 1e-9)
        over[kind], eff[kind], acc[kind] = float(c0), float(1.0 / c1), float(c2)
        ape = np.abs(a @ np.array([c0, c1, c2]) - 1) * 100
        report[kind] = {"mape": float(ape.mean()), "max_ape": float(ape.max()), "points": len(pts),
                        "efficiency": eff[kind], "overhead_s": over[kind], "access_s": acc[kind]}
    return VectorSearchModel(eff, over, acc), report


# Fitted by benchmarks/retrieval_fit.py (its figures: benchmarks/README.md). Fitted
# efficiencies above 1 meant the benchmark corpora sat in the last-level cache; production
# corpora stream from DRAM, so the defaults cap them at 1.
DEFAULT_EFFICIENCY = {"flat": 1.0, "ivf": 1.0, "ivfpq": 0.52, "hnsw": 1.0}
DEFAULT_OVERHEAD_S = {"flat": 0.0, "ivf": 7.5e-6, "ivfpq": 0.0, "hnsw": 0.0}
DEFAULT_ACCESS_S = {"flat": 0.0, "ivf": 1.16e-6, "ivfpq": 1.07e-6, "hnsw": 4.4e-9}


class EncoderCost:
    """Seconds of one forward of an encoder (or a decoder used as an embedder, or a
    cross-encoder over query+passage pairs) on ``hw`` through a compiled step table."""

    def __init__(self, model: ModelSpec, hw: HardwareSpec, predictor, dtype: str | None = None,
                 tp: int = 1, max_tokens: int = 1 << 16, max_batch: int = 1024) -> None:
        from surrogates.compiled import compile_step_table
        self.model, self.hw = model, hw
        self.max_len = model.max_context
        self.table = compile_step_table(model, hw, predictor, dtype=dtype, tp=tp, max_tokens=max_tokens,
                                        max_batch=max_batch, max_kv=max(self.max_len, 512), points=24)

    def forward_s(self, seqs: int, seq_len: int) -> float:
        """``seqs`` sequences of ``seq_len`` tokens (truncated to the model's context)."""
        if seqs <= 0:
            return 0.0
        q = max(1, min(int(seq_len), self.max_len))
        return self.table.step_time(seqs * q, 0, 0.0, [(q, q)] * seqs)

    def batch_s(self, jobs: list[tuple[int, int]]) -> float:
        """A batch of jobs ``(sequences, tokens each)``, padded to the longest as encoders run."""
        seqs = sum(s for s, _ in jobs)
        return self.forward_s(seqs, max(q for _, q in jobs)) if jobs else 0.0
