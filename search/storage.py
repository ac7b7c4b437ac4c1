"""Optuna storage and sampler: SQLite by default, any RDB URL; heartbeats retry lost trials.

Every worker (local process or another machine) opens the same study by URL and name.
A worker that dies stops its heartbeat; after the grace period the next worker to look
marks its trial FAIL and ``RetryFailedTrialCallback`` enqueues a copy with the same
params, which the next ``ask`` picks up first.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial

from profiling.errors import HermesError

DEFAULT_DB = "hermes-search.db"
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def free(trial: FrozenTrial) -> bool:
    """True for a trial that cost no simulation: a re-proposal answered from an earlier
    trial (``duplicate_of``) or a candidate bounded out by branch and bound (``bounded``)."""
    return "duplicate_of" in trial.user_attrs or bool(trial.user_attrs.get("bounded"))


def counts(trial: FrozenTrial) -> bool:
    """True for a trial that uses the budget: a distinct configuration, evaluated.

    A re-proposal of an evaluated configuration is answered from that trial, and a
    candidate that cannot beat the incumbent is bounded out (neither is simulated): they
    do not count, ``--trials N`` means N distinct configurations evaluated.
    """
    return trial.state in FINISHED and not free(trial)


def default_url() -> str:
    return f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def make_storage(url: str | None = None, *, heartbeat_s: int = 5) -> RDBStorage:
    """An RDB storage with heartbeats; a bad URL or unreachable server is one HermesError."""
    url = url or default_url()
    for bare in ("postgres://", "postgresql://"):  # the driver installed with hermes-sim
        if url.startswith(bare):
            url = "postgresql+psycopg2://" + url[len(bare):]
    engine: dict[str, Any] = ({"connect_args": {"timeout": 60}} if url.startswith("sqlite")
                              else {"pool_pre_ping": True})
    quiet_optuna()
    try:
        return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_s,
                          grace_period=3 * heartbeat_s, **_retry_kwargs())
    except Exception as e:  # sqlalchemy errors: bad driver, refused connection, bad path
        missing = _missing_module(e)
        if missing:
            raise HermesError(f"cannot open Optuna storage '{redact(url)}': its database driver is not "
                              f"installed (pip install {DRIVER_PACKAGES.get(missing, missing)})") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HermesError(f"cannot open Optuna storage '{redact(url)}': {first}") from None


# SQLAlchemy's driver modules and the pip package that provides each
DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "psycopg": "'psycopg[binary]'", "MySQLdb": "mysqlclient",
                   "pymysql": "PyMySQL", "mysql": "mysql-connector-python", "oracledb": "oracledb",
                   "pyodbc": "pyodbc", "pg8000": "pg8000", "asyncpg": "asyncpg"}


def _missing_module(e: BaseException) -> str | None:
    """Top-level name of the driver module whose import failed, if that is the error."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, ModuleNotFoundError) and seen.name:
            return seen.name.split(".")[0]
        seen = seen.__cause__ or seen.__context__
    return None


def redact(url: str) -> str:
    """Hide a password in a URL before printing it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url
    return url


def _retry_kwargs() -> dict[str, Any]:
    """Retry a dead worker's trial (the callback's name changed in Optuna 4.9)."""
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        return {"heartbeat_stale_trial_callback":
                optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=3)}


def retried_from(trial: FrozenTrial) -> int | None:
    """Number of the dead trial this trial retries, if any."""
    cb = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
        optuna.storages.RetryFailedTrialCallback
    return cb.retried_trial_number(trial)


# Optuna >= 5 stores constraints on the trial itself; older versions need constraints_func.
TRIAL_CONSTRAINTS = hasattr(optuna.trial.Trial, "set_constraint")


def constraints_of(trial: FrozenTrial) -> list[float]:
    """Constraint values stored by the objective (<= 0 feasible)."""
    return list(trial.user_attrs.get("constraints", [1.0]))


def _gamma(n: int) -> int:
    """TPE's "good" set: the top 25% of trials (Optuna's default 10% is 2-4 trials here)."""
    return min(math.ceil(0.25 * n), 25)


def make_sampler(seed: int | None, n_params: int = 0) -> optuna.samplers.BaseSampler:
    """Constrained multivariate TPE for one or two objectives (plus local moves, local.py).

    Measured on benchmarks/search_quality.py (replayed table, 20 seeds, seeds reaching
    >= 98% of the optimum by 40 distinct trials): default TPE 11/20; ``group=True`` worse
    (it splits trials by conditional-parameter pattern and learns from fewer of them);
    ``prior_weight=2`` 14/20; with local moves 14/20, plus ``gamma`` 25%: 16/20.
    A log transform of tokens/$ changes nothing: TPE only ranks the values.
    GPSampler needs torch (not a dependency).
    """
    extra: dict[str, Any] = {} if TRIAL_CONSTRAINTS else {"constraints_func": constraints_of}
    return optuna.samplers.TPESampler(
        seed=seed, multivariate=True, n_startup_trials=10, gamma=_gamma, **extra)


def worker_seed(seed: int | None, index: int) -> int | None:
    """Distinct but reproducible seeds per worker so workers do not propose the same points."""
    return None if seed is None else seed * 1000 + index


def quiet_optuna() -> None:
    """Our own progress bar reports trials; silence Optuna's per-trial logs and notices."""
    if not os.environ.get("HERMES_OPTUNA_VERBOSE"):
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"optuna\..*")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"search\..*")
