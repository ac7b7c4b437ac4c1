"""End to end with the real simulator: objective, constraints, dedup, resume, CLI, MLflow."""
from __future__ import annotations

import json
import os

import optuna
import pytest
from mlflow.tracking import MlflowClient

import simulator
from search import evaluate, parse_space, run_search
from search.objective import params_hash
from search.storage import counts, make_storage
from search.bounds import Bounder
from search.study import PROVEN_ATTR, open_study, run_worker

from search_helpers import run_cli, small_space, stop_process


def test_infeasible_candidates_carry_their_reason():
    """Not fitting -> the memory reason; overload -> pruned early or the missed SLO and by how much."""
    sp = parse_space(small_space(requests=150, params={
        "deployments.0.model": {"choices": ["Llama-3.1-8B", "Llama-3.1-70B"]},
        "deployments.0.hardware": {"choices": ["L40S", "H100-SXM"]},
        "deployments.0.replicas": {"choices": [1, 2]},
        "workload.rate_rps": {"choices": [2.0, 200.0]}}))
    no_fit = evaluate(sp, {"deployments.0.model": "Llama-3.1-70B", "deployments.0.hardware": "L40S",
                           "deployments.0.replicas": 1, "workload.rate_rps": 2.0})
    assert not no_fit.feasible and not no_fit.simulated
    assert no_fit.reason.startswith("does not fit") and "GB" in no_fit.reason
    assert all(c > 0 for c in no_fit.constraints) and no_fit.values == (0.0,)

    ok = evaluate(sp, {"deployments.0.model": "Llama-3.1-8B", "deployments.0.hardware": "H100-SXM",
                       "deployments.0.replicas": 1, "workload.rate_rps": 2.0})
    assert ok.feasible and ok.reason == "ok" and ok.values[0] > 0
    assert max(ok.constraints) <= 0 and ok.metrics["slo_margin_ttft_p90"] > 0

    over = evaluate(sp, {"deployments.0.model": "Llama-3.1-8B", "deployments.0.hardware": "L40S",
                         "deployments.0.replicas": 1, "workload.rate_rps": 200.0})
    assert not over.feasible and over.simulated
    assert ("pruned early" in over.reason or "SLO ttft p90 missed" in over.reason), over.reason
    assert max(over.constraints[2:]) > 0  # the SLO constraint says how far over it was


def test_pruning_stops_a_lost_simulation_early():
    """A hopelessly overloaded candidate stops before all requests complete and is infeasible."""
    sp = parse_space(small_space(requests=400, rate=200.0, params={
        "deployments.0.replicas": {"choices": [1]}}))
    out = evaluate(sp, {"deployments.0.replicas": 1})
    assert "pruned early" in out.reason
    assert out.metrics["completed"] < 400
    assert not out.feasible


def test_duplicates_are_not_resimulated(tmp_path):
    """A space of 2 configurations asked for 5 trials simulates each at most once (the dearer one
    may be bounded out instead) and stops when the space is exhausted; re-proposals reuse their
    first trial's values and do not count."""
    sp = parse_space(small_space(params={"deployments.0.hardware": {"choices": ["H100-SXM", "L40S"]}}))
    url = f"sqlite:///{tmp_path / 'd.db'}"
    study = open_study(sp, make_storage(url, heartbeat_s=2), "dup", 0)
    calls = []

    def counted(space, values):
        calls.append(params_hash(values))
        return evaluate(space, values)

    run_worker(url, "dup", n_trials=5, seed=0, heartbeat_s=2, evaluator=counted)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert 1 <= len(calls) == len(set(calls)) <= 2
    best = max(t.values[0] for t in trials if t.user_attrs.get("feasible"))
    bounder = Bounder(sp)
    for hw in ("H100-SXM", "L40S"):  # each simulated once, or provably unable to beat the best
        v = {"deployments.0.hardware": hw}
        assert params_hash(v) in calls or (study.user_attrs[PROVEN_ATTR] and bounder.bound(v).value <= best)
    assert sum(counts(t) for t in trials) == len(calls)
    dups = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert len(dups) == len(trials) - len(calls)
    for t in dups:
        src = study.trials[t.user_attrs["duplicate_of"]]
        assert src.params == t.params and src.values == t.values


