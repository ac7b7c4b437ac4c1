"""Latency regressors behind ``RooflineFeatures`` (scikit-learn estimator API).

``RatioRegressor`` learns ``log(latency / t_roofline)`` and predicts milliseconds that are
never below the roofline. The transfer pipeline (for GPUs never seen in training) instead
learns the log residual over a physics prior, ``t_base = overhead + exp(X[:, base_col])``
(a per-kind launch overhead fitted on the training rows plus a spec-sheet time), from the
dimensionless ``learn_cols`` only: absolute times let trees memorise the training GPUs.
Estimators: ``xgboost`` (default), ``linear`` (ridge on degree-2 polynomial features)
and ``roofline`` (fixed spec-sheet efficiency, nothing learned).
``rf`` is the Vidur baseline: a random forest on the raw shape (token counts) and
hardware numbers predicting latency directly, without roofline normalisation.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler
from sklearn.utils.validation import check_is_fitted

from profiling.errors import HermesError

from .features import RooflineFeatures

ESTIMATORS = ("xgboost", "rf", "linear", "roofline")
# Quantile of the training latencies taken as the launch overhead of the transfer prior.
TRANSFER_OVERHEAD_Q = 0.01
# Features 1, 2 of RooflineFeatures are log t_compute, log t_memory; 5.. are dtype, stack,
# hardware and shape (what a Vidur-style forest sees: no roofline columns).
_LOG_T_COMPUTE, _LOG_T_MEMORY, _RAW_FROM = 1, 2, 5
# Per-node statistics XGBoost keeps from training (split gain, hessian sum, internal-node
# weights); prediction reads only the tree structure and the leaf values.
_TRAINING_ONLY = ("loss_changes", "sum_hessian", "base_weights")


class RatioRegressor(RegressorMixin, BaseEstimator):
    """Regress latency (ms) on ``RooflineFeatures`` output; column 0 = log t_roofline."""

    def __init__(self, estimator: str = "xgboost", n_estimators: int = 300, max_depth: int = 8,
                 learning_rate: float = 0.08, min_child_weight: float = 2.0, subsample: float = 0.8,
                 colsample_bytree: float = 0.9, reg_lambda: float = 1.0, compute_eff: float = 0.7,
                 memory_eff: float = 0.8, n_jobs: int = 1, random_state: int = 0,
                 variant_col: int | None = None, base_col: int | None = None,
                 learn_cols: tuple[int, ...] | None = None, overhead_q: float | None = None) -> None:
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.compute_eff = compute_eff
        self.memory_eff = memory_eff
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.variant_col = variant_col
        self.base_col = base_col
        self.learn_cols = learn_cols
        self.overhead_q = overhead_q

    def _make(self):
        if self.estimator == "xgboost":
            from xgboost import XGBRegressor
            return XGBRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                learning_rate=self.learning_rate, min_child_weight=self.min_child_weight,
                                subsample=self.subsample, colsample_bytree=self.colsample_bytree,
                                reg_lambda=self.reg_lambda, tree_method="hist", n_jobs=self.n_jobs,
                                random_state=self.random_state)
        if self.estimator == "rf":  # Vidur: forest on token counts, depth from a small grid
            return RandomForestRegressor(n_estimators=min(self.n_estimators, 100), max_depth=None,
                                         min_samples_leaf=1, n_jobs=self.n_jobs, random_state=self.random_state)
        if self.estimator == "linear":
            return make_pipeline(PolynomialFeatures(2), StandardScaler(), Ridge(alpha=self.reg_lambda))
        if self.estimator == "roofline":
            return None
        raise HermesError(f"unknown estimator '{self.estimator}' (known: {', '.join(ESTIMATORS)})")

    def fit(self, X, y) -> "RatioRegressor":
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError("X must be 2-D with one row per target")
        if np.any(~np.isfinite(y)) or np.any(y <= 0):
            raise ValueError("latency targets must be finite and > 0")
        self.n_features_in_ = X.shape[1]
        vc = self.variant_col
        self.variant_codes_ = np.unique(X[:, vc][X[:, vc] >= 0]) if vc is not None else np.array([])
        # Launch overhead: a low quantile of the training latencies (tiny kernels on any GPU
        # take a few microseconds whatever their roofline says).
        self.overhead_ms_ = float(np.quantile(y, self.overhead_q)) if self.overhead_q else 0.0
        self.model_ = self._make()
        if self.estimator == "rf":
            self.model_.fit(X[:, _RAW_FROM:], y)
        elif self.model_ is not None:
            self.model_.fit(self._learned(X), np.log(y) - self._log_base(X))
        return self

    def compact(self) -> "RatioRegressor":
        """Shrink the saved trees to under half (the shipped bundle's deep trees fit its size
        budget this way): zero XGBoost's training-only node statistics, which prediction
        never reads, and keep leaf values at half precision, which moves a prediction far
        less than the noise of a GEMM measurement. Idempotent."""
        if self.estimator != "xgboost" or getattr(self, "model_", None) is None:
            return self
        booster = self.model_.get_booster()
        model = json.loads(booster.save_raw("json"))
        for tree in model["learner"]["gradient_booster"]["model"]["trees"]:
            for key in _TRAINING_ONLY:
                tree[key] = [0.0] * len(tree[key])
            value = np.asarray(tree["split_conditions"], dtype=np.float32)
            leaf = np.asarray(tree["left_children"]) == -1  # a leaf's value sits in split_conditions
            value[leaf] = value[leaf].astype(np.float16)
            tree["split_conditions"] = value.tolist()
        booster.load_model(bytearray(json.dumps(model).encode()))
        return self

    def _log_base(self, X: np.ndarray) -> np.ndarray:
        """Log of the time the learner's target is relative to (column 0 by default)."""
        if getattr(self, "base_col", None) is None:  # pickles older than base_col lack it
            return X[:, 0]
        return np.log(getattr(self, "overhead_ms_", 0.0) + np.exp(X[:, self.base_col]))

    def _learned(self, X: np.ndarray) -> np.ndarray:
        """The columns the learner sees."""
        cols = getattr(self, "learn_cols", None)
        return X if cols is None else X[:, list(cols)]

    def predict_log_ratio(self, X) -> np.ndarray:
        """Predicted log(latency / t_roofline), clipped at 0 (never faster than the roofline)."""
        check_is_fitted(self, "n_features_in_")
        X = np.asarray(X, dtype=float)
        if self.estimator == "rf":
            return np.log(np.maximum(self.model_.predict(X[:, _RAW_FROM:]), 1e-9)) - X[:, 0]
        if self.estimator == "roofline":
            r = np.maximum(X[:, _LOG_T_COMPUTE] - np.log(self.compute_eff),
                           X[:, _LOG_T_MEMORY] - np.log(self.memory_eff)) - X[:, 0]
        else:
            r = np.asarray(self.model_.predict(self._learned(X)), dtype=float)
            r = self._average_unknown_variants(X, r) + self._log_base(X) - X[:, 0]
        return np.maximum(np.asarray(r, dtype=float), 0.0)

    def _average_unknown_variants(self, X: np.ndarray, r: np.ndarray) -> np.ndarray:
        """A kernel variant never seen in training (code -1) gets the mean log ratio over the
        known variants, rather than whichever side of a split -1 happens to fall."""
        vc, codes = self.variant_col, getattr(self, "variant_codes_", np.array([]))
        if vc is None or len(codes) == 0 or not (X[:, vc] < 0).any():
            return r
        unk = X[:, vc] < 0
        Xu = X[unk].copy()
        acc = np.zeros(int(unk.sum()))
        for c in codes:
            Xu[:, vc] = c
            acc += self.model_.predict(self._learned(Xu))
        r = r.copy()
        r[unk] = acc / len(codes)
        return r

    def predict(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if self.estimator == "rf":  # the baseline is not roofline-normalised, nor clipped
            check_is_fitted(self, "n_features_in_")
            return self.model_.predict(X[:, _RAW_FROM:])
        return np.exp(X[:, 0] + self.predict_log_ratio(X))


def make_surrogate(kind: str, estimator: str = "xgboost", hardware_features: bool = True,
                   **params) -> Pipeline:
    """The saved unit: roofline features then a regressor, for one operator kind."""
    if kind == "collective":
        params.setdefault("memory_eff", 0.75)  # link efficiency, as RooflinePredictor
    if estimator == "rf":
        hardware_features = True  # the Vidur baseline sees raw device numbers, not ratios
    feats = RooflineFeatures(kind, hardware_features)
    names = list(feats.get_feature_names_out())
    params.setdefault("variant_col", names.index("variant") if "variant" in names else None)
    if not hardware_features and estimator in ("xgboost", "linear"):
        base, learn = feats.transfer_columns()
        params.setdefault("base_col", base)
        params.setdefault("learn_cols", learn)
        if kind != "collective":  # a collective's alpha term already is its fixed cost
            params.setdefault("overhead_q", TRANSFER_OVERHEAD_Q)
    return Pipeline([("features", feats), ("regressor", RatioRegressor(estimator=estimator, **params))])



class StreamPrior:
    """Physics prior for an elementwise op of a family never seen in training: a memory
    stream, ``launch overhead + t_memory / efficiency``, with both fitted per GPU on the
    training rows of every known family (pooled over GPUs for a GPU not among them).

    The regressor cannot price such an op: its shape features (few rows of an unusual
    width, another bytes-per-element) lie where no training row of any family does, and
    trees extrapolate those arbitrarily (Vidur's KV-cache write on A30, the only rows of
    its family, is priced far off by the regressor when left out).
    """

    # Overhead: a low quantile of the GPU's latencies (its smallest kernels are launch-bound);
    # 0.005 had the lowest leave-one-family-out error on Vidur.
    OVERHEAD_Q = 0.005
    # Efficiency: from rows whose memory time dominates the overhead.
    STREAM_OVER_OVERHEAD = 4.0

    def __init__(self) -> None:
        self.per_gpu: dict[str, tuple[float, float]] = {}

    def fit(self, rows: pd.DataFrame) -> "StreamPrior":
        """``rows``: ``hardware``, ``latency_ms`` and ``t_memory_ms`` columns."""
        self.per_gpu = {h: self._law(g) for h, g in rows.groupby(rows["hardware"].astype(str))}
        self.per_gpu["*"] = self._law(rows)
        return self

    def _law(self, rows: pd.DataFrame) -> tuple[float, float]:
        y, tm = rows["latency_ms"].to_numpy(dtype=float), rows["t_memory_ms"].to_numpy(dtype=float)
        overhead = float(np.quantile(y, self.OVERHEAD_Q))
        big = tm >= self.STREAM_OVER_OVERHEAD * overhead
        eff = float(np.median(tm[big] / np.maximum(y[big] - overhead, 1e-9))) if big.any() else 0.8
        return overhead, float(np.clip(eff, 0.05, 1.0))

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Milliseconds per row of ``frame`` (``hardware`` and ``t_memory_ms`` columns)."""
        law = [self.per_gpu.get(h, self.per_gpu["*"]) for h in frame["hardware"].astype(str)]
        overhead, eff = (np.array(v, dtype=float) for v in zip(*law)) if law else (np.zeros(0), np.ones(0))
        return overhead + frame["t_memory_ms"].to_numpy(dtype=float) / eff
