"""A cheap load estimate of a candidate from its compiled step tables (no simulation).

Used only to ORDER exploration (``guide.py``), never to reject: it is a mean-value model,
and tail latencies are what the SLOs constrain. For each LLM deployment it estimates, from
the offered load and the mean prompt/answer lengths:

* the prefill share of a replica's time: ``rho_p = lambda_r x t_prefill(P)``;
* the time per output token ``t``: decode steps get the time prefill leaves, and the
  replica settles at the smallest batch ``N`` (at most the scheduler's max batch) whose
  tokens per second ``N / step(N)`` carry ``lambda_r x O``; Little's law gives ``t``;
* the busy fraction at the most efficient batch: ``rho = rho_p + lambda_r x O x
  step(B) / B``.

The model is optimistic on purpose (one whole-prompt prefill, no queueing, mean lengths):
a candidate it calls overloaded (``rho >= 1`` or ``t`` above a TPOT/ITL target) is very
likely infeasible; one it accepts may still miss a tail SLO.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from profiling.models import resolve_model
from simulator.engine.stepcost import with_overhead
from surrogates.compiled import RooflinePredictor, compile_step_table

from .expr import catalog
from .objective import params_hash
from .simapi import sim_api, to_scenario
from .space import SearchSpace

@dataclass(frozen=True)
class Load:
    """Estimated busy fraction and time per output token of the most loaded LLM replica."""

    rho: float
    tpot_s: float

    def overloaded(self, space: SearchSpace) -> bool:
        per_token = [s.target_s for s in space.slos if s.metric in ("tpot", "itl")]
        return self.rho >= 1.0 or any(self.tpot_s > t for t in per_token)


def _shares(scen: Any) -> dict[str, float]:
    """Fraction of requests each LLM deployment serves per request (routes: unknown, 0)."""
    if not scen.pipelines:
        reps = {d.name: (d.scheduler.prefill_replicas if d.scheduler.policy == "disaggregated"
                         else d.replicas) for d in scen.deployments}
        total = sum(reps.values())
        return {k: v / total for k, v in reps.items()}
    weights = sum(c.weight for c in scen.pipelines)
    out: dict[str, float] = {}
    for c in scen.pipelines:
        for st in c.stages:
            if st.kind in ("llm", "reasoning") and st.deployment:
                out[st.deployment] = out.get(st.deployment, 0.0) + c.weight / weights
    return out


def _step_fn(dep: Any, hardware: str, tp: int):
    """Step seconds of one replica: the roofline step table plus the framework overhead."""
    table = compile_step_table(resolve_model(dep.model), catalog().get(hardware), RooflinePredictor(),
                               dtype=dep.dtype, kv_dtype=dep.kv_dtype, tp=tp, pp=dep.pp)

    def step(tokens: int, seqs: int, kv_sum: float, prefill=()) -> float:
        stage = table.step_time(tokens, seqs, kv_sum, list(prefill))
        return with_overhead(stage, dep.pp, dep.overhead, tokens, seqs + len(prefill))
    return step


def _smallest(ok, hi: int) -> int:
    """Smallest n in [1, hi] with ok(n) (ok is monotone: bigger batches carry more)."""
    lo = 1
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return lo


def _replica_load(step, lam: float, p: int, o: float, max_batch: int, mode: str) -> Load:
    """One replica's fluid estimate at ``lam`` req/s of mean prompt ``p`` and answer ``o``.

    ``mode`` "shared": prefill chunks ride in the decode steps (chunked, mixed): a step of
    ``N`` decoders also carries ``N p / o`` prefill tokens. "separate": whole-prompt
    prefill steps stall the decoders (continuous, static). "decode": prefill is elsewhere
    (disaggregated). The replica settles at the smallest batch ``N`` (at most the max
    batch) whose ``N / step`` tokens per second carry ``lam x o``; a decoder then gets a
    token per step, stretched by the time separate prefills take.
    """
    kv = p + o / 2
    need = lam * o
    rho_p = lam * step(p, 0, 0.0, [(p, p)]) if mode == "separate" else 0.0
    free = 1.0 - rho_p

    def dec(n: int) -> float:
        if mode == "shared":
            c = max(int(round(n * p / o)), 1)
            return step(n + c, n, n * kv, [(c, p)])
        return step(n, n, n * kv)

    rho = rho_p + need * dec(max_batch) / max_batch  # at the most efficient batch
    if free <= 0 or rho >= 1.0:
        return Load(max(rho, 1.0), float("inf"))
    n = _smallest(lambda k: k * free >= need * dec(k), max_batch)
    return Load(rho, dec(n) / free)


class LoadEstimator:
    """Estimates for the candidates of one space, cached (workload draws by content,
    step functions by deployment, loads by assignment)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self._loads: dict[str, Load | None] = {}
        self._workloads: dict[str, tuple[float, int, float] | None] = {}
        self._steps: dict[tuple, Any] = {}

    def _workload(self, scen: Any) -> tuple[float, int, float] | None:
        w = scen.workload
        key = json.dumps([w.model_dump(mode="json"), scen.seed], sort_keys=True, default=str)
        if key not in self._workloads:
            stats = None
            if w.arrival != "closed_loop":
                reqs = sim_api().build_requests(w, scen.seed)
                span = float(np.nanmax(reqs.arrival)) if len(reqs) > 1 else 0.0
                if span > 0:
                    stats = ((len(reqs) - 1) / span, int(np.mean(reqs.prompt)), float(np.mean(reqs.output)))
            self._workloads[key] = stats
        return self._workloads[key]

    def _step(self, scen: Any, dep: Any, hardware: str, tp: int):
        key = (dep.model, hardware, tp, dep.pp, dep.dtype, dep.kv_dtype,
               dep.overhead.model_dump_json())
        if key not in self._steps:
            self._steps[key] = _step_fn(dep, hardware, tp)
        return self._steps[key]

    def load(self, values: Mapping[str, Any]) -> Load | None:
        """The estimate for ``values`` (None: no open-loop rate, or an invalid candidate)."""
        h = params_hash(dict(values))
        if h not in self._loads:
            try:
                self._loads[h] = self._estimate(to_scenario(self.space.scenario(dict(values))))
            except Exception:  # an invalid candidate: the objective gives the reason when asked
                self._loads[h] = None
        return self._loads[h]

    def overloaded(self, values: Mapping[str, Any]) -> bool:
        load = self.load(values)
        return load is not None and load.overloaded(self.space)

    def _estimate(self, scen: Any) -> Load | None:
        wl = self._workload(scen)
        if wl is None:
            return None
        lam, p, o = wl
        shares = _shares(scen)
        worst: Load | None = None
        for d in scen.deployments:
            f = shares.get(d.name, 0.0)
            if f <= 0:
                continue
            s = d.scheduler
            pre = self._step(scen, d, d.hardware, d.tp)
            if s.policy == "disaggregated":
                dec = self._step(scen, d, s.decode_hardware or d.hardware, s.decode_tp or d.tp)
                rho_p = f * lam / s.prefill_replicas * pre(p, 0, 0.0, [(p, p)])
                b = _replica_load(dec, f * lam / s.decode_replicas, p, o, s.max_batch_size, "decode")
                load = Load(max(rho_p, b.rho), b.tpot_s)
            else:
                mode = "shared" if s.policy in ("chunked", "mixed") else "separate"
                load = _replica_load(pre, f * lam / d.replicas, p, o, s.max_batch_size, mode)
            if worst is None or load.rho > worst.rho:
                worst = load
        return worst
