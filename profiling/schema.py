"""The canonical trace table: one row per measured point, whatever format it came from.

Every reader returns a frame with (a subset of) these columns; ``validate_traces``
splits it into clean rows and a quarantine of rejected rows with the reason, the file
(``source``), the row and the column.

Units are in the names: ``latency_ms`` / ``latency_std_ms`` in milliseconds, ``io_bytes``
and ``msg_bytes`` in bytes; shape columns count elements, tokens or heads. ``source`` is
``"<format>:<file>"`` and ``source_row`` the 0-based data row inside that file (a CSV's
line number is ``source_row + 2``). ``stack`` is framework and version ("vllm 0.24.0"),
``kernel`` the implementation inside it (kernel source, backend) when the trace says.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .dtypes import DTYPE_BYTES, normalize_dtype
from .errors import HermesError
from .operators import OP_KINDS, REQUIRED_SHAPE

# Numeric shape columns (NaN when an op kind does not use them).
NUMERIC_SHAPE = ("m", "n", "k", "batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim",
                 "window", "elements", "io_bytes", "msg_bytes", "world", "nodes", "corpus", "dim",
                 "topk", "nprobe", "params", "tp", "pp")
TEXT_SHAPE = ("collective", "index", "model")
TEXT_COLUMNS = ("op", "name", *TEXT_SHAPE, "dtype", "kv_dtype", "hardware", "source", "stack", "kernel")
COLUMNS = ("op", "name", *NUMERIC_SHAPE, *TEXT_SHAPE, "dtype", "kv_dtype", "hardware",
           "latency_ms", "latency_std_ms", "samples", "source", "source_row", "stack", "kernel")
NUMERIC_COLUMNS = NUMERIC_SHAPE + ("latency_ms", "latency_std_ms", "samples", "source_row")
# One kernel under 0.1 microsecond or a single step over 10 minutes is a unit error.
MIN_LATENCY_MS, MAX_LATENCY_MS = 1e-4, 600_000.0
# The same point measured twice more than this far apart: we cannot tell which is right.
CONFLICT_RATIO = 2.0
QUARANTINE_COLUMNS = ("source", "source_row", "column", "reason")
# Columns that identify a measured point (everything but the measurement itself). The
# named op is part of it: Vidur's two layernorms or PyTorch's add and mul share a generic
# elementwise shape but are different kernels, not repeats of one measurement.
POINT_KEYS = ("op", "name", "hardware", "dtype", "kv_dtype", "stack", "kernel", *NUMERIC_SHAPE, *TEXT_SHAPE)


def empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float if c == "source_row" else object)
                         for c in QUARANTINE_COLUMNS})


def quarantine_rows(df: pd.DataFrame, column: str | pd.Series, reason: str | pd.Series) -> pd.DataFrame:
    """Quarantine records (source, source_row, column, reason) for the rows of ``df``."""
    n = len(df)
    col = column.to_numpy() if isinstance(column, pd.Series) else np.full(n, column, dtype=object)
    why = reason.to_numpy() if isinstance(reason, pd.Series) else np.full(n, reason, dtype=object)
    return pd.DataFrame({"source": df["source"].to_numpy() if "source" in df else np.full(n, None),
                         "source_row": pd.to_numeric(df["source_row"], errors="coerce").to_numpy(dtype=float)
                         if "source_row" in df else np.full(n, np.nan),
                         "column": col, "reason": why})


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Add missing canonical columns and fix their dtypes; keep column order stable.

    Builds a fresh frame column by column (no block copies: this runs on ~1M rows).
    """
    n = len(df)
    cols: dict[str, object] = {}
    for c in COLUMNS:
        if c in NUMERIC_COLUMNS:
            if c not in df:
                cols[c] = np.full(n, np.nan)
            else:
                v = df[c]
                cols[c] = (v.to_numpy(dtype="float64", na_value=np.nan) if pd.api.types.is_numeric_dtype(v)
                           else pd.to_numeric(v, errors="coerce").to_numpy(dtype="float64", na_value=np.nan))
        else:
            if c not in df:
                cols[c] = np.full(n, None, dtype=object)
            else:
                v = df[c].astype("object")
                cols[c] = v.where(v.notna(), None).to_numpy()
    for c in df.columns:
        if c not in cols:
            cols[c] = df[c].to_numpy()
    return pd.DataFrame(cols, index=pd.RangeIndex(n), copy=False)


