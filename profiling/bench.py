"""Local profiler: real microbenchmarks on this machine, returned as the canonical trace
table (``schema.COLUMNS``), one row per shape with the median and spread of ``repeats``
timed runs after ``warmup`` untimed ones.

``hardware`` is the catalog CPU this machine is (a whole socket whose model name matches
an entry) or ``"local-cpu"``. A local CPU has no spec sheet, so ``run_bench`` measures
one: ``local_cpu_spec`` builds a ``HardwareSpec`` from the cores used, the memory
size, the last-level cache, the best measured fp32 GEMM rate (an achievable peak) and the
bandwidth of the largest elementwise add (DRAM-sized). It is attached to the result as
``df.attrs["hardware_spec"]``; ``bench_catalog(df)`` returns the catalog with it added,
so roofline features can be computed for the rows (``hardware_yaml`` writes it as a
``--catalog`` file). On CUDA the GPU's catalog entry is used when its name matches one
(e.g. 'NVIDIA H100 80GB HBM3'); otherwise rows carry the raw device name and a user
catalog entry of that name gives them roofline features.
"""
from __future__ import annotations

import os
import re
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import yaml

from .bench_cases import FULL, QUICK, cpu_cases, cuda_cases, plan_cases, release_indexes
from .errors import HermesError
from .hardware import HardwareCatalog, HardwareSpec, canonical_name, load_catalog
from .operators import ELEMENTWISE, GEMM, op_cost
from .schema import conform

LOCAL_CPU = "local-cpu"
BENCH_THREADS_ENV = "HERMES_BENCH_THREADS"
Progress = Callable[[int, int], Any]


def run_bench(device: str = "cpu", quick: bool = False, progress: Progress | None = None,
              repeats: int = 7, warmup: int = 2, plan: pd.DataFrame | None = None) -> pd.DataFrame:
    """Run the microbenchmark grid on ``device`` ('cpu' or 'cuda') and return the trace table;
    with ``plan`` (a ``profile plan`` table) exactly its runnable rows, in its order
    (``attrs["skipped"]``: how many it could not run here)."""
    if repeats < 1 or warmup < 0:
        raise HermesError(f"bench needs repeats >= 1 and warmup >= 0 (got {repeats}, {warmup})")
    grid = QUICK if quick else FULL
    device = device.lower()
    skipped: list[int] = []
    if device == "cpu":
        torch = _torch()
        if plan is not None:
            cases, skipped = plan_cases(plan, "cpu", torch is not None)
        else:
            cases = cpu_cases(grid, with_torch_bf16=torch is not None)
        sync, hw_name = None, cpu_catalog_name()
    elif device == "cuda":
        torch = _torch()
        if torch is None:
            raise HermesError("CUDA requested but PyTorch is not installed (pip install torch)")
        if not torch.cuda.is_available():
            raise HermesError("CUDA requested but no CUDA GPU is visible to PyTorch")
        cases, skipped = plan_cases(plan, "cuda", True) if plan is not None else (cuda_cases(grid), [])
        sync, hw_name = torch.cuda.synchronize, _gpu_catalog_name(torch.cuda.get_device_name(0))
    else:
        raise HermesError(f"unknown bench device '{device}' (use 'cpu' or 'cuda')")

    threads = bench_threads()
    rows = []
    try:
        with _limit_threads(threads):
            for i, case in enumerate(cases):
                median, std = _time(case.setup(), repeats, warmup, sync)
                rows.append({"op": case.op, "name": case.name, **case.shape, "dtype": case.dtype,
                             "kv_dtype": case.dtype if case.op.startswith("attn") else None,
                             "latency_ms": median, "latency_std_ms": std, "samples": repeats})
                if progress is not None:
                    progress(i + 1, len(cases))
    finally:
        release_indexes()  # faiss indexes of the full grid hold ~200 MB
    df = pd.DataFrame(rows)
    if device == "cpu" and threads < (os.cpu_count() or 1):
        hw_name = LOCAL_CPU  # part of a socket is not the catalog CPU
    df["hardware"] = hw_name
    df["source"] = f"bench:{device}"
    df["source_row"] = np.arange(len(df), dtype=float)
    df["stack"] = _stack(torch, threads if device == "cpu" else None)
    out = conform(df)
    if hw_name == LOCAL_CPU:
        # A plan's rows need not include what the spec is measured from: the quick grid's then.
        ref = out if plan is None else _spec_rows(threads, repeats, warmup)
        out.attrs["hardware_spec"] = local_cpu_spec(ref, threads).model_dump(mode="json")
    out.attrs["skipped"] = len(skipped)
    return out


def _spec_rows(threads: int, repeats: int, warmup: int) -> pd.DataFrame:
    """The quick grid's fp32 GEMM and elementwise rows (what ``local_cpu_spec`` reads)."""
    rows = []
    with _limit_threads(threads):
        for case in cpu_cases(QUICK, with_torch_bf16=False):
            if case.op in (GEMM, ELEMENTWISE):
                median, _ = _time(case.setup(), repeats, warmup, None)
                rows.append({"op": case.op, **case.shape, "dtype": case.dtype, "latency_ms": median})
    return conform(pd.DataFrame(rows))


def bench_threads() -> int:
    """CPU threads the bench may use: all cores, or ``$HERMES_BENCH_THREADS``.

    On a shared machine a BLAS that spins on every core is slowed 10-100x by any other
    load, so a smaller count gives stable numbers (the local spec then has that many cores).
    """
    raw = os.environ.get(BENCH_THREADS_ENV, "")
    if not raw:
        return os.cpu_count() or 1
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise HermesError(f"${BENCH_THREADS_ENV} must be a positive integer (got '{raw}')")
    return n


