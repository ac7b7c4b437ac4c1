"""An inference-perf run known only by its per-stage reports, replayed and compared stage by
stage (``profiling.readers.runs.inference_perf_stages``).

The reader's synthesized requests run on ``runs.scenario_for_info``'s deployment in one
simulation, so a prefix cache carries over from stage to stage as on the real server. As
inference-perf's loadgen does, a stage starts only after the previous one has finished (plus
the run's gap): a stage the simulation finishes later than the real one pushes the next ones
back, and the run is simulated again. A concurrent load's stages are each a closed loop of
their clients, simulated one by one (no cache carried over).

Per stage, over its simulated requests, the report's statistics (mean, p50, p90, p99) of
TTFT, E2E (request_latency), TPOT and normalized time per output token (E2E / output
tokens), and output tokens per second over the stage's span (first arrival to last
finish); error = sim / real - 1. The run's summary report is compared the same way, its
simulated span being the stages' spans plus the gaps between them.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import isfinite
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from profiling.readers.runs.inference_perf_stages import ReportStats, StageRun, StageStats

from ..engine.config import OverheadConfig
from ..engine.workload import Requests
from ..scenario import Scenario
from .runs import SATURATION_GROWTH, SATURATION_SLOPE, _queue_trend, scenario_for_info, simulate_requests

# metric -> the report's latency name
METRICS = {"ttft": "time_to_first_token", "e2e": "request_latency", "tpot": "time_per_output_token",
           "ntpot": "normalized_time_per_output_token"}
STATS = {"mean": "mean", "p50": "median", "p90": "p90", "p99": "p99"}
# A client sending under this share of the requested rate fell behind its schedule.
BEHIND = 0.95


@dataclass(frozen=True)
class Compared:
    """One statistic, real and simulated; ``err`` = sim / real - 1 (None when undefined)."""

    real: float | None
    sim: float | None

    @property
    def err(self) -> float | None:
        ok = self.real is not None and self.sim is not None and isfinite(self.real) and isfinite(self.sim)
        return self.sim / self.real - 1 if ok and self.real > 0 else None  # type: ignore[operator]

    def to_dict(self) -> dict[str, float | None]:
        return {"real": self.real, "sim": self.sim, "err": self.err}


@dataclass(frozen=True)
class StageFidelity:
    """One stage (or the run's summary, ``index`` None) compared with its report."""

    index: int | None
    requests: int
    simulated: int                               # finished in the simulation
    metrics: dict[str, dict[str, Compared]]      # metric -> stat -> real/sim
    output_tokens_per_s: Compared
    ttft_slope: float | None                     # simulated TTFT growth, s per s of arrivals
    ttft_growth: float | None                    # simulated late / early median TTFT
    real_saturated: bool | None
    sim_saturated: bool | None
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "requests": self.requests, "simulated": self.simulated,
                "metrics": {m: {s: c.to_dict() for s, c in v.items()} for m, v in self.metrics.items()},
                "output_tokens_per_s": self.output_tokens_per_s.to_dict(),
                "saturation": {"real": self.real_saturated, "simulated": self.sim_saturated,
                               "sim_ttft_slope": self.ttft_slope, "sim_ttft_growth": self.ttft_growth,
                               "note": self.note}}


