"""vLLM ``bench serve`` / ``benchmarks/benchmark_serving.py`` result JSON (``--save-result
--save-detailed``), every layout seen in vLLM's history and its forks.

Per-request lists, in request order (seconds): ``input_lens``, ``output_lens``, ``ttfts``,
``itls`` (list per request), the end-to-end latency as ``e2els`` (older scripts and forks),
``latencies`` (``vllm bench serve``, 0.10+) or ``e2el``, ``errors`` ('' when the request
succeeded), and, in recent releases, ``start_times`` (client ``perf_counter`` when the request
was sent) and ``queue_times`` (time it waited for the client's ``--max-concurrency`` slot).
Run fields: ``backend``, ``model_id``, ``tokenizer_id``, ``date``, ``num_prompts``,
``request_rate`` (a number or "inf"), ``burstiness``, ``max_concurrency``.

Arrivals: ``start_times - queue_times`` when recorded; else the replayed trace the user passes
(``trace=``, row i = request i, as the script sends them in order); else NaN, and the client
mode says what a replay must draw (rate + burstiness, or a concurrency). Failed requests keep
their prompt length and ``ok=False``; their latencies and output length (vLLM writes 0s) are NaN.
An ``--append-result`` file holds several results, one JSON object a line: pick one with ``index``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...errors import InputError
from ...jsonfile import check_tree, data_file_limit, read_user_bytes
from ..request_trace import read_trace
from .common import (
    apply_overrides,
    engine_of,
    gaps,
    head_text,
    numbers,
    pick,
    require,
    same_length,
    tpot,
)
from .schema import ServingRun, finish

NAME = "vllm-bench"
E2E_FIELDS = ("e2els", "latencies", "e2el")


def _documents(path: Path) -> list[dict]:
    try:
        text = read_user_bytes(path, "result file", data_file_limit()).decode()
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", file=path) from None
    try:
        docs = [json.loads(text)]
    except json.JSONDecodeError as e:
        if e.msg != "Extra data":
            raise InputError(f"not valid JSON ({e.msg} at line {e.lineno})", file=path) from None
        try:  # --append-result: one result object a line
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e2:
            raise InputError(f"not valid JSON ({e2.msg} at line {e2.lineno})", file=path) from None
    if not all(isinstance(d, dict) for d in docs):
        raise InputError("not a vLLM benchmark result (expected a JSON object)", file=path)
    for d in docs:
        check_tree(d, path)
    return docs


def detect(path: Path) -> bool:
    head = head_text(path, ".json", chars=200_000)
    return '"ttfts"' in head and '"input_lens"' in head and '"output_lens"' in head


def read(path: str | Path, *, trace: str | Path | None = None, index: int | None = None,
         **overrides: Any) -> ServingRun:
    p = Path(path)
    doc = pick(_documents(p), index, p, "benchmark result")
    df, lists, notes = result_table(doc, p)
    n = len(df)
    arrivals, recorded = _arrivals(doc, lists, n, p, trace, notes)
    df["arrival_s"] = arrivals
    info = {"engine": engine_of(str(doc.get("backend") or doc.get("endpoint_type") or "")),
            "model": str(doc.get("model_id") or doc.get("tokenizer_id") or ""),
            "client": client_of(doc, recorded, p), "source": str(p), "format": NAME,
            "notes": tuple(notes)}
    return finish(df, apply_overrides(info, overrides, p), p)


def client_of(doc: dict, recorded: bool, p: Path) -> dict[str, Any]:
    """The client mode from ``request_rate`` ("inf" or req/s), ``burstiness`` and
    ``max_concurrency``: an unlimited rate under a concurrency cap is a closed loop."""
    rate = doc.get("request_rate")
    try:
        rate = math.inf if rate in (None, "inf", "Infinity") else float(rate)
    except (TypeError, ValueError):
        raise InputError(f"not a request rate ({rate!r})", file=p, column="request_rate") from None
    concurrency = doc.get("max_concurrency")
    burst = float(doc.get("burstiness") or 1.0)
    if math.isinf(rate) and concurrency:
        return {"kind": "closed_loop", "concurrency": int(concurrency)}
    if recorded:
        return {"kind": "trace", "rate": None if math.isinf(rate) else rate, "burstiness": burst,
                "concurrency": concurrency}
    return {"kind": "open_loop", "rate": rate, "burstiness": burst, "concurrency": concurrency}


def result_table(doc: dict, p: Path) -> tuple[pd.DataFrame, dict[str, list], list[str]]:
    """The per-request table of a benchmark result holding vLLM-style lists (vLLM and SGLang
    share them), without arrivals; also the lists and the derivation notes."""
    lists = {k: require(doc, k, p) for k in ("input_lens", "output_lens", "ttfts")}
    e2e_field = next((k for k in E2E_FIELDS if isinstance(doc.get(k), list)), None)
    for k in (e2e_field, "itls", "errors", "start_times", "queue_times"):
        if k is not None and doc.get(k) is not None:
            lists[k] = require(doc, k, p)
    n = same_length(lists, p)
    if isinstance(doc.get("num_prompts"), int) and doc["num_prompts"] != n:
        raise InputError(f"num_prompts is {doc['num_prompts']} but the per-request lists hold {n}",
                         file=p, column="num_prompts")

    errors = [str(e or "") for e in lists.get("errors", [""] * n)]
    ok = np.array([e == "" for e in errors])
    if isinstance(doc.get("completed"), int) and "errors" in lists and doc["completed"] != int(ok.sum()):
        raise InputError(f"completed is {doc['completed']} but {int(ok.sum())} requests have no error",
                         file=p, column="completed")
    notes = []
    ttft = numbers(lists["ttfts"], p, "ttfts")
    itl = [gaps(v, p, "itls", i + 1) for i, v in enumerate(lists["itls"])] if "itls" in lists else [None] * n
    if e2e_field:
        e2e = numbers(lists[e2e_field], p, e2e_field)
    elif "itls" in lists:
        e2e = np.array([t + sum(g) if g is not None else math.nan for t, g in zip(ttft, itl)])
        notes.append("e2e_s = ttft + sum(itls): the last token's arrival (the file has no E2E list)")
    else:
        e2e = np.full(n, math.nan)
    out_tokens = numbers(lists["output_lens"], p, "output_lens")
    df = pd.DataFrame({
        "request_id": [str(i) for i in range(n)],
        "prompt_tokens": numbers(lists["input_lens"], p, "input_lens"),
        "output_tokens": np.where(ok, out_tokens, np.nan),
        "ttft_s": np.where(ok, ttft, np.nan),
        "e2e_s": np.where(ok, e2e, np.nan),
        "itl_s": [g if k else None for g, k in zip(itl, ok)],
        "ok": ok, "error": errors})
    df["tpot_s"] = tpot(df["e2e_s"], df["ttft_s"], df["output_tokens"])
    notes.append("tpot_s = (e2e_s - ttft_s) / (output_tokens - 1)")
    bad = ok & np.isnan(df["ttft_s"].to_numpy())
    if bad.any():
        raise InputError("a successful request has no TTFT", file=p, row=int(np.flatnonzero(bad)[0]) + 1,
                         column="ttfts")
    return df, lists, notes


def _arrivals(doc: dict, lists: dict, n: int, p: Path, trace: str | Path | None,
              notes: list[str]) -> tuple[np.ndarray, bool]:
    """(arrival_s from the run's first arrival, whether arrivals were recorded)."""
    if "start_times" in lists:
        sent = numbers(lists["start_times"], p, "start_times", allow_null=False)
        waited = numbers(lists["queue_times"], p, "queue_times") if "queue_times" in lists else np.zeros(n)
        t = sent - np.nan_to_num(waited)
        notes.append("arrival_s = start_times - queue_times (client clock)")
        return t - t.min(), True
    if trace is not None:
        tr = read_trace(trace)
        if len(tr) < n:
            raise InputError(f"trace has {len(tr)} requests but the results hold {n}", file=Path(trace))
        if tr["arrival"].isna().any():
            raise InputError("trace has no arrival times", file=Path(trace))
        # Re-tokenized prompts drift by a few tokens; most requests far off means another trace.
        want, got = np.asarray(lists["input_lens"], dtype=float), tr["prompt"].to_numpy(dtype=float)[:n]
        far = np.abs(got - want) > np.maximum(4, 0.1 * want)
        if far.mean() > 0.5:
            i = int(np.flatnonzero(far)[0])
            raise InputError(f"trace request {i + 1} has {int(tr['prompt'].iloc[i])} prompt tokens but the "
                             f"result's input_lens says {lists['input_lens'][i]}: not the replayed trace",
                             file=Path(trace), row=i + 2)
        t = tr["arrival"].to_numpy(dtype=float)[:n]
        notes.append(f"arrival_s from the replayed trace {trace}")
        return t - t[0], True
    return np.full(n, math.nan), False
