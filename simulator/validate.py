"""Replay measured requests through a scenario's deployment and compare per request."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .scenario import Scenario
from .silicon import mape, read_request_csv, read_vllm_bench, requests_from_measurements
from .simulate import simulate


def replay_requests(measurements: str | Path, scenario: Scenario, fmt: str,
                    trace: str | Path | None = None) -> dict:
    """Per-request TTFT/TPOT/E2E predicted vs measured, with MAPE per metric.

    ``fmt`` is ``csv`` (columns ``arrival_s, prompt_tokens, output_tokens`` and any of
    ``ttft_s, tpot_s, e2e_s``) or ``vllm-bench`` (result JSON + replayed ``trace``)."""
    df = read_vllm_bench(measurements, trace) if fmt == "vllm-bench" else read_request_csv(measurements)
    reqs = requests_from_measurements(df)
    sc = scenario.model_copy(update={"workload": scenario.workload.model_copy(
        update={"arrival": "trace", "num_requests": len(reqs), "trace": None})})
    res = simulate(sc, requests=reqs)
    sim = res.requests
    rows = []
    out: dict = {}
    for k in ("ttft", "tpot", "e2e"):
        if f"{k}_s" in df.columns:
            pred = sim[f"{k}_s"].to_numpy()
            meas = df[f"{k}_s"].to_numpy(float)
            out[f"{k}_mape"] = mape(pred, meas)
    for i in range(len(df)):
        r = {"id": int(i)}
        for k in ("ttft", "tpot", "e2e"):
            if f"{k}_s" in df.columns:
                p = float(sim[f"{k}_s"].iloc[i])
                r[f"{k}_pred"] = p if np.isfinite(p) else None
                r[f"{k}_meas"] = float(df[f"{k}_s"].iloc[i])
        rows.append(r)
    return {"rows": rows, **out, "rejected": res.summary["rejected"]}