@dataclass(frozen=True)
class StagesReplay:
    """A stage-report run replayed: the run, the scenario as run, each stage's and the
    summary's comparison, the simulated requests (the reader's columns + ttft_s, e2e_s,
    finish_s, rejected) and notes."""

    run: StageRun
    scenario: Scenario
    stages: tuple[StageFidelity, ...]
    summary: StageFidelity | None
    simulated: pd.DataFrame
    notes: tuple[str, ...]
    simulations: int

    def to_dict(self) -> dict[str, Any]:
        i, d = self.run.info, self.scenario.deployments[0]
        by = {s.index: s for s in self.run.stages}
        return {"run": {"source": i.source, "format": i.format, "engine": i.engine, "version": i.engine_version,
                        "model": i.model, "gpu": i.gpu, "tp": i.tp, "pp": i.pp, "dp": i.dp,
                        "requests": i.num_requests, "failed": i.num_failed, "gap_s": self.run.gap_s},
                "deployment": {"model": d.model, "hardware": d.hardware, "tp": d.tp, "pp": d.pp,
                               "replicas": d.replicas, "scheduler": d.scheduler.model_dump(),
                               "overhead": d.overhead.model_dump()},
                "stages": [{**f.to_dict(), "load_type": by[f.index].load_type, "rate": by[f.index].rate,
                            "duration_s": by[f.index].duration, "concurrency": by[f.index].concurrency,
                            "real_failures": by[f.index].failures} for f in self.stages],
                "summary": None if self.summary is None else self.summary.to_dict(),
                "simulations": self.simulations, "notes": list(self.notes)}


# ---- simulation --------------------------------------------------------------------------

def _requests(df: pd.DataFrame) -> Requests:
    prefix = df["prefix"].astype(str).to_numpy()
    return Requests(df["arrival_s"].to_numpy(float), df["prompt_tokens"].to_numpy(np.int64),
                    np.maximum(df["output_tokens"].to_numpy(np.int64), 1),
                    segments=tuple(prefix) if any(prefix) else None)


def _simulated(df: pd.DataFrame, res_requests: pd.DataFrame) -> pd.DataFrame:
    part = res_requests.reset_index(drop=True)
    out = df.reset_index(drop=True).copy()
    for c in ("arrival_s", "ttft_s", "e2e_s", "finish_s"):
        out[f"sim_{c}" if c == "arrival_s" else c] = part[c].to_numpy(float)
    out["rejected"] = part["rejected"].astype(str).to_numpy()
    return out


def _open_loop(run: StageRun, scenario: Scenario, seed: int) -> tuple[Scenario, pd.DataFrame, int, list[str]]:
    """Every stage in one simulation; a stage that the simulation has not finished when the
    next one was to start pushes the later stages back, and the run is simulated again."""
    df = run.requests.copy()
    order = [s.index for s in run.stages]
    sims, shifted = 0, 0.0
    while True:
        sc, res = simulate_requests(scenario, _requests(df), seed=seed)
        sims += 1
        out = _simulated(df, res.requests)
        late = None
        for a, b in zip(order, order[1:]):
            end = float(np.nanmax(out.loc[out["stage"] == a, "finish_s"], initial=-np.inf))
            first = float(df.loc[df["stage"] == b, "arrival_s"].min())
            if isfinite(end) and end + run.gap_s > first + 1e-9:
                late = (b, end + run.gap_s - first)
                break
        if late is None or sims > len(order):
            notes = [f"later stages pushed back {shifted:.3g} s in all, where a simulated stage outlasted the "
                     f"real one ({sims} simulations)"] if shifted > 0 else []
            pc = res.summary.get("engine_prefix_cache")
            if pc:
                notes.append(f"engine prefix cache: {pc['token_hit_rate']:.1%} of prompt tokens found cached "
                             f"({pc['hit_tokens']:,} of {pc['prompt_tokens_looked_up']:,})")
            return sc, out, sims, notes
        after = df["stage"].to_numpy() >= late[0]
        df.loc[after, "arrival_s"] += late[1]
        shifted += late[1]


def _closed_loops(run: StageRun, scenario: Scenario, seed: int) -> tuple[Scenario, pd.DataFrame, int, list[str]]:
    """Each stage its own closed loop of its clients."""
    parts, sc = [], scenario
    for st in run.stages:
        df = run.requests[run.requests["stage"] == st.index]
        sc, res = simulate_requests(scenario, _requests(df), seed=seed, concurrency=st.concurrency)
        parts.append(_simulated(df, res.requests))
    return sc, pd.concat(parts, ignore_index=True), len(parts), [
        "each concurrent stage simulated as its own closed loop: no prefix cache carried between stages"]


