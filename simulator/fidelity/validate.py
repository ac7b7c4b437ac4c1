"""Replay measured requests through a scenario's deployment and compare per request."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from profiling.readers.serving import read_request_csv, read_vllm_bench
from profiling.yamlfile import read_yaml

from ..scenario import Scenario, _resolve_paths, parse_scenario
from ..simulate import simulate
from .silicon import mape, requests_from_measurements

# Stands in for the scenario's workload, which a replay never reads (it sends the measured
# requests); only the deployments, pipelines, surrogate and seed matter.
_REPLAYED = {"arrival": "poisson", "num_requests": 1}


def load_replay_scenario(path: str | Path) -> Scenario:
    """A scenario file as ``validate`` replays it: its ``workload`` is ignored (neither
    validated nor read, so it may name a trace that is absent or none at all)."""
    p = Path(path)
    doc = read_yaml(p, "scenario file")
    if isinstance(doc, dict):
        doc = _resolve_paths({**doc, "workload": dict(_REPLAYED)}, p.parent)
    return parse_scenario(doc, p)


def replay_requests(measurements: str | Path, scenario: Scenario, fmt: str,
                    trace: str | Path | None = None) -> dict:
    """Per-request TTFT/TPOT/E2E predicted vs measured, with MAPE per metric.

    ``fmt`` is ``csv`` (columns ``arrival_s, prompt_tokens, output_tokens`` and any of
    ``ttft_s, tpot_s, e2e_s``) or ``vllm-bench`` (result JSON + replayed ``trace``).
    Every request is replayed; those the simulation rejects or the measured run failed are
    listed under ``unsupported`` with the reason and left out of the MAPE."""
    df = read_vllm_bench(measurements, trace) if fmt == "vllm-bench" else read_request_csv(measurements)
    reqs = requests_from_measurements(df)
    sc = scenario.model_copy(update={"workload": scenario.workload.model_copy(
        update={"arrival": "trace", "num_requests": len(reqs), "trace": None})})
    res = simulate(sc, requests=reqs)
    sim = res.requests
    rows = []
    out: dict = {}
    metrics = [k for k in ("ttft", "tpot", "e2e") if f"{k}_s" in df.columns]
    for k in metrics:
        pred = sim[f"{k}_s"].to_numpy()
        meas = df[f"{k}_s"].to_numpy(float)
        out[f"{k}_mape"] = mape(pred, meas, f"{measurements} ({k}_s, simulated vs measured)")
    for i in range(len(df)):
        r = {"id": int(i)}
        for k in metrics:
            p = float(sim[f"{k}_s"].iloc[i])
            m = float(df[f"{k}_s"].iloc[i])
            r[f"{k}_pred"] = p if np.isfinite(p) else None
            r[f"{k}_meas"] = m if np.isfinite(m) else None
        rows.append(r)
    return {"rows": rows, **out, "rejected": res.summary["rejected"],
            "unsupported": _not_compared(df, sim)}


def _not_compared(df, sim) -> list[dict]:
    """Requests left out of the comparison, each with why (simulation rejected it, or the
    measured run failed it)."""
    rejected = sim["rejected"].to_numpy()
    failed = df["failed"].to_numpy() if "failed" in df.columns else [""] * len(df)
    out = []
    for i in range(len(df)):
        why = [w for w in (f"not simulated: {rejected[i]}" if rejected[i] else "", failed[i]) if w]
        if why:
            out.append({"id": int(i), "reason": "; ".join(why)})
    return out


def validate_mode(measurements: str | Path, fmt: str | None, scenario_file: str | None, trace: str | None,
                  overrides: bool) -> str:
    """What ``validate`` compares: ``silicon`` (silicon_sample rows), ``csv`` (a per-request CSV
    against a scenario), ``vllm-bench-trace`` (a vLLM result + its trace against a scenario)
    or the name of a serving-run format (``profiling.readers.runs``) to replay on the run's own
    engine. ``--format vllm-bench`` with a scenario keeps the per-request comparison; without
    ``fmt`` the older defaults hold (csv with a scenario, else silicon) unless the file is a
    serving run in another format."""
    from profiling.errors import HermesError
    from profiling.readers.runs import detect
    if fmt in ("silicon", "csv"):
        return fmt
    if fmt == "sglang":
        return "sglang-bench"
    if fmt == "vllm-bench" and scenario_file:
        return "vllm-bench-trace"        # the per-request comparison against the scenario (needs --trace)
    if fmt not in (None, "auto"):
        return fmt
    if fmt == "auto":
        return detect(measurements)
    try:
        name = detect(measurements)
    except HermesError:
        name = None
    if name == "vllm-bench" and trace and scenario_file:
        return "vllm-bench-trace"
    if name == "request-csv" and (overrides or not scenario_file):
        return name
    if name in (None, "silicon", "request-csv"):
        return "csv" if scenario_file else "silicon"
    return name
