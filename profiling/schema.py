"""The canonical trace table: one row per measured point, whatever format it came from.

Every reader returns a frame with (a subset of) these columns; ``validate_traces``
splits it into clean rows and a quarantine of rejected rows with the reason, the file,
the row and the column.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .operators import OP_KINDS, REQUIRED_SHAPE

# Numeric shape columns (NaN when an op kind does not use them).
NUMERIC_SHAPE = ("m", "n", "k", "batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim",
                 "window", "elements", "io_bytes", "msg_bytes", "world", "nodes", "corpus", "dim",
                 "topk", "nprobe", "params", "tp", "pp")
TEXT_SHAPE = ("collective", "index", "model")
COLUMNS = ("op", "name", *NUMERIC_SHAPE, *TEXT_SHAPE, "dtype", "kv_dtype", "hardware",
           "latency_ms", "latency_std_ms", "samples", "source", "source_row", "stack")
# One kernel under 0.1 microsecond or a single step over 10 minutes is a unit error.
MIN_LATENCY_MS, MAX_LATENCY_MS = 1e-4, 600_000.0
QUARANTINE_COLUMNS = ("source", "source_row", "column", "reason")


def empty_table() -> pd.DataFrame:
    return conform(pd.DataFrame())


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Add missing canonical columns and fix their dtypes; keep column order stable."""
    df = df.copy()
    for c in COLUMNS:
        if c not in df:
            df[c] = np.nan
    for c in NUMERIC_SHAPE + ("latency_ms", "latency_std_ms", "samples", "source_row"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in ("op", "name", *TEXT_SHAPE, "dtype", "kv_dtype", "hardware", "source", "stack"):
        df[c] = df[c].astype("object").where(df[c].notna(), None)
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[list(COLUMNS) + extra].reset_index(drop=True)


def validate_traces(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(clean rows, quarantine). A row is rejected for the first problem found."""
    df = conform(df)
    reason = pd.Series("", index=df.index, dtype=object)
    column = pd.Series("", index=df.index, dtype=object)

    def reject(mask: pd.Series, col: str, why: str) -> None:
        m = mask & (reason == "")
        reason[m] = why
        column[m] = col

    reject(~df["op"].isin(OP_KINDS), "op", "unknown operator kind")
    reject(df["hardware"].isna(), "hardware", "missing hardware")
    lat = df["latency_ms"]
    reject(lat.isna(), "latency_ms", "latency is missing or not a number")
    reject(lat <= 0, "latency_ms", "latency must be > 0")
    reject((lat > 0) & (lat < MIN_LATENCY_MS), "latency_ms", f"latency below {MIN_LATENCY_MS} ms: wrong unit?")
    reject(lat > MAX_LATENCY_MS, "latency_ms", f"latency above {MAX_LATENCY_MS:g} ms: wrong unit?")
    for kind, cols in REQUIRED_SHAPE.items():
        is_kind = df["op"] == kind
        for c in cols:
            v = df[c]
            if c in NUMERIC_SHAPE:
                reject(is_kind & (v.isna() | (v <= 0)), c, f"{kind} needs a positive '{c}'")
            else:
                reject(is_kind & v.isna(), c, f"{kind} needs '{c}'")
    # Same point measured twice with results more than 2x apart: we cannot tell which is right.
    keys = ["op", "hardware", "dtype", "kv_dtype", "stack", *NUMERIC_SHAPE, *TEXT_SHAPE]
    ok = reason == ""
    if ok.any():
        g = df[ok].fillna({c: -1 for c in NUMERIC_SHAPE}).astype({c: str for c in keys if c not in NUMERIC_SHAPE})
        grp = g.groupby(keys, dropna=False)["latency_ms"]
        lo, hi = grp.transform("min"), grp.transform("max")
        conflict = (hi > 2 * lo)
        reject(conflict.reindex(df.index, fill_value=False), "latency_ms",
               "duplicate point with conflicting latency (>2x apart)")
    bad = reason != ""
    quarantine = pd.DataFrame({
        "source": df.loc[bad, "source"], "source_row": df.loc[bad, "source_row"],
        "column": column[bad], "reason": reason[bad]})
    return df[~bad].reset_index(drop=True), quarantine.reset_index(drop=True)
