"""MLflow tracking: a parent run per study, a nested run per trial, artifacts on the parent.

MLflow is imported lazily (the simulator never imports it). The store is
``$MLFLOW_TRACKING_URI`` or ``sqlite:///<cwd>/mlruns/mlflow.db`` with artifacts in
``mlruns/artifacts`` (``$HERMES_MLFLOW_ARTIFACTS`` overrides the artifact location).
Tracking never breaks a search: the first failure disables the tracker and reports one
line through ``warn``; results stay in the Optuna storage.
"""
from __future__ import annotations

import contextlib
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any, Callable

PARENT_ATTR = "mlflow_parent_run_id"
EXPERIMENT_ATTR = "mlflow_experiment_id"

# A dead server must fail fast, not after MLflow's default minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path.cwd() / 'mlruns' / 'mlflow.db'}"


def artifact_root() -> str | None:
    """Artifact location for new experiments (None: let a remote server decide)."""
    env = os.environ.get("HERMES_MLFLOW_ARTIFACTS")
    if env:
        return Path(env).resolve().as_uri()
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return (Path.cwd() / "mlruns" / "artifacts").resolve().as_uri()
    return None


def _probe(uri: str) -> None:
    """Fail within seconds when an HTTP tracking server does not answer."""
    if uri.startswith(("http://", "https://")):
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=3) as r:
            r.read()
    elif uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)


class Tracker:
    """Thin, failure-tolerant wrapper around ``MlflowClient``."""

    def __init__(self, warn: Callable[[str], None] | None = None) -> None:
        self.uri = tracking_uri()
        self.warn = warn or (lambda _msg: None)
        self.client: Any = None
        self.failed = False
        try:
            _probe(self.uri)
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
            e = getattr(e, "reason", e)  # urllib wraps the socket error
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            self.warn(f"MLflow tracking at {self.uri} unavailable ({first}); "
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

    def start_parent(self, experiment_id: str, study: str, tags: dict[str, str]) -> str | None:
        def go() -> str:
            run = self.client.create_run(experiment_id, run_name=f"study-{study}",
                                         tags={**tags, "hermes.study": study, "hermes.kind": "study"})
            return run.info.run_id
        return self._call(go)

    def finish_parent(self, run_id: str, params: dict[str, Any], metrics: dict[str, float],
                      tags: dict[str, str], artifacts_dir: Path | None) -> None:
        def go() -> None:
            self._log(run_id, params, metrics, tags)
            if artifacts_dir is not None:
                self.client.log_artifacts(run_id, str(artifacts_dir))
            self.client.set_terminated(run_id, "FINISHED")
        self._call(go)

    # ---- worker side ------------------------------------------------------
    def log_trial(self, experiment_id: str, parent_run_id: str, number: int,
                  params: dict[str, Any], metrics: dict[str, float], tags: dict[str, str]) -> None:
        def go() -> None:
            run = self.client.create_run(
                experiment_id, run_name=f"trial-{number}",
                tags={**tags, "mlflow.parentRunId": parent_run_id, "hermes.kind": "trial",
                      "hermes.trial": str(number)})
            self._log(run.info.run_id, params, metrics, {})
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
