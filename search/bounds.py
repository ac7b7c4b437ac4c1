"""Branch and bound: an upper bound on a candidate's tokens per dollar, without simulating.

At a fixed offered load the workload fixes the output tokens: a feasible candidate
completes every request, so it delivers at most ``W`` output tokens (the drawn answer
lengths, times the number of LLM calls per request in a pipeline). Its cost is the
fleet's $/hour (known from the catalog) times the makespan, and the makespan of an
open-loop workload is at least the last arrival. Hence

    tokens/$  <=  W / ($/hour x last_arrival / 3600)

A candidate whose bound does not beat the incumbent (best feasible value so far) cannot
be the optimum: the search records it as bounded out and does not simulate it.

The bound applies to the single objective ``tokens_per_dollar`` at a fixed load only:
not to Pareto fronts (a dearer candidate may still have lower latency), capacity mode
(the load moves), closed-loop arrivals (no fixed last arrival) or reasoning stages (their
token count is decided while simulating). ``check`` re-derives the bound's ingredients
from every real simulation; one mismatch switches bounding off for the study.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .expr import catalog
from .objective import params_hash
from .simapi import sim_api, to_scenario
from .space import SearchSpace

REL_TOL = 1e-6


@dataclass(frozen=True)
class Bound:
    """The optimistic tokens/$ of a candidate and what it is made of."""

    value: float
    price_per_hour: float
    output_tokens: float
    last_arrival_s: float


def unsupported(space: SearchSpace) -> str | None:
    """Why branch and bound cannot be used on this space (``None``: it can)."""
    if space.objective != "tokens_per_dollar":
        return "Pareto objective (a dearer candidate may still be on the front)"
    if space.capacity is not None:
        return "capacity mode (the offered load is searched per candidate)"
    deps = space.base.get("deployments")
    if any(".autoscaling" in p for p in space.params) or (
            isinstance(deps, list) and any(isinstance(d, dict) and d.get("autoscaling") for d in deps)):
        return "autoscaled deployments (billed per replica-second, below the fleet's price x makespan)"
    return None


def fleet_price(scen: Any) -> float:
    """$/hour of every device the simulator charges (deployments; services in pipelines)."""
    cat = catalog()
    total = 0.0
    for d in scen.deployments:
        s, dev = d.scheduler, d.tp * d.pp
        if s.policy == "disaggregated":
            total += s.prefill_replicas * dev * cat.get(d.hardware).price_per_hour
            total += (s.decode_replicas * (s.decode_tp or d.tp) * d.pp
                      * cat.get(s.decode_hardware or d.hardware).price_per_hour)
        else:
            total += d.replicas * dev * cat.get(d.hardware).price_per_hour
    if scen.pipelines:  # services are built (and charged) only for pipeline scenarios
        total += sum(sv.devices * cat.get(sv.hardware).price_per_hour for sv in scen.services)
    return total


def _llm_calls(scen: Any) -> int | None:
    """Most LLM calls one request makes (None: decided while simulating)."""
    if not scen.pipelines:
        return 1
    calls = 0
    for c in scen.pipelines:
        kinds = [st.kind for st in c.stages]
        if "reasoning" in kinds:
            return None
        calls = max(calls, kinds.count("llm"))
    return max(calls, 1)


class Bounder:
    """Upper bounds for the candidates of one space; workload draws are cached by content."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.disabled = unsupported(space)
        self._workloads: dict[str, tuple[float, float] | None] = {}
        self._bounds: dict[str, Bound | None] = {}

    def _workload(self, scen: Any) -> tuple[float, float] | None:
        """(W, last arrival) of the drawn request stream, or None if there is no bound."""
        w = scen.workload
        if w.arrival == "closed_loop":
            return None
        calls = _llm_calls(scen)
        if calls is None:
            return None
        key = hashlib.sha256(json.dumps(
            [w.model_dump(mode="json"), scen.seed, calls,
             [c.model_dump(mode="json") for c in scen.pipelines or []]],
            sort_keys=True, default=str).encode()).hexdigest()
        if key not in self._workloads:
            sim = sim_api()
            reqs = sim.build_requests(w, scen.seed)
            if scen.pipelines:  # pipeline classes may rewrite lengths: draw as simulate does
                from simulator.pipelines.build import max_context, prepare_requests
                reqs = prepare_requests(reqs, list(scen.pipelines), scen.seed, max_context(scen))[0]
            out = np.maximum(np.asarray(reqs.output, float) * calls, 1.0)
            last = float(np.nanmax(reqs.arrival)) if len(reqs) else 0.0
            self._workloads[key] = (float(out.sum()), last) if last > 0 else None
        return self._workloads[key]

    def bound(self, values: Mapping[str, Any]) -> Bound | None:
        """The bound for ``values``, or None when none applies (or the scenario is invalid:
        the objective then rejects it with its reason)."""
        if self.disabled:
            return None
        h = params_hash(dict(values))
        if h not in self._bounds:
            self._bounds[h] = self._bound(values)
        return self._bounds[h]

    def _bound(self, values: Mapping[str, Any]) -> Bound | None:
        try:
            scen = to_scenario(self.space.scenario(dict(values)))
            wl = self._workload(scen)
            price = fleet_price(scen)
        except Exception:  # invalid candidates are the objective's to explain
            return None
        if wl is None or price <= 0:
            return None
        tokens, last = wl
        return Bound(tokens / (price * last / 3600.0), price, tokens, last)


def check(b: Bound, summary: Mapping[str, Any]) -> str | None:
    """Does a full simulation agree with the bound's ingredients? A message if not."""
    makespan = float(summary.get("makespan_s") or 0.0)
    cost = float(summary.get("cost_usd") or 0.0)
    tokens = float(summary.get("output_tokens_per_dollar") or 0.0) * cost
    if makespan <= 0 or cost <= 0 or not math.isfinite(tokens):
        return None
    rate = cost / makespan * 3600.0
    if abs(rate - b.price_per_hour) > REL_TOL * b.price_per_hour:
        return f"simulated fleet costs {rate:.4g} $/h, the bound assumed {b.price_per_hour:.4g} $/h"
    if tokens > b.output_tokens * (1 + REL_TOL):
        return f"simulated {tokens:.0f} output tokens, the bound assumed at most {b.output_tokens:.0f}"
    if makespan < b.last_arrival_s * (1 - REL_TOL):
        return f"simulated makespan {makespan:.4g}s ends before the last arrival {b.last_arrival_s:.4g}s"
    return None
