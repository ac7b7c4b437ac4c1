"""Run a scenario: build the deployments, feed the workload through the event loop, summarize.

Without ``pipelines`` in the scenario a request is one LLM call (the deployment, or a
weighted spread over several). With them, requests are drawn into classes whose stages
(``simulator.stages``: services, KV tiers, reasoning, routing, LLM calls) are wired by
``pipeline_build.attach_pipelines``; the per-stage times become request columns and the
summary's ``stages`` / ``kv_cache`` sections.
"""
from __future__ import annotations

from math import isnan
from time import perf_counter
from typing import Callable

import numpy as np

from .core import Environment, StopSimulation
from .deployment import build_deployment
from .metrics import requests_frame, summarize
from .pipeline_build import attach_pipelines, llm_stage_breakdown, max_context, prepare_requests
from .result import SimResult
from .scenario import Scenario
from .stage import Pipeline
from .store import Store
from .workload import Requests, build_requests


class Spread:
    """Several deployments of one stage: each request to one of them, weighted by replicas
    (deterministic smooth weighted round-robin)."""

    def __init__(self, deployments: list) -> None:
        self.deps = deployments
        self.done = deployments[0].done
        for d in deployments:
            d.done = self._leave
        self.w = [len(d.replicas) for d in deployments]
        self.cur = [0] * len(deployments)

    def _leave(self, rid: int, t: float) -> None:
        self.done(rid, t)

    def submit(self, rid: int, t: float) -> None:
        total = sum(self.w)
        self.cur = [c + w for c, w in zip(self.cur, self.w)]
        i = max(range(len(self.cur)), key=lambda k: (self.cur[k], -k))
        self.cur[i] -= total
        self.deps[i].submit(rid, t)


class OpenLoop:
    """Arrivals at pre-drawn times, one event each."""

    def __init__(self, env: Environment, store: Store, entry) -> None:
        self.env, self.store, self.entry, self.i = env, store, entry, 0
        if store.n:
            env.schedule(store.arrival[0], self._arrive)

    def _arrive(self) -> None:
        i = self.i
        self.i += 1
        if self.i < self.store.n:
            self.env.schedule(self.store.arrival[self.i], self._arrive)
        self.entry.submit(i, self.env.now)

    def on_complete(self, rid: int, t: float) -> None:
        pass


class ClosedLoop:
    """``concurrency`` clients, each sending its next request when the previous finishes
    (as ``benchmark_serving --max-concurrency`` and the silicon_sample rows measure)."""

    def __init__(self, env: Environment, store: Store, entry, concurrency: int, think_s: float) -> None:
        self.env, self.store, self.entry, self.think = env, store, entry, think_s
        self.next = 0
        for _ in range(min(concurrency, store.n)):
            self._send(0.0)

    def _send(self, t: float) -> None:
        if self.next < self.store.n:
            rid = self.next
            self.next += 1
            self.store.arrival[rid] = t
            self.env.schedule(t, self.entry.submit, rid, t)

    def on_complete(self, rid: int, t: float) -> None:
        self._send(t + self.think)


def simulate(scenario: Scenario, *, progress: Callable[[float], None] | None = None,
             should_stop: Callable[[dict], bool] | None = None,
             requests: Requests | None = None) -> SimResult:
    """Simulate ``scenario``. ``progress(fraction)`` is called as requests finish;
    ``should_stop(partial_summary)`` every 5% of requests may end the run early."""
    wall0 = perf_counter()
    reqs = requests if requests is not None else build_requests(scenario.workload, scenario.seed)
    klass = segments = None
    if scenario.pipelines:   # draw classes; prefix/multi-turn classes rewrite prompt lengths
        reqs, klass, segments = prepare_requests(reqs, list(scenario.pipelines), scenario.seed,
                                                 max_context(scenario))
    store = Store(reqs)
    env = Environment()
    deps = [build_deployment(env, store, d, scenario.surrogate, scenario.debug) for d in scenario.deployments]
    run = attach_pipelines(scenario, env, store, deps, klass, segments) if scenario.pipelines else None
    if run is None:
        stage = deps[0] if len(deps) == 1 else Spread(deps)
        entry = Pipeline([stage], store.n, store.complete)
    else:
        entry = run
    deps = deps + (run.services if run else [])   # services count in the fleet's cost and energy
    w = scenario.workload
    source = (ClosedLoop(env, store, entry, w.concurrency, w.think_time_s) if w.arrival == "closed_loop"
              else OpenLoop(env, store, entry))
    n = store.n
    tick = max(1, n // 100)
    check = max(1, n // 20)
    state = {"done": 0}

    def partial() -> dict:
        return _summary(scenario, store, deps, env.now, perf_counter() - wall0)

    def on_complete(rid: int, t: float) -> None:
        if rid >= n:
            return                              # a sub-request (reasoning branch) was rejected
        state["done"] += 1
        d = state["done"]
        source.on_complete(rid, t)
        if progress is not None and d % tick == 0:
            progress(d / n)
        if should_stop is not None and d % check == 0 and d < n and should_stop(partial()):
            raise StopSimulation

    store.on_complete = on_complete
    finished = env.run()
    if progress is not None:
        progress(1.0)
    frame = requests_frame(store.arrays(), store.rejected)
    if run is not None:
        frame = frame.assign(**run.columns())
    steps = {r.name: np.asarray(r.steps, dtype=float).reshape(-1, 6) for d in deps for r in d.replicas}
    summary = _summary(scenario, store, deps, env.now, perf_counter() - wall0, frame, steps)
    summary.update(run.summary(frame) if run is not None
                   else {"stages": llm_stage_breakdown(frame), "kv_cache": {}})
    summary["prefill_tokens_computed"] = store.prefill_tokens
    summary["events"] = env.events
    summary["steps"] = sum(len(r.steps) // 6 for d in deps for r in d.replicas)
    summary["sim_wall_s"] = perf_counter() - wall0
    return SimResult(scenario=scenario, summary=summary,
                     requests=frame,
                     steps=steps,
                     kv_blocks={r.name: r.total_blocks for d in deps for r in d.replicas},
                     stopped_early=not finished)


def _summary(scenario: Scenario, store: Store, deps: list, now: float, wall: float, df=None,
             steps: dict | None = None) -> dict:
    if df is None:
        df = requests_frame(store.arrays(), store.rejected)
    finish = df.finish_s.to_numpy()
    makespan = float(np.nanmax(finish)) if np.isfinite(finish).any() else now
    makespan = max(makespan, now if isnan(makespan) else makespan)
    gaps, weights, fleet = [], [], []
    for d in deps:
        for pool, reps in d.pools:
            for r in reps:
                if r.steps:
                    a = steps[r.name] if steps else np.asarray(r.steps, dtype=float).reshape(-1, 6)
                    gaps.append(a[:, 5])
                    weights.append(a[:, 2])
                fleet.append({"name": r.name, "devices": pool.devices, "price_per_hour": pool.hw.price_per_hour,
                              "tdp_w": pool.hw.tdp_w, "busy": min(r.busy / makespan, 1.0) if makespan > 0 else 0.0})
    itl = (np.concatenate(gaps) if gaps else np.array([]), np.concatenate(weights) if weights else np.array([]))
    return summarize(df, itl, scenario.slo, fleet, makespan, wall)
