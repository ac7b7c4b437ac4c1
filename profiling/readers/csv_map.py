"""Plain CSV with a column map: any table of measurements, mapped onto canonical fields.

The map (``--map`` or a YAML file) says, per canonical field, which source column holds
it and in which unit: ``{"latency_ms": "lat_us:us", "m": "M", "msg_bytes": "size:KB"}``.
``latency`` is accepted for ``latency_ms`` and ``latency_std`` for ``latency_std_ms``.
Time units: us, ms, s (-> ms); byte units: B, KB, MB, GB (decimal) and KiB, MiB, GiB
(-> bytes). Constant fields (``op``, ``hardware``, ``dtype``...) come from ``defaults``.
Without a map the CSV's own columns must be canonical names.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import HermesError, InputError
from ..roofline import FEATURE_COLUMNS
from ..schema import COLUMNS, NUMERIC_COLUMNS
from .base import FormatReader, ReadOptions, ReadOutput, read_csv, source_label

FORMAT = "csv"
TIME_UNITS = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}
BYTE_UNITS = {"b": 1.0, "bytes": 1.0, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2.0**10, "mib": 2.0**20,
              "gib": 2.0**30}
ALIASES = {"latency": "latency_ms", "latency_std": "latency_std_ms", "std": "latency_std_ms"}
_TIME_FIELDS = ("latency_ms", "latency_std_ms")
_BYTE_FIELDS = ("io_bytes", "msg_bytes")


def parse_map(spec: str | dict | None) -> dict[str, str]:
    """``"latency=lat_us:us,m=M"`` (or a dict) -> ``{canonical: "column[:unit]"}``, checked."""
    if not spec:
        return {}
    items = spec.items() if isinstance(spec, dict) else (
        (kv.split("=", 1) if "=" in kv else (kv, "")) for kv in str(spec).split(",") if kv.strip())
    out = {}
    for key, val in items:
        key, val = ALIASES.get(str(key).strip(), str(key).strip()), str(val).strip()
        if key not in COLUMNS:
            raise HermesError(f"--map: '{key}' is not a canonical field (known: {', '.join(COLUMNS)})")
        if not val:
            raise HermesError(f"--map: '{key}' needs a source column, as {key}=COLUMN[:UNIT]")
        col, _, unit = val.partition(":")
        if unit:
            _factor(key, unit)  # fail early on a unit that cannot apply
        out[key] = val
    return out


def _factor(field: str, unit: str) -> float:
    u = unit.strip().lower()
    if field in _TIME_FIELDS:
        if u not in TIME_UNITS:
            raise HermesError(f"--map: unit '{unit}' of {field} is not a time unit ({', '.join(TIME_UNITS)})")
        return TIME_UNITS[u]
    if field in _BYTE_FIELDS:
        if u not in BYTE_UNITS:
            raise HermesError(f"--map: unit '{unit}' of {field} is not a byte unit (B, KB, MB, GB, KiB, MiB, GiB)")
        return BYTE_UNITS[u]
    raise HermesError(f"--map: field '{field}' takes no unit (only latencies and byte counts do)")


def matches(path: Path) -> bool:
    return path.suffix == ".csv"


def read(path: Path, opts: ReadOptions) -> ReadOutput:
    df = read_csv(path, FORMAT)
    cmap = parse_map(opts.column_map)
    if not cmap:
        unknown = [c for c in df.columns if c not in COLUMNS and c not in FEATURE_COLUMNS]
        if unknown:
            raise InputError(f"unknown column(s) {', '.join(unknown)}: map them with --map FIELD=COLUMN[:UNIT]",
                             file=path)
        cmap = {c: c for c in df.columns if c in COLUMNS}
    missing = [v.partition(":")[0] for v in cmap.values() if v.partition(":")[0] not in df.columns]
    if missing:
        raise InputError(f"mapped column(s) not in the file: {', '.join(missing)}", file=path)
    out = pd.DataFrame(index=df.index)
    for field, val in cmap.items():
        col, _, unit = val.partition(":")
        s = df[col]
        if field in NUMERIC_COLUMNS:
            s = pd.to_numeric(s, errors="coerce") * (_factor(field, unit) if unit else 1.0)
        out[field] = s
    for field, value in opts.defaults.items():
        if field not in out:
            out[field] = value
    if opts.hardware:
        out["hardware"] = opts.hardware
    if "op" not in out:
        raise InputError("no operator kind: map a column to 'op' or pass --op", file=path)
    out["source"] = source_label(FORMAT, path)
    out["source_row"] = np.arange(len(df), dtype=float)
    return ReadOutput.of(out.reset_index(drop=True))


READER = FormatReader(FORMAT, "plain CSV with a column map (--map FIELD=COLUMN[:UNIT])", matches, read)
