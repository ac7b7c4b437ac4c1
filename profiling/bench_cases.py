"""Workloads of the local profiler: each case allocates its inputs and returns a closure
that runs the kernel once. Timing, repeats and the trace table live in ``bench.py``.

CPU kernels use numpy (float32; bf16 through PyTorch when it is installed) and faiss;
CUDA kernels use PyTorch. Shapes are the generic operator kinds of ``operators.py``, so
the rows feed the same surrogates as GPU traces.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from .operators import ATTN_DECODE, ATTN_PREFILL, ELEMENTWISE, GEMM, VECTOR_SEARCH

Setup = Callable[[], Callable[[], Any]]


@dataclass(frozen=True)
class Case:
    """One benchmark point: canonical op kind, shape columns, dtype and a setup function."""

    op: str
    name: str
    shape: dict = field(compare=False)
    dtype: str
    setup: Setup = field(compare=False, repr=False)


@dataclass(frozen=True)
class Grid:
    """Shapes to sweep; ``quick`` keeps the whole run well under 20 s on 2 cores."""

    gemm: tuple[tuple[int, int, int], ...]
    prefill: tuple[tuple[int, int, int, int, int], ...]   # (q_len, kv_len, heads, kv_heads, head_dim)
    decode: tuple[tuple[int, int, int, int, int], ...]    # (batch, kv_len, heads, kv_heads, head_dim)
    elementwise: tuple[int, ...]
    corpus: int
    dim: int
    queries: int
    topk: int
    nprobe: tuple[int, ...]
    ef: tuple[int, ...]


QUICK = Grid(
    gemm=((1, 1024, 1024), (16, 1024, 1024), (128, 1024, 1024), (256, 256, 256),
          (512, 512, 512), (1024, 1024, 1024)),
    prefill=((128, 128, 8, 8, 64), (512, 512, 8, 2, 64)),
    decode=((8, 512, 8, 8, 64), (8, 2048, 8, 2, 128)),
    elementwise=(1 << 12, 1 << 16, 1 << 20, 1 << 23),
    corpus=10_000, dim=64, queries=16, topk=10, nprobe=(4, 16), ef=(16, 64))

FULL = Grid(
    gemm=tuple((m, n, k) for m in (1, 4, 16, 64, 256, 1024, 2048)
               for n, k in ((1024, 1024), (4096, 1024), (1024, 4096), (4096, 4096))),
    prefill=tuple((q, q, h, hk, d) for q in (128, 512, 1024, 2048)
                  for h, hk, d in ((8, 8, 64), (16, 2, 128))) + ((256, 2048, 16, 2, 128),),
    decode=tuple((b, kv, h, hk, d) for b in (1, 8, 32) for kv in (512, 2048, 8192)
                 for h, hk, d in ((8, 8, 64), (16, 2, 128))),
    elementwise=tuple(1 << p for p in range(10, 26, 2)),
    corpus=100_000, dim=128, queries=32, topk=10, nprobe=(1, 4, 16, 64), ef=(16, 32, 64, 128))


# ---------------------------------------------------------------- numpy / faiss (CPU)
def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _np_gemm(m: int, n: int, k: int) -> Setup:
    def setup():
        r = _rng()
        a = r.standard_normal((m, k), dtype=np.float32)
        b = r.standard_normal((k, n), dtype=np.float32)
        out = np.empty((m, n), dtype=np.float32)
        return lambda: np.matmul(a, b, out=out)
    return setup


def _softmax_inplace(s: np.ndarray) -> None:
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)


def _np_attention(batch: int, q_len: int, kv_len: int, heads: int, kv_heads: int, d: int) -> Setup:
    """softmax(Q K^T / sqrt(d)) V with grouped KV heads; causal when q_len > 1."""
    def setup():
        r = _rng()
        g = heads // kv_heads
        q = r.standard_normal((batch, kv_heads, g * q_len, d), dtype=np.float32)
        k = r.standard_normal((batch, kv_heads, kv_len, d), dtype=np.float32)
        v = r.standard_normal((batch, kv_heads, kv_len, d), dtype=np.float32)
        kt = np.ascontiguousarray(np.swapaxes(k, -1, -2))
        bias = None
        if q_len > 1:  # query i sits at position kv_len - q_len + i and sees keys <= it
            pos = np.arange(q_len)[:, None] + (kv_len - q_len)
            future = np.tile(np.arange(kv_len)[None, :] > pos, (g, 1))
            bias = np.where(future, -np.inf, 0.0).astype(np.float32)
        scale = np.float32(1.0 / math.sqrt(d))

        def run():
            s = np.matmul(q, kt)
            s *= scale
            if bias is not None:
                s += bias
            _softmax_inplace(s)
            return np.matmul(s, v)
        return run
    return setup


def _np_elementwise(fn: Callable, n: int) -> Setup:
    def setup():
        r = _rng()
        a = r.standard_normal(n, dtype=np.float32)
        b = r.standard_normal(n, dtype=np.float32)
        out = np.empty_like(a)
        return lambda: fn(a, b, out=out)
    return setup


@lru_cache(maxsize=4)
def _faiss_index(kind: str, corpus: int, dim: int):
    """Build (once per run) a faiss index over random vectors; IVF lists = 4 sqrt(N)."""
    import faiss
    xb = _rng().standard_normal((corpus, dim), dtype=np.float32)
    if kind == "flat":
        index = faiss.IndexFlatL2(dim)
    elif kind == "ivf":
        nlist = max(1, int(4 * math.sqrt(corpus)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
        index.cp.niter = 10  # k-means iterations: enough for a benchmark index
        index.cp.min_points_per_centroid = 1
        index.train(xb)
    else:
        index = faiss.IndexHNSWFlat(dim, 32)
        index.hnsw.efConstruction = 40
    index.add(xb)
    return index


def release_indexes() -> None:
    """Drop the indexes built by this run."""
    _faiss_index.cache_clear()


def _faiss_search(kind: str, g: Grid, knob: int | None) -> Setup:
    def setup():
        index = _faiss_index(kind, g.corpus, g.dim)
        xq = np.random.default_rng(1).standard_normal((g.queries, g.dim), dtype=np.float32)

        def run():
            if kind == "ivf":
                index.nprobe = knob
            elif kind == "hnsw":
                index.hnsw.efSearch = knob
            return index.search(xq, g.topk)
        return run
    return setup


def cpu_cases(g: Grid, with_torch_bf16: bool) -> list[Case]:
    cases = [Case(GEMM, "matmul", {"m": m, "n": n, "k": k}, "fp32", _np_gemm(m, n, k)) for m, n, k in g.gemm]
    if with_torch_bf16:
        cases += [Case(GEMM, "matmul", {"m": m, "n": n, "k": k}, "bf16", _torch_gemm(m, n, k, "cpu", "bf16"))
                  for m, n, k in g.gemm]
    for q, kv, h, hk, d in g.prefill:
        shape = {"batch": 1, "q_len": q, "kv_len": kv, "heads": h, "kv_heads": hk, "head_dim": d}
        cases.append(Case(ATTN_PREFILL, "attention_prefill", shape, "fp32", _np_attention(1, q, kv, h, hk, d)))
    for b, kv, h, hk, d in g.decode:
        shape = {"batch": b, "kv_len": kv, "heads": h, "kv_heads": hk, "head_dim": d}
        cases.append(Case(ATTN_DECODE, "attention_decode", shape, "fp32", _np_attention(b, 1, kv, h, hk, d)))
    for name, fn in (("add", np.add), ("mul", np.multiply)):
        cases += [Case(ELEMENTWISE, name, {"elements": n, "io_bytes": 3 * n * 4}, "fp32", _np_elementwise(fn, n))
                  for n in g.elementwise]
    vs = {"batch": g.queries, "corpus": g.corpus, "dim": g.dim, "topk": g.topk}
    cases.append(Case(VECTOR_SEARCH, "faiss_flat", {**vs, "index": "flat"}, "fp32", _faiss_search("flat", g, None)))
    cases += [Case(VECTOR_SEARCH, "faiss_ivf", {**vs, "index": "ivf", "nprobe": p}, "fp32", _faiss_search("ivf", g, p))
              for p in g.nprobe]
    # HNSW's search breadth (efSearch) goes in the nprobe column, as op_cost reads it.
    cases += [Case(VECTOR_SEARCH, "faiss_hnsw", {**vs, "index": "hnsw", "nprobe": e}, "fp32", _faiss_search("hnsw", g, e))
              for e in g.ef]
    return cases


# ---------------------------------------------------------------- PyTorch (CPU bf16, CUDA)
def _torch_dtype(dtype: str):
    import torch
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]


def _torch_gemm(m: int, n: int, k: int, device: str, dtype: str) -> Setup:
    def setup():
        import torch
        gen = torch.Generator(device="cpu").manual_seed(0)
        a = torch.randn(m, k, generator=gen).to(device=device, dtype=_torch_dtype(dtype))
        b = torch.randn(k, n, generator=gen).to(device=device, dtype=_torch_dtype(dtype))
        return lambda: torch.matmul(a, b)
    return setup


def _torch_attention(batch: int, q_len: int, kv_len: int, heads: int, kv_heads: int, d: int,
                     device: str, dtype: str) -> Setup:
    def setup():
        import torch
        import torch.nn.functional as F
        t = dict(device=device, dtype=_torch_dtype(dtype))
        q = torch.randn(batch, heads, q_len, d, **t)
        # Grouped KV expanded to full heads: SDPA's enable_gqa is not in every version.
        k = torch.randn(batch, kv_heads, kv_len, d, **t).repeat_interleave(heads // kv_heads, dim=1)
        v = torch.randn(batch, kv_heads, kv_len, d, **t).repeat_interleave(heads // kv_heads, dim=1)
        mask = None
        if q_len > 1:
            pos = torch.arange(q_len, device=device)[:, None] + (kv_len - q_len)
            mask = torch.arange(kv_len, device=device)[None, :] <= pos
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return setup


def _torch_elementwise(n: int, device: str, dtype: str) -> Setup:
    def setup():
        import torch
        a = torch.randn(n, device=device, dtype=_torch_dtype(dtype))
        b = torch.randn(n, device=device, dtype=_torch_dtype(dtype))
        out = torch.empty_like(a)
        return lambda: torch.add(a, b, out=out)
    return setup


def cuda_cases(g: Grid, dtype: str = "bf16") -> list[Case]:
    size = 2.0 if dtype in ("bf16", "fp16") else 4.0
    cases = [Case(GEMM, "matmul", {"m": m, "n": n, "k": k}, dtype, _torch_gemm(m, n, k, "cuda", dtype))
             for m, n, k in g.gemm]
    for q, kv, h, hk, d in g.prefill:
        shape = {"batch": 1, "q_len": q, "kv_len": kv, "heads": h, "kv_heads": hk, "head_dim": d}
        cases.append(Case(ATTN_PREFILL, "sdpa_prefill", shape, dtype, _torch_attention(1, q, kv, h, hk, d, "cuda", dtype)))
    for b, kv, h, hk, d in g.decode:
        shape = {"batch": b, "kv_len": kv, "heads": h, "kv_heads": hk, "head_dim": d}
        cases.append(Case(ATTN_DECODE, "sdpa_decode", shape, dtype, _torch_attention(b, 1, kv, h, hk, d, "cuda", dtype)))
    cases += [Case(ELEMENTWISE, "add", {"elements": n, "io_bytes": 3 * n * size}, dtype, _torch_elementwise(n, "cuda", dtype))
              for n in g.elementwise]
    return cases


# ---------------------------------------------------------------- a measurement plan
PLAN_RUNNABLE = (GEMM, ATTN_PREFILL, ATTN_DECODE, ELEMENTWISE)


def _int(row, col: str, default: int = 1) -> int:
    v = row.get(col)
    return default if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)


def plan_cases(plan, device: str, with_torch: bool) -> tuple[list[Case], list[int]]:
    """One case per runnable row of a plan table (``profiling/plan.py``), in its order, and
    the positions of the rows a single device cannot run (collectives need several GPUs)."""
    cases, skipped = [], []
    for i, row in enumerate(plan.to_dict("records")):
        op, dtype = row.get("op"), row.get("dtype") or "bf16"
        dtype = dtype if with_torch else "fp32"  # numpy runs fp32 only
        if op not in PLAN_RUNNABLE:
            skipped.append(i)
            continue
        if op == GEMM:
            m, n, k = _int(row, "m"), _int(row, "n"), _int(row, "k")
            setup = _torch_gemm(m, n, k, device, dtype) if with_torch else _np_gemm(m, n, k)
            shape = {"m": m, "n": n, "k": k}
        elif op in (ATTN_PREFILL, ATTN_DECODE):
            b, h, hk, d = _int(row, "batch"), _int(row, "heads"), _int(row, "kv_heads"), _int(row, "head_dim", 128)
            kv, q = _int(row, "kv_len"), (_int(row, "q_len") if op == ATTN_PREFILL else 1)
            setup = (_torch_attention(b, q, kv, h, hk, d, device, dtype) if with_torch
                     else _np_attention(b, q, kv, h, hk, d))
            shape = {"batch": b, "kv_len": kv, "heads": h, "kv_heads": hk, "head_dim": d,
                     **({"q_len": q} if op == ATTN_PREFILL else {})}
        else:
            n = _int(row, "elements")
            setup = _torch_elementwise(n, device, dtype) if with_torch else _np_elementwise(np.add, n)
            shape = {"elements": n, "io_bytes": 3 * n * (2 if dtype in ("bf16", "fp16") else 4)}
        cases.append(Case(op, str(row.get("name") or op), shape, dtype, setup))
    return cases, skipped
