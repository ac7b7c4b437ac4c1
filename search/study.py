"""One study, many workers: create or resume it, and run trials until N have finished.

The study is self-contained: the space (with its base scenario inlined), the trial
budget and the MLflow parent run live in study user attrs, so a worker on another
machine needs only the storage URL and the study name.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from profiling.errors import HermesError

from .guide import Guide
from .identity import IDENTITY_ATTR, changed, derived_name, describe, study_identity
from .local import local_move_callback, space_size
from .objective import Outcome, directions, evaluate, params_hash
from .space import SearchSpace, parse_space
from .storage import (FINISHED, TRIAL_CONSTRAINTS, counts, free, make_sampler, make_storage, quiet_optuna,
                      worker_seed)

LIVE = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)
MAX_DUPLICATES = 10  # per budgeted trial: a safety stop for a sampler that only re-proposes
PROVEN_ATTR = "optimum_proven"  # study attr: every configuration simulated or bounded out


class _Surplus(Exception):
    """Raised when a racing worker asked one trial more than the budget (marked FAIL)."""


class StudyChanged(HermesError):
    """The study exists but was made with other inputs: its trials do not apply to this run."""

    def __init__(self, name: str, components: list[str], identity: dict[str, str]) -> None:
        self.name, self.components, self.identity = name, components, identity
        super().__init__(
            f"study '{name}' was run with another {describe(components)}, so its trials do not "
            f"apply: rerun with the same inputs, or start a new study with --study "
            f"{derived_name(name, identity)}")


def open_study(space: SearchSpace, storage: Any, name: str, seed: int | None,
               identity: dict[str, str] | None = None) -> optuna.Study:
    """Create the study or load it (resume); everything its objective depends on (the space,
    catalogs, surrogate, named files, version: ``identity.py``) must match the stored one."""
    ident = identity if identity is not None else study_identity(space)
    study = optuna.create_study(storage=storage, study_name=name, directions=directions(space),
                                load_if_exists=True, sampler=make_sampler(seed, len(space.params)))
    if study.user_attrs.get("space") is None:  # just created
        study.set_user_attr("space", space.doc)
        study.set_user_attr(IDENTITY_ATTR, ident)
    else:
        diff = changed(study.user_attrs.get(IDENTITY_ATTR), ident)
        if diff:
            raise StudyChanged(name, diff, ident)
    if [d.name.lower() for d in study.directions] != directions(space):
        raise HermesError(f"study '{name}' exists with other objectives; pick another --study")
    return study


def suggest(space: SearchSpace, trial: optuna.Trial) -> dict[str, Any]:
    """Ask for every active parameter in file order (conditions see earlier choices)."""
    values: dict[str, Any] = {}
    for path, p in space.params.items():
        if p.active(values, space.base):
            values[path] = p.suggest(trial, path)
    return values


def count(study: optuna.Study, states: tuple) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def _cached(study: optuna.Study, h: str) -> optuna.trial.FrozenTrial | None:
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("params_hash") == h and t.user_attrs.get("simulated") is not None:
            return t
    return None


def make_objective(space: SearchSpace, n_trials: int,
                   evaluator: Callable[[SearchSpace, dict], Outcome] = evaluate,
                   guide: Guide | None = None):
    """The Optuna objective: budget guard, dedup by params hash, branch and bound (a
    candidate that cannot beat the incumbent is PRUNED unsimulated, ``guide.py``),
    evaluate, store attrs; a callback then queues the next move (``local.py``)."""

    def objective(trial: optuna.Trial) -> float | tuple[float, ...]:
        trial.set_user_attr("worker_pid", os.getpid())
        ahead = [t for t in trial.study.get_trials(deepcopy=False, states=LIVE)
                 if t.number < trial.number and not free(t)]
        if len(ahead) >= n_trials:
            trial.set_user_attr("surplus", True)
            raise _Surplus()
        values = suggest(space, trial)
        h = params_hash(values)
        trial.set_user_attr("params_hash", h)
        hit = _cached(trial.study, h)
        if hit is not None:  # same params already simulated: reuse, do not re-simulate
            for k in ("constraints", "feasible", "reason", "metrics", "simulated"):
                trial.set_user_attr(k, hit.user_attrs.get(k))
            trial.set_user_attr("duplicate_of", hit.number)
            _set_constraints(trial, hit.user_attrs.get("constraints") or [])
            return tuple(hit.values) if len(hit.values) > 1 else hit.values[0]
        why = guide.bounded_reason(trial.study, values) if guide is not None else None
        if why:  # cannot be the optimum: recorded, not simulated, not counted
            trial.set_user_attr("bounded", True)
            trial.set_user_attr("reason", why)
            raise optuna.TrialPruned(why)
        out = evaluator(space, values)
        for k, v in out.attrs().items():
            trial.set_user_attr(k, v)
        if guide is not None and out.feasible and out.simulated:
            guide.self_check(trial.study, values, out.metrics)
        _set_constraints(trial, out.constraints)
        return out.values if len(out.values) > 1 else out.values[0]

    return objective


def _set_constraints(trial: optuna.Trial, values: Any) -> None:
    if TRIAL_CONSTRAINTS:
        for i, v in enumerate(values):
            trial.set_constraint(f"c{i:02d}", float(v))


def run_worker(storage_url: str | None, study_name: str, *, n_trials: int, seed: int | None,
               index: int = 0, heartbeat_s: int = 5,
               callbacks: list[Callable] | None = None,
               evaluator: Callable[[SearchSpace, dict], Outcome] = evaluate) -> int:
    """Run trials until ``n_trials`` have finished in the study; returns how many it ran.

    A worker that finds the budget taken by running trials waits (polling) instead of
    leaving: if one of those belongs to a dead worker, its retry needs someone to run it.
    """
    quiet_optuna()
    storage = make_storage(storage_url, heartbeat_s=heartbeat_s)
    summaries = optuna.get_all_study_summaries(storage)
    if study_name not in {s.study_name for s in summaries}:
        raise HermesError(f"no study '{study_name}' in the storage")
    probe = optuna.load_study(study_name=study_name, storage=storage)
    space = parse_space(probe.user_attrs["space"], source=f"study {study_name}")
    diff = changed(probe.user_attrs.get(IDENTITY_ATTR), study_identity(space))
    if diff:  # this machine would score trials with other prices, surrogate or code
        raise HermesError(f"this worker's {describe(diff)} differs from the one study "
                          f"'{study_name}' was made with; run the worker with the same inputs")
    study = optuna.load_study(study_name=study_name, storage=storage,
                              sampler=make_sampler(worker_seed(seed, index), len(space.params)))
    guide = Guide(space)
    guide = guide if guide.enabled else None
    objective = make_objective(space, n_trials, evaluator, guide)
    local = local_move_callback(space, n_trials, seed, guide)
    budget = min(n_trials, space_size(space) or n_trials)  # a tiny space ends when exhausted
    ran = 0
    while True:
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        finished = sum(counts(t) for t in trials)
        unsimulated = sum(free(t) for t in trials)
        if finished >= budget or unsimulated > MAX_DUPLICATES * n_trials:
            return ran
        if guide is not None and guide.exhausted(study):
            study.set_user_attr(PROVEN_ATTR, True)  # all simulated or bounded out
            return ran
        waiting = any(t.state == TrialState.WAITING for t in trials)
        live = sum(t.state in LIVE and not free(t) for t in trials)
        if live >= n_trials and not waiting:
            time.sleep(max(0.2, heartbeat_s / 4))
            continue
        study.optimize(objective, n_trials=1, catch=(_Surplus,), callbacks=[local, *(callbacks or [])],
                       gc_after_trial=False)
        ran += 1
