"""A query naming no kernel runs the variant the engine would pick: the fastest measured."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from profiling.hardware import load_catalog
from profiling.ingest import read_traces
from surrogates.engine_kernel import with_engine_kernel
from surrogates.features import variant_keys
from surrogates.model import SurrogateModel

AIC = "aiconfigurator/data/b200_sxm/gemm"


@pytest.fixture(scope="module")
def b200_fp8(traces_dir) -> pd.DataFrame:
    """B200 fp8 GEMMs measured with TensorRT-LLM's and vLLM's kernels (several variants)."""
    frames = []
    for stack, ver in (("trtllm", "1.3.0rc20"), ("vllm", "0.24.0")):
        t = read_traces(traces_dir / f"{AIC}/{stack}/{ver}", "aiconfigurator").table
        t = t[t["dtype"] == "fp8"]
        frames.append(t.sample(min(len(t), 4000), random_state=0))
    return pd.concat(frames, ignore_index=True)


def _against_fastest(model: SurrogateModel, fastest: pd.DataFrame, hardware: str):
    """Kernel-less fp8 GEMM predictions for the shapes of ``fastest`` with the engine-kernel
    choice and as before it (the average over all variants), and their MAPE function
    against the fastest measured latency."""
    hw = load_catalog().get(hardware)
    q = fastest[["m", "n", "k"]].assign(dtype="fp8")
    y = fastest["latency_ms"].to_numpy()
    chosen = model.predict_ms("gemm", q, hw)
    km = model.kinds_["gemm"]
    saved, km.engine_kernels = km.engine_kernels, {}
    try:
        averaged = model.predict_ms("gemm", q, hw)
    finally:
        km.engine_kernels = saved
    return chosen, averaged, lambda p: float(np.mean(np.abs(p - y) / y))


@pytest.fixture(scope="module")
def fitted(b200_fp8, fast) -> SurrogateModel:
    return SurrogateModel(params=fast, max_rows=8000, transfer=False, local_correction=False).fit(b200_fp8)


def test_choice_is_a_measured_variant_and_fills_only_kernel_less_queries(fitted, b200_fp8):
    """The chosen (stack, kernel) for B200 fp8 is one measured there; a frame that names a
    kernel keeps it, one that names none gets the choice."""
    choices = fitted.kinds_["gemm"].engine_kernels
    stack, kernel = choices[("B200", "fp8")]
    measured = set(variant_keys("gemm", b200_fp8))
    assert variant_keys("gemm", pd.DataFrame({"stack": [stack], "kernel": [kernel]})).iloc[0] in measured
    q = pd.DataFrame({"m": [8], "n": [4096], "k": [4096], "dtype": ["fp8"]})
    assert with_engine_kernel(q, choices, "B200")["kernel"].iloc[0] == kernel
    named = q.assign(kernel="x")
    assert with_engine_kernel(named, choices, "B200") is named


def test_kernel_less_query_tracks_the_fastest_measured_kernel(fitted, b200_fp8):
    """Against the fastest measured latency of each shape (what an autotuning engine runs),
    kernel-less predictions err less than the old average over all variants."""
    fastest = b200_fp8.groupby(["m", "n", "k"], as_index=False)["latency_ms"].min()
    fastest = fastest[fastest["latency_ms"] > 0].sample(min(len(fastest), 1500), random_state=1)
    chosen, averaged, mape = _against_fastest(fitted, fastest, "B200")
    assert mape(chosen) < mape(averaged)
    assert np.median(chosen / averaged) < 1.0  # the average is pulled up by slow fallbacks


@pytest.fixture(scope="module")
def h100_fp8_fastest(traces_dir) -> pd.DataFrame:
    """Fastest measured latency per H100 fp8 GEMM shape over TensorRT-LLM's and vLLM's kernels."""
    base = "aiconfigurator/data/h100_sxm/gemm"
    t = pd.concat([read_traces(traces_dir / f"{base}/{s}", "aiconfigurator").table for s in ("trtllm", "vllm")])
    t = t[(t["dtype"] == "fp8") & (t["latency_ms"] > 0)]
    return t.groupby(["m", "n", "k"], as_index=False)["latency_ms"].min().sample(1500, random_state=2)


def test_unseen_gpu_query_runs_the_pooled_engine_kernel(b200_fp8, h100_fp8_fastest, fast):
    """A GPU with no training rows (H100 here, trained on B200 only) gets the transfer
    pipeline's fastest variant for the dtype: closer to H100's fastest measured kernels than
    the average over all variants."""
    model = SurrogateModel(params=fast, max_rows=8000, transfer=True, local_correction=False).fit(b200_fp8)
    km = model.kinds_["gemm"]
    assert ("*", "fp8") in km.engine_kernels and "H100-SXM" not in km.hardware
    chosen, averaged, mape = _against_fastest(model, h100_fp8_fastest, "H100-SXM")
    assert mape(chosen) < mape(averaged)
