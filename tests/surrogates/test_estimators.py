"""scikit-learn conventions and physics of the per-kind pipelines."""
from __future__ import annotations

import lzma
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import check_get_params_invariance, check_no_attributes_set_in_init

from profiling.hardware import load_catalog
from surrogates.estimators import ESTIMATORS, RatioRegressor, make_surrogate
from surrogates.features import RooflineFeatures, attach_roofline
from surrogates.model import shape_groups


def test_regressor_follows_sklearn_conventions():
    """Params only stored in __init__, get_params invariant, clone works, unfitted raises."""
    est = RatioRegressor(n_estimators=10)
    check_no_attributes_set_in_init("RatioRegressor", est)
    check_get_params_invariance("RatioRegressor", est)
    assert clone(est).get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        est.predict(np.zeros((2, 8)))


def test_regressor_rejects_non_positive_latency_and_returns_self():
    """fit returns self; non-positive targets are refused (log target)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 6))
    y = np.exp(X[:, 0] + 0.5)
    est = RatioRegressor(n_estimators=5)
    assert est.fit(X, y) is est
    with pytest.raises(ValueError):
        RatioRegressor().fit(X, -y)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_never_faster_than_roofline(gpu_table, estimator, fast):
    """Every roofline-normalised estimator predicts >= t_roofline on real GEMM rows."""
    g = gpu_table[gpu_table["op"] == "gemm"]
    pipe = make_surrogate("gemm", estimator, **(fast if estimator == "xgboost" else {"n_estimators": 30}))
    pipe.fit(g, g["latency_ms"].to_numpy())
    pred = pipe.predict(g)
    assert np.all(np.isfinite(pred)) and np.all(pred > 0)
    if estimator != "rf":  # the Vidur baseline is deliberately not normalised
        assert np.all(pred >= g["t_roofline_ms"].to_numpy() * (1 - 1e-9))


def test_compact_keeps_predictions_and_shrinks_the_pickle(gpu_table):
    """compact() moves no prediction by more than 0.2% (half-precision leaves; the training
    statistics it zeroes are never read), survives a pickle round trip, is idempotent, and
    leaves the compressed pickle at most half its size."""
    g = gpu_table[gpu_table["op"] == "gemm"]
    pipe = make_surrogate("gemm", n_estimators=60, max_depth=8).fit(g, g["latency_ms"].to_numpy())
    before, size = pipe.predict(g), len(lzma.compress(pickle.dumps(pipe)))
    pipe.named_steps["regressor"].compact()
    again = pickle.loads(pickle.dumps(pipe))
    after = again.predict(g)
    assert np.max(np.abs(np.log(after / before))) < 2e-3
    again.named_steps["regressor"].compact()
    np.testing.assert_array_equal(again.predict(g), after)
    assert len(lzma.compress(pickle.dumps(pipe))) < 0.5 * size


def test_training_and_simulation_features_identical(gpu_table):
    """Features from ingest-time roofline columns equal those from attach_roofline(hw)."""
    g = gpu_table[(gpu_table["op"] == "gemm") & (gpu_table["hardware"] == "H100-SXM")].head(200)
    f = RooflineFeatures("gemm").fit(g)
    shapes = g[["m", "n", "k", "dtype", "kv_dtype", "stack", "kernel"]]
    sim = attach_roofline("gemm", shapes, load_catalog().get("H100-SXM"))
    np.testing.assert_allclose(f.transform(g), f.transform(sim), rtol=1e-12)


def test_xgboost_beats_baselines_on_unseen_shapes(gpu_table, fast):
    """On held-out GEMM shapes of seen GPUs, XGBoost has lower MAPE than rf, linear, roofline."""
    g = gpu_table[gpu_table["op"] == "gemm"]
    grp = shape_groups(g, "gemm")
    test = np.isin(grp, np.unique(grp)[::5])
    y = g["latency_ms"].to_numpy()
    mape = {}
    for est in ESTIMATORS:
        pipe = make_surrogate("gemm", est, **(fast if est == "xgboost" else {"n_estimators": 30}))
        pipe.fit(g[~test], y[~test])
        mape[est] = float(np.mean(np.abs(pipe.predict(g[test]) - y[test]) / y[test]))
    assert mape["xgboost"] < min(mape["rf"], mape["linear"], mape["roofline"]), mape
    assert mape["xgboost"] < 0.15, mape


def test_elementwise_names_map_to_kernel_families():
    """Vidur's and the operator expander's elementwise names land in the same kernel family."""
    import pandas as pd
    from surrogates.features import elementwise_family
    names = pd.Series(["input_layernorm", "post_attn_norm", "attn_rope", "mlp_act", "residual_add", "add",
                       "embedding_lookup", "attn_kv_cache_save", "mystery"])
    assert elementwise_family(names).tolist() == ["norm", "norm", "rope", "act", "add", "add", "emb",
                                                  "kv_save", ""]


def test_unknown_kernel_variant_gets_mean_over_known_variants(vidur_table, fast):
    """An elementwise op whose kernel family was never trained on is predicted as the mean
    log-ratio over the known families, not an arbitrary branch of the trees."""
    e = vidur_table[vidur_table["op"] == "elementwise"]
    pipe = make_surrogate("elementwise", "xgboost", **fast).fit(e, e["latency_ms"].to_numpy())
    probe = e.head(20).assign(name="never_seen_op")
    X = pipe.named_steps["features"].transform(probe)
    reg = pipe.named_steps["regressor"]
    vc = reg.variant_col
    assert (X[:, vc] == -1).all() and len(reg.variant_codes_) >= 5
    expect = np.mean([reg.model_.predict(np.where(np.arange(X.shape[1]) == vc, c, X)) for c in reg.variant_codes_],
                     axis=0)
    np.testing.assert_allclose(reg.predict_log_ratio(X), np.maximum(expect, 0.0), rtol=1e-5)


def test_decode_parallelism_features_only_in_the_seen_pipeline():
    """Seen-GPU decode features include sequences x KV heads, sequences x heads and the GQA
    group (log1p), side by side; the transfer feature set has none of them; a transformer fitted before
    they existed (no ``decode_features_``) keeps its old column count."""
    import pandas as pd
    rows = pd.DataFrame({"batch": [1, 64], "kv_len": [128, 8192], "heads": [32, 64], "kv_heads": [8, 8],
                         "head_dim": [128, 128], "window": [0, 0], "dtype": ["bf16"] * 2, "kv_dtype": ["bf16"] * 2})
    rows = attach_roofline("attn_decode", rows, load_catalog().get("H100-SXM"))
    seen = RooflineFeatures("attn_decode").fit(rows)
    names = list(seen.get_feature_names_out())
    X = seen.transform(rows)
    dec = [names.index(c) for c in ("log_seq_kv_heads", "log_seq_heads", "log_gqa_group")]
    assert X.shape[1] == len(names) and dec == list(range(dec[0], dec[0] + 3))
    np.testing.assert_allclose(X[:, dec], np.log1p([[8, 32, 4], [512, 4096, 8]]))
    transfer = RooflineFeatures("attn_decode", hardware_features=False).fit(rows)
    assert "log_gqa_group" not in transfer.get_feature_names_out()
    legacy = RooflineFeatures("attn_decode").fit(rows)
    del legacy.decode_features_
    assert legacy.transform(rows).shape[1] == X.shape[1] - 3 == len(legacy.get_feature_names_out())
