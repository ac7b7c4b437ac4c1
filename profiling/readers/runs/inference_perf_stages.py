"""kubernetes-sigs/inference-perf runs known only by their aggregate reports: a results folder
with ``stage_<i>_lifecycle_metrics.json`` (and usually ``summary_lifecycle_metrics.json``) but
no ``per_request_lifecycle_metrics.json`` (that file goes to ``inference_perf.py``).

Each report (inference-perf ``reportgen/base.py``, ``summarize_requests``) holds
``load_summary`` {count, send_duration = last start - first start, requested_rate,
achieved_rate, concurrency for a concurrent stage} and, over the successful requests,
``latency`` {request_latency = end - start, time_to_first_token = first token time - start,
time_per_output_token = (last - first token time) / (output tokens - 1),
normalized_time_per_output_token = request_latency / output tokens, inter_token_latency =
every gap between successive token times, pooled} (TTFT and TPOT over streamed requests
only), ``throughput`` (tokens or requests / (last end - first start)) and the ``prompt_len``
(2026: ``prompt_tokens``) and ``output_len`` distributions, each {mean, min, max, median,
pX...}. The folder's config, experiment files and overrides are read by
``inference_perf.read_folder``, as for a per-request run.

The requests a replay needs are synthesized, seeded: per stage ``load_summary.count``
arrivals from the stage's start over ``send_duration`` at exponential gaps normalised to
that span (inference-perf's constant timer; a Poisson load conditioned on its count is the
same), lengths by inverse-CDF interpolation through the stage's recorded percentiles. A
stage starts when the previous one has finished (loadgen waits for every request, sleeps
``load.interval`` and gives the next timer a 1 s head start). With ``shared_prefix`` data
each prompt slot has one length, and its ``prefix`` comes from ``prefix.spec_segments``; the
slot index restarts every stage (loadgen asks the generator for new data per stage). A
``concurrent`` load's stage is a closed loop of its ``concurrency_level`` clients (arrivals NaN).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from ...errors import InputError
from ...jsonfile import read_json
from .inference_perf import read_folder, shared_prefix_shape
from .prefix import spec_segments
from .schema import RunInfo

NAME = "inference-perf-stages"
PER_REQUEST = "per_request_lifecycle_metrics.json"
SUMMARY = "summary_lifecycle_metrics.json"
_STAGE = re.compile(r"^stage_(\d+)_lifecycle_metrics\.json$")
LATENCY_METRICS = ("request_latency", "time_to_first_token", "time_per_output_token",
                   "normalized_time_per_output_token", "inter_token_latency")
LOAD_TYPES = ("constant", "poisson", "concurrent")
# loadgen starts a stage's timer 1 s after the stage begins (time to fill the request queue).
_HEAD_START_S = 1.0
# inference-perf's LoadConfig.interval default: seconds slept between stages.
_DEFAULT_INTERVAL_S = 1.0


@dataclass(frozen=True)
class ReportStats:
    """One lifecycle report's figures (seconds, tokens, per second); a distribution is
    {stat: value} with stat in mean, min, max, median, pX; None where the report has none
    (TTFT of a non-streamed run)."""

    file: str
    count: int                       # requests sent
    successes: int
    failures: int
    latency: dict[str, dict[str, float] | None]
    prompt_len: dict[str, float] | None
    output_len: dict[str, float] | None
    throughput: dict[str, float]
    span_s: float | None             # first start to last end, the throughputs' denominator


@dataclass(frozen=True)
class StageStats(ReportStats):
    """One load stage: its report and how it was sent."""

    index: int = 0
    load_type: str = "constant"
    rate: float | None = None        # requested req/s (None for a concurrent stage)
    achieved_rate: float | None = None  # count / send_duration: below rate when the client fell behind
    schedule_delay: dict[str, float] | None = None  # start - scheduled time per request, s
    duration: float = 0.0            # send_duration: first to last request sent
    concurrency: int | None = None   # a concurrent stage's clients
    start_s: float = 0.0             # the synthesized stage's first arrival on the run's clock


@dataclass(frozen=True)
class StageRun:
    """A run read from its stage reports: info, the stages, the run-level summary report (None
    when absent), the seconds between one stage's last finish and the next one's first
    arrival, the synthesized requests (stage, arrival_s, prompt_tokens, output_tokens,
    prefix) and the client's cap on requests in flight (num_workers x worker_max_concurrency,
    None when the config does not say)."""

    info: RunInfo
    stages: tuple[StageStats, ...]
    summary: ReportStats | None
    gap_s: float
    requests: pd.DataFrame
    client_cap: int | None = None


# ---- files -----------------------------------------------------------------------------

def _stage_files(folder: Path) -> list[tuple[int, Path]]:
    out = []
    try:
        for f in folder.iterdir():
            m = _STAGE.match(f.name)
            if m and f.is_file():
                out.append((int(m.group(1)), f))
    except OSError:
        return []
    return sorted(out)


def results_folder(path: str | Path) -> Path:
    """The results folder ``path`` names: itself, the folder of a report inside it, or its
    ``results/`` subfolder (the llm-d harness's experiment folder)."""
    p = Path(path)
    if p.is_file():
        return p.parent
    sub = p / "results"
    if (not _stage_files(p) and not (p / PER_REQUEST).is_file() and sub.is_dir()
            and (_stage_files(sub) or (sub / PER_REQUEST).is_file())):
        return sub
    return p


def detect(path: str | Path) -> bool:
    """A results folder (or a report in one) with stage reports and no per-request report."""
    p = Path(path)
    if p.is_file() and not (_STAGE.match(p.name) or p.name == SUMMARY):
        return False
    folder = results_folder(p)
    return folder.is_dir() and bool(_stage_files(folder)) and not (folder / PER_REQUEST).is_file()


def _field(doc: dict, key: str, f: Path, at: str, kind: type | tuple[type, ...] = dict) -> Any:
    """``doc[key]``, which must exist and be of ``kind``; the error names ``at + key``."""
    v = doc.get(key) if isinstance(doc, dict) else None
    if v is None:
        raise InputError("missing field", file=f, column=at + key)
    if isinstance(v, bool) or not isinstance(v, kind):
        raise InputError(f"must be {'an object' if kind is dict else 'a number'}", file=f, column=at + key)
    return v


def _count(doc: dict, key: str, f: Path, at: str, *, default: int | None = None) -> int:
    if default is not None and doc.get(key) is None:
        return default
    v = _field(doc, key, f, at, (int, float))
    if v < 0 or v != int(v):
        raise InputError(f"must be a non-negative whole number, got {v!r}", file=f, column=at + key)
    return int(v)


def _number(v: Any, f: Path, column: str, *, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InputError(f"must be a finite number, got {v!r}", file=f, column=column)
    if v < 0 or (positive and v == 0):
        raise InputError(f"must be {'positive' if positive else 'non-negative'}, got {v!r}", file=f, column=column)
    return float(v)


def _stats(v: Any, f: Path, column: str) -> dict[str, float] | None:
    """A {stat: value} distribution (None when the report has null there)."""
    if v is None:
        return None
    if not isinstance(v, dict):
        raise InputError("must be an object of statistics (mean, min, max, median, pX)", file=f, column=column)
    out = {}
    for k, x in v.items():
        if k in ("mean", "min", "max", "median") or _percent(k) is not None:
            out[str(k)] = _number(x, f, f"{column}.{k}")
    return out


def _percent(key: str) -> float | None:
    """The percent of a 'pX' statistic key ('p99.9' -> 99.9), else None."""
    m = re.fullmatch(r"p(\d+(?:\.\d+)?)", str(key))
    return float(m.group(1)) if m and float(m.group(1)) <= 100 else None


def _lengths(succ: dict, names: tuple[str, ...], f: Path) -> dict[str, float] | None:
    """The first of ``names`` (prompt_len, or 2026's prompt_tokens) as a distribution."""
    for name in names:
        if succ.get(name) is not None:
            d = _stats(succ[name], f, f"successes.{name}")
            for k in ("min", "median", "max"):
                if d is None or k not in d:
                    raise InputError("missing statistic", file=f, column=f"successes.{name}.{k}")
            return d
    return None


def _report(f: Path, doc: Any) -> dict[str, Any]:
    """The fields every lifecycle report has, checked (one line naming file and field)."""
    if not isinstance(doc, dict):
        raise InputError("not an inference-perf lifecycle report (expected a JSON object)", file=f)
    load = _field(doc, "load_summary", f, "")
    succ = _field(doc, "successes", f, "")
    fail = doc.get("failures") if isinstance(doc.get("failures"), dict) else {}
    n_ok = _count(succ, "count", f, "successes.")
    lat = _field(succ, "latency", f, "successes.") if n_ok else {}
    latency = {m: _stats(lat.get(m), f, f"successes.latency.{m}") for m in LATENCY_METRICS}
    tp = succ.get("throughput") if isinstance(succ.get("throughput"), dict) else {}
    throughput = {k: _number(v, f, f"successes.throughput.{k}") for k, v in tp.items()
                  if k.endswith("_per_sec") and v is not None}
    span = None
    if doc.get("benchmark_time_seconds") is not None:  # written since 2026
        span = _number(doc["benchmark_time_seconds"], f, "benchmark_time_seconds") or None
    elif n_ok and throughput.get("requests_per_sec"):
        span = n_ok / throughput["requests_per_sec"]
    return {"file": str(f), "count": _count(load, "count", f, "load_summary."), "successes": n_ok,
            "failures": _count(fail, "count", f, "failures.", default=0), "latency": latency,
            "prompt_len": _lengths(succ, ("prompt_len", "prompt_tokens"), f),
            "output_len": _lengths(succ, ("output_len", "output_tokens"), f),
            "throughput": throughput, "span_s": span, "load": load}


# ---- synthesis ---------------------------------------------------------------------------

def quantile_points(d: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, values) of a distribution's min, pX, median and max, sorted, values
    made non-decreasing: the piecewise-linear inverse CDF the lengths are drawn through."""
    pts = {0.0: d["min"], 0.5: d["median"], 1.0: d["max"]}
    for k, v in d.items():
        q = _percent(k)
        if q is not None:
            pts.setdefault(q / 100, v)
    probs = np.array(sorted(pts))
    return probs, np.maximum.accumulate(np.array([pts[p] for p in probs], dtype=float))


def draw_lengths(d: dict[str, float], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` whole lengths (at least 1) by inverse-CDF interpolation through ``d``."""
    probs, values = quantile_points(d)
    return np.maximum(np.rint(np.interp(rng.random(n), probs, values)), 1).astype(np.int64)


def draw_arrivals(n: int, start: float, duration: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` arrivals from ``start`` to ``start + duration`` (both ends hit) at exponential
    gaps scaled to that span."""
    if n <= 1:
        return np.full(n, start)
    gaps = rng.exponential(1.0, n - 1)
    return start + np.concatenate([[0.0], np.cumsum(gaps / gaps.sum() * duration)])


# ---- the reader --------------------------------------------------------------------------

def read_stages(path: str | Path, *, seed: int = 0, **overrides: Any) -> StageRun:
    """Read a results folder's stage reports (and summary, config and experiment files) and
    synthesize its requests with ``seed``; ``overrides`` as ``read_run`` takes them."""
    folder = results_folder(path)
    if not folder.exists():
        raise InputError("results folder not found", file=folder)
    files = _stage_files(folder)
    if not files:
        raise InputError("no stage_<i>_lifecycle_metrics.json here (inference-perf's per-stage reports)",
                         file=folder)
    base = read_folder(files[0][1], overrides, [], client={"kind": "trace"}, fmt=NAME)
    cfg, cfg_file = base.config, base.config_file
    load_cfg = cfg.get("load") if isinstance(cfg.get("load"), dict) else {}
    cfg_stages = [s if isinstance(s, dict) else {} for s in load_cfg.get("stages") or []]
    load_type = str(load_cfg.get("type") or "").lower()
    notes: list[str] = []
    reports = [(i, f, _report(f, read_json(f, "inference-perf stage report"))) for i, f in files]
    if load_type in ("trace_replay", "trace_session_replay"):
        raise InputError(f"load type '{load_type}' not supported (its arrivals come from a trace file the "
                         "reports do not hold)", file=cfg_file, column="load.type")
    if load_type and load_type not in LOAD_TYPES:
        raise InputError(f"unknown load type '{load_type}' (known: {', '.join(LOAD_TYPES)})", file=cfg_file,
                         column="load.type")
    if cfg_stages and len(cfg_stages) != len(reports):
        notes.append(f"{cfg_file.name if cfg_file else 'config'} lists {len(cfg_stages)} stages, the folder "
                     f"has {len(reports)} stage reports: the reports are replayed")
    interval = load_cfg.get("interval", _DEFAULT_INTERVAL_S)
    interval = _number(interval, cfg_file or folder, "load.interval") if interval is not None else 0.0

    summary = None
    if (folder / SUMMARY).is_file():
        s = _report(folder / SUMMARY, read_json(folder / SUMMARY, "inference-perf summary report"))
        s.pop("load")
        summary = ReportStats(**s)

    stage_load = [_stage_load(k, f, r.pop("load"), cfg_stages, load_type) for k, (_, f, r) in enumerate(reports)]
    spans = [r["span_s"] or (None if r["latency"]["request_latency"] is None
                             else sl["duration"] + r["latency"]["request_latency"]["max"])
             for (_, _, r), sl in zip(reports, stage_load)]
    gap, gap_note = _gap(spans, summary, interval)

    rng = np.random.default_rng(seed)
    found = base.shared_prefix()
    slot_prompt = slot_output = None
    if found is not None:
        spec, spec_file = found
        slot_prompt, slot_output, note = _slots(spec, spec_file, summary, reports[0], cfg, rng)
        notes.append(note)
    else:
        notes.append("prefix: not recorded (no shared_prefix data spec): no request reuses another's prompt")

    stages, parts, start = [], [], 0.0
    for k, ((i, f, r), sl) in enumerate(zip(reports, stage_load)):
        n = r["count"]
        if slot_prompt is None:
            p_len = draw_lengths(_need(r, "prompt_len", f), n, rng)
            prefix = [""] * n
        else:
            p_len = slot_prompt[np.arange(n) % len(slot_prompt)]
            prefix = spec_segments(n, p_len, spec["num_groups"], spec["num_prompts_per_group"],
                                   spec["system_prompt_len"], multi_turn=spec["multi_turn"])
        o_len = (slot_output[np.arange(n) % len(slot_output)] if slot_output is not None
                 else draw_lengths(_need(r, "output_len", f), n, rng))
        arrival = np.full(n, np.nan) if sl["concurrency"] else draw_arrivals(n, start, sl["duration"], rng)
        stages.append(StageStats(**r, index=i, **sl, start_s=start))
        parts.append(pd.DataFrame({"stage": np.full(n, i, dtype=np.int64), "arrival_s": arrival,
                                   "prompt_tokens": p_len, "output_tokens": o_len, "prefix": prefix}))
        start += (spans[k] if spans[k] is not None else sl["duration"]) + gap
    requests = pd.concat(parts, ignore_index=True)

    notes += [f"arrivals synthesized (seed {seed}): load_summary.count requests per stage from its start over "
              "send_duration at exponential gaps normalised to that span (inference-perf's constant timer)"
              if not any(sl["concurrency"] for sl in stage_load) else
              "a concurrent stage is a closed loop of its clients sending load_summary.count requests",
              "prompt and output lengths drawn by inverse-CDF interpolation through each stage's recorded "
              "percentiles (min..max)", gap_note]
    failed = sum(s.failures for s in stages)
    if failed:
        notes.append(f"{failed} requests failed in the real run: they are simulated like the others, and the "
                     "reports' latencies cover successes only")
    doc = {**base.info, "source": str(folder), "num_requests": len(requests), "num_failed": failed,
           "notes": (*notes, *base.info["notes"])}
    try:
        info = RunInfo.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(err["msg"], file=folder, column=".".join(str(x) for x in err["loc"]) or None) from None
    workers, per = load_cfg.get("num_workers"), load_cfg.get("worker_max_concurrency")
    whole = all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in (workers, per))
    cap = workers * per if whole else None
    return StageRun(info=info, stages=tuple(stages), summary=summary, gap_s=gap, requests=requests, client_cap=cap)


def _gap(spans: list[float | None], summary: ReportStats | None, interval: float) -> tuple[float, str]:
    """Seconds from one stage's last finish to the next one's first arrival, and a note: the
    summary's span less the stages' spans (first start to last end) when both are known,
    else what loadgen waits (``load.interval`` and the timer's head start)."""
    if summary is not None and summary.span_s and len(spans) > 1 and all(spans):
        est = (summary.span_s - sum(spans)) / (len(spans) - 1)  # type: ignore[arg-type]
        if est >= 0:
            return est, (f"stages {est:.3g} s apart: the summary's span less the stages' spans "
                         f"(load.interval {interval:g} s)")
    gap = interval + _HEAD_START_S
    return gap, f"stages {gap:g} s apart (load.interval {interval:g} s + loadgen's {_HEAD_START_S:g} s head start)"


def _slots(spec: dict[str, Any], spec_file: Path, summary: ReportStats | None, first: tuple[int, Path, dict],
           cfg: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None, str]:
    """A shared_prefix run's prompt length per slot (and output length per slot when the
    server ignored EOS: every request of a slot then gets its max_tokens), drawn once from the
    summary's distribution (the first stage's without one), and the note saying so."""
    slots = spec["num_groups"] * spec["num_prompts_per_group"]
    _, f, r = first
    pooled = summary is not None and summary.prompt_len is not None and summary.output_len is not None

    def source(name: str) -> dict[str, float]:
        return getattr(summary, name) if pooled else _need(r, name, f)
    prompt = draw_lengths(source("prompt_len"), slots, rng)
    server = cfg.get("server") if isinstance(cfg.get("server"), dict) else {}
    output = draw_lengths(source("output_len"), slots, rng) if server.get("ignore_eos") is True else None
    return prompt, output, (
        f"prefix: from {spec_file.name}'s shared_prefix ({shared_prefix_shape(spec)}): one prompt length per "
        f"slot{' and one output length (ignore_eos)' if output is not None else ''} drawn from the "
        f"{'summary' if pooled else 'first stage'}'s distribution; request i of a stage uses slot "
        "i % (groups x prompts)")


def _stage_load(k: int, f: Path, load: dict, cfg_stages: list[dict], load_type: str) -> dict[str, Any]:
    """How stage ``k`` was sent: load type, requested rate, send duration, concurrency (its
    report's load_summary first, the config's stage second)."""
    cfg_stage = cfg_stages[k] if k < len(cfg_stages) else {}
    conc = load.get("concurrency", cfg_stage.get("concurrency_level"))
    kind = load_type or ("concurrent" if conc is not None else "constant")
    duration = _number(_field(load, "send_duration", f, "load_summary.", (int, float)), f,
                       "load_summary.send_duration")
    if kind == "concurrent":
        if conc is None:
            raise InputError("missing field (a concurrent stage's clients)", file=f,
                             column="load_summary.concurrency")
        return {"load_type": kind, "rate": None, "duration": duration,
                "concurrency": int(_number(conc, f, "load_summary.concurrency", positive=True))}
    rate = load.get("requested_rate", cfg_stage.get("rate"))
    achieved = load.get("achieved_rate")
    return {"load_type": kind, "duration": duration, "concurrency": None,
            "rate": None if rate is None else _number(rate, f, "load_summary.requested_rate", positive=True),
            "achieved_rate": None if achieved is None else _number(achieved, f, "load_summary.achieved_rate"),
            "schedule_delay": _delays(load.get("schedule_delay"), f)}


def _delays(v: Any, f: Path) -> dict[str, float] | None:
    """The schedule_delay distribution (early sends make it negative, so no sign check)."""
    if not isinstance(v, dict):
        return None
    out = {}
    for k, x in v.items():
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise InputError(f"must be a finite number, got {x!r}", file=f,
                             column=f"load_summary.schedule_delay.{k}")
        out[str(k)] = float(x)
    return out


def _need(r: dict, name: str, f: Path) -> dict[str, float]:
    """A stage's length distribution, which synthesis cannot do without."""
    if r[name] is None:
        why = "no request of the stage succeeded" if not r["successes"] else "missing field"
        raise InputError(why, file=f, column=f"successes.{name}")
    return r[name]
