"""Scale-out with real processes: a SIGKILLed worker's trial is retried exactly once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from search.storage import counts, retried_from
from search_helpers import small_space


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("PPid:")).split()[1])


def test_killed_worker_trial_is_retried_no_loss_no_duplicate(tmp_path, space_file):
    """Kill one of two workers mid-trial with SIGKILL: the study still ends with exactly N
    budgeted trials, the killed trial is FAIL and retried once with the same params (the
    retry is simulated, or answered by an earlier identical trial, or bounded out because
    it provably cannot beat the incumbent)."""
    n = 4
    # ~0.5-1 s per trial so the kill lands inside a trial, not between two.
    p = space_file(small_space(requests=1500, rate=40.0, params={
        "deployments.0.hardware": {"choices": ["H100-SXM", "A100-80GB", "H200"]},
        "deployments.0.replicas": {"choices": [2, 3, 4]},
        "deployments.0.scheduler.max_batch_size": {"choices": [64, 128, 256]}}))
    url = f"sqlite:///{tmp_path / 'k.db'}"
    cli = subprocess.Popen(
        [sys.executable, "-m", "hermes_sim.cli", "search", str(p), "--trials", str(n), "--workers", "2",
         "--heartbeat", "1", "--storage", url, "--study", "kill", "--json", "-o", str(tmp_path / "out")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = killed_number = study = None
    deadline = time.time() + 90
    while victim is None and time.time() < deadline and cli.poll() is None:
        time.sleep(0.05)
        try:
            study = study or optuna.load_study(study_name="kill", storage=url)
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except KeyError:  # study not created yet
            continue
        now = datetime.now()
        for t in running:
            pid = t.user_attrs.get("worker_pid")
            # fully sampled (params_hash is written after the last suggest; a kill between two
            # suggests would leave the retry to sample the rest) and started less than 0.3 s
            # ago: most of its simulation is ahead
            if (pid and "params_hash" in t.user_attrs
                    and (now - t.datetime_start).total_seconds() < 0.3
                    and _ppid(pid) == cli.pid):
                os.kill(pid, signal.SIGKILL)
                victim, killed_number = pid, t.number
                break
    assert victim is not None, "no running trial to kill"
    out, err = cli.communicate(timeout=150)
    assert cli.returncode == 0, err
    res = json.loads(out)
    assert res["trials"] == n

    study = optuna.load_study(study_name="kill", storage=url)
    trials = study.get_trials()
    complete = [t for t in trials if counts(t)]  # simulated, distinct: what the budget counts
    assert len(complete) == n  # no trial lost, none extra
    killed = trials[killed_number]
    assert killed.state == TrialState.FAIL and killed.user_attrs["worker_pid"] == victim
    retries = [t for t in trials if retried_from(t) == killed_number]
    assert len(retries) == 1 and retries[0].params == killed.params  # retried exactly once
    retry = retries[0]
    assert (counts(retry) or "duplicate_of" in retry.user_attrs
            or (retry.state == TrialState.PRUNED and retry.user_attrs.get("bounded")))
    others = [t for t in trials if t.state == TrialState.FAIL and t.number != killed_number]
    assert all(t.user_attrs.get("surplus") for t in others)  # only budget-race leftovers
    assert f"pid {victim}) exited with status -9" in err

    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(res["mlflow_experiment"])
    nested = [r for r in client.search_runs([exp.experiment_id])
              if r.data.tags.get("mlflow.parentRunId") == res["mlflow_parent_run_id"]]
    assert sorted(int(r.data.tags["hermes.trial"]) for r in nested) == sorted(t.number for t in complete)
    by_number = {t.number: t for t in complete}
    for r in nested:  # each nested run was logged by the worker process that ran the trial
        assert r.data.tags["hermes.worker_pid"] == str(by_number[int(r.data.tags["hermes.trial"])].user_attrs["worker_pid"])
    assert victim not in {t.user_attrs["worker_pid"] for t in complete if t.number > killed_number}
