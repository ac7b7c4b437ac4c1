"""The canonical serving run: what the engine and client were (``RunInfo``) and what each
request measured (``ServingRun.requests``), whatever benchmark tool wrote it.

Per-request columns (units in the names; NaN where the source did not record a value, never
invented): ``arrival_s`` (seconds from the run's first arrival), ``prompt_tokens``,
``output_tokens``, ``ttft_s``, ``e2e_s``, ``tpot_s`` (mean time per output token after the
first), ``itl_s`` (list of inter-token gaps, or None), ``ok`` (False for a failed request:
kept and counted, never dropped), ``error`` (the failure's message, '' when ok),
``request_id`` and ``prefix`` (the prompt's composition as space-separated ``ID:TOKENS``
segments in prompt order, '' when unknown: two requests' IDs are equal exactly when their
prompts are equal up to and including that segment, and a request's segment tokens sum to
its ``prompt_tokens``; see ``prefix.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ...atomicfile import atomic_path, write_text_atomic
from ...errors import InputError

ENGINES = ("vllm", "sglang", "trtllm", "unknown")
Engine = Literal["vllm", "sglang", "trtllm", "unknown"]

LATENCY_COLUMNS = ("ttft_s", "e2e_s", "tpot_s")
TOKEN_COLUMNS = ("prompt_tokens", "output_tokens")
COLUMNS = ("request_id", "arrival_s", *TOKEN_COLUMNS, *LATENCY_COLUMNS, "itl_s", "ok", "error", "prefix")


class ClientMode(BaseModel):
    """How the benchmark client sent requests, i.e. what a replay must reproduce.

    ``open_loop``: arrivals at ``rate`` req/s (inter-arrival gamma with shape ``burstiness``;
    1 = Poisson; ``inf`` = all at once); ``trace``: the recorded ``arrival_s`` of each request;
    ``closed_loop``: ``concurrency`` users, each sending its next request when the previous
    one finished. ``concurrency`` on an open loop or trace is the client's in-flight cap.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    kind: Literal["open_loop", "trace", "closed_loop"]
    rate: float | None = Field(default=None, gt=0, description="requests/s (open loop)")
    burstiness: float = Field(default=1.0, gt=0, description="gamma shape of inter-arrivals")
    concurrency: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _complete(self) -> ClientMode:
        if self.kind == "open_loop" and self.rate is None:
            raise ValueError("an open loop needs its rate")
        if self.kind == "closed_loop" and self.concurrency is None:
            raise ValueError("a closed loop needs its concurrency")
        return self


