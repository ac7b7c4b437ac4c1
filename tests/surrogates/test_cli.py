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
