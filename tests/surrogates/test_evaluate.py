"""Accuracy metrics and grouped hold-outs."""
from __future__ import annotations

import numpy as np
import pandas as pd

from surrogates.evaluate import _finish, _folds, _merge, holdout_study, metrics


def test_metrics_hand_computed():
    """MAPE, median/p90 APE, r, n and coverage on a tiny known example."""
    y = np.array([1.0, 2.0, 4.0, 8.0])
    p = np.array([1.1, 1.8, 4.0, 8.8])
    m = metrics(y, p, lo=y * 0.95, hi=y * 1.05)
    assert np.isclose(m["mape"], 7.5) and np.isclose(m["median_ape"], 10.0)
    assert np.isclose(m["p90_ape"], np.quantile([10, 10, 0, 10], 0.9))
    assert m["n"] == 4 and np.isclose(m["r"], np.corrcoef(y, p)[0, 1]) and m["coverage"] == 1.0


def test_level_known_mape_removes_only_a_constant_factor():
    """mape_level_known: predictions off by one constant factor score 0 once rescaled (their
    MAPE stays 50%); a shape-dependent error survives the rescaling; pooled over two GPUs
    each is rescaled by its own factor."""
    y = np.array([1.0, 2.0, 4.0, 8.0])
    m = metrics(y, y / 2)
    assert np.isclose(m["mape"], 50.0) and np.isclose(m["mape_level_known"], 0.0)
    assert metrics(y, y * np.array([1.0, 1.0, 1.2, 1.2]))["mape_level_known"] > 5
    acc: dict = {}
    _merge(acc, "gemm", "A", y, y / 2)
    _merge(acc, "gemm", "B", y, y * 3)
    out = _finish(acc)["gemm"]
    assert np.isclose(out["all"]["mape_level_known"], 0.0) and out["all"]["mape"] > 100
    assert np.isclose(out["A"]["mape_level_known"], 0.0)


def test_unseen_model_holdout_groups_by_model(vidur_table, fast):
    """Leave-one-model-out on Vidur: every model is scored once; XGBoost GEMMs beat the
    roofline baseline and stay within 15% MAPE."""
    r = holdout_study(vidur_table, "unseen_model", ("xgboost", "roofline"), max_rows=3000, params=fast)
    assert set(r) == {"xgboost", "roofline"}
    g = r["xgboost"]["gemm"]["A100-80GB"]
    assert g["n"] == int((vidur_table["op"] == "gemm").sum())
    assert g["mape"] < r["roofline"]["gemm"]["A100-80GB"]["mape"] and g["mape"] < 15


def test_unseen_gpu_holdout_has_nearest_gpu_baseline(gpu_table, fast):
    """Leave-one-GPU-out scores each GPU, including the copy-the-nearest-GPU baseline."""
    t = gpu_table[gpu_table["op"] == "collective"]
    r = holdout_study(t, "unseen_gpu", ("xgboost",), max_rows=2000, params=fast)
    assert set(r["xgboost"]["collective"]) == {"A100-80GB", "H100-SXM", "L40S", "all"}
    assert set(r["nearest-gpu"]["collective"]) >= {"A100-80GB", "H100-SXM", "L40S"}
    for m in r["xgboost"]["collective"].values():
        assert {"mape", "median_ape", "p90_ape", "r", "n"} <= set(m) and m["n"] > 0


def test_unseen_gpu_folds_score_elementwise_and_train_only_scored_kinds(gpu_table, vidur_table):
    """Vidur's elementwise rows join the leave-one-GPU-out study; a fold never has its GPU in
    training, and trains only the kinds its GPU is scored on (Vidur's subset here is A100's:
    the A100 fold scores collectives and elementwise, the H100 fold collectives only)."""
    t = gpu_table[gpu_table["op"] == "collective"]
    t = pd.concat([t, vidur_table[vidur_table["op"] == "elementwise"]], ignore_index=True)
    folds = {name: (train, test) for name, train, test in _folds(t, "unseen_gpu", 0)}
    assert set(folds) == {"A100-80GB", "H100-SXM", "L40S"}
    for name, (train, test) in folds.items():
        assert name not in set(train["hardware"]) and set(test["hardware"]) == {name}
        assert set(train["op"]) <= set(test["op"])
    assert set(folds["A100-80GB"][1]["op"]) == {"collective", "elementwise"}
    assert set(folds["H100-SXM"][1]["op"]) == {"collective"}


def test_optuna_tuning_on_grouped_validation_fold(gpu_table):
    """--tune: Optuna returns XGBoost hyper-parameters inside the search space."""
    from surrogates.train import split_shapes, tune
    g = gpu_table[gpu_table["op"] == "gemm"]
    val = split_shapes(g, seed=0)
    shared = set(map(tuple, g.loc[val, ["m", "n", "k"]].to_numpy())) & set(map(tuple, g.loc[~val, ["m", "n", "k"]].to_numpy()))
    assert val.any() and not shared  # validation shapes are never trained on
    best = tune(g, 2, max_rows=800)
    assert set(best) == {"n_estimators", "max_depth", "learning_rate", "min_child_weight"}
    assert 100 <= best["n_estimators"] <= 500 and 4 <= best["max_depth"] <= 10


def test_unseen_gpu_fp8_folds_score_fp8_gemms_from_every_dtype_of_the_other_gpus(gpu_table, traces_dir, fast):
    """The fp8 hold-out leaves out each GPU with fp8 GEMMs in turn: it is scored on that GPU's
    fp8 GEMMs only, trained on the other GPUs' GEMMs of every dtype (never its own rows), and
    gets the nearest-GPU baseline like the bf16 hold-out."""
    from profiling.ingest import read_traces
    aic = traces_dir / "aiconfigurator/data"
    fp8 = [read_traces(aic / f"{s}/gemm/trtllm/1.3.0rc20/gemm_perf.parquet", "aiconfigurator").table
           for s in ("h100_sxm", "l40s")]
    fp8 = [x[x["dtype"] == "fp8"].sample(1500, random_state=0) for x in fp8]
    t = pd.concat([gpu_table, *fp8], ignore_index=True)
    folds = {name: (train, test) for name, train, test in _folds(t, "unseen_gpu_fp8", 0)}
    assert set(folds) == {"H100-SXM", "L40S"}
    for name, (train, test) in folds.items():
        assert set(test["hardware"]) == {name} and set(test["dtype"]) == {"fp8"} and set(test["op"]) == {"gemm"}
        assert name not in set(train["hardware"]) and set(train["op"]) == {"gemm"}
        assert {"bf16", "fp8"} <= set(train["dtype"])
    r = holdout_study(t, "unseen_gpu_fp8", ("xgboost",), max_rows=2000, params=fast)
    assert set(r["xgboost"]["gemm"]) == {"H100-SXM", "L40S", "all"}
    assert {"H100-SXM", "L40S"} <= set(r["nearest-gpu"]["gemm"])
    assert 0 < r["xgboost"]["gemm"]["all"]["coverage"] <= 1