class RunInfo(BaseModel):
    """One serving run's engine, deployment and client, plus where it was read from."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    engine: Engine = "unknown"
    engine_version: str = ""
    engine_args: dict[str, Any] = Field(default_factory=dict, description="the engine's own argument names")
    # What the engine resolved or measured at start-up (e.g. vLLM's num_gpu_blocks): facts, not arguments.
    engine_facts: dict[str, Any] = Field(default_factory=dict)
    model: str = ""
    gpu: str = Field(default="", description="hardware catalog name when recognised, else as recorded")
    tp: int = Field(default=1, ge=1)
    pp: int = Field(default=1, ge=1)
    dp: int = Field(default=1, ge=1)
    ep: int = Field(default=1, ge=1)
    client: ClientMode
    source: str = ""
    format: str = ""
    num_requests: int = Field(default=0, ge=0)
    num_failed: int = Field(default=0, ge=0)
    # How derived columns were computed (which clock, which formula): one line each.
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServingRun:
    """A run's info and its per-request table (``COLUMNS``, one row per request sent)."""

    info: RunInfo
    requests: pd.DataFrame

    def __post_init__(self) -> None:
        missing = [c for c in COLUMNS if c not in self.requests.columns]
        if missing:
            raise ValueError(f"requests table lacks column(s) {missing}")
        n, failed = len(self.requests), int((~self.requests["ok"].astype(bool)).sum())
        if (self.info.num_requests, self.info.num_failed) != (n, failed):
            raise ValueError(f"info counts {self.info.num_requests}/{self.info.num_failed} do not "
                             f"match the table's {n}/{failed}")
        if self.info.client.kind == "trace" and self.requests["arrival_s"].isna().any():
            raise ValueError("a trace-mode run needs every arrival_s")

    @property
    def ok(self) -> pd.DataFrame:
        """The requests that completed."""
        return self.requests[self.requests["ok"]]

    # ---- files: <stem>.parquet (requests) + <stem>.info.json (info) ----------------------
    @staticmethod
    def info_path(parquet: str | Path) -> Path:
        p = Path(parquet)
        return p.with_name(p.stem + ".info.json")

    def save(self, parquet: str | Path) -> Path:
        """Write the requests to ``parquet`` and the info as JSON beside it; returns the Parquet path."""
        p = Path(parquet)
        table = self.requests.copy()
        # A list column holding None for unrecorded rows: Parquet keeps it as a null list.
        table["itl_s"] = [None if v is None else [float(x) for x in v] for v in table["itl_s"]]
        with atomic_path(p) as tmp:
            table.to_parquet(tmp, engine="pyarrow", index=False)
        write_text_atomic(self.info_path(p), self.info.model_dump_json(indent=2) + "\n")
        return p

    @classmethod
    def load(cls, parquet: str | Path) -> ServingRun:
        p = Path(parquet)
        ip = cls.info_path(p)
        for f in (p, ip):
            if not f.is_file():
                raise InputError("saved run file not found", file=f)
        try:
            info = RunInfo.model_validate_json(ip.read_text())
        except ValidationError as e:
            err = e.errors()[0]
            raise InputError(f"not a run info file ({err['msg']})", file=ip,
                             column=".".join(str(x) for x in err["loc"]) or None) from None
        try:
            table = pd.read_parquet(p, engine="pyarrow")
        except (OSError, ValueError, pa.ArrowException) as e:
            raise InputError(f"not a readable Parquet file ({type(e).__name__})", file=p) from None
        table["itl_s"] = [None if v is None else [float(x) for x in v] for v in table["itl_s"]]
        try:
            return cls(info, conform(table))
        except ValueError as e:
            raise InputError(str(e), file=p) from None


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """The table in ``COLUMNS`` order with its dtypes: float seconds, nullable integer tokens."""
    n = len(df)

    def num(c: str) -> np.ndarray:
        return pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float) if c in df else np.full(n, np.nan)

    cols: dict[str, Any] = {
        "request_id": df["request_id"].astype(str).to_numpy() if "request_id" in df else [str(i) for i in range(n)]}
    for c in ("arrival_s", *TOKEN_COLUMNS, *LATENCY_COLUMNS):
        cols[c] = num(c)
    for c in TOKEN_COLUMNS:
        cols[c] = pd.array(np.round(cols[c]), dtype="Int64")  # NaN -> <NA>
    cols["itl_s"] = list(df["itl_s"]) if "itl_s" in df else [None] * n
    cols["ok"] = df["ok"].to_numpy(dtype=bool) if "ok" in df else np.ones(n, dtype=bool)
    cols["error"] = df["error"].fillna("").astype(str).to_numpy() if "error" in df else np.full(n, "")
    # Optional: runs saved before the column existed, and readers that cannot tell, have ''.
    cols["prefix"] = df["prefix"].fillna("").astype(str).to_numpy() if "prefix" in df else np.full(n, "")
    return pd.DataFrame({c: cols[c] for c in COLUMNS})


def finish(df: pd.DataFrame, info: dict[str, Any], file: Path, first_row: int = 1) -> ServingRun:
    """Conform the table, check it (one line naming the file, row and column on a bad value)
    and build the run with its counts."""
    table = conform(df)
    check_requests(table, file, first_row)
    info = {**info, "num_requests": len(table), "num_failed": int((~table["ok"]).sum())}
    try:
        run_info = RunInfo.model_validate(info)
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(f"{err['msg']}", file=file,
                         column=".".join(str(x) for x in err["loc"]) or None) from None
    try:
        return ServingRun(run_info, table)
    except ValueError as e:
        raise InputError(str(e), file=file) from None


def check_requests(table: pd.DataFrame, file: Path, first_row: int = 1) -> None:
    """Latencies are finite and non-negative where recorded, a completed request has its TTFT
    or E2E, and E2E is not shorter than TTFT. ``row`` in errors counts requests from ``first_row``."""
    def bad(mask: np.ndarray, column: str, message: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            raise InputError(message, file=file, row=i + first_row, column=column)

    for c in ("arrival_s", *LATENCY_COLUMNS):
        v = table[c].to_numpy(dtype=float)
        bad(np.isinf(v), c, "latency must be finite")
        bad(v < 0, c, "must not be negative")
    for c in TOKEN_COLUMNS:
        v = table[c].to_numpy(dtype=float, na_value=np.nan)
        bad(v < 0, c, "token count must not be negative")
    ok = table["ok"].to_numpy(dtype=bool)
    ttft, e2e = table["ttft_s"].to_numpy(dtype=float), table["e2e_s"].to_numpy(dtype=float)
    bad(ok & np.isnan(ttft) & np.isnan(e2e), "e2e_s", "a completed request records neither TTFT nor E2E")
    # Clocks read at microsecond resolution: allow that much disorder.
    bad(ok & (e2e < ttft - 1e-6), "e2e_s", "E2E latency is shorter than TTFT")
    for i, v in enumerate(table["itl_s"]):
        if v is not None and any((not math.isfinite(x)) or x < 0 for x in v):
            raise InputError("inter-token latencies must be finite and non-negative",
                             file=file, row=i + first_row, column="itl_s")

