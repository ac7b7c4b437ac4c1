"""Training entry point shared by the CLI, ``calibrate`` and the bundle build: (optionally)
tune on a grouped validation fold with Optuna, fit, save, log to MLflow."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .evaluate import accuracy_table
from .model import SurrogateModel, shape_groups
from .sources import table_hash

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainResult:
    model: SurrogateModel
    directory: Path
    run_id: str | None
    trace_hash: str
    seconds: float
    params: dict
    # Why the run is not in MLflow although logging was asked for ('' when it is or was not
    # asked): the surrogate is saved in ``directory`` either way, never lost to a dead store.
    tracking_error: str = ""


def split_shapes(table: pd.DataFrame, frac: float = 0.2, seed: int = 0) -> np.ndarray:
    """Boolean mask of validation rows: ``frac`` of each kind's distinct shapes."""
    val = np.zeros(len(table), bool)
    rng = np.random.default_rng(seed)
    for kind in table["op"].unique():
        m = (table["op"] == kind).to_numpy()
        g = shape_groups(table[m], kind) if kind in ("gemm", "attn_prefill", "attn_decode", "elementwise",
                                                      "collective") else np.arange(m.sum())
        u = np.unique(g)
        pick = rng.choice(u, max(1, int(len(u) * frac)), replace=False)
        val[np.flatnonzero(m)[np.isin(g, pick)]] = True
    return val


def tune(table: pd.DataFrame, trials: int, max_rows: int = 8000, seed: int = 0,
         progress: Progress | None = None) -> dict:
    """Optuna search of XGBoost hyper-parameters minimising mean validation MAPE."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    val = split_shapes(table, seed=seed)
    train, valid = table[~val], table[val]

    def objective(trial: optuna.Trial) -> float:
        params = {"n_estimators": trial.suggest_int("n_estimators", 100, 500, step=50),
                  "max_depth": trial.suggest_int("max_depth", 4, 10),
                  "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
                  "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 10, log=True)}
        m = SurrogateModel("xgboost", params, max_rows=max_rows, random_state=seed, transfer=False).fit(train)
        acc = accuracy_table(m, valid.sample(min(len(valid), 20000), random_state=seed))
        score = float(np.mean([x["mape"] for k in acc.values() for x in k.values()]))
        if progress:
            progress(f"tune trial {trial.number}: mean MAPE {score:.2f}% {params}")
        return score

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    return dict(study.best_params)


def train_surrogate(table: pd.DataFrame, out_dir: str | Path, *, estimator: str = "xgboost",
                    params: dict | None = None, tune_trials: int = 0, max_rows: int = 40000,
                    seen_params: dict | None = None, sources: list[str] | None = None,
                    log_mlflow: bool = True, metrics: dict | None = None,
                    manifest: dict | None = None, progress: Progress | None = None) -> TrainResult:
    """Fit a ``SurrogateModel`` on ``table``, save it to ``out_dir`` and log the run."""
    t0 = time.perf_counter()
    params = dict(params or {})
    if tune_trials and estimator == "xgboost":
        params.update(tune(table, tune_trials, progress=progress))
    model = SurrogateModel(estimator, params, max_rows=max_rows,
                           seen_params=dict(seen_params or {})).fit(table, progress=progress)
    seconds = time.perf_counter() - t0
    digest = table_hash(table)
    info = {"trace_hash": digest, "sources": sources or [], "rows": len(table), "train_seconds": seconds,
            **(manifest or {})}
    if metrics:
        info["metrics"] = metrics
    directory = model.save(out_dir, info)
    run_id, error = None, ""
    if log_mlflow:
        from .tracking import TrackingUnavailable, log_training
        try:
            run_id = log_training(directory, model, trace_hash=digest, sources=sources or [],
                                  metrics={**(metrics or {}), "train_seconds": seconds})
        except TrackingUnavailable as e:
            error = str(e)
    return TrainResult(model, directory, run_id, digest, seconds, params, error)