def replay_stages(run: StageRun, *, overhead: OverheadConfig | None = None, surrogate: str | None = "builtin",
                  seed: int = 0, engine_args: dict | None = None) -> StagesReplay:
    """Simulate ``run``'s synthesized requests on its own deployment and compare each stage."""
    scenario = scenario_for_info(run.info, len(run.requests), overhead=overhead, surrogate=surrogate,
                                 engine_args=engine_args)
    closed = any(s.concurrency for s in run.stages)
    sc, sim, sims, notes = (_closed_loops if closed else _open_loop)(run, scenario, seed)
    stages = tuple(compare(st, sim[sim["stage"] == st.index], span=None) for st in run.stages)
    summary = None
    if run.summary is not None:
        spans = [_span(sim[sim["stage"] == st.index]) for st in run.stages]
        summary = compare(run.summary, sim, span=sum(spans) + run.gap_s * (len(spans) - 1))
    rejected = int((sim["rejected"] != "").sum())
    if rejected:
        notes.append(f"{rejected} requests rejected by the simulated server (e.g. longer than its KV cache)")
    behind = [st.index for st in run.stages if client_behind(st)]
    if behind:
        cap = f"its cap of {run.client_cap} requests in flight" if run.client_cap else "its cap on requests in flight"
        notes.append(f"stage(s) {', '.join(map(str, behind))}: the real client fell behind its schedule ({cap} was "
                     "full): the replay sends at the rate achieved and does not model the cap")
    notes = [*run.info.notes, *notes, *(f"stage {f.index}: {f.note}" for f in stages if f.note)]
    return StagesReplay(run=run, scenario=sc, stages=stages, summary=summary, simulated=sim,
                        notes=tuple(notes), simulations=sims)


# ---- comparison --------------------------------------------------------------------------

def _span(sim: pd.DataFrame) -> float:
    done = sim[sim["finish_s"].notna()]
    return float(done["finish_s"].max() - sim["sim_arrival_s"].min()) if len(done) else float("nan")


def _stat(x: np.ndarray, stat: str) -> float | None:
    x = x[np.isfinite(x)]
    if not len(x):
        return None
    return float(np.mean(x)) if stat == "mean" else float(np.percentile(x, float(stat[1:])))


