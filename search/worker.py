"""A search worker process: ``python -m search.worker --storage URL --study NAME --trials N``.

Runs on any machine that reaches the storage; everything else (the space, the MLflow
parent run) is read from the study itself.
"""
from __future__ import annotations

import argparse
import sys

from profiling.errors import HermesError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m search.worker")
    ap.add_argument("--storage", required=True)
    ap.add_argument("--study", required=True)
    ap.add_argument("--trials", type=int, required=True)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--heartbeat", type=int, default=5)
    ap.add_argument("--no-track", action="store_true")
    a = ap.parse_args(argv)
    from .study import run_worker
    callbacks = []
    try:
        if not a.no_track:
            callbacks = _tracking_callbacks(a.storage, a.study, a.heartbeat)
        run_worker(a.storage, a.study, n_trials=a.trials, seed=a.seed, index=a.index,
                   heartbeat_s=a.heartbeat, callbacks=callbacks)
    except HermesError as e:
        print(f"hermes-sim worker: error: {e}", file=sys.stderr)
        return 2
    return 0


def _tracking_callbacks(storage_url: str, study_name: str, heartbeat_s: int) -> list:
    """Nested-run logging from this worker, when the parent started a parent run."""
    import optuna

    from .runner import identity_tags
    from .space import parse_space
    from .storage import make_storage
    from .tracking import EXPERIMENT_ATTR, PARENT_ATTR, Tracker, trial_callback
    study = optuna.load_study(study_name=study_name, storage=make_storage(storage_url, heartbeat_s=heartbeat_s))
    parent, exp = study.user_attrs.get(PARENT_ATTR), study.user_attrs.get(EXPERIMENT_ATTR)
    if not parent or not exp:
        return []
    tracker = Tracker()  # silent: the parent already reports tracking problems once
    if not tracker.enabled:
        return []
    space = parse_space(study.user_attrs["space"], source=f"study {study_name}")
    return [trial_callback(tracker, exp, parent, identity_tags(space))]


if __name__ == "__main__":
    sys.exit(main())
