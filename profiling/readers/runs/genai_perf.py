"""NVIDIA genai-perf / perf_analyzer ``profile_export.json`` (triton-inference-server
genai-perf, layout of its tests/test_llm_profile_data_parser.py): ``service_kind`` (openai or
triton), ``endpoint`` and ``experiments``, each ``{experiment: {mode: concurrency |
request_rate, value}, requests: [{timestamp, request_inputs, response_timestamps,
response_outputs}]}``, timestamps in ns on one client clock.

As genai-perf does: TTFT = first response carrying text - timestamp, E2E = last response -
timestamp, ITL = gaps between responses carrying text (for OpenAI streams, SSE chunks without
``content``/``text`` are not tokens). Token counts are not in the file except an OpenAI
``usage`` chunk (genai-perf re-tokenizes text): NaN otherwise. A request without any response
is kept as failed. A file with several experiments needs ``index``.
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
from .common import apply_overrides, head_text, numbers, pick, require
from .schema import ServingRun, finish

NAME = "genai-perf"


def detect(path: Path) -> bool:
    head = head_text(path, ".json", chars=20_000)
    return '"experiments"' in head and '"response_timestamps"' in head


def _chunk(out: Any) -> tuple[bool, dict | None, str]:
    """(carries text, usage, model) of one response record."""
    if not isinstance(out, dict):
        return True, None, ""
    if "response" not in out:  # triton: every response is output
        return True, None, ""
    text = str(out["response"]).strip()
    if text.startswith("data:"):
        text = text[5:].strip()
    if not text or text == "[DONE]":
        return False, None, ""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return True, None, ""
    choice = (data.get("choices") or [{}])[0] if isinstance(data, dict) else {}
    content = (choice.get("delta") or {}).get("content") or choice.get("text") or \
        (choice.get("message") or {}).get("content")
    return bool(content), data.get("usage") if isinstance(data, dict) else None, str(data.get("model") or "")


def read(path: str | Path, *, index: int | None = None, **overrides: Any) -> ServingRun:
    p = Path(path)
    doc = read_json(p, "profile export")
    if not isinstance(doc, dict):
        raise InputError("not a genai-perf profile export (expected a JSON object)", file=p)
    exp = pick(require(doc, "experiments", p), index, p, "experiment")
    if not isinstance(exp, dict):
        raise InputError("not an experiment object", file=p, column="experiments")
    reqs = require(exp, "requests", p)
    rows, model = [], ""
    for i, r in enumerate(reqs, start=1):
        if not isinstance(r, dict) or r.get("timestamp") is None:
            raise InputError("missing field", file=p, row=i, column="requests.timestamp")
        ts = numbers(r.get("response_timestamps") or [], p, "response_timestamps", scale=1e-9, first_row=i)
        outs = r.get("response_outputs") or [{}] * len(ts)
        if len(outs) != len(ts):
            raise InputError(f"{len(outs)} response_outputs for {len(ts)} response_timestamps",
                             file=p, row=i, column="response_outputs")
        t0 = numbers([r["timestamp"]], p, "timestamp", scale=1e-9, first_row=i)[0]
        text_ts, usage = [], None
        for t, o in zip(ts, outs):
            has_text, u, m = _chunk(o)
            model = model or m
            usage = u or usage
            if has_text:
                text_ts.append(t)
        if np.any(ts < t0):
            raise InputError("a response precedes its request's timestamp", file=p, row=i,
                             column="response_timestamps")
        ok = bool(text_ts)
        rows.append({"request_id": str(i - 1), "t0": t0, "ok": ok,
                     "error": "" if ok else "no response carrying output",
                     "ttft_s": text_ts[0] - t0 if ok else math.nan,
                     "e2e_s": ts[-1] - t0 if ok else math.nan,
                     "itl_s": [b - a for a, b in pairwise(text_ts)] if ok else None,
                     "prompt_tokens": (usage or {}).get("prompt_tokens", math.nan),
                     "output_tokens": (usage or {}).get("completion_tokens", math.nan)})
    if not rows:
        raise InputError("experiment has no requests", file=p, column="requests")
    df = pd.DataFrame(rows)
    df["arrival_s"] = df["t0"] - df["t0"].min()
    out = df["output_tokens"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        df["tpot_s"] = np.where(out > 1, (df["e2e_s"] - df["ttft_s"]) / (out - 1), np.nan)
    setting = exp.get("experiment") or {}
    mode, value = setting.get("mode"), setting.get("value")
    if mode == "concurrency" and value:
        client: dict[str, Any] = {"kind": "closed_loop", "concurrency": int(value)}
    else:
        client = {"kind": "trace", "rate": float(value) if mode == "request_rate" and value else None}
    info = {"model": model, "client": client, "source": str(p), "format": NAME,
            "notes": ("ttft_s/e2e_s/itl_s from response timestamps (client clock, ns)",
                      "token counts from OpenAI usage chunks only (NaN where absent)")}
    return finish(df.drop(columns=["t0"]), apply_overrides(info, overrides, p), p)
