"""SGLang ``python -m sglang.bench_serving --output-file F.jsonl --output-details`` results
(layout of sglang's ``bench_serving.py`` and its docs/developer_guide/bench_serving.md): one JSON
object a line, one line per benchmark run, appended. A line holds the run's arguments
(``backend``, ``dataset_name``, ``request_rate``, ``max_concurrency``, ...) and aggregate
statistics; with ``--output-details`` also the per-request lists ``input_lens``,
``output_lens``, ``ttfts``, ``itls`` (seconds), ``generated_texts`` and ``errors``.

The per-request end-to-end latency is not written by the versions seen: E2E is then the last
token's arrival, TTFT + sum(ITL) (noted in the run info). Arrivals are not recorded: the client
mode carries the Poisson rate or the concurrency a replay must use. A file holding several runs
needs ``index`` (0-based line among the runs).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .common import apply_overrides, engine_of, first_line, pick, read_jsonl
from .schema import ServingRun, finish
from .vllm_bench import client_of, result_table

NAME = "sglang-bench"


def detect(path: Path) -> bool:
    head = first_line(path, ".jsonl")
    return '"ttfts"' in head and '"input_lens"' in head and '"backend"' in head


def read(path: str | Path, *, index: int | None = None, **overrides: Any) -> ServingRun:
    p = Path(path)
    doc = pick(read_jsonl(p, "benchmark result file"), index, p, "benchmark run")
    df, _, notes = result_table(doc, p)
    df["arrival_s"] = math.nan
    info = {"engine": engine_of(str(doc.get("backend") or "")),
            "model": str(doc.get("model_id") or doc.get("model") or doc.get("tokenizer_id") or ""),
            "client": client_of(doc, False, p), "source": str(p), "format": NAME, "notes": tuple(notes)}
    return finish(df, apply_overrides(info, overrides, p), p)