def test_rerun_resumes_and_only_runs_the_missing_trials(tmp_path):
    """Second run with --trials 5 on a 3-trial study runs 2 more distinct configurations (trial
    numbers continue); a third run with the same budget runs nothing."""
    sp = parse_space(small_space())
    url = f"sqlite:///{tmp_path / 'r.db'}"
    r1 = run_search(sp, trials=3, storage_url=url, study_name="res", show_progress=False,
                    outdir=tmp_path / "o1")
    assert r1.trials == 3
    r2 = run_search(sp, trials=5, storage_url=url, study_name="res", show_progress=False,
                    outdir=tmp_path / "o2")
    assert r2.trials == 5
    study = optuna.load_study(study_name="res", storage=url)
    assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))
    assert sum(counts(t) for t in study.trials) == 5
    assert r2.mlflow_parent_run_id == r1.mlflow_parent_run_id  # same parent run, resumed
    r3 = run_search(sp, trials=5, storage_url=url, study_name="res", show_progress=False,
                    outdir=tmp_path / "o3")
    assert len(optuna.load_study(study_name="res", storage=url).trials) == len(study.trials)
    assert r3.trials == 5


def test_cli_json_best_is_runnable_and_tracked(tmp_path, space_file):
    """`search --json` prints only the JSON, and no MLflow INFO line on stderr while it creates a
    new store; MLflow holds the parent (with what the study ran on as params) and one nested run
    per trial with its SLO margins; the best scenario file simulates as is to the reported
    tokens per dollar."""
    p = space_file(small_space())
    store = f"sqlite:///{tmp_path / 'fresh-mlflow.db'}"
    r = run_cli(["search", str(p), "--trials", "6", "--json", "--storage",
                 f"sqlite:///{tmp_path / 's.db'}", "--study", "cli", "-o", str(tmp_path / "out")],
                cwd=tmp_path, env={"MLFLOW_TRACKING_URI": store})
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)  # stdout is exactly one JSON object
    assert res["trials"] == 6 and res["study"] == "cli"
    best = res["best"]
    assert best["slo_met"] is True and best["output_tokens_per_dollar"] > 0
    assert set(best["params"]) <= set(small_space()["params"])
    assert res["baseline"]["output_tokens_per_dollar"] > 0
    assert res["baseline"]["gain"] == pytest.approx(
        best["output_tokens_per_dollar"] / res["baseline"]["output_tokens_per_dollar"])
    assert res["mlflow_experiment"] == "hermes-search/cli"
    assert res["bounded_out"] >= 0 and "branch and bound:" in r.stderr  # the log says what it skipped

    assert "INFO mlflow" not in r.stderr, r.stderr
    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name(res["mlflow_experiment"])
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parent = [x for x in runs if x.info.run_id == res["mlflow_parent_run_id"]]
    nested = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == res["mlflow_parent_run_id"]]
    assert len(parent) == 1 and len(nested) == 6
    pp = parent[0].data.params
    assert pp["seed"] == "0" and pp["storage"].endswith("s.db") and pp["catalog"] == "builtin"
    assert pp["space_file"] == str(p) and pp["trials"] == "6" and pp["surrogate"]
    assert set(pp["parameters"].split(", ")) == set(small_space()["params"]) and "engine_profiles" in pp
    assert all(any(k.startswith("slo_margin_") for k in n.data.metrics) for n in nested)
    assert parent[0].data.metrics["best_output_tokens_per_dollar"] == pytest.approx(best["output_tokens_per_dollar"])
    assert all(n.data.tags["hermes.scenario_hash"] == parent[0].data.tags["hermes.scenario_hash"] for n in nested)
    assert all("hermes.surrogate" in n.data.tags and n.data.params for n in nested)
    arts = {a.path for a in client.list_artifacts(res["mlflow_parent_run_id"])}
    assert {"best.yaml", "trials.csv", "optimization_history.png", "pareto_front.png", "best"} <= arts
    best_arts = {a.path for a in client.list_artifacts(res["mlflow_parent_run_id"], "best")}
    assert any(a.endswith(".png") for a in best_arts) and any(a.endswith("summary.json") for a in best_arts)

    sim = simulator.simulate(simulator.load_scenario(best["scenario_file"]))
    assert sim.summary["output_tokens_per_dollar"] == pytest.approx(best["output_tokens_per_dollar"])


