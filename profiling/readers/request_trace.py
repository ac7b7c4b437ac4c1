"""Request traces: arrival time and prompt/output token counts per request (Azure/Splitwise,
MIST ShareGPT replay, length-only traces, a generic layout)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..csvfile import read_csv
from ..errors import InputError

# Known trace layouts in ../shared/traces/workloads: (time, prompt, output) columns.
TRACE_COLUMNS = (
    ("arrived_at", "num_prefill_tokens", "num_decode_tokens"),        # Splitwise/Azure via Vidur
    ("arrival_timestamp", "prompt_size", "token_size"),               # MIST ShareGPT replay
    (None, "num_prefill_tokens", "num_decode_tokens"),                # lengths only (arxiv)
    ("timestamp", "input_tokens", "output_tokens"),                   # generic
)


def read_trace(path: str | Path) -> pd.DataFrame:
    """A request trace as columns ``arrival`` (s, NaN if absent), ``prompt``, ``output``.
    Every row must be a request: finite non-decreasing arrivals, whole positive token counts."""
    p = Path(path)
    df = read_csv(p, "trace file")
    for t, pr, out in TRACE_COLUMNS:
        if pr in df.columns and out in df.columns and (t is None or t in df.columns):
            if df.empty:
                raise InputError("trace file has no requests (a header only)", file=p)
            prompt, output = (_tokens(df[c], p, c) for c in (pr, out))
            arrival = _arrivals(df[t], p, t) if t else np.full(len(df), np.nan)
            return pd.DataFrame({"arrival": arrival, "prompt": prompt, "output": output})
    known = "; ".join(",".join(c for c in cols if c) for cols in TRACE_COLUMNS)
    raise InputError(f"unknown trace columns {list(df.columns)} (expected one of: {known})", file=p)


def _bad_row(bad: np.ndarray) -> int:
    """CSV line of the first flagged row (line 1 is the header)."""
    return int(np.flatnonzero(bad)[0]) + 2


def _cell(col: pd.Series, line: int) -> str:
    """The value at a CSV line as the file shows it."""
    v = col.iloc[line - 2]
    return repr(v.item() if hasattr(v, "item") else v)


def _tokens(col: pd.Series, p: Path, name: str) -> np.ndarray:
    """Whole positive token counts (12.7 tokens is a broken trace, not 12)."""
    x = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(x) | (x < 1) | (x != np.floor(x))
    if bad.any():
        i = _bad_row(bad)
        raise InputError(f"token count must be a positive whole number (got {_cell(col, i)})",
                         file=p, row=i, column=name)
    return x.astype(np.int64)


def _arrivals(col: pd.Series, p: Path, name: str) -> np.ndarray:
    """Finite, non-decreasing arrival times."""
    x = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(x)
    if bad.any():
        i = _bad_row(bad)
        raise InputError(f"arrival time must be a finite number (got {_cell(col, i)})",
                         file=p, row=i, column=name)
    back = np.r_[False, np.diff(x) < 0]
    if back.any():
        raise InputError("arrival times must not decrease (this row is earlier than the one before)",
                         file=p, row=_bad_row(back), column=name)
    return x
