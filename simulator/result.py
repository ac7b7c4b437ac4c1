"""What a simulation returns and writes: summary.json, requests.parquet, trace.json, plots."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from profiling.atomicfile import atomic_path, write_text_atomic

TRACE_MAX_STEPS = 200_000   # per run; a longer trace stops there (noted in its metadata)


def _clean(x):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


@dataclass
class SimResult:
    """``summary`` (stable keys: requests, completed, ttft_s, tpot_s, itl_s, e2e_s — each
    mean/p50/p90/p95/p99 — throughput_req_s, output_tokens_per_s, goodput_req_s, cost_usd,
    output_tokens_per_dollar, energy_j, sim_wall_s, slo, slo_met, rejected, preemptions,
    utilization), ``requests`` (one row per request), per-replica step records."""

    scenario: object
    summary: dict
    requests: pd.DataFrame
    steps: dict[str, np.ndarray] = field(repr=False)   # [steps, 6] per replica
    kv_blocks: dict[str, int] = field(repr=False)
    stopped_early: bool = False
    # autoscaled deployments only (``simulator.engine.autoscale.ScalingRecord``): their events
    # go to scaling_events.csv and their replicas over time to replicas.png
    scaling: object | None = field(default=None, repr=False)

    def summary_json(self) -> str:
        return json.dumps(_clean({**self.summary, "stopped_early": self.stopped_early}), indent=2, sort_keys=True)

    def step_frame(self, replica: str) -> pd.DataFrame:
        return pd.DataFrame(self.steps[replica], columns=["start_s", "end_s", "decode_seqs", "prefill_tokens", "kv_blocks_used", "itl_gap_s"])

    def write(self, outdir: str | Path, plots: bool = True) -> Path:
        out = Path(outdir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "summary.json", self.summary_json() + "\n")
        with atomic_path(out / "requests.parquet") as tmp:
            self.requests.to_parquet(tmp)
        self.write_trace(out / "trace.json")
        if self.scaling is not None:
            write_text_atomic(out / "scaling_events.csv", self.scaling.events.to_csv(index=False))
        if plots:
            from .plots import write_plots, write_scaling_plot
            from .pipelines.plots import write_stage_plot
            write_plots(self, out)
            write_stage_plot(self.requests, out / "stage_breakdown.png", getattr(self.scenario, "name", ""))
            if self.scaling is not None:
                write_scaling_plot(self, out / "replicas.png")
        return out

    def write_trace(self, path: Path) -> None:
        """Chrome/Perfetto trace: one track per replica, one slice per step (batch)."""
        events, left = [], TRACE_MAX_STEPS
        for pid, (name, steps) in enumerate(self.steps.items()):
            events.append({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": name}})
            for t0, t1, dec, pre, blocks, _ in steps[:left].tolist():
                dec, pre, blocks = int(dec), int(pre), int(blocks)
                events.append({"name": f"batch d{dec} p{pre}", "ph": "X", "pid": pid, "tid": 0,
                               "ts": round(t0 * 1e6, 3), "dur": round((t1 - t0) * 1e6, 3),
                               "args": {"decode_seqs": dec, "prefill_tokens": pre, "kv_blocks": blocks}})
            left -= min(left, len(steps))
        meta = {"truncated": left <= 0, "max_steps": TRACE_MAX_STEPS}
        write_text_atomic(path, json.dumps({"traceEvents": events, "displayTimeUnit": "ms", "otherData": meta}))
