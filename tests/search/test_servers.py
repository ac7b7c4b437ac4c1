"""Real servers on loopback: a multi-process search on PostgreSQL, tracking to an MLflow server."""
from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from search.storage import counts

from search_helpers import free_port, run_cli, small_space, stop_process


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(cands[-1]).parent if cands else None


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1:<free port>; yields its SQLAlchemy URL.

    initdb refuses to run as root, so as root the cluster belongs to user ``nobody``.
    Skips only when no PostgreSQL server binary is installed (CI runs .ci/postgres.sh).
    """
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binary (initdb) installed; run .ci/postgres.sh")
    root = Path(tempfile.mkdtemp(prefix="hermes-pg-", dir="/tmp"))
    os.chmod(root, 0o755)
    data, port = root / "data", free_port()
    data.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(data, nobody.pw_uid, nobody.pw_gid)
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        as_user = ["runuser", "-u", "nobody", "--"]
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True,  # noqa: E731
                                      timeout=120)
    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
        "-o", f"-h 127.0.0.1 -p {port} -k {root} -F", "start")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_multi_process_search_on_postgresql(postgres, tmp_path, space_file):
    """Two worker processes share one study in a real PostgreSQL server; 4 trials, no extras."""
    p = space_file(small_space())
    r = run_cli(["search", str(p), "--trials", "4", "--workers", "2", "--storage", postgres,
                 "--study", "pg", "--json"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["trials"] == 4 and res["best"]["slo_met"] is True
    assert res["storage"].startswith("postgresql")
    assert "workers: 0:pid" in r.stderr and ", 1:pid" in r.stderr
    study = optuna.load_study(study_name="pg", storage=postgres)
    complete = [t for t in study.trials if counts(t)]  # re-proposals (duplicate_of) do not count
    assert len(complete) == 4
    pids = {t.user_attrs["worker_pid"] for t in complete}
    assert pids and all(str(pid) in r.stderr for pid in pids)  # run by the spawned workers


@pytest.fixture
def mlflow_server(tmp_path, _mlflow_template):
    """`mlflow server` on 127.0.0.1:<free port> with a SQLite backend; waits (bounded) for /health.

    The backend starts as a copy of the session's migrated store: the server then skips
    its schema migrations (most of its start-up time)."""
    port = free_port()
    shutil.copy(_mlflow_template, tmp_path / "server.db")
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    log = open(tmp_path / "mlflow-server.log", "w")
    proc = subprocess.Popen(
        [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 150  # bounded; it starts in ~10 s on an idle machine
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail("mlflow server did not start: " + (tmp_path / "mlflow-server.log").read_text()[-2000:])
            time.sleep(0.1)
        yield url
    finally:
        stop_process(proc, timeout=20)
        log.close()


def test_search_tracks_to_a_real_mlflow_server(mlflow_server, tmp_path, space_file, monkeypatch):
    """A search logs to an MLflow tracking server; the REST client reads back the parent run
    and one nested run per trial with params, metrics and identity tags."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.delenv("HERMES_MLFLOW_ARTIFACTS", raising=False)  # the server stores artifacts
    p = space_file(small_space())
    r = run_cli(["search", str(p), "--trials", "4", "--storage", f"sqlite:///{tmp_path / 'm.db'}",
                 "--study", "srv", "--json"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    client = MlflowClient(tracking_uri=mlflow_server)  # REST
    exp = client.get_experiment_by_name("hermes-search/srv")
    assert exp is not None and res["mlflow_experiment"] == "hermes-search/srv"
    parent = client.get_run(res["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["hermes.kind"] == "study"
    assert "best_output_tokens_per_dollar" in parent.data.metrics
    nested = client.search_runs([exp.experiment_id],
                                filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(nested) == 4
    for run in nested:
        assert run.data.params and "objective_0" in run.data.metrics
        assert run.data.tags["hermes.scenario_hash"] == parent.data.tags["hermes.scenario_hash"]
        assert run.data.tags["hermes.surrogate"] == "roofline"
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"best.yaml", "trials.csv", "optimization_history.png"} <= arts