def compare(real: ReportStats, sim: pd.DataFrame, *, span: float | None) -> StageFidelity:
    """``real``'s report against the simulated requests ``sim`` of the same stage (or run);
    ``span`` replaces their first-arrival-to-last-finish span (the run's summary)."""
    done = sim[sim["finish_s"].notna() & (sim["rejected"] == "")]
    out = done["output_tokens"].to_numpy(float)
    ttft, e2e = done["ttft_s"].to_numpy(float), done["e2e_s"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = {"ttft": ttft, "e2e": e2e, "ntpot": e2e / out,
                  "tpot": np.where(out > 1, (e2e - ttft) / (out - 1), np.nan)}
    metrics = {}
    for m, name in METRICS.items():
        rd = real.latency.get(name) or {}
        metrics[m] = {s: Compared(rd.get(key), _stat(values[m], s)) for s, key in STATS.items()}
    span = _span(sim) if span is None else span
    tps = float(out.sum() / span) if span and isfinite(span) and span > 0 else None
    slope, growth = _queue_trend(done["sim_arrival_s"].to_numpy(float), ttft)
    sim_sat = None if growth is None else bool((slope is None or slope > SATURATION_SLOPE)
                                               and growth > SATURATION_GROWTH)
    real_sat, why = _real_saturated(real)
    note = None
    if sim_sat is not None and real_sat is not None and sim_sat != real_sat:
        sim_why = f"TTFT {0.0 if slope is None else slope:+.2f} s per s of arrivals, late / early {growth:.1f}x"
        note = (f"the simulated server saturates ({sim_why}) but the real one did not ({why})" if sim_sat else
                f"the real server saturated ({why}) but the simulated one does not ({sim_why})")
    return StageFidelity(index=real.index if isinstance(real, StageStats) else None, requests=len(sim),
                         simulated=len(done), metrics=metrics,
                         output_tokens_per_s=Compared(real.throughput.get("output_tokens_per_sec"), tps),
                         ttft_slope=slope, ttft_growth=growth, real_saturated=real_sat, sim_saturated=sim_sat,
                         note=note)


def client_behind(st: StageStats) -> bool:
    """The client sent slower than requested: its requests waited for a free in-flight slot,
    because the server did not keep up."""
    return bool(st.rate and st.achieved_rate is not None and st.achieved_rate < BEHIND * st.rate)


def _real_saturated(real: ReportStats) -> tuple[bool | None, str]:
    """Whether a stage's real server fell behind its load, from the report alone, and the
    evidence: the client fell behind its schedule, or the queue kept growing. In a growing
    FCFS queue TTFT spreads over the stage (the late requests wait about slope x duration
    longer than the early ones), so p99 - p10 over the send duration stands for the slope and
    p90 / p10 for the late / early ratio (``runs.SATURATION_*``)."""
    t = real.latency.get("time_to_first_token")
    if not isinstance(real, StageStats) or not t or real.duration <= 0 or real.concurrency:
        return None, ""
    if client_behind(real):
        delay = (real.schedule_delay or {}).get("median")
        return True, (f"its client sent {real.achieved_rate:.3g} of the {real.rate:.3g} req/s asked"
                      + ("" if delay is None else f", requests {delay:.3g} s behind schedule at the median"))
    lo, hi90, hi99 = t.get("p10", t.get("min")), t.get("p90"), t.get("p99", t.get("max"))
    if lo is None or hi90 is None or hi99 is None or lo <= 0:
        return None, ""
    grows = (hi99 - lo) / real.duration > SATURATION_SLOPE and hi90 / lo > SATURATION_GROWTH
    return bool(grows), (f"TTFT p10 {lo * 1e3:,.0f} ms to p99 {hi99 * 1e3:,.0f} ms over a {real.duration:.0f} s "
                         f"stage" if grows else f"mean TTFT {t.get('mean', float('nan')) * 1e3:,.0f} ms")


# ---- plot ----------------------------------------------------------------------------------

def plot_stages(rep: StagesReplay, path: str | Path) -> Path:
    """PNG: per stage, real vs simulated mean / p90 / p99 TTFT (top) and E2E (bottom)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots import save_png
    stats = ("mean", "p90", "p99")
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), squeeze=False)
    x = np.arange(len(rep.stages))
    for r, m in enumerate(("ttft", "e2e")):
        for c, s in enumerate(stats):
            ax = axes[r, c]
            real = [f.metrics[m][s].real for f in rep.stages]
            sim = [f.metrics[m][s].sim for f in rep.stages]
            ax.bar(x - 0.2, [np.nan if v is None else v * 1e3 for v in real], 0.4, label="real")
            ax.bar(x + 0.2, [np.nan if v is None else v * 1e3 for v in sim], 0.4, label="simulated")
            ax.set_xticks(x, [str(f.index) for f in rep.stages])
            ax.set_xlabel("stage")
            ax.set_ylabel(f"{m.upper()} {s} (ms)")
            ax.set_title(f"{m.upper()} {s}")
            if r == 0 and c == 0:
                ax.legend()
    i = rep.run.info
    fig.suptitle(f"{i.engine} {i.engine_version} {i.model} on {i.gpu} (TP{i.tp}): {len(rep.stages)} stages, "
                 f"{i.num_requests} requests (synthesized from the stage reports)")
    return save_png(fig, path)
