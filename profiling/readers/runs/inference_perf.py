"""kubernetes-sigs/inference-perf ``per_request_lifecycle_metrics.json`` (report option
``request_lifecycle.per_request: true``): a JSON list, one entry per request with
``start_time``/``end_time`` (client ``perf_counter`` s), ``request``, ``response``, ``info`` and
``error`` (null or ``{error_type, error_msg}``). ``info`` follows either layout of the project's
history: before multimodal support (2025) ``{input_tokens, output_tokens, output_token_times}``;
since (2026) ``{request_metrics: {text: {input_tokens}}, response_metrics: {output_tokens,
server_usage, chunk_times, output_token_times}, input_tokens}``.

As inference-perf's report does: TTFT = output_token_times[0] - start_time (streamed requests
only, else NaN), E2E = end_time - start_time, ITL = successive output_token_times gaps. Token
counts are the server's ``usage`` when it sent one, else the client's. Arrivals are the
start times. The run's ``config.yaml`` beside the file, when present, gives the server type
(engine), model and load (rate, or concurrency for a ``concurrent`` load).
"""
from __future__ import annotations

import json
import math
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...errors import InputError
from ...jsonfile import read_json
from ...yamlfile import read_yaml
from .common import apply_overrides, engine_of, gaps, head_text, numbers
from .schema import ServingRun, finish

NAME = "inference-perf"


def detect(path: Path) -> bool:
    head = head_text(path, ".json", chars=20_000).lstrip()
    return head.startswith("[") and '"start_time"' in head and '"end_time"' in head and '"info"' in head


def _tokens(info: dict) -> tuple[Any, Any, list | None, str]:
    """(prompt tokens, output tokens, token times, which count) of one entry's ``info``."""
    resp = info.get("response_metrics") if isinstance(info.get("response_metrics"), dict) else None
    if resp is None:  # the pre-multimodal layout
        return info.get("input_tokens"), info.get("output_tokens"), info.get("output_token_times") or None, "client"
    text = ((info.get("request_metrics") or {}).get("text") or {})
    prompt, output = text.get("input_tokens", info.get("input_tokens")), resp.get("output_tokens")
    times = resp.get("output_token_times") or resp.get("chunk_times") or None
    usage = resp.get("server_usage") or {}
    if usage.get("completion_tokens") is not None and usage.get("prompt_tokens") is not None:
        return usage["prompt_tokens"], usage["completion_tokens"], times, "server"
    return prompt, output, times, "client"


def _config(folder: Path) -> dict:
    for name in ("config.yaml", "config.yml"):
        f = folder / name
        if f.is_file():
            doc = read_yaml(f, "inference-perf config")
            return doc if isinstance(doc, dict) else {}
    return {}


def read(path: str | Path, **overrides: Any) -> ServingRun:
    p = Path(path)
    entries = read_json(p, "per-request report")
    if not isinstance(entries, list) or not entries:
        raise InputError("not an inference-perf per-request report (expected a non-empty JSON list)", file=p)
    rows, sources = [], set()
    for i, e in enumerate(entries, start=1):
        if not isinstance(e, dict):
            raise InputError("not a request entry (expected a JSON object)", file=p, row=i)
        for k in ("start_time", "end_time"):
            if e.get(k) is None:
                raise InputError("missing field", file=p, row=i, column=k)
        info = e.get("info") if isinstance(e.get("info"), dict) else {}
        prompt, output, times, src = _tokens(info)
        err = e.get("error")
        rows.append((e["start_time"], e["end_time"], prompt, output, times, err))
        sources.add(src if err is None else "")
    start = numbers([r[0] for r in rows], p, "start_time", allow_null=False)
    end = numbers([r[1] for r in rows], p, "end_time", allow_null=False)
    ok = np.array([r[5] is None for r in rows])
    before = end < start
    if before.any():
        raise InputError("end_time precedes start_time", file=p, row=int(np.flatnonzero(before)[0]) + 1,
                         column="end_time")
    ttft, itl = np.full(len(rows), math.nan), []
    for i, r in enumerate(rows):
        times = gaps(r[4], p, "info.response_metrics.output_token_times", i + 1)
        if times and ok[i]:
            ttft[i] = times[0] - start[i]
            if ttft[i] < 0:
                raise InputError("first token time precedes start_time", file=p, row=i + 1,
                                 column="info.response_metrics.output_token_times")
            itl.append([b - a for a, b in pairwise(times)])
        else:
            itl.append(None)
    df = pd.DataFrame({
        "request_id": [str(i) for i in range(len(rows))],
        "arrival_s": start - start.min(),
        "prompt_tokens": numbers([r[2] for r in rows], p, "info.input_tokens"),
        "output_tokens": numbers([r[3] for r in rows], p, "info.output_tokens"),
        "ttft_s": ttft, "e2e_s": np.where(ok, end - start, np.nan), "itl_s": itl, "ok": ok,
        "error": ["" if r[5] is None else _error_text(r[5]) for r in rows]})
    with np.errstate(invalid="ignore", divide="ignore"):
        out = df["output_tokens"].to_numpy(dtype=float)
        df["tpot_s"] = np.where(out > 1, (df["e2e_s"] - df["ttft_s"]) / (out - 1), np.nan)

    cfg = _config(p.parent)
    server = cfg.get("server") if isinstance(cfg.get("server"), dict) else {}
    load = cfg.get("load") if isinstance(cfg.get("load"), dict) else {}
    stages = [s for s in load.get("stages") or [] if isinstance(s, dict)]
    client: dict[str, Any] = {"kind": "trace"}
    if load.get("type") == "concurrent" and stages and stages[0].get("concurrency_level"):
        client = {"kind": "closed_loop", "concurrency": int(stages[0]["concurrency_level"])}
    elif len(stages) == 1 and stages[0].get("rate"):
        client["rate"] = float(stages[0]["rate"])
    counted = "server usage" if sources - {""} == {"server"} else "client tokenizer"
    info = {"engine": engine_of(str(server.get("type") or "")), "model": str(server.get("model_name") or ""),
            "client": client, "source": str(p), "format": NAME,
            "notes": ("ttft_s = output_token_times[0] - start_time, e2e_s = end_time - start_time (client clock)",
                      "tpot_s = (e2e_s - ttft_s) / (output_tokens - 1)",
                      f"token counts from the {counted}", "arrival_s = start_time - first start_time")}
    return finish(df, apply_overrides(info, overrides, p), p)


def _error_text(err: Any) -> str:
    if isinstance(err, dict):
        return f"{err.get('error_type', 'error')}: {err.get('error_msg', '')}".strip()
    return json.dumps(err)[:200]
