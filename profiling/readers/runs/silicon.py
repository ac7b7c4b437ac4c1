"""AIConfigurator ``silicon_sample.csv`` rows (read by ``profiling.readers.serving.read_silicon``)
as closed-loop runs: the recorded ``silicon_concurrency`` (else ``batch_size``) users at a time, each request ``isl`` prompt and ``osl``
output tokens, measured ``silicon_ttft_ms`` and ``silicon_tpot_ms`` as means over the run.

The file holds no per-request values, so a run's table is ONE row: the run's mean TTFT and
TPOT (E2E and arrivals NaN), with ``request_id`` = the row's id. Columns ``backend``,
``backend_version``, ``model_path``, ``system`` (the GPU), ``tp_size``, ``pp_size``,
``attention_dp_size``, ``moe_ep_size`` fill the run info; disaggregated rows keep their
prefill/decode settings in ``engine_facts``.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from ...errors import InputError
from ..serving import read_silicon
from .common import apply_overrides, engine_of, gpu_name
from .schema import ServingRun, finish

NAME = "silicon"
# The harness's clients in flight, recorded in the source text; Dynamo deployments record the
# engine's max batch (not the clients) in batch_size.
_CONCURRENCY = re.compile(r"silicon_concurrency=(\d+)")
_DYNAMO = re.compile(r"dynamo_version=")


def detect(path: Path) -> bool:
    if path.suffix != ".csv" or not path.is_file():
        return False
    with open(path, errors="replace") as f:
        header = f.readline()
    return all(c in header for c in ("silicon_ttft_ms", "silicon_tpot_ms", "batch_size", "isl", "osl"))


def _int(row: pd.Series, col: str, default: int = 1) -> int:
    v = row.get(col)
    return default if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)


def _concurrency(row: pd.Series, line: int, p: Path) -> int:
    """Recorded ``silicon_concurrency``, else ``batch_size`` of an aggregated non-Dynamo row."""
    src = str(row.get("silicon_data_source", "") or "")
    m = _CONCURRENCY.search(src)
    if m:
        return int(m.group(1))
    if row["mode"] == "disagg" or _DYNAMO.search(src):
        raise InputError("no client concurrency recorded (a disaggregated or Dynamo row without "
                         "silicon_concurrency in its source)", file=p, row=line, column="silicon_data_source")
    v = pd.to_numeric(pd.Series([row["batch_size"]]), errors="coerce").iloc[0]
    if pd.isna(v) or v < 1:
        raise InputError("must be a positive number", file=p, row=line, column="batch_size")
    return int(v)


def _run(row: pd.Series, line: int, p: Path, overrides: dict[str, Any]) -> ServingRun:
    for c in ("isl", "osl", "silicon_ttft_ms", "silicon_tpot_ms"):
        v = pd.to_numeric(pd.Series([row[c]]), errors="coerce").iloc[0]
        if pd.isna(v) or v <= 0 or math.isinf(v):
            raise InputError("must be a positive number", file=p, row=line, column=c)
    df = pd.DataFrame({"request_id": [str(row["id"])], "arrival_s": [math.nan],
                       "prompt_tokens": [row["isl"]], "output_tokens": [row["osl"]],
                       "ttft_s": [float(row["silicon_ttft_ms"]) / 1e3], "e2e_s": [math.nan],
                       "tpot_s": [float(row["silicon_tpot_ms"]) / 1e3], "itl_s": [None],
                       "ok": [True], "error": [""]})
    concurrency = _concurrency(row, line, p)
    facts: dict[str, Any] = {"precision": str(row["precision"]), "mode": str(row["mode"])}
    if pd.notna(row.get("batch_size")):
        facts["batch_size"] = int(float(row["batch_size"]))
    disagg = {c: row[c] for c in row.index if c.startswith(("prefill_", "decode_")) and pd.notna(row[c])}
    if disagg:
        facts["disagg"] = {k: (int(v) if float(v).is_integer() else float(v)) for k, v in disagg.items()}
    version = row.get("backend_version")
    info = {"engine": engine_of(str(row["backend"])),
            "engine_version": "" if pd.isna(version) else str(version),
            "engine_facts": facts, "model": str(row["model_path"]), "gpu": gpu_name(str(row["system"])),
            "tp": _int(row, "tp_size"), "pp": _int(row, "pp_size"), "dp": _int(row, "attention_dp_size"),
            "ep": _int(row, "moe_ep_size"),
            "client": {"kind": "closed_loop", "concurrency": concurrency},
            "source": f"{p}:{line}", "format": NAME,
            "notes": ("one row: the run's mean TTFT and TPOT (the file records no per-request values)",)}
    return finish(df, apply_overrides(info, overrides, p), p)


def read_all(path: str | Path, **overrides: Any) -> tuple[list[ServingRun], list[str]]:
    """Every row of the file as a run, and one line per row that is not a run and why."""
    p = Path(path)
    runs, refused = [], []
    for i, (_, row) in enumerate(read_silicon(p).iterrows()):
        try:
            runs.append(_run(row, i + 2, p, overrides))
        except InputError as e:
            refused.append(str(e))
    return runs, refused


def read(path: str | Path, *, index: int | str | None = None, **overrides: Any) -> ServingRun:
    """One row: ``index`` is its 0-based position or its ``id``; a one-row file needs none."""
    p = Path(path)
    df = read_silicon(p)
    if index is None:
        if len(df) != 1:
            raise InputError(f"holds {len(df)} runs (one per row): say which one (index or id)", file=p)
        index = 0
    if isinstance(index, str):
        hits = [i for i, v in enumerate(df["id"].astype(str)) if v == index]
        if not hits:
            raise InputError(f"no row with id '{index}'", file=p, column="id")
        index = hits[0]
    if not 0 <= index < len(df):
        raise InputError(f"has no row {index} (it holds {len(df)})", file=p)
    return _run(df.iloc[index], index + 2, p, overrides)

