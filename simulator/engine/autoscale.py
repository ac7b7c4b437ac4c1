"""Autoscaled deployments: replicas that follow the load, billed per replica-second.

A replica is *starting* (billed, not routed) for ``lead_time_s`` after a scale-up, then
*active* (routed); a scale-down makes one *draining* (billed, not routed) until its last
request finishes, when it is *released*. Every ``interval_s`` the controller reads the
signal and acts; billed replicas (starting + active + draining) never exceed
``max_replicas``, and starting + active never go below ``min_replicas``. A scale-up first
takes back a draining replica (it is still loaded, so it serves at once).

Only the autoscaled deployment pays for this: a static deployment is ``Aggregated`` untouched.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from math import ceil, inf
from typing import Callable

import numpy as np
import pandas as pd

from .config import AutoscalingConfig, Deployment
from .core import Environment
from .deployment import DEPLOYMENT_KINDS, Aggregated
from .schedulers import SCHEDULERS
from .store import Store

EVENT_COLUMNS = ("time_s", "deployment", "action", "from_replicas", "to_replicas", "signal", "reason")


@dataclass
class Life:
    """One replica's billing record: billed from ``start`` to ``end`` (inf while billed)."""

    start: float
    ready: float = inf      # first time it could take requests
    end: float = inf


class Autoscaled(Aggregated):
    """An aggregated deployment whose router sees only the active replicas."""

    def __init__(self, env: Environment, store: Store, dep: Deployment, surrogate: str | None,
                 debug: bool = False) -> None:
        super().__init__(env, store, dep, surrogate, debug)
        self.cfg: AutoscalingConfig = dep.autoscaling
        self._debug = debug
        self._policy_cls = SCHEDULERS[dep.scheduler.policy]
        self.life = [Life(0.0, 0.0) for _ in self.replicas]
        self.inflight = [0] * len(self.replicas)     # routed and not finished, per replica
        self.active = list(range(len(self.replicas)))   # replica indices the router may pick
        self.starting: list[int] = []
        self.draining: list[int] = []
        self._routed: list = []                      # the router's view: active replica objects
        self._sync_router()
        self.events: list[tuple] = []                # EVENT_COLUMNS rows
        self.timeline: list[tuple[float, int, int, int]] = [(0.0, len(self.active), 0, 0)]
        self._last_action = -inf
        self._recent: deque[tuple[int, float]] = deque()   # (rid, arrival) for the ttft signal
        self._window = self.cfg.window_s or max(self.cfg.interval_s, 60.0)
        self.done = self._done                       # the initial replicas report through counters
        self._schedule_tick(self.cfg.interval_s)

    # ---- routing ------------------------------------------------------------------------
    def _sync_router(self) -> None:
        self._routed[:] = [self.replicas[i] for i in self.active]
        if self.router.replicas is not self._routed:
            self.router.replicas = self._routed
        self.router.resize()

    def _dispatch(self, rid: int, t: float) -> None:
        """A servable request to the serving replica the router picks (it sees only those)."""
        i = self.active[self.router.pick(rid, self.store)]
        self.store.where[rid] = i
        self.inflight[i] += 1
        if self.cfg.signal == "ttft":
            self._recent.append((rid, t))
        self._enter(self.replicas[i], rid, t)

    @property
    def done(self) -> Callable[[int, float], None]:
        return self._done

    @done.setter
    def done(self, fn: Callable[[int, float], None]) -> None:
        # each replica reports through its own counter so a draining one is released when empty
        self._done = fn
        for i, r in enumerate(getattr(self, "replicas", ())):
            r.done = self._finisher(i)

    def _finisher(self, i: int) -> Callable[[int, float], None]:
        def finished(rid: int, t: float) -> None:
            self.inflight[i] -= 1
            if not self.inflight[i] and i in self.draining:
                self._release(i, t)
            self._done(rid, t)
        return finished

    # ---- the controller -----------------------------------------------------------------
    def signal(self, t: float) -> float:
        """The configured signal now (per replica for queue/in_flight, counting starting ones)."""
        c, reps = self.cfg, self.replicas
        if c.signal == "queue":
            load = sum(len(reps[i].waiting) + reps[i].arriving + len(reps[i].ready) for i in self.active)
            return load / max(len(self.active) + len(self.starting), 1)
        if c.signal == "in_flight":
            return sum(self.inflight[i] for i in self.active) / max(len(self.active) + len(self.starting), 1)
        if c.signal == "kv":
            return sum(reps[i].used / max(reps[i].total_blocks, 1) for i in self.active) / max(len(self.active), 1)
        # ttft: p90 over requests that arrived in the window, waiting ones counted at their wait so far
        rec, first = self._recent, self.store.first
        while rec and rec[0][1] < t - self._window:
            rec.popleft()
        if not rec:
            return 0.0
        waits = [(first[r] if first[r] == first[r] else t) - a for r, a in rec]
        return float(np.percentile(waits, 90)) / c.ttft_target_s

    def _tick(self) -> None:
        self.store.autoscale_ticks -= 1
        t = self.env.now
        c = self.cfg
        x = self.signal(t)
        serving = len(self.active) + len(self.starting)
        # kv and ttft do not see replicas still starting: wait for them before adding more
        blind = c.signal in ("kv", "ttft") and self.starting
        if x > c.scale_up_at and serving < c.max_replicas and not blind:
            self._scale_up(t, x, serving)
        elif (x < c.scale_down_at and serving > c.min_replicas and not self.starting
              and t - self._last_action >= c.cooldown_s and len(self.active) > 1):
            self._scale_down(t, x, serving)
        # keep ticking while anything but controllers can still happen (arrivals, steps, transfers)
        if len(self.env._queue) > self.store.autoscale_ticks:
            self._schedule_tick(t + c.interval_s)

    def _schedule_tick(self, t: float) -> None:
        # the store is shared by every deployment of the run: it counts the controllers' queued ticks
        self.store.autoscale_ticks = getattr(self.store, "autoscale_ticks", 0) + 1
        self.env.schedule(t, self._tick)

    def _scale_up(self, t: float, x: float, serving: int) -> None:
        c = self.cfg
        want = c.step
        if c.signal in ("queue", "in_flight"):      # enough replicas to bring the load per replica under the threshold
            want = max(want, ceil(x * serving / c.scale_up_at - 1e-9) - serving)
        why = f"{c.signal} {x:.3g} > {c.scale_up_at:g}"
        while want and self.draining:                      # take back the newest draining replica
            i = self.draining.pop()
            self.active.append(i)
            self.active.sort()
            want -= 1
        room = c.max_replicas - (len(self.active) + len(self.starting) + len(self.draining))
        new = min(want, room)
        for _ in range(new):
            i = len(self.replicas)
            r = self._replica(f"{self.dep.name}/{i}", self.pool, self._policy_cls(self.dep.scheduler), self._debug)
            self.replicas.append(r)
            self.life.append(Life(t))
            self.inflight.append(0)
            r.done = self._finisher(i)
            self.starting.append(i)
            self.env.schedule(t + c.lead_time_s, self._ready, i)
        after = len(self.active) + len(self.starting)
        if after == serving:
            return
        self._sync_router()
        self._last_action = t
        self._log(t, "scale_up", serving, after, x, why)

    def _ready(self, i: int) -> None:
        t = self.env.now
        self.starting.remove(i)
        self.life[i].ready = t
        before = len(self.active)
        self.active.append(i)
        self.active.sort()
        self._sync_router()
        self._log(t, "ready", before, len(self.active), float("nan"), f"lead time {self.cfg.lead_time_s:g} s")

    def _scale_down(self, t: float, x: float, serving: int) -> None:
        # the least loaded active replica drains (the newest on a tie)
        i = min(self.active, key=lambda k: (self.inflight[k], -k))
        self.active.remove(i)
        self.draining.append(i)
        self._sync_router()
        self._last_action = t
        self._log(t, "scale_down", serving, serving - 1, x,
                  f"{self.cfg.signal} {x:.3g} < {self.cfg.scale_down_at:g}: {self.replicas[i].name} drains")
        if not self.inflight[i]:
            self._release(i, t)

    def _release(self, i: int, t: float) -> None:
        self.draining.remove(i)
        self.life[i].end = t
        billed = len(self.active) + len(self.starting) + len(self.draining)
        self._log(t, "released", billed + 1, billed, float("nan"), f"{self.replicas[i].name} empty")

    def _log(self, t: float, action: str, a: int, b: int, x: float, why: str) -> None:
        self.events.append((t, self.dep.name, action, a, b, x, why))
        self.timeline.append((t, len(self.active), len(self.starting), len(self.draining)))

    # ---- billing and report -------------------------------------------------------------
    def billed_s(self, i: int, until: float) -> float:
        """Seconds replica ``i`` is billed within [0, until]."""
        life = self.life[i]
        return max(0.0, min(life.end, until) - life.start)

    def report(self, until: float) -> dict:
        """Replica-seconds and scaling counts up to ``until`` (the makespan)."""
        secs = sum(self.billed_s(i, until) for i in range(len(self.replicas)))
        peak, billed = 0, 0
        for _, a, s, d in self.timeline:
            if _ <= until:
                billed = a + s + d
                peak = max(peak, billed)
        acts = [e[2] for e in self.events if e[0] <= until]
        return {"replica_seconds": secs, "replica_hours": secs / 3600.0,
                "mean_replicas": secs / until if until > 0 else float(len(self.active)),
                "peak_replicas": peak, "min_replicas": self.cfg.min_replicas,
                "max_replicas": self.cfg.max_replicas,
                "scale_ups": acts.count("scale_up"), "scale_downs": acts.count("scale_down"),
                "devices_per_replica": self.pool.devices}

    def peak_devices(self, until: float) -> int:
        return self.report(until)["peak_replicas"] * self.pool.devices


