"""Shared fixtures. Real traces are read from ../shared/traces (or $HERMES_TRACES);
tests that need them skip cleanly when the folder is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _traces_dir() -> Path:
    return Path(os.environ.get("HERMES_TRACES", REPO.parent / "shared" / "traces"))


@pytest.fixture(scope="session")
def traces_dir() -> Path:
    """Root of the shared real-hardware traces; skips the test when it is missing."""
    d = _traces_dir()
    if not d.is_dir():
        pytest.skip(f"shared traces not found at {d}")
    return d


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path, monkeypatch):
    """Keep every test's MLflow runs out of the repository's mlruns/ store."""
    if "MLFLOW_TRACKING_URI" not in os.environ or os.environ.get("HERMES_TEST_KEEP_MLFLOW") != "1":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        monkeypatch.setenv("HERMES_MLFLOW_ARTIFACTS", str(tmp_path / "mlartifacts"))
