"""End-to-end serving measurements: ``silicon_sample.csv`` rows, per-request CSVs, and vLLM
``benchmark_serving`` result JSON with the trace it replayed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..jsonfile import read_json
from .base import read_csv
from .request_trace import read_trace

SILICON_COLUMNS = ("model_path", "system", "backend", "precision", "mode", "isl", "osl",
                   "batch_size", "tp_size", "pp_size", "silicon_ttft_ms", "silicon_tpot_ms")


# Counts a row's replay divides by or multiplies with: blank is allowed (a disaggregated row
# leaves the aggregated ones empty, and vice versa), anything else must be a whole number >= 1.
SILICON_COUNTS = ("isl", "osl", "batch_size", "tp_size", "pp_size", "attention_dp_size",
                  "prefill_batch_size", "prefill_num_workers", "prefill_tp_size", "prefill_pp_size",
                  "prefill_attention_dp_size", "decode_batch_size", "decode_num_workers", "decode_tp_size",
                  "decode_pp_size", "decode_attention_dp_size")
SILICON_TIMES = ("silicon_ttft_ms", "silicon_tpot_ms")
REQUIRED_COUNTS = ("isl", "osl")


def read_silicon(path: str | Path) -> pd.DataFrame:
    """``silicon_sample.csv`` rows (one measured closed-loop run each). Refused with the row
    and column: a TTFT/TPOT that is not a positive number of milliseconds, a length or
    parallelism count that is not a whole number >= 1, and a file without rows."""
    p = Path(path)
    if not p.is_file():
        raise InputError("measurements file not found", file=p)
    df = read_csv(p, "silicon measurements")
    missing = [c for c in SILICON_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"missing silicon columns {missing}", file=p)
    if df.empty:
        raise InputError("no rows (only a header): nothing to validate", file=p)
    for c in SILICON_TIMES:
        df[c] = _column(df, c, p, lambda v: np.isfinite(v) & (v > 0), "must be a positive number of milliseconds")
    for c in SILICON_COUNTS:
        if c in df.columns:
            ok = (lambda v: np.isfinite(v) & (v >= 1) & (v == np.round(v)))
            blank_ok = c not in REQUIRED_COUNTS
            df[c] = _column(df, c, p, ok, "must be a whole number >= 1", blank_ok)
    if "id" not in df.columns:
        df["id"] = [f"row{i + 2}" for i in range(len(df))]
    return df


def _column(df: pd.DataFrame, col: str, path: Path, ok, what: str, blank_ok: bool = False) -> pd.Series:
    """``df[col]`` as numbers, or the first row (file line) whose value fails ``ok``."""
    v = pd.to_numeric(df[col], errors="coerce").astype(float)
    blank = df[col].isna()
    bad = ~ok(v.to_numpy()) & ~(blank.to_numpy() & blank_ok)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raw = df[col].iloc[i]
        raw = raw.item() if hasattr(raw, "item") else raw
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)                           # pandas reads a column with blanks as floats
        got = "blank" if pd.isna(raw) else repr(raw)
        raise InputError(f"{what} (got {got})", file=path, row=i + 2, column=col)
    return v


# ---- per-request measurements (CSV) and vLLM benchmark_serving JSON ---------------------

REQUEST_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens")
MEASURED_COLUMNS = ("ttft_s", "tpot_s", "e2e_s")


def read_request_csv(path: str | Path) -> pd.DataFrame:
    """Per-request measurements: ``arrival_s, prompt_tokens, output_tokens`` and any of
    ``ttft_s, tpot_s, e2e_s`` (seconds). Arrivals and times are finite numbers >= 0, token
    counts whole numbers >= 1; a file without rows is refused."""
    p = Path(path)
    if not p.is_file():
        raise InputError("measurements file not found", file=p)
    df = read_csv(p, "per-request measurements")
    for c in REQUEST_COLUMNS:
        if c not in df.columns:
            raise InputError(f"missing column (need {', '.join(REQUEST_COLUMNS)} and any of "
                             f"{', '.join(MEASURED_COLUMNS)})", file=p, column=c)
    if not any(c in df.columns for c in MEASURED_COLUMNS):
        raise InputError(f"no measured column (any of {', '.join(MEASURED_COLUMNS)})", file=p)
    if df.empty:
        raise InputError("no rows (only a header): nothing to validate", file=p)
    for c in ("arrival_s", *[m for m in MEASURED_COLUMNS if m in df.columns]):
        df[c] = _column(df, c, p, lambda v: np.isfinite(v) & (v >= 0), "must be a finite number >= 0")
    for c in ("prompt_tokens", "output_tokens"):
        df[c] = _column(df, c, p, lambda v: np.isfinite(v) & (v >= 1) & (v == np.round(v)),
                        "must be a whole number of tokens >= 1").astype(np.int64)
    return df.sort_values("arrival_s", kind="stable").reset_index(drop=True)


# benchmark_serving's per-request lists: (field, integer token count?, required)
BENCH_FIELDS = (("input_lens", True, True), ("output_lens", True, True), ("ttfts", False, True),
                ("e2els", False, False))


def read_vllm_bench(result: str | Path, trace: str | Path) -> pd.DataFrame:
    """vLLM ``benchmark_serving`` result JSON (``input_lens, output_lens, ttfts`` and optional
    ``e2els``, one entry per request, all the same length) and the replayed trace
    (``arrival_timestamp, prompt_size, token_size``) as a request CSV.

    benchmark_serving sends the first ``num_prompts`` requests of its dataset, so a trace
    longer than the result is fine: its first ``len(ttfts)`` rows give the arrivals (the
    token counts come from the result, as the server tokenized them). A trace shorter than
    the result cannot have been the one replayed and is refused, naming both files.
    Requests the benchmark recorded as failed (``errors[i]`` non-empty, or no output
    tokens) keep their row with NaN measured times, so they are replayed but not compared;
    ``failed`` holds the reason."""
    rp, tp = Path(result), Path(trace)
    doc = read_json(rp, "result file")
    if not isinstance(doc, dict):
        raise InputError("expected a JSON object with the per-request lists input_lens, output_lens, ttfts (and e2els), "
                         f"got a {type(doc).__name__}", file=rp)
    cols: dict[str, np.ndarray] = {}
    for field, whole, required in BENCH_FIELDS:
        if field not in doc and not required:
            continue
        cols[field] = _bench_list(doc.get(field), field, whole, rp)
    n = len(cols["ttfts"])
    for field, v in cols.items():
        if len(v) != n:
            raise InputError(f"field '{field}' has {len(v)} entries but 'ttfts' has {n} "
                             "(one entry per request in each list)", file=rp)
    if n == 0:
        raise InputError("field 'ttfts' is empty: no requests to validate", file=rp)
    errors = doc.get("errors")
    errors = [str(e) if e else "" for e in errors] if isinstance(errors, list) and len(errors) == n else [""] * n
    tr = read_trace(tp)
    if len(tr) < n:
        raise InputError(f"the trace {tp} has {len(tr)} requests but the result {rp} has {n}: "
                         "it cannot be the trace the benchmark replayed", file=rp)
    arrival = tr.arrival.to_numpy(float)[:n]
    if not np.isfinite(arrival).all():
        raise InputError("the trace has no arrival times; vllm-bench needs the replayed arrivals", file=tp)
    failed = [e or ("no output tokens" if o == 0 else "") for e, o in zip(errors, cols["output_lens"])]
    dead = np.array([bool(f) for f in failed])
    df = pd.DataFrame({"arrival_s": arrival - arrival[0],
                       "prompt_tokens": cols["input_lens"].astype(np.int64),
                       "output_tokens": cols["output_lens"].astype(np.int64),
                       "ttft_s": np.where(dead, np.nan, cols["ttfts"])})
    if "e2els" in cols:
        df["e2e_s"] = np.where(dead, np.nan, cols["e2els"])
    df["failed"] = [f"failed in the measured run ({f})" if f else "" for f in failed]
    return df


def _bench_list(value, field: str, whole: bool, path: Path) -> np.ndarray:
    """One per-request list of the result JSON as numbers, or the entry that is not one."""
    if not isinstance(value, list):
        got = "missing" if value is None else f"a {type(value).__name__}"
        raise InputError(f"field '{field}' must be a list (one entry per request), got {got}", file=path)
    for i, x in enumerate(value):
        number = isinstance(x, (int, float)) and not isinstance(x, bool)
        if not number or not np.isfinite(x) or x < 0 or (whole and x != int(x)):
            want = "a whole number of tokens >= 0" if whole else "a finite number of seconds >= 0"
            raise InputError(f"field '{field}' entry {i}: must be {want}, got {x!r}", file=path)
    return np.asarray(value, dtype=float)