DEPLOYMENT_KINDS["autoscaled"] = Autoscaled


def replicas_over_time(dep: Autoscaled, until: float) -> np.ndarray:
    """Rows (time, active, starting, draining) at each change, closed at ``until``."""
    rows = [r for r in dep.timeline if r[0] <= until]
    rows.append((until, *rows[-1][1:]))
    return np.asarray(rows, dtype=float)


def lead_ok(dep: Autoscaled) -> bool:
    """No request started on a replica before it was ready (for tests)."""
    st = dep.store
    for rid, i in enumerate(st.where[:st.n]):
        if i >= 0 and st.started[rid] == st.started[rid] and st.started[rid] < dep.life[i].ready - 1e-9:
            return False
    return True


@dataclass(frozen=True)
class ScalingRecord:
    """What a run's autoscalers did: every event (``EVENT_COLUMNS``) and, per deployment, its
    replicas over time as rows (time, active, starting, draining)."""

    events: pd.DataFrame
    replicas: dict[str, np.ndarray]


def scaling_record(deps: list[Autoscaled], until: float) -> ScalingRecord:
    rows = sorted((e for d in deps for e in d.events), key=lambda e: e[0])
    return ScalingRecord(pd.DataFrame(rows, columns=list(EVENT_COLUMNS)),
                         {d.dep.name: replicas_over_time(d, until) for d in deps})
