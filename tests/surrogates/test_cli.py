"""`hermes-sim surrogate train|eval` and `calibrate` end to end, with a real SQLite MLflow store."""
from __future__ import annotations

import json

import pandas as pd

from hermes_sim.cli import main
from surrogates.tracking import load_surrogate


def _run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_logs_to_mlflow_and_eval_reports_json(canonical_parquet, tmp_path, capsys):
    """train -> MLflow run id; eval by run id prints {kind: {hw: {mape, p90_ape, r, n}}} only."""
    code, out, _ = _run(capsys, "surrogate", "train", str(canonical_parquet), "-o", str(tmp_path / "m"),
                        "--max-rows", "1500", "--param", "n_estimators=60", "--param", "max_depth=6", "--json")
    assert code == 0
    info = json.loads(out)
    assert len(info["run_id"]) == 32 and len(info["trace_hash"]) == 64
    import mlflow
    run = mlflow.get_run(info["run_id"])
    assert run.data.tags["trace_hash"] == info["trace_hash"] and "git_commit" in run.data.tags
    assert run.data.params["estimator"] == "xgboost"
    code, out, _ = _run(capsys, "surrogate", "eval", info["run_id"], str(canonical_parquet), "--json")
    assert code == 0
    acc = json.loads(out)
    assert set(acc) == {"gemm", "collective"}
    m = acc["gemm"]["H100-SXM"]
    assert {"mape", "p90_ape", "r", "n"} <= set(m) and m["n"] > 0 and m["r"] > 0.9
    assert load_surrogate(f"runs:/{info['run_id']}").trained_hardware() == load_surrogate(
        str(tmp_path / "m")).trained_hardware()


def test_train_defaults_to_the_bundle_recipe(canonical_parquet, tmp_path, capsys):
    """Without --param, `surrogate train` uses the built-in bundle's recipe (deep trees only
    for the seen-GPU GEMM and attention pipelines); any --param applies to every pipeline
    and drops those overrides. The manifest records which."""
    from surrogates.build_bundle import BUNDLE_PARAMS, BUNDLE_SEEN_PARAMS
    for extra, params, seen in (((), BUNDLE_PARAMS, BUNDLE_SEEN_PARAMS),
                                (("--param", "max_depth=5"), {"max_depth": 5}, {})):
        out = tmp_path / f"m{len(extra)}"
        code, _, _ = _run(capsys, "surrogate", "train", str(canonical_parquet), "-o", str(out),
                          "--max-rows", "800", "--no-mlflow", "--json", *extra)
        assert code == 0
        man = json.loads((out / "manifest.json").read_text())
        assert man["params"] == params and man["seen_params"] == seen
        reg = load_surrogate(str(out)).kinds_["gemm"].seen.named_steps["regressor"]
        assert reg.max_depth == (seen["gemm"]["max_depth"] if seen else 5)


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    """Missing file, non-canonical parquet and unknown run id exit 2 with one line naming the problem."""
    code, _, err = _run(capsys, "surrogate", "train", str(tmp_path / "nope.parquet"), "-o", str(tmp_path / "o"))
    assert code == 2 and "nope.parquet" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"op": ["gemm"], "hardware": ["H100-SXM"]}).to_parquet(bad)
    code, _, err = _run(capsys, "surrogate", "train", str(bad), "-o", str(tmp_path / "o"))
    assert code == 2 and "latency_ms" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "surrogate", "eval", "0" * 32, str(bad))
    assert code == 2 and "0" * 32 in err and len(err.strip().splitlines()) == 1


def test_calibrate_prints_reference_and_baselines(canonical_parquet, tmp_path, capsys):
    """calibrate ingests, evaluates against rf and roofline, registers a loadable MLflow run."""
    code, out, _ = _run(capsys, "calibrate", str(canonical_parquet), "-o", str(tmp_path / "cal"),
                        "--max-rows", "1200", "--param", "n_estimators=60", "--json")
    assert code == 0
    info = json.loads(out)
    assert set(info["unseen_shape"]) == {"xgboost", "rf", "roofline"}
    g = info["unseen_shape"]
    assert g["xgboost"]["gemm"]["all"]["mape"] < g["roofline"]["gemm"]["all"]["mape"]
    assert load_surrogate(info["reference"]).kinds_


