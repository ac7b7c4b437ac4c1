"""Engine calibration on real serving runs (simulator.fidelity.engine_fit) and
`hermes-sim calibrate --runs`: fitting lowers the loss, the profile round-trips and a
scenario naming it uses it, the CLI writes the profile and an MLflow run, and bad inputs
are one line with exit status 2."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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
    return runs, ef.fit_engine(runs, trials=20, seed=0)


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
    doc = ef.profile_doc(fit, [ef.prepare(r) for r in runs])
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
    doc = ef.profile_doc(fit, [ef.prepare(r) for r in runs])
    doc["overhead"] = {**doc["overhead"], "kernel_scale": 1.3}
    path = ef.save_profile(doc, tmp_path / "p.json")
    with_p = simulate(parse_scenario(_scenario(str(path)))).summary["tpot_s"]["mean"]
    plain = simulate(parse_scenario(_scenario("none"))).summary["tpot_s"]["mean"]
    same = simulate(parse_scenario(_scenario("none", **doc["overhead"]))).summary["tpot_s"]["mean"]
    assert with_p == pytest.approx(same) and with_p != pytest.approx(plain)


def test_cross_validation_never_scores_a_run_it_was_fitted_on():
    """Leave one run out over three subsampled real runs: a fold per run, each fitted on the
    two others only, its held-out run scored with the engine defaults (the same score as a
    plain replay) and with that fit; leave one GPU out folds by GPU (RTX 4090 held out alone,
    both RTX PRO 6000 runs together); the summary's medians are those of the held-out rows."""
    runs = [ef.first_requests(read_run(p), N) for p in (R4090, RPRO, RQWEN)]
    folds = ef.cross_validate(runs, "run", trials=3)
    labels = [ef.run_label(r) for r in runs]
    assert sorted(h for f in folds for h in f.held) == sorted(labels)
    for f in folds:
        assert len(f.held) == 1 and f.held[0] not in f.fitted_on and len(f.fitted_on) == 2
        held = next(r for r in runs if ef.run_label(r) == f.held[0])
        assert f.before[0].e2e_mape == pytest.approx(ef.score(ef.prepare(held), OverheadConfig()).e2e_mape)
    summ = ef.fold_summary(folds)
    assert summ["median_e2e_mape_after"] == pytest.approx(np.median([r["e2e_mape_after"] for r in summ["runs"]]))
    by_gpu = ef.cross_validate(runs, "gpu", trials=3)
    assert sorted(len(f.held) for f in by_gpu) == [1, 2]
    assert all(not set(f.held) & set(f.fitted_on) for f in by_gpu)


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