def _canonical_dtypes(col: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(canonical names, mask of values that are not a known dtype); None stays None."""
    mapping: dict[object, object] = {}
    for v in col.dropna().unique():
        try:
            mapping[v] = normalize_dtype(v)
        except HermesError:
            mapping[v] = np.nan
    out = col.map(mapping)
    bad = col.notna() & out.isna()
    return out.astype(object).where(out.notna(), None), bad


def _key_codes(df: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """POINT_KEYS of ``rows`` as numbers (text factorized), constant columns dropped:
    hashing numbers is fast, hashing ~1M Python strings per column is not."""
    out = {}
    for c in POINT_KEYS:
        v = df[c].to_numpy()[rows]
        if c in NUMERIC_SHAPE:
            v = np.where(np.isnan(v), -1.0, v)
        else:
            v = pd.factorize(v, use_na_sentinel=True)[0]
        if len(v) and (v != v[0]).any():
            out[c] = v
    return pd.DataFrame(out)


def _conflicting_duplicates(df: pd.DataFrame, candidates: np.ndarray) -> np.ndarray:
    """Rows (among ``candidates``) whose point was measured again >CONFLICT_RATIO apart."""
    rows = np.flatnonzero(candidates)
    result = np.zeros(len(df), dtype=bool)
    if len(rows) < 2:
        return result
    codes = _key_codes(df, rows)
    key = (pd.util.hash_pandas_object(codes, index=False).to_numpy() if codes.shape[1]
           else np.zeros(len(rows), dtype=np.uint64))
    lat = df["latency_ms"].to_numpy()[rows]
    order = np.argsort(key, kind="stable")
    k_sorted = key[order]
    starts = np.flatnonzero(np.r_[True, k_sorted[1:] != k_sorted[:-1]])
    lo = np.minimum.reduceat(lat[order], starts)
    hi = np.maximum.reduceat(lat[order], starts)
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(order)]))
    conflict = np.empty(len(order), dtype=bool)
    conflict[order] = (hi > CONFLICT_RATIO * lo)[group]
    result[rows] = conflict
    return result


def _is_conformed(df: pd.DataFrame) -> bool:
    return (tuple(df.columns[:len(COLUMNS)]) == COLUMNS
            and all(df[c].dtype == np.float64 for c in NUMERIC_COLUMNS)
            and all(df[c].dtype == object for c in TEXT_COLUMNS))


def validate_traces(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(clean rows, quarantine). A row is rejected for the first problem found.

    Checks: known op kind, hardware given, dtype known, latency a positive number in a
    plausible range (ms), every shape field the kind needs present and positive, and no
    second measurement of the same point that disagrees by more than CONFLICT_RATIO.
    """
    df = df if _is_conformed(df) else conform(df)  # read-only below: no 1M-row copy
    n = len(df)
    rejected = np.zeros(n, dtype=bool)
    reason = np.full(n, "", dtype=object)
    column = np.full(n, "", dtype=object)

    def reject(mask, col: str, why) -> None:
        m = np.asarray(mask, dtype=bool) & ~rejected
        if m.any():
            reason[m] = why if isinstance(why, str) else np.asarray(why, dtype=object)[m]
            column[m] = col
            rejected[m] = True

    op = df["op"]
    reject(op.isna(), "op", "missing operator kind")
    unknown = ~op.isin(OP_KINDS).to_numpy()
    if unknown.any():  # name what the trace called it
        why = np.full(n, "", dtype=object)
        why[unknown] = ("unknown operator kind '" + op[unknown].astype(str) + "'").to_numpy()
        reject(unknown, "op", why)
    reject(df["hardware"].isna(), "hardware", "missing hardware (pass --hardware)")
    canonical = {}
    for c in ("dtype", "kv_dtype"):
        canon, bad = _canonical_dtypes(df[c])
        reject(bad, c, f"unknown dtype (known: {', '.join(DTYPE_BYTES)})")
        canonical[c] = canon.to_numpy()
    lat = df["latency_ms"].to_numpy()
    with np.errstate(invalid="ignore"):
        reject(np.isnan(lat), "latency_ms", "latency is missing or not a number")
        reject(np.isinf(lat), "latency_ms", "latency is infinite")
        reject(lat <= 0, "latency_ms", "latency must be > 0")
        reject(lat < MIN_LATENCY_MS, "latency_ms", f"latency below {MIN_LATENCY_MS} ms: wrong unit?")
        reject(lat > MAX_LATENCY_MS, "latency_ms", f"latency above {MAX_LATENCY_MS:g} ms: wrong unit?")
        reject(df["latency_std_ms"].to_numpy() < 0, "latency_std_ms", "negative standard deviation")
    op_values = op.to_numpy()
    for kind, cols in REQUIRED_SHAPE.items():
        is_kind = op_values == kind
        if not is_kind.any():
            continue
        for c in cols:
            if c in NUMERIC_SHAPE:
                v = df[c].to_numpy()
                with np.errstate(invalid="ignore"):
                    reject(is_kind & ~(np.isfinite(v) & (v > 0)), c, f"{kind} needs a positive '{c}'")
            else:
                reject(is_kind & df[c].isna().to_numpy(), c, f"{kind} needs '{c}'")
    reject(_conflicting_duplicates(df, ~rejected), "latency_ms",
           f"duplicate point with conflicting latency (>{CONFLICT_RATIO:g}x apart)")
    bad, keep = rejected, ~rejected
    quarantine = quarantine_rows(df[bad], pd.Series(column[bad]), pd.Series(reason[bad]))
    clean = pd.DataFrame({c: canonical.get(c, df[c].to_numpy())[keep] for c in df.columns})
    return clean, quarantine.reset_index(drop=True)
