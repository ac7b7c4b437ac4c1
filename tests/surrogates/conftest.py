"""Small real trace subsets for fast surrogate tests (read through profiling.readers)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from profiling.ingest import read_traces

# Tiny but real: sizes keep every fit in this folder to a few seconds.
FAST = {"n_estimators": 60, "max_depth": 6, "learning_rate": 0.15}


@pytest.fixture(scope="session")
def fast() -> dict:
    """Small XGBoost hyper-parameters for quick fits."""
    return dict(FAST)


def _read(root: Path, rel: str, fmt: str) -> pd.DataFrame:
    return read_traces(root / rel, fmt).table


@pytest.fixture(scope="session")
def gpu_table(traces_dir) -> pd.DataFrame:
    """bf16 GEMM (TensorRT-LLM) and NCCL all-reduce rows of A100, H100 and L40S, subsampled."""
    aic = "aiconfigurator/data"
    frames = []
    for sys_, ver in (("a100_sxm", "1.0.0"), ("h100_sxm", "1.3.0rc20"), ("l40s", "1.3.0rc20")):
        g = _read(traces_dir, f"{aic}/{sys_}/gemm/trtllm/{ver}/gemm_perf.parquet", "aiconfigurator")
        g = g[g["dtype"] == "bf16"].sample(3000, random_state=0)
        frames += [g, _read(traces_dir, f"{aic}/{sys_}/comm/nccl", "aiconfigurator")]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="session")
def vidur_table(traces_dir) -> pd.DataFrame:
    """Vidur token ops of three models on A100 (grouped hold-out by model)."""
    base = "vidur/data/profiling/compute/a100"
    frames = [_read(traces_dir, f"{base}/{m}/mlp.csv", "vidur")
              for m in ("microsoft/phi-2", "meta-llama/Llama-2-7b-hf", "internlm/internlm-20b")]
    t = pd.concat(frames, ignore_index=True)
    return t.groupby("model", group_keys=False).sample(frac=0.25, random_state=0)


@pytest.fixture(scope="session")
def canonical_parquet(gpu_table, tmp_path_factory) -> Path:
    """The GPU subset written as a canonical trace table, as `profile ingest` would."""
    p = tmp_path_factory.mktemp("traces") / "traces.parquet"
    gpu_table.to_parquet(p)
    return p