def test_cli_calibrate_runs_fits_only_the_named_parameters(tmp_path, capsys):
    """`--fit kernel_scale` fits the kernel factor alone: the profile's search space is that one
    parameter, every other engine parameter keeps its default, the fit moves the factor off 1.0
    (the RTX 4090 run's decode is simulated slow), and with no run held out the output says
    the figures are on the fitted run."""
    out = tmp_path / "ks.json"
    rc = main(["calibrate", "--runs", str(R4090), "--fit", "kernel_scale", "--trials", "15",
               "-o", str(out), "--no-mlflow", "--json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    info, doc = json.loads(cap.out), json.loads(out.read_text())
    assert info["fitted_params"] == ["kernel_scale"] and list(doc["optimizer"]["search_space"]) == ["kernel_scale"]
    defaults = OverheadConfig().model_dump()
    assert {k: v for k, v in doc["overhead"].items() if k != "kernel_scale"} == \
        {k: v for k, v in defaults.items() if k != "kernel_scale"}
    assert doc["overhead"]["kernel_scale"] != pytest.approx(1.0)
    rc = main(["calibrate", "--runs", str(R4090), "--fit", "kernel_scale", "--trials", "1", "--max-requests", "20",
               "-o", str(tmp_path / "again.json"), "--no-mlflow"])
    assert rc == 0 and "no run held out" in capsys.readouterr().out


def _csv_run(tmp_path: Path) -> Path:
    """A plain request CSV (no engine recorded) made from a real run's first requests."""
    df = read_run(RPRO).requests.iloc[:20]
    p = tmp_path / "mine.csv"
    df[["arrival_s", "prompt_tokens", "output_tokens", "ttft_s", "e2e_s"]].to_csv(p, index=False)
    return p


@pytest.mark.parametrize("case", ["no runs", "holdout not a run", "mixed engines", "holdout every run",
                                  "unknown --fit", "--fit without --runs"])
def test_cli_calibrate_runs_bad_inputs(case, tmp_path, capsys):
    """No runs, a holdout not among the runs, runs of different engines, no run left to fit
    on, a misspelt --fit parameter, or --fit without --runs: exit 2 with one line on stderr
    naming the problem."""
    argv = {"no runs": ["calibrate", "--runs"],
            "holdout not a run": ["calibrate", "--runs", str(R4090), "--holdout", str(RPRO)],
            "mixed engines": ["calibrate", "--runs", str(R4090), str(_csv_run(tmp_path))],
            "holdout every run": ["calibrate", "--runs", str(R4090), "--holdout", str(R4090)],
            "unknown --fit": ["calibrate", "--runs", str(R4090), "--fit", "kernel_scale,step"],
            "--fit without --runs": ["calibrate", str(tmp_path / "t.parquet"), "--fit", "kernel_scale"]}[case]
    expect = {"no runs": "needs at least one RUN", "holdout not a run": "not among the runs given",
              "mixed engines": "runs of one engine", "holdout every run": "none is left to fit",
              "unknown --fit": "--fit: unknown engine parameter 'step'",
              "--fit without --runs": "--fit applies to calibrate --runs only"}[case]
    rc = main([*argv, "-o", str(tmp_path / "p.json"), "--no-mlflow"])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("hermes-sim: error:") and expect in err
    assert not (tmp_path / "p.json").exists()


def test_loss_weighs_each_gpu_once_and_caps_a_pathological_target():
    """The loss averages per GPU, then over GPUs (ten rows of one GPU weigh as much as one
    run of another), and one target's error counts at most 100%: a row simulated 50x off
    cannot steer the fit."""
    def s(gpu, ttft, tpot, e2e=float("nan")):
        return ef.RunScore("x", gpu, 1, e2e, ttft, tpot, float("nan"), 0)
    many = [s("h100", 10.0, 10.0)] * 10
    assert ef.loss(many + [s("b200", 30.0, 30.0)]) == pytest.approx(20.0)
    assert ef.loss([s("h100", 5000.0, 10.0), s("h100", 10.0, 10.0)]) == pytest.approx((100.0 + 10.0) / 2)
    assert ef.loss([s("rtx", 40.0, 0.0, e2e=20.0)]) == pytest.approx(30.0)   # a run: (E2E + TTFT) / 2


@pytest.fixture(scope="module")
def silicon_targets(traces_dir):
    """Two real vLLM silicon rows (Llama-3.1-70B fp8, 1k/1k, concurrency 4 and 8, TP 4 and 8)
    on B200, replayed through their engine block."""
    from profiling.readers.serving import read_silicon
    from simulator.fidelity.silicon import silicon_rows
    df = read_silicon(traces_dir / "aiconfigurator" / "silicon_sample.csv")
    sel = df[(df.model_path == "meta-llama/Llama-3.1-70B") & (df.system == "b200_sxm") & (df.backend == "vllm")
             & (df.precision == "fp8") & (df.isl == 1024) & (df.osl == 1024) & (df["mode"] == "agg")
             & (df.batch_size <= 8)].head(2)
    rows = silicon_rows(sel, requests_per_client=3)
    assert len(rows) == 2 and all(r.scenario.deployments[0].engine.name == "vllm" for r in rows)
    return [ef.SiliconReplay(r) for r in rows]


def test_fit_on_silicon_rows_and_runs_together(silicon_targets):
    """Silicon rows (no E2E: their error is TTFT and TPOT of the means) and a real run fit
    together; the fit never ends worse than the defaults on its targets, and two worker
    processes score exactly as one does."""
    run = ef.prepare(ef.first_requests(read_run(R4090), 30))
    targets = [*silicon_targets, run]
    fit = ef.fit_targets(targets, trials=4, seed=0)
    assert fit.engine == "vllm" and {s.gpu for s in fit.after} == {"b200_sxm", "RTX-4090"}
    assert fit.loss_after <= fit.loss_before
    def key(scores):
        return [(x.run, x.ttft_mape, x.tpot_mape, x.loss) for x in scores]
    with ef.Scorer(targets, processes=2) as par:
        assert key(par(fit.params)) == key(ef.Scorer(targets)(fit.params))
    doc = ef.profile_doc(fit, targets)
    assert {r.get("silicon_row", r.get("run")) for r in doc["fitted_on"]} == {t.label for t in targets}


def test_engine_of_refuses_mixed_engines(silicon_targets):
    """A profile is one engine's: targets of two engines are refused in one line."""
    from dataclasses import replace
    other = ef.SiliconReplay(replace(silicon_targets[0].row, backend="sglang"))
    with pytest.raises(InputError, match="one engine"):
        ef.fit_targets([silicon_targets[1], other], trials=1)


def test_a_fit_that_buys_less_than_min_gain_keeps_the_defaults(fitted):
    """On two subsampled real runs one trial (the defaults clipped into the search space)
    lowers the loss by far less than MIN_GAIN, so the fit is the engine defaults, says so,
    and scores exactly as they do."""
    runs, _ = fitted
    fit = ef.fit_engine(runs, trials=1)
    assert fit.kept_defaults and fit.params == OverheadConfig()
    assert fit.loss_after == fit.loss_before
    assert ef.profile_doc(fit, [ef.prepare(r) for r in runs])["loss"]["kept_defaults"] is True


def test_profile_range_covers_releases_with_the_same_core_and_scheduling_mode():
    """A profile fitted on vLLM 0.12 (V1, synchronous scheduling) covers V1 from 0.8 up to the
    release that turned async scheduling on (0.14), not beyond; one fitted on 0.19 (async)
    covers 0.14 and later only; a V0 fit stays within V0."""
    assert ef.version_range("vllm", ["0.12.0"]) == ("0.8.0", "0.14.0")
    assert ef.version_range("vllm", ["0.19.0"]) == ("0.14.0", None)
    assert ef.version_range("vllm", ["0.6.0"]) == ("0.5.0", "0.8.0")
    with pytest.raises(InputError, match="predates"):
        ef.version_range("vllm", ["0.2.0"])


def test_shipped_profiles_fill_the_overhead_of_the_releases_they_cover():
    """The profiles shipped with the package (benchmarks/engine_profiles.py --write): vLLM's
    covers V1 with synchronous scheduling (0.8 to before 0.14); a scenario of a covered release
    takes its parameters for the overhead fields it leaves unset, an async vLLM release, a
    TensorRT-LLM release (its overlap scheduler hides the host time no fit then improved on)
    and 'profile: none' keep the plain defaults, and the profile names the measurements it was
    fitted on."""
    from simulator.engine.config import EngineConfig
    from simulator.engine.engines import PROFILES_DIR, profile_for
    vllm = load_profile(PROFILES_DIR / "vllm.json")
    assert (vllm.since, vllm.until) == ("0.8.0", "0.14.0")
    assert profile_for(EngineConfig(name="vllm", version="0.12.0")) == vllm
    assert profile_for(EngineConfig(name="vllm", version="0.19.0")) is None
    assert profile_for(EngineConfig(name="vllm", version="0.12.0", profile="none")) is None
    assert profile_for(EngineConfig(name="trtllm", version="1.2.0")) is None

    def dep(version, **overhead):
        d = {"model": "Llama-3.1-8B", "hardware": "H100-SXM", "engine": {"name": "vllm", "version": version}}
        return parse_scenario({"deployments": [{**d, **({"overhead": overhead} if overhead else {})}],
                               "workload": {"num_requests": 5}}).deployments[0]
    assert dep("0.12.0").overhead == OverheadConfig(**vllm.parameters)
    assert dep("0.12.0", step_s=0.005).overhead.step_s == 0.005
    assert dep("0.19.0").overhead == OverheadConfig()
    doc = json.loads(Path(vllm.path).read_text())
    assert doc["fitted_on"] and doc["loss"]["after"] < doc["loss"]["before"]
