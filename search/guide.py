"""Branch and bound in the study: skip what cannot win, explore cheap-but-plausible first.

* **Bound (safe)**: a candidate whose upper bound (``bounds.py``) does not beat the
  incumbent is not simulated; its trial is recorded PRUNED with ``bounded: true`` and the
  reason, and it does not use the budget (it cost no simulation).
* **Best-first moves (ordering only)**: on a small discrete space, a guided move enqueues
  the unevaluated, not bounded-out candidate with the highest upper bound (cheapest fleet)
  among those the load estimate (``capacity.py``) does not call overloaded and that no
  simulation has shown infeasible with more replicas; ties go to the candidate sharing
  the most choices with the incumbent (or, before any feasible trial, the closest miss).
  Choices the estimate does not model (services, KV tiers, ...) stay at the incumbent's.
* **Replica dominance is a heuristic, used only to order**: with fewer replicas each one
  carries more load, so a configuration that missed an SLO with ``r`` replicas almost
  always misses it with fewer; but not always (round-robin splits a random arrival stream
  differently, tails are noisy), so it never skips a candidate, it only moves it back.
* **Proof of optimality**: once every configuration of a discrete space is either
  simulated or bounded out, the incumbent is the optimum and the search stops.
"""
from __future__ import annotations

import random
from itertools import groupby
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .bounds import Bound, Bounder, check
from .capacity import LoadEstimator
from .local import _grid
from .objective import params_hash
from .space import SearchSpace

OFF_ATTR = "bounding_off"   # study attr: why bounding was switched off (a failed self-check)
REPLICA_KEYS = ("replicas", "prefill_replicas", "decode_replicas")
MODELLED = ("deployments.", "workload.")  # what capacity.py's load estimate looks at


def queued(trial: FrozenTrial) -> dict[str, Any]:
    """The parameters an enqueued (WAITING) trial will run with."""
    return dict(trial.params or trial.system_attrs.get("fixed_params") or {})


