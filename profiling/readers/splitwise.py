"""Splitwise simulator perf model (``perf_model.csv``): whole-request measurements.

Each row ran ``batch_size`` requests of ``prompt_size`` prompt tokens and ``token_size``
output tokens on ``tensor_parallel`` GPUs; ``prompt_time`` is the prefill step and
``token_time`` the mean time per decode step, both in ms. A row becomes two step rows:

* ``step_prefill``: batch = batch_size, q_len = prompt_size, latency = prompt_time;
* ``step_decode``: batch = batch_size, kv_len = prompt_size + token_size / 2 (the mean
  context over the generation: decode cost is linear in context, so the mean step is the
  step at the mean context), latency = token_time.

Hardware names map onto the catalog (``h100-80gb-pcap`` is the power-capped H100).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .base import FormatReader, ReadOptions, ReadOutput, read_csv, require_columns, source_label

FORMAT = "splitwise"
REQUIRED = ("model", "hardware", "prompt_size", "batch_size", "token_size", "prompt_time", "token_time",
            "tensor_parallel")
HARDWARE = {"a100-80gb": "A100-80GB", "h100-80gb": "H100-SXM", "h100-80gb-pcap": "H100-SXM-pcap"}
DTYPE = "fp16"


def matches(path: Path) -> bool:
    return path.suffix == ".csv" and path.name.startswith("perf_model")


def read(path: Path, opts: ReadOptions) -> ReadOutput:
    df = read_csv(path, FORMAT)
    require_columns(df, REQUIRED, path, "Splitwise perf_model.csv")
    n = len(df)
    num = lambda c: pd.to_numeric(df[c], errors="coerce").to_numpy(float)  # noqa: E731
    hw = df["hardware"].astype(str).map(lambda h: HARDWARE.get(h.strip().lower(), h.strip()))
    common = {"model": df["model"].astype(str).to_numpy(), "tp": num("tensor_parallel"),
              "batch": num("batch_size"), "hardware": opts.hardware or hw.to_numpy(), "dtype": DTYPE,
              "source": source_label(FORMAT, path), "source_row": np.arange(n, dtype=float),
              "stack": "splitwise"}
    prefill = pd.DataFrame({**common, "op": "step_prefill", "name": "prompt", "q_len": num("prompt_size"),
                            "kv_len": num("prompt_size"), "latency_ms": num("prompt_time")})
    decode = pd.DataFrame({**common, "op": "step_decode", "name": "token", "q_len": 1.0,
                           "kv_len": num("prompt_size") + num("token_size") / 2, "latency_ms": num("token_time")})
    return ReadOutput.of(pd.concat([prefill, decode], ignore_index=True))


READER = FormatReader(FORMAT, "Splitwise perf_model.csv (whole-request prompt and token times)", matches, read)
