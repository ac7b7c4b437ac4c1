"""Run a scenario: build the deployments, feed the workload through the event loop, summarize.

Every request walks a pipeline, by one path: build the requests -> ``prepare`` (draw their
request classes) -> the request store -> the LLM deployments (``simulator.engine``) ->
``attach_pipelines`` (services and stages, ``simulator.pipelines``) -> the arrival source ->
the event loop -> the request table plus the pipeline's columns -> the summary plus the
pipeline's sections. A scenario without ``pipelines`` is one class with a single ``llm``
stage over its deployments (``pipelines.build.PLAIN_CLASS``) and reports as a bare LLM call.
"""
from __future__ import annotations

from math import isnan
from time import perf_counter
from typing import Callable

import numpy as np

from .engine.autoscale import scaling_record
from .engine.core import Environment, StopSimulation
from .engine.deployment import build_deployment
from .engine.engines import resolve_for
from .engine.lora import columns as lora_columns, summarize as lora_summary
from .engine.metrics import requests_frame, summarize
from .engine.store import Store
from .engine.workload import Requests, build_requests
from .pipelines.build import attach_pipelines, prepare
from .result import SimResult
from .scenario import Scenario


class OpenLoop:
    """Arrivals at pre-drawn times, one event each."""

    on_complete = None               # nothing to do when a request finishes

    def __init__(self, env: Environment, store: Store, entry) -> None:
        self.env, self.store, self.entry, self.i = env, store, entry, 0
        self._submit, self._n, self._at = entry.submit, store.n, store.arrival
        if store.n:
            env.schedule(store.arrival[0], self._arrive)

    def _arrive(self) -> None:
        i = self.i
        self.i = j = i + 1
        if j < self._n:
            self.env.schedule(self._at[j], self._arrive)
        self._submit(i, self.env.now)


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
    plan = prepare(scenario, reqs)    # request classes; prefix/multi-turn classes rewrite prompts
    store = Store(plan.requests)
    store.seed = scenario.seed        # per-deployment draws (LoRA adapter ids) derive from it
    if any(d.speculative is not None and d.speculative.by_class for d in scenario.deployments):
        store.request_class = [plan.classes[k].name for k in plan.klass.tolist()]  # per-class acceptance
    env = Environment()
    deps = [build_deployment(env, store, d, scenario.surrogate, scenario.debug) for d in scenario.deployments]
    run = attach_pipelines(scenario, env, store, deps, plan)
    deps = deps + run.services        # services count in the fleet's cost and energy
    w = scenario.workload
    entry = run.pipe                  # every request enters its class's first stage
    source = (ClosedLoop(env, store, entry, w.concurrency, w.think_time_s) if w.arrival == "closed_loop"
              else OpenLoop(env, store, entry))
    n = store.n
    tick = max(1, n // 100)
    check = max(1, n // 20)
    done = 0
    notify = source.on_complete

    def partial() -> dict:
        return _summary(scenario, store, deps, env.now, perf_counter() - wall0)

    def on_complete(rid: int, t: float) -> None:
        nonlocal done
        if rid >= n:
            return                              # a sub-request (reasoning branch) was rejected
        done += 1
        if notify is not None:
            notify(rid, t)
        if progress is not None and done % tick == 0:
            progress(done / n)
        if should_stop is not None and done % check == 0 and done < n and should_stop(partial()):
            raise StopSimulation

    store.on_complete = on_complete
    finished = env.run()
    if progress is not None:
        progress(1.0)
    frame = requests_frame(store.arrays(), store.rejected)
    columns = run.columns()
    adapter_cols = lora_columns(deps, len(frame))
    if adapter_cols:                  # only with LoRA adapters: which adapter, how long it waited
        frame = frame.assign(**adapter_cols)
    if columns:
        frame = frame.assign(**columns)
    steps = {r.name: _step_rows(r) for d in deps for r in d.replicas}
    summary = _summary(scenario, store, deps, env.now, perf_counter() - wall0, frame, steps)
    summary.update(run.summary(frame))
    summary["prefill_tokens_computed"] = store.prefill_tokens
    holders = [r for d in deps for _, reps in d.pools for r in reps if getattr(r, "prefix", None) is not None]
    caches = [r.prefix for r in holders]
    if caches:                        # only where an engine prefix cache saw prompt segments
        looked = sum(c.prompt_tokens for c in caches)
        hit = sum(c.hit_tokens for c in caches)
        summary["engine_prefix_cache"] = {"prompt_tokens_looked_up": looked, "hit_tokens": hit,
                                          "token_hit_rate": hit / looked if looked else 0.0}
        if any(c.host is not None for c in caches):   # KV offloaded to host memory
            summary["engine_prefix_cache"].update(
                host_hit_tokens=sum(c.host_hit_tokens for c in caches),
                host_load_seconds=sum(r.load_seconds for r in holders))
    resumed = [r for d in deps for r in d.replicas if getattr(r, "resumed", 0)]
    if resumed:                       # only where a preempted request was recomputed
        tokens = sum(r.resume_tokens for r in resumed)
        cached = sum(r.resume_cached for r in resumed)
        summary["preempted_recompute"] = {"requests": sum(r.resumed for r in resumed), "tokens": tokens,
                                          "cached_tokens": cached,
                                          "cached_share": cached / tokens if tokens else 0.0}
    adapters = lora_summary(deps)
    if adapters:                      # only with LoRA adapters: other summaries stay as they were
        summary["lora"] = adapters
    summary["events"] = env.events
    summary["steps"] = sum(len(r.steps) // 6 for d in deps for r in d.replicas)
    spec = {r.name: r.spec.summary() for d in deps for r in d.replicas if getattr(r, "spec", None) is not None}
    if spec:                          # only with speculative decoding: other summaries stay as they were
        summary["speculative"] = spec
    engines = {d.name: {"engine": resolve_for(d.engine, d.model, d.hardware, d.tp, d.pp, d.dtype).summary()}
               for d in scenario.deployments if d.engine is not None}
    if engines:                       # only with an engine block: other summaries stay as they were
        summary["deployments"] = engines
    scaled = [d for d in deps if hasattr(d, "billed_s")]
    if scaled:                        # only with autoscaling: replica-hours and scaling counts
        summary["autoscaling"] = {d.dep.name: d.report(summary["makespan_s"]) for d in scaled}
    summary["sim_wall_s"] = perf_counter() - wall0
    return SimResult(scenario=scenario, summary=summary,
                     requests=frame,
                     steps=steps,
                     kv_blocks={r.name: r.total_blocks for d in deps for r in d.replicas},
                     stopped_early=not finished,
                     scaling=scaling_record(scaled, summary["makespan_s"]) if scaled else None)


def _summary(scenario: Scenario, store: Store, deps: list, now: float, wall: float, df=None,
             steps: dict | None = None) -> dict:
    if df is None:
        df = requests_frame(store.arrays(), store.rejected)
    finish = df.finish_s.to_numpy()
    makespan = float(np.nanmax(finish)) if np.isfinite(finish).any() else now
    makespan = max(makespan, now if isnan(makespan) else makespan)
    gaps, weights, fleet = [], [], []
    scaled = 0
    for d in deps:
        billed = getattr(d, "billed_s", None)       # an autoscaled deployment bills per replica-second
        for pool, reps in d.pools:
            for k, r in enumerate(reps):
                if r.steps:
                    a = steps[r.name] if steps else _step_rows(r)
                    gaps.append(a[:, 5])
                    weights.append(a[:, 2])
                fleet.append({"name": r.name, "devices": pool.devices, "price_per_hour": pool.hw.price_per_hour,
                              "tdp_w": pool.hw.tdp_w, "busy": min(r.busy / makespan, 1.0) if makespan > 0 else 0.0})
                if billed is not None:
                    secs = fleet[-1]["billed_s"] = billed(k, makespan)
                    fleet[-1]["busy"] = min(r.busy / secs, 1.0) if secs > 0 else 0.0
        if billed is not None:
            scaled += d.peak_devices(makespan)
    itl = (np.concatenate(gaps) if gaps else np.array([]), np.concatenate(weights) if weights else np.array([]))
    return summarize(df, itl, scenario.slo, fleet, makespan, wall, scaled)


def _step_rows(replica) -> np.ndarray:
    """The replica's step log as rows (t0, t1, decoders, prefill tokens, used blocks, itl gap);
    ``fromiter`` converts the flat list of floats and ints faster than ``asarray``."""
    s = replica.steps
    return np.fromiter(s, dtype=float, count=len(s)).reshape(-1, 6)
