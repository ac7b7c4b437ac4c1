"""Fixtures for the search tests."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store with its schema migrated once (migrations take ~10 s)."""
    from mlflow.tracking import MlflowClient
    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture(autouse=True)
def _premigrated_mlflow(_isolated_mlflow, _mlflow_template):
    """Start each test's private MLflow store from the migrated template (same schema)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith("sqlite:///"):
        target = Path(uri[len("sqlite:///"):])
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(_mlflow_template, target)


@pytest.fixture
def space_file(tmp_path):
    """Write a space dict to a YAML file and return its path."""
    def write(doc: dict, name: str = "space.yaml") -> Path:
        p = tmp_path / name
        p.write_text(yaml.safe_dump(doc, sort_keys=False))
        return p
    return write
