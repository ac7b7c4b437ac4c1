"""LLMServingSim's bench format (casys-kaist/LLMServingSim ``bench/``, schema_version 1): a run
folder with ``meta.json`` (vLLM version, ``engine_kwargs``, ``kv_cache``, ``hardware``) and
``requests.jsonl`` (per request ``request_id, input_toks, output_toks, arrival_time`` on the
client's Unix clock and the engine's ``queued_ts, scheduled_ts, first_token_ts,
last_token_ts`` on its monotonic clock, another origin), optionally ``timeseries.csv`` and the
simulator's cluster ``config.json`` (beside the files or one folder up).

Latencies are taken within the engine's clock, as LLMServingSim's own ``bench validate`` does:
TTFT = first_token_ts - queued_ts, E2E = last_token_ts - queued_ts, TPOT = (last_token_ts -
first_token_ts) / (output_toks - 1). Arrivals come from ``arrival_time``. The two clocks must
line up: each request's queued_ts - arrival_time may drift from the run's median offset by at
most ``CLOCK_SLACK_S`` (or 5% of the arrival span), else the file is refused. A request without
a first or last token is kept as failed.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...errors import InputError
from ...jsonfile import read_json
from .common import apply_overrides, gpu_name, numbers, read_jsonl
from .schema import ServingRun, finish

NAME = "llmservingsim"
REQUIRED = ("input_toks", "output_toks", "arrival_time", "queued_ts")
CLOCK_SLACK_S = 1.0


def _folder(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def detect(path: Path) -> bool:
    d = _folder(path)
    return (d / "meta.json").is_file() and (d / "requests.jsonl").is_file()


def _config_gpu(folder: Path) -> str:
    """The hardware the simulator's cluster config names for the run ('' if none)."""
    for cfg in (folder / "config.json", folder.parent / "config.json"):
        if cfg.is_file():
            doc = read_json(cfg, "cluster config")
            for node in doc.get("nodes", []) if isinstance(doc, dict) else []:
                for inst in node.get("instances", []):
                    if inst.get("hardware"):
                        return str(inst["hardware"])
    return ""


def read(path: str | Path, **overrides: Any) -> ServingRun:
    folder = _folder(Path(path))
    meta_p, req_p = folder / "meta.json", folder / "requests.jsonl"
    meta = read_json(meta_p, "run meta file")
    if not isinstance(meta, dict):
        raise InputError("not an LLMServingSim meta.json (expected a JSON object)", file=meta_p)
    kwargs = meta.get("engine_kwargs")
    if not isinstance(kwargs, dict):
        raise InputError("missing field", file=meta_p, column="engine_kwargs")
    rows = read_jsonl(req_p, "requests file")
    for i, r in enumerate(rows, start=1):
        for k in REQUIRED:
            if r.get(k) is None:
                raise InputError("missing field", file=req_p, row=i, column=k)
    n = len(rows)
    if isinstance(meta.get("num_requests"), int) and meta["num_requests"] != n:
        raise InputError(f"meta.json says {meta['num_requests']} requests but requests.jsonl holds {n}",
                         file=meta_p, column="num_requests")

    col = {k: numbers([r.get(k) for r in rows], req_p, k) for k in
           ("input_toks", "output_toks", "arrival_time", "queued_ts", "first_token_ts", "last_token_ts")}
    _check_clocks(col["arrival_time"], col["queued_ts"], req_p)
    first, last, queued = col["first_token_ts"], col["last_token_ts"], col["queued_ts"]
    ok = ~(np.isnan(first) | np.isnan(last))
    for name, v in (("first_token_ts", first), ("last_token_ts", last)):
        before = ok & (v < queued - 1e-6)
        if before.any():
            raise InputError("engine timestamp precedes the request's queued_ts", file=req_p,
                             row=int(np.flatnonzero(before)[0]) + 1, column=name)
    out_toks = col["output_toks"]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out_toks > 1, (last - first) / (out_toks - 1), np.nan)
    df = pd.DataFrame({
        "request_id": [str(r.get("request_id", i)) for i, r in enumerate(rows)],
        "arrival_s": col["arrival_time"] - np.nanmin(col["arrival_time"]),
        "prompt_tokens": col["input_toks"], "output_tokens": out_toks,
        "ttft_s": first - queued, "e2e_s": last - queued, "tpot_s": tpot,
        "itl_s": [None] * n, "ok": ok,
        "error": np.where(ok, "", "engine recorded no first or last token")})

    hw = meta.get("hardware") if isinstance(meta.get("hardware"), dict) else {}
    args = {k: v for k, v in kwargs.items() if k != "model"}
    facts: dict[str, Any] = {}
    if isinstance(meta.get("kv_cache"), dict):
        facts["kv_cache"] = meta["kv_cache"]
    for k in ("device_count", "device_total_memory_bytes", "device_capability"):
        if hw.get(k) is not None:
            facts[k] = hw[k]
    rc = meta.get("resolved_config") if isinstance(meta.get("resolved_config"), dict) else {}
    for k in ("scheduler_config", "cache_config"):
        if isinstance(rc.get(k), dict):
            facts[k] = rc[k]
    if isinstance(rc.get("compilation_config"), dict):
        facts["cudagraph_capture_sizes"] = rc["compilation_config"].get("cudagraph_capture_sizes")
    info = {
        "engine": "vllm", "engine_version": str(meta.get("vllm_version") or ""),
        "engine_args": args, "engine_facts": facts,
        "model": str(meta.get("model") or kwargs.get("model") or ""),
        "gpu": gpu_name(str(hw.get("device_name") or _config_gpu(folder))),
        "client": {"kind": "trace"}, "source": str(folder), "format": NAME,
        "notes": ("ttft_s = first_token_ts - queued_ts, e2e_s = last_token_ts - queued_ts (engine clock)",
                  "tpot_s = (last_token_ts - first_token_ts) / (output_toks - 1)",
                  "arrival_s = arrival_time - first arrival_time (client clock)")}
    return finish(df, apply_overrides(info, overrides, meta_p), req_p)


def _check_clocks(arrival: np.ndarray, queued: np.ndarray, file: Path) -> None:
    """The engine's queue times must follow the client's arrivals up to one constant offset."""
    offset = queued - arrival
    drift = offset - np.median(offset)
    span = float(np.ptp(arrival)) if len(arrival) else 0.0
    slack = max(CLOCK_SLACK_S, 0.05 * span)
    worst = int(np.argmax(np.abs(drift)))
    if abs(drift[worst]) > slack or not math.isfinite(drift[worst]):
        raise InputError(
            f"engine clock does not line up with arrival_time: request {worst + 1} is queued "
            f"{drift[worst]:+.3f} s off the run's median offset (allowed {slack:.3f} s)",
            file=file, row=worst + 1, column="queued_ts")
