"""MLflow bookkeeping: where runs go, logging a surrogate's training run, resolving a
reference to a model.

The store is ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<store root>/mlflow.db`` with
artifacts under ``<store root>/artifacts`` (MLflow 3 refuses the plain file store), the
store root being ``mlruns/`` at the top of the project the command runs in (the nearest
parent with ``.git`` or ``pyproject.toml``, else the working directory). Surrogate
training, the search and ``hermes-sim ui`` all use these functions, so the UI shows
every run. A reference is ``None``/``"builtin"`` (the shipped bundle), a directory,
``runs:/<id>`` or a bare run id. MLflow is imported lazily: loading the bundle never
needs it.
"""
from __future__ import annotations

import os
import re
import subprocess
import urllib.request
from pathlib import Path

from profiling.errors import HermesError

from .model import SurrogateModel

BUNDLE_DIR = Path(__file__).resolve().parent / "bundle"
EXPERIMENT = "hermes-surrogates"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")

# A dead server must fail fast, not after MLflow's default minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")


class TrackingUnavailable(HermesError):
    """The MLflow store cannot be reached or refuses the request (one-line message)."""


def _root() -> Path:
    here = Path.cwd()
    for p in (here, *here.parents):
        if (p / ".git").exists() or (p / "pyproject.toml").exists():
            return p
    return here


def store_root() -> Path:
    """``mlruns/`` of the project the command runs in: the default store's home."""
    return _root() / "mlruns"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_root() / 'mlflow.db'}"


def artifact_root() -> str | None:
    """Artifact location for new experiments (None: let a tracking server the user named
    decide)."""
    env = os.environ.get("HERMES_MLFLOW_ARTIFACTS")
    if env:
        return Path(env).resolve().as_uri()
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return (store_root() / "artifacts").resolve().as_uri()
    return None


def prepare_store(uri: str) -> None:
    """Make ``uri`` usable or fail within seconds: probe an HTTP server, create a SQLite
    store's folder, and honour a file store the user named explicitly (MLflow 3 refuses
    one unless told to; their existing runs stay readable). MLflow's own INFO lines (a new
    store's table creation and migrations) stay out of the user's terminal."""
    import logging
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")     # read when mlflow is imported
    for name in ("mlflow", "alembic"):                            # and if it already was
        logging.getLogger(name).setLevel(logging.WARNING)
    if uri.startswith(("http://", "https://")):
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=3) as r:
            r.read()
    elif uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    elif "://" not in uri or uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (urllib's wrapped socket error unwrapped)."""
    e = getattr(e, "reason", e)
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _mlflow():
    import logging

    import mlflow
    for name in ("mlflow", "alembic"):  # keep stderr to our own progress lines
        logging.getLogger(name).setLevel(logging.WARNING)
    uri = tracking_uri()
    try:
        prepare_store(uri)
        mlflow.set_tracking_uri(uri)
        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_root())
        mlflow.set_experiment(EXPERIMENT)
    except Exception as e:  # noqa: BLE001 - MLflow, SQLAlchemy and socket errors alike
        raise TrackingUnavailable(f"MLflow tracking at {uri} unavailable: {first_line(e)}") from None
    return mlflow


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _flat(prefix: str, tree: dict, out: dict) -> dict:
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            _flat(key, v, out)
        elif isinstance(v, (int, float)) and v == v:
            out[re.sub(r"[^A-Za-z0-9_./ -]", "_", key)] = float(v)
    return out


def log_training(model_dir: Path, model: SurrogateModel, *, trace_hash: str, sources: list[str],
                 metrics: dict | None = None, run_name: str | None = None) -> str:
    """Log one training run (params, metrics, the saved model dir); return the run id.
    Raises ``TrackingUnavailable`` (one line) when the store cannot take it."""
    mlflow = _mlflow()
    try:
        return _log_run(mlflow, model_dir, model, trace_hash, sources, metrics, run_name)
    except Exception as e:  # noqa: BLE001 - artifact stores fail in their own ways
        raise TrackingUnavailable(f"MLflow tracking at {tracking_uri()} unavailable: {first_line(e)}") from None


def _log_run(mlflow, model_dir: Path, model: SurrogateModel, trace_hash: str, sources: list[str],
             metrics: dict | None, run_name: str | None) -> str:
    with mlflow.start_run(run_name=run_name or f"surrogate-{model.estimator}") as run:
        mlflow.log_params({"estimator": model.estimator, "max_rows": model.max_rows,
                           "interval": model.interval, **{f"hp.{k}": v for k, v in model.params.items()},
                           **{f"hp.seen.{kind}.{k}": v for kind, hp in getattr(model, "seen_params", {}).items()
                              for k, v in hp.items()}})
        mlflow.set_tags({"hermes.kind": "surrogate", "trace_hash": trace_hash, "git_commit": git_commit(),
                         "sources": ";".join(sources)[:4000],
                         "hardware": ",".join(model.trained_hardware())})
        flat = _flat("", metrics or {}, {})
        for k, m in model.kinds_.items():
            flat[f"train.{k}.n"] = m.n_train
            flat[f"train.{k}.q_seen"] = m.q_seen
        if flat:
            mlflow.log_metrics(flat)
        mlflow.log_artifacts(str(model_dir), artifact_path="surrogate")
        return run.info.run_id


def load_surrogate(ref: str | None = None) -> SurrogateModel:
    """The latency model to simulate with: ``None``/"builtin" = the shipped bundle, a
    directory written by ``surrogate train``, ``runs:/<run id>`` or a bare MLflow run id."""
    if ref in (None, "", "builtin"):
        if not (BUNDLE_DIR / "surrogate.joblib").is_file():
            raise HermesError(f"built-in surrogate bundle missing at {BUNDLE_DIR}; rebuild it with "
                              "`python -m surrogates.build_bundle`")
        return SurrogateModel.load(BUNDLE_DIR)
    path = Path(ref)
    if path.is_dir():
        return SurrogateModel.load(path)
    run_id = ref[len("runs:/"):].split("/")[0] if ref.startswith("runs:/") else ref
    if not _RUN_ID.match(run_id):
        raise HermesError(f"surrogate '{ref}' is neither a directory nor an MLflow run id")
    mlflow = _mlflow()
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="surrogate")
    except Exception as e:  # MLflow raises its own exception types for a missing run
        raise HermesError(f"cannot load surrogate from MLflow run {run_id} at {tracking_uri()}: "
                          f"{str(e).splitlines()[0]}") from None
    return SurrogateModel.load(local)
