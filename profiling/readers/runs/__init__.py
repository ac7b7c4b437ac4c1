"""Real serving runs as data: each public benchmark format read into one ``ServingRun``
(``RunInfo`` + a per-request table with explicit units).

Public API: ``RUN_FORMATS`` (name -> ``RunFormat``), ``detect(path)`` (the format's name),
``read_run(path, fmt=None, **overrides)``, ``ServingRun.save/load`` (Parquet + info JSON),
``RunInfo``, ``ClientMode``, ``COLUMNS``, ``OVERRIDES`` (engine, version, model, gpu, tp, pp,
dp, ep, engine_args) and ``known_engine_args()``. Format-specific keywords: ``trace=`` (vLLM
result without arrivals), ``index=`` (a file holding several runs: vLLM --append-result,
SGLang JSONL, genai-perf experiments, silicon rows).

An inference-perf results folder with only per-stage reports is no per-request run: it is
read by ``inference_perf_stages.read_stages`` into a ``StageRun`` (not in ``RUN_FORMATS``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import InputError
from . import (
    aiperf,
    genai_perf,
    inference_perf,
    inference_perf_stages,
    llmservingsim,
    request_csv,
    sglang_bench,
    silicon,
    vllm_bench,
)
from .common import OVERRIDES, known_engine_args
from .inference_perf_stages import StageRun, read_stages
from .schema import COLUMNS, ClientMode, RunInfo, ServingRun


@dataclass(frozen=True)
class RunFormat:
    """One serving-run format: whether a path is of it, and how to read it."""

    name: str
    description: str
    detect: Callable[[Path], bool]
    read: Callable[..., ServingRun]


RUN_FORMATS: dict[str, RunFormat] = {f.name: f for f in (
    RunFormat(llmservingsim.NAME, "LLMServingSim bench folder (meta.json + requests.jsonl)",
              llmservingsim.detect, llmservingsim.read),
    RunFormat(vllm_bench.NAME, "vLLM bench serve / benchmark_serving result JSON",
              vllm_bench.detect, vllm_bench.read),
    RunFormat(sglang_bench.NAME, "SGLang bench_serving --output-details JSONL",
              sglang_bench.detect, sglang_bench.read),
    RunFormat(inference_perf.NAME, "inference-perf per_request_lifecycle_metrics.json",
              inference_perf.detect, inference_perf.read),
    RunFormat(aiperf.NAME, "AIPerf profile_export.jsonl", aiperf.detect, aiperf.read),
    RunFormat(genai_perf.NAME, "genai-perf / perf_analyzer profile_export.json",
              genai_perf.detect, genai_perf.read),
    RunFormat(silicon.NAME, "AIConfigurator silicon_sample.csv rows (closed loop, mean TTFT/TPOT)",
              silicon.detect, silicon.read),
    RunFormat(request_csv.NAME, "plain per-request CSV (arrival_s, prompt_tokens, output_tokens, ...)",
              request_csv.detect, request_csv.read),
)}


def detect(path: str | Path) -> str:
    """The name of the format ``path`` is in; one line naming the path when none fits."""
    p = Path(path)
    if not p.exists():
        raise InputError("run file not found", file=p)
    for fmt in RUN_FORMATS.values():
        if fmt.detect(p):
            return fmt.name
    if inference_perf_stages.detect(p):
        raise InputError("inference-perf per-stage reports without per-request data: not a per-request run "
                         "(hermes-sim validate replays them stage by stage)", file=p)
    raise InputError(f"not a serving run in a known format ({', '.join(RUN_FORMATS)})", file=p)


def read_run(path: str | Path, fmt: str | None = None, **overrides: Any) -> ServingRun:
    """Read one run; ``fmt`` (a ``RUN_FORMATS`` name) skips detection."""
    if fmt is not None and fmt not in RUN_FORMATS:
        raise InputError(f"unknown run format '{fmt}' (known: {', '.join(RUN_FORMATS)})", file=path)
    return RUN_FORMATS[fmt or detect(path)].read(Path(path), **overrides)


__all__ = ["COLUMNS", "OVERRIDES", "RUN_FORMATS", "ClientMode", "RunFormat", "RunInfo", "ServingRun", "StageRun",
           "detect", "known_engine_args", "read_run", "read_stages"]
