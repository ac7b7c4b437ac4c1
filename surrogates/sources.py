"""Training inputs: canonical trace tables (Parquet from ``hermes-sim profile ingest``) or
raw trace folders read through ``profiling.readers``; plus the table's content hash."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from profiling.errors import InputError
from profiling.schema import COLUMNS, validate_traces

Progress = Callable[[str], None]


def load_traces(paths: Sequence[str | Path], fmt: str | None = None, hardware: str | None = None,
                progress: Progress | None = None, column_map: dict | str | None = None,
                defaults: dict | None = None) -> pd.DataFrame:
    """One clean canonical table from canonical Parquet files, or raw paths of format ``fmt``
    (``column_map`` and ``defaults``: the field mapping and constant fields of plain CSV)."""
    if not paths:
        raise InputError("no trace files given")
    frames = []
    for p in map(Path, paths):
        if not p.exists():
            raise InputError("trace path not found", file=p)
        if fmt:
            from profiling.ingest import read_traces
            res = read_traces(p, fmt, hardware=hardware, column_map=column_map, defaults=defaults)
            df, bad = res.table, len(res.quarantine)
            if progress and res.skipped:
                progress(f"{p}: {res.skipped_note()}")
        else:
            if p.is_dir() or p.suffix != ".parquet":
                raise InputError("not a canonical trace table (.parquet from `hermes-sim profile ingest`); "
                                 "pass --format FORMAT to read raw traces", file=p)
            try:
                raw = pd.read_parquet(p)
            except Exception as e:  # pyarrow raises several types for a corrupt file
                raise InputError(f"cannot read Parquet ({type(e).__name__})", file=p) from None
            missing = [c for c in ("op", "hardware", "latency_ms") if c not in raw]
            if missing:
                raise InputError(f"not a canonical trace table: missing column '{missing[0]}'", file=p,
                                 column=missing[0])
            df, quarantine = validate_traces(raw)
            bad = len(quarantine)
        if progress:
            progress(f"{p}: {len(df)} rows" + (f", {bad} quarantined" if bad else ""))
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    if table.empty:
        raise InputError(f"no usable trace rows in {', '.join(map(str, paths))}")
    return table


def table_hash(table: pd.DataFrame) -> str:
    """SHA-256 of the canonical columns, row-order independent: identifies a training set."""
    cols = [c for c in COLUMNS if c in table and c not in ("source", "source_row")]
    rows = pd.util.hash_pandas_object(table[cols], index=False).sort_values()
    return hashlib.sha256(rows.to_numpy().tobytes()).hexdigest()