def test_calibrate_a_new_gpu_from_a_csv_with_its_spec_sheet(gpu_table, tmp_path, capsys, monkeypatch):
    """The README's new-GPU flow: the user's own CSV (their column names, microseconds) of a
    GPU the built-in catalog lacks. Without its spec sheet calibrate exits 2 naming the
    device; with `--catalog FILE` it trains on it, and the printed reference carries the
    same `--catalog FILE` for the commands that will use it."""
    from profiling.hardware import CATALOG_ENV
    monkeypatch.setenv(CATALOG_ENV, "")  # --catalog appends to it; the old value is restored after the test
    rows = gpu_table[(gpu_table["hardware"] == "L40S") & (gpu_table["op"] == "gemm")]
    traces = tmp_path / "foo_gemms.csv"
    pd.DataFrame({"M": rows["m"], "N": rows["n"], "K": rows["k"],
                  "lat_us": rows["latency_ms"] * 1e3}).to_csv(traces, index=False)
    spec = tmp_path / "foo.yaml"
    spec.write_text("devices:\n  - name: FooGPU\n    peak_tflops: {bf16: 362}\n    mem_capacity_gb: 48\n"
                    "    mem_bw_gb_s: 864\n    tdp_w: 350\n    price_per_hour: 1.4\n")
    args = ["calibrate", str(traces), "--format", "csv", "--map", "latency=lat_us:us,m=M,n=N,k=K", "--op", "gemm",
            "--dtype", "bf16", "--hardware", "FooGPU", "-o", str(tmp_path / "cal"), "--max-rows", "1200",
            "--param", "n_estimators=40"]
    code, _, err = _run(capsys, *args, "--json")  # --json: no progress lines on stderr
    assert code == 2 and "'FooGPU'" in err and "--catalog" in err and len(err.strip().splitlines()) == 1
    code, out, _ = _run(capsys, *args, "--catalog", str(spec))
    assert code == 0 and f"--catalog {spec.resolve()}" in out.splitlines()[-1]
    m = load_surrogate(str(tmp_path / "cal"))
    assert m.trained_hardware() == ["FooGPU"] and m.kinds_["gemm"].n_train > 1000
    code, _, err = _run(capsys, *args, "--json", "--catalog", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml" in err and len(err.strip().splitlines()) == 1


def _closed_port() -> int:
    import socket
    with socket.socket() as s:  # bound then released: nothing listens there afterwards
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_tracking_server_loses_no_surrogate(canonical_parquet, tmp_path, capsys, monkeypatch):
    """With MLFLOW_TRACKING_URI pointing at a server that does not answer, training still
    saves the surrogate, says why it is not in MLflow in one stderr line and gives the
    directory as the reference (which loads); loading a run id from that store is a
    one-line error with exit 2, not a traceback."""
    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    code, out, err = _run(capsys, "surrogate", "train", str(canonical_parquet), "-o", str(tmp_path / "m"),
                          "--max-rows", "800", "--param", "n_estimators=30", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["run_id"] is None and info["reference"] == str((tmp_path / "m").resolve())
    assert uri in info["tracking_error"]
    warn = [ln for ln in err.splitlines() if "warning:" in ln]
    assert len(warn) == 1 and uri in warn[0] and "Traceback" not in err
    assert load_surrogate(info["reference"]).kinds_["gemm"].n_train > 0
    code, _, err = _run(capsys, "surrogate", "eval", "a" * 32, str(canonical_parquet))
    assert code == 2 and uri in err and len(err.strip().splitlines()) == 1


def test_a_file_store_the_user_names_is_honoured(canonical_parquet, tmp_path, capsys, monkeypatch):
    """MLflow 3 refuses a plain file store unless told otherwise; one the user names in
    MLFLOW_TRACKING_URI (older setups) takes the training run, and the run loads by id."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "filestore").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")  # recorded, so the opt-in set below is undone
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    code, out, err = _run(capsys, "surrogate", "train", str(canonical_parquet), "-o", str(tmp_path / "m"),
                          "--max-rows", "800", "--param", "n_estimators=30", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert len(info["run_id"]) == 32 and info["tracking_error"] == ""
    assert (tmp_path / "filestore").is_dir()
    assert load_surrogate(info["run_id"]).trained_hardware() == load_surrogate(info["directory"]).trained_hardware()
