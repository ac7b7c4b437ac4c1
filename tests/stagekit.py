"""Synthetic inference-perf results folders (stage and summary lifecycle reports, config.yaml)
for the stage-report reader and replay tests: per-request samples drawn with a seed and
summarised the way inference-perf's ``summarize_requests`` does."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

PERCENTILES = (0.1, 1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9)


def summarize(x: np.ndarray) -> dict[str, float]:
    out = {"mean": float(np.mean(x)), "min": float(np.min(x)), "max": float(np.max(x))}
    for p in PERCENTILES:
        out["median" if p == 50 else f"p{p:g}"] = float(np.percentile(x, p))
    return out


@dataclass(frozen=True)
class Stage:
    rate: float
    duration: float
    prompt_median: float = 400.0
    output_median: float = 120.0
    ttft_s: float = 0.05           # typical TTFT; E2E adds output x tpot_s
    tpot_s: float = 0.012
    concurrency: int | None = None
    count: int | None = None       # a concurrent stage's num_requests


def _samples(st: Stage, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = st.count if st.count is not None else int(st.rate * st.duration)
    prompt = np.maximum(np.rint(rng.lognormal(np.log(st.prompt_median), 0.4, n)), 1)
    output = np.maximum(np.rint(rng.lognormal(np.log(st.output_median), 0.3, n)), 2)
    start = np.sort(rng.uniform(0, st.duration, n))
    start[0], start[-1] = 0.0, st.duration
    ttft = st.ttft_s * rng.uniform(0.7, 1.5, n)
    tpot = st.tpot_s * rng.uniform(0.9, 1.2, n)
    e2e = ttft + tpot * (output - 1)
    return {"start": start, "end": start + e2e, "prompt": prompt, "output": output, "ttft": ttft,
            "tpot": tpot, "e2e": e2e}


def report(s: dict[str, np.ndarray], *, rate: float | None = None, concurrency: int | None = None) -> dict:
    span = float(s["end"].max() - s["start"].min())
    load: dict = {"count": len(s["start"]), "schedule_delay": summarize(np.zeros(len(s["start"])))}
    if rate is not None:
        send = float(s["start"].max() - s["start"].min())
        load.update(send_duration=send, requested_rate=rate, achieved_rate=len(s["start"]) / send)
        if concurrency is not None:
            load["concurrency"] = concurrency
    return {"load_summary": load,
            "successes": {"count": len(s["start"]),
                          "latency": {"request_latency": summarize(s["e2e"]),
                                      "normalized_time_per_output_token": summarize(s["e2e"] / s["output"]),
                                      "time_per_output_token": summarize(s["tpot"]),
                                      "time_to_first_token": summarize(s["ttft"]),
                                      "inter_token_latency": summarize(s["tpot"])},
                          "throughput": {"input_tokens_per_sec": float(s["prompt"].sum() / span),
                                         "output_tokens_per_sec": float(s["output"].sum() / span),
                                         "total_tokens_per_sec": float((s["prompt"] + s["output"]).sum() / span),
                                         "requests_per_sec": len(s["start"]) / span},
                          "prompt_len": summarize(s["prompt"]), "output_len": summarize(s["output"])},
            "failures": {"count": 0, "request_latency": None, "prompt_len": None}}


def write_results(folder: Path, stages: list[Stage], *, seed: int = 0, summary: bool = True,
                  load_type: str = "constant", data: dict | None = None, server: dict | None = None,
                  interval: float = 1.0) -> Path:
    """``folder`` as inference-perf leaves it (stage reports, summary, config.yaml); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pooled: dict[str, list] = {}
    t0 = 0.0
    for i, st in enumerate(stages):
        s = _samples(st, rng)
        rate = float(st.count) if st.concurrency is not None else st.rate
        (folder / f"stage_{i}_lifecycle_metrics.json").write_text(
            json.dumps(report(s, rate=rate, concurrency=st.concurrency)))
        s = {**s, "start": s["start"] + t0, "end": s["end"] + t0}
        t0 = float(s["end"].max()) + interval + 1.5
        for k, v in s.items():
            pooled.setdefault(k, []).append(v)
    if summary:
        (folder / "summary_lifecycle_metrics.json").write_text(
            json.dumps(report({k: np.concatenate(v) for k, v in pooled.items()})))
    cfg_stages = [{"concurrency_level": st.concurrency, "num_requests": st.count} if st.concurrency is not None
                  else {"rate": st.rate, "duration": st.duration} for st in stages]
    cfg = {"api": {"type": "completion", "streaming": True},
           "data": data or {"type": "random"},
           "load": {"type": load_type, "interval": interval, "stages": cfg_stages},
           "server": server or {"type": "vllm", "model_name": "meta-llama/Llama-3.1-8B-Instruct",
                                "ignore_eos": True}}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return folder