def incumbent(trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The best feasible simulated trial (lowest number breaks ties)."""
    ok = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("feasible")
          and t.values]
    return max(ok, key=lambda t: (t.values[0], -t.number)) if ok else None


class Guide:
    """Bounds and best-first moves for one space (single objective at a fixed load)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.bounder = Bounder(space)
        self.loads = LoadEstimator(space)

    @property
    def enabled(self) -> bool:
        return self.bounder.disabled is None

    def _on(self, study: optuna.Study) -> bool:
        return self.enabled and not study.user_attrs.get(OFF_ATTR)

    # ---- the bound ---------------------------------------------------------
    def bounded_reason(self, study: optuna.Study, values: dict[str, Any]) -> str | None:
        """Why ``values`` cannot beat the incumbent (None: it might, or no bound applies)."""
        if not self._on(study):
            return None
        inc = incumbent(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        b = self.bounder.bound(values) if inc is not None else None
        if b is None or b.value > inc.values[0]:
            return None
        return (f"bounded out: at most {b.value:,.0f} tok/$ (fleet {b.price_per_hour:.4g} $/h for "
                f">= {b.last_arrival_s:.4g}s) <= incumbent {inc.values[0]:,.0f} (trial {inc.number})")

    def self_check(self, study: optuna.Study, values: dict[str, Any], metrics: dict) -> None:
        """Compare a full simulation with the bound's ingredients; switch off on a mismatch."""
        b: Bound | None = self.bounder.bound(values) if self._on(study) else None
        msg = check(b, metrics) if b is not None else None
        if msg:
            study.set_user_attr(OFF_ATTR, msg)

    # ---- best-first moves ------------------------------------------------
    def cannot_win(self, study: optuna.Study, trials: list[FrozenTrial], values: dict[str, Any]) -> bool:
        """True when ``values``'s bound does not beat the incumbent among ``trials``."""
        inc = incumbent(trials)
        b = self.bounder.bound(values) if inc is not None and self._on(study) else None
        return b is not None and b.value <= inc.values[0]

    def open_candidates(self, trials: list[FrozenTrial]) -> list[dict[str, Any]]:
        """Grid configurations neither tried nor bounded out by the incumbent."""
        grid = _grid(self.space)
        seen = {t.user_attrs.get("params_hash") for t in trials}
        seen |= {params_hash(queued(t)) for t in trials if t.state == TrialState.WAITING}
        inc = incumbent(trials)
        out = []
        for v in grid:
            if params_hash(v) in seen:
                continue
            b = self.bounder.bound(v)
            if inc is not None and b is not None and b.value <= inc.values[0]:
                continue
            out.append(v)
        return out

    def exhausted(self, study: optuna.Study) -> bool:
        """Every configuration of a discrete space simulated or bounded out: optimum proven."""
        if not self._on(study) or not _grid(self.space):
            return False
        trials = study.get_trials(deepcopy=False)
        if any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials):
            return False  # a queued or running candidate is still open
        return incumbent(trials) is not None and not self.open_candidates(trials)

    def _dominated(self, values: dict[str, Any], missed: list[dict[str, Any]]) -> bool:
        for m in missed:
            diff = [k for k in set(m) | set(values) if m.get(k) != values.get(k)]
            if (len(diff) == 1 and diff[0].rsplit(".", 1)[-1] in REPLICA_KEYS
                    and isinstance(values.get(diff[0]), (int, float))
                    and m[diff[0]] > values[diff[0]]):
                return True
        return False

    def plan(self, study: optuna.Study, seed: int) -> bool:
        """Enqueue the best-first candidate; False when there is none (or no grid)."""
        if not self._on(study) or not _grid(self.space):
            return False
        trials = study.get_trials(deepcopy=False)
        cands = self.open_candidates(trials)
        if not cands:
            return False
        missed = [dict(t.params) for t in trials if t.state == TrialState.COMPLETE
                  and t.user_attrs.get("simulated") and not t.user_attrs.get("feasible")]
        ref = incumbent(trials)
        if ref is None:  # no feasible trial yet: lean towards the closest miss
            sims = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("simulated")]
            ref = min(sims, key=lambda t: max(t.user_attrs.get("constraints") or [1.0]), default=None)
        ref_params = dict(ref.params) if ref is not None else {}
        # the load estimate models LLM deployments and the workload only: along any other
        # choice (service placement, KV tiers, ...) it cannot vouch for a move, so a guided
        # move keeps the incumbent's value there, and waits for an incumbent to exist
        blind = [p for p in self.space.params if not p.startswith(MODELLED)]
        best = incumbent(trials)
        if blind and best is None:
            return False
        cands = [v for v in cands if all(v.get(p) == best.params.get(p) for p in blind)] if blind else cands
        if not cands:
            return False
        rng = random.Random(seed * 7919 + len(trials))
        tie = {params_hash(v): (sum(ref_params.get(k) == x for k, x in v.items()), rng.random())
               for v in cands}

        def ub(v: dict[str, Any]) -> float:
            b = self.bounder.bound(v)
            return b.value if b is not None else 0.0

        # best first: the highest bound whose load estimate and replica evidence allow it
        # (estimates are computed lazily, tier by tier, so a big grid stays cheap)
        move = None
        for _, tier in groupby(sorted(cands, key=ub, reverse=True), key=ub):
            ok = [v for v in tier if not self.loads.overloaded(v) and not self._dominated(v, missed)]
            if ok:
                move = max(ok, key=lambda v: tie[params_hash(v)])
                break
        if move is None:  # everything left looks overloaded: still cheapest first
            move = max(cands, key=lambda v: (ub(v), tie[params_hash(v)]))
        b = self.bounder.bound(move)
        study.enqueue_trial(move, user_attrs={"guided": True,
                                              "upper_bound": b.value if b is not None else None})
        return True