@contextmanager
def _limit_threads(n: int) -> Iterator[None]:
    import faiss
    from threadpoolctl import threadpool_limits

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        faiss.omp_set_num_threads(before)


def _time(run: Callable[[], Any], repeats: int, warmup: int,
          sync: Callable[[], Any] | None) -> tuple[float, float]:
    """(median ms, std ms) of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        run()
        if sync:
            sync()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(times), (statistics.stdev(times) if repeats > 1 else 0.0)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _stack(torch, threads: int | None) -> str:
    import faiss
    parts = [f"numpy {np.__version__}", f"faiss {faiss.__version__}"]
    if threads is not None:
        parts[0] += f" ({threads} thread{'s' if threads > 1 else ''})"
    if torch is not None:
        parts.append(f"torch {torch.__version__}")
    return " / ".join(parts)


# ---------------------------------------------------------------- which device is this
def cpu_model_name() -> str:
    """The CPU's marketing name from /proc/cpuinfo ('' when unknown)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else ""


def match_device(name: str, kind: str, catalog: HardwareCatalog | None = None) -> HardwareSpec | None:
    """The catalog device of ``kind`` whose longest name or alias occurs in ``name``.

    Only aliases of 8+ characters count, so a short one ('spr') cannot match inside an
    unrelated name.
    """
    key = canonical_name(name)
    best, best_len = None, 0
    for spec in catalog or load_catalog():
        if spec.kind != kind:
            continue
        for a in (spec.name, *spec.aliases):
            c = canonical_name(a)
            if len(c) >= 8 and c in key and len(c) > best_len:
                best, best_len = spec, len(c)
    return best


def cpu_catalog_name(catalog: HardwareCatalog | None = None) -> str:
    """A catalog CPU when this machine is a whole socket of one, else ``local-cpu``.

    A VM slice of a big CPU (2 of 96 cores) is not that CPU for a roofline: it gets a
    measured spec instead.
    """
    spec = match_device(cpu_model_name(), "cpu", catalog)
    if spec is not None and (os.cpu_count() or 0) >= spec.cores:
        return spec.name
    return LOCAL_CPU


def _gpu_catalog_name(device_name: str) -> str:
    spec = match_device(device_name, "gpu")
    return spec.name if spec is not None else device_name


def _last_level_cache_mb() -> float:
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        m = re.match(r"(\d+)([KMG]?)", f.read_text().strip())
        if m:
            sizes.append(int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)])
    return round(max(sizes, default=0) / 1e6, 2)


def _mem_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return 1.0


def local_cpu_spec(bench: pd.DataFrame, cores: int | None = None) -> HardwareSpec:
    """A spec sheet for this CPU measured from a bench table (needs GEMM and elementwise rows)."""
    gemm = bench[(bench["op"] == GEMM) & (bench["dtype"] == "fp32")]
    elem = bench[bench["op"] == ELEMENTWISE]
    if gemm.empty or elem.empty:
        raise HermesError("a local CPU spec needs fp32 GEMM and elementwise rows in the bench table")
    flops, _ = op_cost(GEMM, {c: gemm[c].to_numpy() for c in ("m", "n", "k")}, "fp32")
    peak = {"fp32": float(np.max(flops / (gemm["latency_ms"].to_numpy() * 1e-3))) / 1e12}
    bf16 = bench[(bench["op"] == GEMM) & (bench["dtype"] == "bf16")]
    if not bf16.empty:
        f16, _ = op_cost(GEMM, {c: bf16[c].to_numpy() for c in ("m", "n", "k")}, "bf16")
        peak["bf16"] = float(np.max(f16 / (bf16["latency_ms"].to_numpy() * 1e-3))) / 1e12
    # DRAM bandwidth: the largest elementwise op (working set beyond the last-level cache).
    big = elem[elem["elements"] == elem["elements"].max()]
    bw = float(np.max(big["io_bytes"].to_numpy() / (big["latency_ms"].to_numpy() * 1e-3))) / 1e9
    cores = cores or os.cpu_count() or 1
    return HardwareSpec(
        name=LOCAL_CPU, kind="cpu", vendor=cpu_model_name() or "unknown",
        aliases=("local", "localhost-cpu"), peak_tflops=peak,
        mem_capacity_gb=round(_mem_gb(), 2), mem_bw_gb_s=round(bw, 2), l2_cache_mb=_last_level_cache_mb(),
        tdp_w=3.75 * cores, price_per_hour=0.0, cores=cores, devices_per_node=1,
        price_source="local machine: no price known (override with --catalog FILE)",
        notes=("measured by hermes-sim profile bench: peak = best fp32 GEMM rate, bandwidth = "
               "largest elementwise add; tdp = 3.75 W per core (EPYC 9654 per-core share, estimate)"))


def bench_catalog(bench: pd.DataFrame, catalog: HardwareCatalog | None = None) -> HardwareCatalog:
    """``catalog`` (default: the built-in one) plus the local CPU spec of a bench table."""
    cat = catalog or load_catalog()
    spec = bench.attrs.get("hardware_spec")
    cat.add(HardwareSpec.model_validate(spec) if spec else local_cpu_spec(bench))
    return cat


def hardware_yaml(spec: HardwareSpec) -> str:
    """A ``--catalog`` file holding ``spec``."""
    return yaml.safe_dump({"devices": [spec.model_dump(mode="json")]}, sort_keys=False)