def test_unreachable_mlflow_does_not_break_the_search(tmp_path, space_file):
    """With a dead tracking server the search finishes, keeps its trials in Optuna, warns once."""
    p = space_file(small_space())
    db = tmp_path / "u.db"
    r = run_cli(["search", str(p), "--trials", "3", "--json", "--storage", f"sqlite:///{db}",
                 "--study", "dead"], cwd=tmp_path, env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["mlflow_experiment"] is None and res["trials"] == 3
    mentions = [x for x in r.stderr.splitlines() if "mlflow" in x.lower()]
    assert len(mentions) == 1 and "Optuna storage" in mentions[0], r.stderr
    study = optuna.load_study(study_name="dead", storage=f"sqlite:///{db}")
    assert sum(counts(t) for t in study.trials) == 3


def test_pareto_objective_reports_a_front(tmp_path):
    """objective: pareto gives two objectives and a non-dominated front of feasible trials."""
    sp = parse_space(small_space(objective="pareto"))
    res = run_search(sp, trials=6, storage_url=f"sqlite:///{tmp_path / 'p.db'}", study_name="par",
                     show_progress=False, outdir=tmp_path / "o")
    front = res.pareto
    assert front, "expected at least one feasible trial on the front"
    assert res.bounding.startswith("branch and bound off: Pareto") and res.bounded_out == 0
    for a in front:
        assert not any(b["output_tokens_per_dollar"] >= a["output_tokens_per_dollar"]
                       and b["ttft_p90_s"] <= a["ttft_p90_s"] and b is not a
                       and (b["output_tokens_per_dollar"], b["ttft_p90_s"]) != (a["output_tokens_per_dollar"], a["ttft_p90_s"])
                       for b in front)
    assert (tmp_path / "o" / "pareto_front.png").stat().st_size > 1000


def test_capacity_mode_finds_the_highest_load_meeting_the_slos():
    """capacity: bisection returns a load that meets the SLOs, below one that does not."""
    doc = small_space(requests=150, params={"deployments.0.replicas": {"choices": [1]}})
    doc["capacity"] = {"min_rps": 1.0, "max_rps": 400.0, "steps": 4}
    sp = parse_space(doc)
    out = evaluate(sp, {"deployments.0.replicas": 1})
    assert out.feasible, out.reason
    cap = out.metrics["capacity_rps"]
    assert 1.0 <= cap < 400.0
    above = evaluate(parse_space({**small_space(requests=150, rate=400.0, params={
        "deployments.0.replicas": {"choices": [1]}}), "prune": {"enabled": False}}),
        {"deployments.0.replicas": 1})
    assert not above.feasible  # the top of the range really misses an SLO


def test_ui_without_a_store_is_one_line_error(tmp_path):
    """`hermes-sim ui` with no local MLflow store says so in one line and exits 2."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "hermes_sim.cli", "ui", "--port", "5999"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "no MLflow store" in r.stderr


def test_ui_serves_a_file_store_the_user_names(tmp_path):
    """`hermes-sim ui` with MLFLOW_TRACKING_URI naming a file store (older MLflow setups)
    starts a local UI on it that lists the store's experiments, instead of telling the user
    to open a file URI in a browser; a SIGTERM to the command alone stops the UI's server
    too (the port stops answering)."""
    import json
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    store = (tmp_path / "fs").as_uri()
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_ALLOW_FILE_STORE"},
           "MLFLOW_TRACKING_URI": store}
    seed = ("from surrogates.tracking import _mlflow\nm = _mlflow()\n"
            "with m.start_run():\n    m.log_metric('x', 1.0)\n")
    subprocess.run([sys.executable, "-c", seed], env=env, check=True, timeout=120, cwd=tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ui = subprocess.Popen([sys.executable, "-m", "hermes_sim.cli", "ui", "--port", str(port)], cwd=tmp_path,
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search?max_results=10"
        names, deadline = None, time.time() + 90
        while names is None and time.time() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    names = {e["name"] for e in json.load(r)["experiments"]}
            except OSError:
                time.sleep(1)
        assert names is not None and "hermes-surrogates" in names
        ui.terminate()  # SIGTERM to the command's own process only
        ui.wait(timeout=30)
        time.sleep(1)
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=5)
    finally:
        if ui.poll() is None:
            stop_process(ui)
