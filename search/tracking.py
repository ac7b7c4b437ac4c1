"""MLflow tracking: a parent run per study, a nested run per trial, artifacts on the parent.

MLflow is imported lazily (the simulator never imports it). The store and the artifact
location are the project's (``surrogates.tracking``: ``$MLFLOW_TRACKING_URI`` or
``mlruns/mlflow.db``), so surrogate training runs and studies share one MLflow UI.
Tracking never breaks a search: the first failure disables the tracker and reports one
line through ``warn``; results stay in the Optuna storage.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Callable

from surrogates.tracking import artifact_root, first_line, prepare_store, tracking_uri

PARENT_ATTR = "mlflow_parent_run_id"
EXPERIMENT_ATTR = "mlflow_experiment_id"
__all__ = ["Tracker", "artifact_root", "prepare_store", "tracking_uri", "PARENT_ATTR", "EXPERIMENT_ATTR"]


class Tracker:
    """Thin, failure-tolerant wrapper around ``MlflowClient``."""

    def __init__(self, warn: Callable[[str], None] | None = None) -> None:
        self.uri = tracking_uri()
        self.warn = warn or (lambda _msg: None)
        self.client: Any = None
        self.failed = False
        try:
            prepare_store(self.uri)
            from mlflow.tracking import MlflowClient
            self.client = MlflowClient(tracking_uri=self.uri)
        except Exception as e:  # noqa: BLE001 - any tracking failure disables tracking
            self._fail(e)

    @property
    def enabled(self) -> bool:
        return self.client is not None and not self.failed

    def _fail(self, e: BaseException) -> None:
        if not self.failed:
            self.failed = True
            self.warn(f"MLflow tracking at {self.uri} unavailable ({first_line(e)}); "
                      "results are kept in the Optuna storage only")

    def _call(self, fn: Callable[[], Any]) -> Any:
        if not self.enabled:
            return None
        try:
            # MLflow prints "View run ... at <url>" on stdout; stdout belongs to --json
            with contextlib.redirect_stdout(sys.stderr):
                return fn()
        except Exception as e:  # noqa: BLE001
            self._fail(e)
            return None

    # ---- parent side -----------------------------------------------------
    def experiment(self, name: str) -> str | None:
        def go() -> str:
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                return exp.experiment_id
            return self.client.create_experiment(name, artifact_location=artifact_root())
        return self._call(go)

    def start_parent(self, experiment_id: str, study: str, tags: dict[str, str],
                     params: dict[str, Any] | None = None) -> str | None:
        """The study's parent run, with what the study was run on as ``params`` (logged once:
        MLflow params cannot change, and a resumed study keeps its parent)."""
        def go() -> str:
            run = self.client.create_run(experiment_id, run_name=f"study-{study}",
                                         tags={**tags, "hermes.study": study, "hermes.kind": "study"})
            if params:
                self._log(run.info.run_id, params, {}, {})
            return run.info.run_id
        return self._call(go)

    def finish_parent(self, run_id: str, params: dict[str, Any], metrics: dict[str, float],
                      tags: dict[str, str], artifacts_dir: Path | None) -> None:
        def go() -> None:
            try:
                self._log(run_id, params, metrics, tags)
                if artifacts_dir is not None:
                    self.client.log_artifacts(run_id, str(artifacts_dir))
            except BaseException:
                self.client.set_terminated(run_id, "FAILED")  # never left RUNNING
                raise
            self.client.set_terminated(run_id, "FINISHED")
        self._call(go)

    def add_artifacts(self, run_id: str, folder: Path, under: str) -> None:
        """Files made after the study ended (an export of its best configuration) as artifacts
        of its parent run, under ``under``."""
        self._call(lambda: self.client.log_artifacts(run_id, str(folder), under))

    def end_parent(self, run_id: str, status: str) -> None:
        """End the parent run of a search that stopped on an error (FAILED) or was
        interrupted (KILLED). Tried even after a tracking failure: a run left RUNNING
        would look alive forever."""
        if self.client is None:
            return
        try:
            with contextlib.redirect_stdout(sys.stderr):
                self.client.set_terminated(run_id, status)
                # a trial run the interrupt caught between its start and its end
                exp = self.client.get_run(run_id).info.experiment_id
                for run in self.client.search_runs(
                        [exp], f"tags.`mlflow.parentRunId` = '{run_id}' and attributes.status = 'RUNNING'"):
                    self.client.set_terminated(run.info.run_id, status)
        except Exception:  # noqa: BLE001 - the search's own error is the one to report
            pass

    # ---- worker side ------------------------------------------------------
    def log_trial(self, experiment_id: str, parent_run_id: str, number: int,
                  params: dict[str, Any], metrics: dict[str, float], tags: dict[str, str]) -> None:
        def go() -> None:
            run = self.client.create_run(
                experiment_id, run_name=f"trial-{number}",
                tags={**tags, "mlflow.parentRunId": parent_run_id, "hermes.kind": "trial",
                      "hermes.trial": str(number)})
            try:
                self._log(run.info.run_id, params, metrics, {})
            except BaseException:
                self.client.set_terminated(run.info.run_id, "FAILED")
                raise
            self.client.set_terminated(run.info.run_id, "FINISHED")
        self._call(go)

    def _log(self, run_id: str, params: dict[str, Any], metrics: dict[str, float],
             tags: dict[str, str]) -> None:
        from mlflow.entities import Metric, Param, RunTag
        import time
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()
                     if isinstance(v, (int, float)) and v == v],
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])


def trial_callback(tracker: Tracker, experiment_id: str, parent_run_id: str,
                   identity: dict[str, str]) -> Callable:
    """An Optuna callback ``f(study, frozen_trial)`` logging each finished trial as a nested run."""

    def callback(study: Any, trial: Any) -> None:
        if trial.user_attrs.get("surplus") or trial.values is None or "duplicate_of" in trial.user_attrs:
            return  # a re-proposal is not a new configuration: no nested run of its own
        metrics = dict(trial.user_attrs.get("metrics") or {})
        metrics["objective_0"] = trial.values[0]
        if len(trial.values) > 1:
            metrics["objective_1"] = trial.values[1]
        metrics["feasible"] = float(bool(trial.user_attrs.get("feasible")))
        tags = {**identity, "hermes.feasible": str(bool(trial.user_attrs.get("feasible"))),
                "hermes.reason": str(trial.user_attrs.get("reason", "")),
                "hermes.params_hash": str(trial.user_attrs.get("params_hash", "")),
                "hermes.worker_pid": str(trial.user_attrs.get("worker_pid", ""))}
        tracker.log_trial(experiment_id, parent_run_id, trial.number, trial.params, metrics, tags)

    return callback
