"""NVIDIA AIPerf per-request export ``profile_export.jsonl`` (ai-dynamo/aiperf, layout of its
docs/tutorials/working-with-profile-exports.md, 2025): one JSON record a line with
``metadata`` (``request_start_ns``, ``request_end_ns`` epoch ns, ``benchmark_phase``,
``was_cancelled``, ...), ``metrics`` (name -> ``{value, unit}``: ``input_sequence_length``,
``output_sequence_length``, ``time_to_first_token``, ``request_latency``,
``inter_chunk_latency`` (list), ``inter_token_latency``; ``error_isl`` on a failed request)
and ``error`` (null or ``{code, type, message}``).

Units are converted from each metric's own ``unit``. ``inter_token_latency`` is AIPerf's
(latency - TTFT) / (OSL - 1), i.e. TPOT. Arrivals are the request start times. Records of a
phase other than ``profiling`` (warm-up) are left out and counted in the run's notes. The
aggregate ``profile_export_aiperf.json`` beside the file, when present, gives the model and
the load (concurrency or request rate).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from ...errors import InputError
from ...jsonfile import read_json
from .common import apply_overrides, first_line, gaps, numbers, read_jsonl
from .schema import ServingRun, finish

NAME = "aiperf"
_SECONDS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0}


def detect(path: Path) -> bool:
    head = first_line(path, ".jsonl")
    return '"metadata"' in head and '"request_start_ns"' in head


def _metric(rec: dict, name: str, file: Path, row: int, want: str) -> Any:
    """A metric's value in seconds (``want='s'``) or tokens; None when absent."""
    m = (rec.get("metrics") or {}).get(name)
    if m is None:
        return None
    if not isinstance(m, dict) or "value" not in m:
        raise InputError("expected {value, unit}", file=file, row=row, column=f"metrics.{name}")
    unit = str(m.get("unit", "")).lower()
    if want == "s":
        if unit not in _SECONDS:
            raise InputError(f"unknown time unit '{unit}'", file=file, row=row, column=f"metrics.{name}")
        v = m["value"]
        if isinstance(v, list):
            return gaps(v, file, f"metrics.{name}", row, scale=_SECONDS[unit])
        return numbers([v], file, f"metrics.{name}", scale=_SECONDS[unit], first_row=row)[0]
    return m["value"]


def read(path: str | Path, **overrides: Any) -> ServingRun:
    p = Path(path)
    records = read_jsonl(p, "profile export")
    rows, skipped = [], 0
    for i, rec in enumerate(records, start=1):
        meta = rec.get("metadata")
        if not isinstance(meta, dict):
            raise InputError("missing field", file=p, row=i, column="metadata")
        if meta.get("benchmark_phase", "profiling") != "profiling":
            skipped += 1
            continue
        for k in ("request_start_ns", "request_end_ns"):
            if meta.get(k) is None:
                raise InputError("missing field", file=p, row=i, column=f"metadata.{k}")
        err = rec.get("error")
        ok = err is None
        rows.append({
            "request_id": str(meta.get("x_request_id") or i), "line": i, "ok": ok,
            "start": meta["request_start_ns"],
            "prompt_tokens": _metric(rec, "input_sequence_length" if ok else "error_isl", p, i, "n"),
            "output_tokens": _metric(rec, "output_sequence_length", p, i, "n"),
            "ttft_s": _metric(rec, "time_to_first_token", p, i, "s"),
            "e2e_s": _metric(rec, "request_latency", p, i, "s"),
            "tpot_s": _metric(rec, "inter_token_latency", p, i, "s"),
            "itl_s": _metric(rec, "inter_chunk_latency", p, i, "s"),
            "error": "" if ok else f"{err.get('type', 'error')} ({err.get('code', '')}): {err.get('message', '')}"
            if isinstance(err, dict) else str(err)})
        if ok and rows[-1]["e2e_s"] is None:
            raise InputError("a successful request has no request_latency", file=p, row=i,
                             column="metrics.request_latency")
    if not rows:
        raise InputError("no profiling-phase records", file=p)
    df = pd.DataFrame(rows)
    start = numbers(df["start"].tolist(), p, "metadata.request_start_ns", scale=1e-9, allow_null=False)
    df["arrival_s"] = start - start.min()
    for c in ("prompt_tokens", "output_tokens", "ttft_s", "e2e_s", "tpot_s"):
        df[c] = numbers([None if v is None or (isinstance(v, float) and math.isnan(v)) else v
                         for v in df[c]], p, c)
    df = df.drop(columns=["start", "line"])

    agg = p.parent / "profile_export_aiperf.json"
    cfg = read_json(agg, "aggregate export").get("input_config", {}) if agg.is_file() else {}
    cfg = cfg if isinstance(cfg, dict) else {}
    endpoint, loadgen = cfg.get("endpoint") or {}, cfg.get("loadgen") or {}
    client: dict[str, Any] = {"kind": "trace"}
    if loadgen.get("request_rate"):
        client = {"kind": "trace", "rate": float(loadgen["request_rate"]),
                  "concurrency": loadgen.get("concurrency")}
    elif loadgen.get("concurrency"):
        client = {"kind": "closed_loop", "concurrency": int(loadgen["concurrency"])}
    models = endpoint.get("model_names") or []
    notes = ["arrival_s = request_start_ns - first request_start_ns",
             "tpot_s = AIPerf inter_token_latency, itl_s = inter_chunk_latency"]
    if skipped:
        notes.append(f"{skipped} warm-up record(s) left out (benchmark_phase != profiling)")
    info = {"model": str(models[0]) if models else "", "client": client, "source": str(p),
            "format": NAME, "notes": tuple(notes)}
    return finish(df, apply_overrides(info, overrides, p), p)
