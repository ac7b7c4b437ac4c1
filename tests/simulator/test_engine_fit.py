"""Engine calibration on real serving runs (simulator.fidelity.engine_fit) and
`hermes-sim calibrate --runs`: fitting lowers the loss, the profile round-trips and a
scenario naming it uses it, the CLI writes the profile and an MLflow run, and bad inputs
are one line with exit status 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hermes_sim.cli import main
from profiling.errors import InputError
from profiling.readers.runs import read_run
from simulator.engine.config import OverheadConfig
from simulator.engine.engines import load_profile
from simulator.fidelity import engine_fit as ef
from simulator.scenario import parse_scenario

RUNS = Path("/work/shared/traces/serving_runs/llmservingsim")
R4090 = RUNS / "RTX4090" / "Llama-3.1-8B"
RPRO = RUNS / "RTXPRO6000" / "Llama-3.1-8B"
RQWEN = RUNS / "RTXPRO6000" / "Qwen3-32B"
pytestmark = pytest.mark.skipif(not R4090.is_dir(), reason="real serving runs not available")
N = 50          # requests replayed per run: a time window at the recorded load, for speed


@pytest.fixture(scope="module")
def fitted():
    runs = [ef.first_requests(read_run(p), N) for p in (R4090, RPRO)]
    return runs, ef.fit_engine(runs, trials=10, seed=0)


def _scenario(profile: str, **overhead) -> dict:
    dep = {"model": "Llama-3.1-8B", "hardware": "RTX-PRO-6000",
           "engine": {"name": "vllm", "version": "0.19.0", "profile": profile, "max_num_seqs": 64}}
    if overhead:
        dep["overhead"] = overhead
    return {"deployments": [dep], "workload": {"num_requests": 20, "rate_rps": 2.0}}


def test_fit_lowers_loss_of_two_real_runs(fitted):
    """Fitting the vLLM engine on two subsampled real runs ends with a lower loss on them than
    the uncalibrated engine defaults, and the reported scores are the replayed ones."""
    runs, fit = fitted
    assert fit.engine == "vllm"
    assert len(fit.before) == len(fit.after) == 2
    assert fit.loss_after < fit.loss_before
    reps = [ef.prepare(r) for r in runs]
    again = ef.loss([ef.score(r, fit.params) for r in reps])
    assert again == pytest.approx(fit.loss_after, rel=1e-9)
    assert ef.loss([ef.score(r, OverheadConfig()) for r in reps]) == pytest.approx(fit.loss_before, rel=1e-9)


def test_profile_round_trips_and_scenario_uses_it(fitted, tmp_path):
    """The saved profile reads back with the fitted parameters and its release range; a
    scenario naming it gets them as its overhead (explicit overhead fields win), 'none' keeps
    the defaults, and a profile of another release range is refused naming the file."""
    runs, fit = fitted
    doc = ef.profile_doc(fit, runs)
    path = ef.save_profile(doc, tmp_path / "vllm.json")
    prof = load_profile(path)
    assert prof.engine == "vllm" and prof.covers("0.19.0") and not prof.covers("0.10.0")
    assert prof.parameters == pytest.approx(fit.params.model_dump())
    saved = json.loads(path.read_text())
    assert [r["run"] for r in saved["fitted_on"]] == [ef.run_label(r) for r in runs]
    assert saved["loss"]["after"] == pytest.approx(fit.loss_after)

    dep = parse_scenario(_scenario(str(path))).deployments[0]
    assert dep.overhead == fit.params
    mine = parse_scenario(_scenario(str(path), step_s=0.0123)).deployments[0]
    assert mine.overhead.step_s == 0.0123 and mine.overhead.kernel_scale == fit.params.kernel_scale
    assert parse_scenario(_scenario("none")).deployments[0].overhead == OverheadConfig()

    old = {**saved, "versions": {"since": "0.9.0", "until": "0.10.0"}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(InputError, match="old.json covers vllm 0.9.0 before 0.10.0, not version 0.19.0"):
        parse_scenario(_scenario(str(tmp_path / "old.json")))


def test_profile_changes_the_simulation(fitted, tmp_path):
    """A scenario naming a profile simulates with its parameters: the same TPOT as the scenario
    with those parameters written as its overhead, another than with profile none."""
    from simulator.simulate import simulate
    runs, fit = fitted
    doc = ef.profile_doc(fit, runs)
    doc["overhead"] = {**doc["overhead"], "kernel_scale": 1.3}
    path = ef.save_profile(doc, tmp_path / "p.json")
    with_p = simulate(parse_scenario(_scenario(str(path)))).summary["tpot_s"]["mean"]
    plain = simulate(parse_scenario(_scenario("none"))).summary["tpot_s"]["mean"]
    same = simulate(parse_scenario(_scenario("none", **doc["overhead"]))).summary["tpot_s"]["mean"]
    assert with_p == pytest.approx(same) and with_p != pytest.approx(plain)


def test_cli_calibrate_runs_writes_profile_and_mlflow_run(tmp_path, monkeypatch, capsys):
    """`calibrate --runs A B --holdout B` on real runs exits 0, writes a profile fitted on A only
    with B's before/after, and logs params, metrics and the profile and plot to a real
    SQLite MLflow store."""
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv("HERMES_MLFLOW_ARTIFACTS", str(tmp_path / "artifacts"))
    out = tmp_path / "profile.json"
    rc = main(["calibrate", "--runs", str(R4090), str(RQWEN), "--holdout", str(RQWEN), "--trials", "3",
               "--max-requests", "30", "-o", str(out), "--json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    info = json.loads(cap.out)
    doc = json.loads(out.read_text())
    assert doc["engine"] == "vllm" and [r["run"] for r in doc["fitted_on"]] == ["RTX-4090/Llama-3.1-8B"]
    assert [r["run"] for r in doc["held_out"]["runs"]] == ["RTX-PRO-6000/Qwen3-32B"]
    assert load_profile(out).parameters == pytest.approx(info["overhead"])
    assert Path(info["plot"]).is_file() and info["run_id"]

    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{db}")
    run = client.get_run(info["run_id"])
    assert run.data.params["engine"] == "vllm"
    assert {"fit.loss_before", "fit.loss_after", "heldout.loss_before", "heldout.loss_after"} <= set(run.data.metrics)
    assert run.data.metrics["fit.loss_after"] == pytest.approx(doc["loss"]["after"])
    arts = {a.path for d in ("profile", "plots") for a in client.list_artifacts(info["run_id"], d)}
    assert arts == {"profile/profile.json", "plots/profile.png"}


def test_cli_calibrate_runs_unreachable_store_keeps_profile(tmp_path, monkeypatch, capsys):
    """With the MLflow store unreachable the profile is still written, with one warning."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    out = tmp_path / "p.json"
    rc = main(["calibrate", "--runs", str(R4090), "--trials", "1", "--max-requests", "20", "-o", str(out)])
    cap = capsys.readouterr()
    assert rc == 0 and out.is_file()
    warnings = [ln for ln in cap.err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "unavailable" in warnings[0]


def _csv_run(tmp_path: Path) -> Path:
    """A plain request CSV (no engine recorded) made from a real run's first requests."""
    df = read_run(RPRO).requests.iloc[:20]
    p = tmp_path / "mine.csv"
    df[["arrival_s", "prompt_tokens", "output_tokens", "ttft_s", "e2e_s"]].to_csv(p, index=False)
    return p


@pytest.mark.parametrize("case", ["no runs", "holdout not a run", "mixed engines", "holdout every run"])
def test_cli_calibrate_runs_bad_inputs(case, tmp_path, capsys):
    """No runs, a holdout not among the runs, runs of different engines, or no run left to fit
    on: exit 2 with one line on stderr naming the problem."""
    argv = {"no runs": ["calibrate", "--runs"],
            "holdout not a run": ["calibrate", "--runs", str(R4090), "--holdout", str(RPRO)],
            "mixed engines": ["calibrate", "--runs", str(R4090), str(_csv_run(tmp_path))],
            "holdout every run": ["calibrate", "--runs", str(R4090), "--holdout", str(R4090)]}[case]
    expect = {"no runs": "needs at least one RUN", "holdout not a run": "not among the runs given",
              "mixed engines": "runs of one engine", "holdout every run": "none is left to fit"}[case]
    rc = main([*argv, "-o", str(tmp_path / "p.json"), "--no-mlflow"])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("hermes-sim: error:") and expect in err
    assert not (tmp_path / "p.json").exists()
