"""Search: Optuna finds the deployment with the most output tokens per dollar under SLOs.

Public API:
- ``load_space(path | None) -> SearchSpace``; ``parse_space(doc)`` (space files, validated)
- ``run_search(space, trials=..., storage_url=..., study_name=..., workers=...) -> SearchOutcome``
- ``evaluate(space, values) -> Outcome`` (one candidate: checks, simulation, constraints)
- ``run_worker(storage_url, study_name, n_trials=...)`` (join a study from any machine;
  also ``python -m search.worker``)
- ``Tracker`` (MLflow, imported lazily; failures never break a search)
"""
from __future__ import annotations

from .objective import Outcome, evaluate
from .runner import SearchOutcome, run_search
from .space import Param, SearchSpace, load_space, parse_space
from .study import run_worker
from .tracking import Tracker

__all__ = ["Outcome", "Param", "SearchOutcome", "SearchSpace", "Tracker", "evaluate",
           "load_space", "parse_space", "run_search", "run_worker"]
