"""Local profiler: a real quick bench on this machine returns a clean canonical table with
every op kind, repeat statistics, faiss rows, and a spec so roofline features compute."""
from __future__ import annotations


import numpy as np
import pytest

from profiling.bench import (BENCH_THREADS_ENV, LOCAL_CPU, bench_catalog, hardware_yaml, local_cpu_spec, match_device,
                             run_bench)
from profiling.errors import HermesError
from profiling.hardware import load_catalog
from profiling.roofline import add_roofline_features
from profiling.schema import COLUMNS, validate_traces

REPEATS = 7


@pytest.fixture(scope="module")
def quick():
    """One quick bench at the default repeats, single-threaded so other load on a shared box does not swamp it."""
    calls: list[tuple[int, int]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(BENCH_THREADS_ENV, "1")
        df = run_bench("cpu", quick=True, progress=lambda done, total: calls.append((done, total)))
    return df, calls


def test_quick_bench_reports_progress(quick):
    """quick=True calls progress once per case, in order, up to (total, total)."""
    df, calls = quick
    assert len(calls) == len(df) and calls[-1] == (len(df), len(df))
    assert [d for d, _ in calls] == list(range(1, len(df) + 1))


def test_rows_for_every_op_kind(quick):
    """The table has canonical columns and rows for GEMM, prefill and decode attention, elementwise and vector search."""
    df, _ = quick
    assert list(df.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert {"gemm", "attn_prefill", "attn_decode", "elementwise", "vector_search"} <= set(df["op"])
    assert (df["latency_ms"] > 0).all() and (df["latency_std_ms"] >= 0).all()
    assert (df["samples"] == REPEATS).all()
    assert (df["source"] == "bench:cpu").all() and df["stack"].str.contains("numpy").all()
    assert (df["hardware"] == LOCAL_CPU).all()  # one thread is never a whole catalog socket


def test_faiss_rows(quick):
    """Vector search runs on real faiss flat, IVF (several nprobe) and HNSW (several ef) indexes."""
    df, _ = quick
    vs = df[df["op"] == "vector_search"]
    assert set(vs["index"]) == {"flat", "ivf", "hnsw"}
    assert vs[vs["index"] != "flat"]["nprobe"].notna().all()
    assert len(vs[vs["index"] == "ivf"]) >= 2 and len(vs[vs["index"] == "hnsw"]) >= 2
    assert (vs["corpus"] > 0).all() and (vs["dim"] > 0).all() and (vs["topk"] > 0).all()
    assert df["stack"].str.contains("faiss").all()


def test_gemm_latency_grows_with_size(quick):
    """GEMM latency rises with FLOPs: 256^3 < 512^3 < 1024^3 and 1 < 128 < 1024 rows of a 1024x1024 weight."""
    df, _ = quick
    g = df[df["op"] == "gemm"].set_index(["m", "n", "k"])["latency_ms"]
    assert g[(1024, 1024, 1024)] > g[(512, 512, 512)] > g[(256, 256, 256)]
    assert g[(1024, 1024, 1024)] > g[(128, 1024, 1024)] > g[(1, 1024, 1024)]


def test_bench_rows_pass_validation(quick):
    """Every bench row is accepted by the trace validator (nothing quarantined)."""
    df, _ = quick
    clean, quarantine = validate_traces(df)
    assert quarantine.empty and len(clean) == len(df)


def test_roofline_features_for_local_cpu(quick, tmp_path):
    """The measured local-cpu spec gives finite roofline times for every row; the GEMM peak bounds every GEMM."""
    df, _ = quick
    spec = local_cpu_spec(df, cores=1)
    assert spec.cores == 1 and spec.mem_bw_gb_s > 0 and spec.peak_tflops["fp32"] > 0
    feats = add_roofline_features(df, bench_catalog(df))
    assert np.isfinite(feats["t_roofline_ms"]).all() and (feats["t_roofline_ms"] > 0).all()
    gemm = feats[feats["op"] == "gemm"]
    assert (gemm["latency_ms"] >= gemm["t_compute_ms"] * (1 - 1e-9)).all()
    # The spec round-trips through a --catalog file.
    f = tmp_path / "local.yaml"
    f.write_text(hardware_yaml(spec))
    assert load_catalog(f).get(LOCAL_CPU).cores == 1


def test_cuda_needs_torch_and_gpu():
    """device='cuda' runs on a GPU when PyTorch sees one, and otherwise says why it cannot."""
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        df = run_bench("cuda", quick=True, repeats=3, warmup=1)
        assert (df["source"] == "bench:cuda").all() and (df["latency_ms"] > 0).all()
    else:
        with pytest.raises(HermesError, match="CUDA requested but"):
            run_bench("cuda", quick=True)


@pytest.mark.parametrize("kwargs, match", [({"device": "tpu"}, "unknown bench device"),
                                           ({"repeats": 0}, "repeats"), ({"warmup": -1}, "warmup")])
def test_bad_arguments(kwargs, match):
    """An unknown device or impossible repeat counts are HermesErrors before anything runs."""
    with pytest.raises(HermesError, match=match):
        run_bench(**kwargs)


def test_bad_thread_env(monkeypatch):
    """A non-numeric $HERMES_BENCH_THREADS is a HermesError naming the variable."""
    monkeypatch.setenv(BENCH_THREADS_ENV, "lots")
    with pytest.raises(HermesError, match=BENCH_THREADS_ENV):
        run_bench(quick=True)


def test_local_spec_needs_gemm_and_elementwise(quick):
    """A local spec cannot be measured from a table without GEMM or elementwise rows."""
    df, _ = quick
    with pytest.raises(HermesError, match="GEMM and elementwise"):
        local_cpu_spec(df[df["op"] == "vector_search"])


@pytest.mark.parametrize("reported, kind, expected", [
    ("Intel(R) Xeon(R) Platinum 8480+", "cpu", "Xeon-8480+"),
    ("AMD EPYC 9654 96-Core Processor", "cpu", "EPYC-9654"),
    ("AMD EPYC", "cpu", None),
    ("NVIDIA H100 80GB HBM3", "gpu", "H100-SXM"),
    ("NVIDIA H100 PCIe", "gpu", "H100-PCIe"),
    ("NVIDIA A100-SXM4-80GB", "gpu", "A100-80GB"),
    ("NVIDIA GeForce RTX 4090", "gpu", "RTX-4090"),
    ("NVIDIA GeForce RTX 3060", "gpu", None),
])
def test_device_names_match_catalog(reported, kind, expected):
    """The name a CPU or GPU reports maps to its catalog entry, and an unknown one to none."""
    spec = match_device(reported, kind)
    assert (spec.name if spec else None) == expected
