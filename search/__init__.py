"""Search: Optuna finds the deployment with the most output tokens per dollar under SLOs.

Public API:
- ``load_space(path | None) -> SearchSpace``; ``parse_space(doc)`` (space files, validated)
- ``run_search(space, trials=..., storage_url=..., study_name=..., workers=...) -> SearchOutcome``
- ``evaluate(space, values) -> Outcome`` (one candidate: checks, simulation, constraints)
- ``run_worker(storage_url, study_name, n_trials=...)`` (join a study from any machine;
  also ``python -m search.worker``)
- ``Tracker`` (MLflow, imported lazily; failures never break a search)
- ``Bounder`` (upper bound on tokens/$ without simulating) and ``Guide`` (branch and bound
  in a study: bounded-out candidates are PRUNED unsimulated, best-first moves, optimality
  proof on discrete spaces); ``LoadEstimator`` (roofline load estimate, ordering only)
"""
from __future__ import annotations

from .bounds import Bounder
from .capacity import LoadEstimator
from .guide import Guide
from .objective import Outcome, evaluate
from .runner import SearchOutcome, run_search
from .space import Param, SearchSpace, load_space, parse_space
from .study import run_worker
from .tracking import Tracker

__all__ = ["Bounder", "Guide", "LoadEstimator", "Outcome", "Param", "SearchOutcome", "SearchSpace", "Tracker", "evaluate",
           "load_space", "parse_space", "run_search", "run_worker"]
