"""A plain per-request CSV (read by ``profiling.readers.serving.read_request_csv``): columns
``arrival_s, prompt_tokens, output_tokens`` and any of ``ttft_s, tpot_s, e2e_s`` (seconds),
optionally ``ok`` (false for a failed request) and ``error``. The file says nothing about the
engine: overrides supply it. Arrivals are replayed as recorded (trace mode).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..base import to_bool
from ..serving import REQUEST_COLUMNS, read_request_csv
from .common import apply_overrides
from .schema import ServingRun, finish

NAME = "request-csv"


def detect(path: Path) -> bool:
    if path.suffix != ".csv" or not path.is_file():
        return False
    with open(path, errors="replace") as f:
        header = [c.strip() for c in f.readline().split(",")]
    return all(c in header for c in REQUEST_COLUMNS)


def read(path: str | Path, **overrides: Any) -> ServingRun:
    p = Path(path)
    df = read_request_csv(p)
    df["ok"] = to_bool(df["ok"]).to_numpy() if "ok" in df else np.ones(len(df), dtype=bool)
    df["arrival_s"] = df["arrival_s"] - df["arrival_s"].min()
    info = {"client": {"kind": "trace"}, "source": str(p), "format": NAME,
            "notes": ("arrival_s shifted to start at the first arrival",)}
    # Rows are counted as the CSV's lines (header = line 1).
    return finish(df, apply_overrides(info, overrides, p), p, first_row=2)
