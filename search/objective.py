"""Evaluate one candidate: checks, simulation (with early stop), objective and constraints.

Constraint values follow Optuna's convention (<= 0 feasible) and are the same length for
every candidate: ``[fit, dropped-requests, one per SLO]``. SLO entries are the relative
excess over the target, so the sampler learns *how far* a configuration is from feasible.
Candidates rejected before simulating get 1.0 everywhere and a value of 0 tokens/$.

Early stopping (``should_stop``: a partial tail latency already ``factor`` x over its SLO)
records the trial as COMPLETE and infeasible, with the partial metrics as its constraint
values, instead of raising ``optuna.TrialPruned``: TPE ranks pruned trials only by
intermediate values (we report none) and NSGA-II ignores them, whereas a complete
infeasible trial feeds the constraint model directly ("this region is overloaded, by
this much"), and the dedup cache can answer a repeat of it without simulating.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from profiling.errors import HermesError

from .feasibility import fit_reason, parallelism_reason, requirement_reason
from .simapi import sim_api, to_scenario
from .space import SearchSpace

WORST_LATENCY_S = 1e6  # latency objective of a candidate that was never simulated


@dataclass(frozen=True)
class Outcome:
    """What one candidate scored: objective values, constraints, and why."""

    values: tuple[float, ...]
    constraints: tuple[float, ...]
    feasible: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    simulated: bool = False

    def attrs(self) -> dict[str, Any]:
        return {"constraints": list(self.constraints), "feasible": self.feasible,
                "reason": self.reason, "metrics": self.metrics, "simulated": self.simulated}


def params_hash(values: dict[str, Any]) -> str:
    """Stable identity of an assignment (used to skip re-simulating a duplicate)."""
    blob = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def content_hash(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def n_objectives(space: SearchSpace) -> int:
    return 2 if space.objective == "pareto" else 1


def directions(space: SearchSpace) -> list[str]:
    return ["maximize", "minimize"] if space.objective == "pareto" else ["maximize"]


def _latency(space: SearchSpace, summary: dict) -> float:
    metric, stat = space.pareto_latency.split("_")
    block = summary.get(f"{metric}_s") or {}
    v = block.get(stat)
    return float(v) if v is not None and math.isfinite(float(v)) else WORST_LATENCY_S


def _stopper(space: SearchSpace) -> Callable[[dict], bool] | None:
    """Stop once a partial tail latency is already ``factor`` x over its SLO: a lost trial."""
    if not space.prune.enabled or not space.slos:
        return None
    factor, min_done = space.prune.factor, space.prune.min_completed

    def should_stop(partial: dict) -> bool:
        if (partial.get("completed") or 0) < min_done:
            return False
        return any(s.measured(partial) > factor * s.target_s for s in space.slos)
    return should_stop


def rejected(space: SearchSpace, reason: str) -> Outcome:
    vals = (0.0, WORST_LATENCY_S)[: n_objectives(space)]
    return Outcome(vals, (1.0,) * (2 + len(space.slos)), False, reason)


def _metrics(summary: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in ("output_tokens_per_dollar", "throughput_req_s", "output_tokens_per_s",
              "goodput_req_s", "cost_usd", "makespan_s", "energy_j", "sim_wall_s", "requests", "completed",
              "rejected", "preemptions"):
        v = summary.get(k)
        if isinstance(v, dict):  # e.g. rejected: {count, reasons}
            v = v.get("count")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    for m in ("ttft", "tpot", "itl", "e2e"):
        for stat in ("p50", "p90", "p99"):
            v = (summary.get(f"{m}_s") or {}).get(stat)
            if isinstance(v, (int, float)) and math.isfinite(v):
                out[f"{m}_{stat}_s"] = float(v)
    return out


def score(space: SearchSpace, summary: dict, stopped_early: bool) -> Outcome:
    """Objective and constraints of a simulated candidate."""
    requests = float(summary.get("requests") or 0) or 1.0
    dropped = (requests - float(summary.get("completed") or 0)) / requests
    slo_v = [s.violation(summary) for s in space.slos]
    constraints = (0.0, dropped if dropped > 0 else 0.0, *slo_v)
    metrics = _metrics(summary)
    for s, v in zip(space.slos, slo_v):
        metrics[f"slo_margin_{s.metric}_{s.stat}"] = -v  # > 0: headroom as a fraction of target
    reasons = []
    if stopped_early:
        reasons.append("pruned early: partial " + ", ".join(
            f"{s.metric} {s.stat} {s.measured(summary):.3g}s > {space.prune.factor:g}x SLO "
            f"{s.target_s:g}s" for s in space.slos if s.measured(summary) > space.prune.factor * s.target_s))
    reasons += [f"SLO {s.metric} {s.stat} missed: {s.measured(summary):.3g}s vs {s.target_s:g}s "
                f"(+{v:.0%})" for s, v in zip(space.slos, slo_v) if v > 0 and not stopped_early]
    if dropped > 0 and not stopped_early:
        reasons.append(f"{dropped:.1%} of requests not completed")
    tpd = float(summary.get("output_tokens_per_dollar") or 0.0)
    vals = (tpd, _latency(space, summary))[: n_objectives(space)]
    feasible = not reasons
    return Outcome(vals, constraints, feasible, "; ".join(reasons) or "ok", metrics, True)


def prepare(space: SearchSpace, values: dict[str, Any]) -> tuple[Any, str | None]:
    """The validated scenario object for ``values``, or the reason it is infeasible."""
    doc = space.scenario(values)
    reason = parallelism_reason(doc) or requirement_reason(doc, space.requirements)
    if reason:
        return None, reason
    try:
        scen = to_scenario(doc)
    except HermesError as e:
        return None, f"invalid scenario: {e}"
    reason = fit_reason(scen)
    return (None, reason) if reason else (scen, None)


def simulate_doc(space: SearchSpace, scen: Any, *, prune: bool = True) -> tuple[dict, bool, Any]:
    res = sim_api().simulate(scen, should_stop=_stopper(space) if prune else None)
    return dict(res.summary), bool(getattr(res, "stopped_early", False)), res


def evaluate(space: SearchSpace, values: dict[str, Any]) -> Outcome:
    """Score ``values``: rejected before simulating, or simulated (capacity mode bisects)."""
    scen, reason = prepare(space, values)
    if reason:
        return rejected(space, reason)
    if space.capacity is not None:
        return _capacity(space, values)
    t0 = time.perf_counter()
    summary, stopped, _ = simulate_doc(space, scen)
    out = score(space, summary, stopped)
    if getattr(space, "slo_confidence", None) is not None:
        out = at_confidence(space, scen, out)
    out.metrics["trial_wall_s"] = time.perf_counter() - t0
    return out


def at_confidence(space: SearchSpace, scen: Any, point: Outcome) -> Outcome:
    """``point`` re-scored over ``space.confidence_samples`` sampled simulations
    (``simulator.uncertainty``): feasible when P(all SLOs met and every request served) >=
    ``slo_confidence``, valued at the tokens per dollar reached with that probability.

    Both are exact order statistics of the samples: with m = ceil(p K), P(all met) >= p
    exactly when the m-th smallest per-sample worst violation is <= 0, so the constraints
    are that sample's (graded, as the sampler wants them); the value is the m-th largest
    tokens per dollar. A sample stopped early (a partial tail 3x over an SLO) misses."""
    from simulator.uncertainty import run_samples
    p, k = float(space.slo_confidence), int(space.confidence_samples)
    runs = run_samples(scen, k, int(getattr(scen, "seed", 0)), should_stop=_stopper(space))
    rows = []
    for summary, _stopped in runs:
        requests = float(summary.get("requests") or 0) or 1.0
        dropped = max((requests - float(summary.get("completed") or 0)) / requests, 0.0)
        slo_v = [s.violation(summary) for s in space.slos]
        worst = max([*slo_v, dropped if dropped > 0 else -math.inf])
        rows.append((worst, dropped, slo_v, float(summary.get("output_tokens_per_dollar") or 0.0)))
    m = min(max(math.ceil(p * k - 1e-9), 1), k)
    worst, dropped, slo_v, _ = sorted(rows, key=lambda r: r[0])[m - 1]
    tpd = sorted((r[3] for r in rows), reverse=True)[m - 1]
    met = sum(r[0] <= 0 for r in rows) / k
    metrics = {**point.metrics, "slo_probability": met, "output_tokens_per_dollar_at_confidence": tpd}
    feasible = worst <= 0
    reason = "ok" if feasible else (f"P(all SLOs met) {met:.0%} < {p:g} over {k} sampled simulations; "
                                    f"point estimate: {point.reason}")
    vals = (tpd, *point.values[1:])
    return Outcome(vals, (point.constraints[0], dropped, *slo_v), feasible, reason, metrics, True)


def _capacity(space: SearchSpace, values: dict[str, Any]) -> Outcome:
    """Highest offered load meeting the SLOs (bisection); tokens/$ reported at that load."""
    cap = space.capacity
    assert cap is not None

    def at(rate: float) -> Outcome:
        doc = space.scenario({**values, "workload.rate_rps": rate})
        summary, stopped, _ = simulate_doc(space, to_scenario(doc))
        return score(space, summary, stopped)

    best = at(cap.max_rps)
    if best.feasible:
        lo_rate, lo = cap.max_rps, best
    else:
        lo = at(cap.min_rps)
        if not lo.feasible:
            return Outcome(lo.values, lo.constraints, False,
                           f"misses the SLOs even at {cap.min_rps:g} req/s: {lo.reason}", lo.metrics, True)
        lo_rate, hi_rate = cap.min_rps, cap.max_rps
        for _ in range(cap.steps):
            mid = (lo_rate + hi_rate) / 2
            o = at(mid)
            lo_rate, lo, hi_rate = (mid, o, hi_rate) if o.feasible else (lo_rate, lo, mid)
    metrics = {**lo.metrics, "capacity_rps": lo_rate}
    return Outcome(lo.values, lo.constraints, True, f"ok at {lo_rate:.3g} req/s", metrics, True)
