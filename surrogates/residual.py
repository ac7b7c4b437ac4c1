"""Local residual correction: interpolate a fitted surrogate's log-residuals between the
measured shapes of the same kernel variant.

One XGBoost model per operator kind is shared by ~20-30 kernel variants (hardware, dtype,
kernel); with a bounded row budget it cannot memorise each variant's shape grid, so its
errors on a seen GPU are local and systematic (tile boundaries, kernel switches). Like
AIConfigurator interpolating its tables, ``ResidualCorrector`` keeps, per variant, a
capped sample of measured shapes with the model's log residual there, and corrects a
prediction by a distance-weighted k-nearest-neighbour average of those residuals in
log-shape space, blended with a grid interpolation: along each shape axis, the residuals
of the nearest measured shapes below and above that differ only on that axis, linearly
interpolated in log-shape and averaged over the axes that bracket the query (the traces
are near full-factorial grids, so most queries are bracketed). A query on a measured
shape gets that measurement back.

Only variants seen in training are corrected: the key contains the hardware name, so a
GPU with no training data (the spec-sheet transfer path) is never touched.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.neighbors import KNeighborsRegressor
from sklearn.utils.validation import check_is_fitted

from .features import SHAPE_FEATURES, variant_keys


def variant_ids(kind: str, frame: pd.DataFrame) -> np.ndarray:
    """Key of the measured kernel variant of each row: hardware, dtype, KV dtype, kernel."""
    get = lambda c, d: (frame[c].fillna(d).astype(str) if c in frame  # noqa: E731
                        else pd.Series(d, index=frame.index))
    key = (get("hardware", "") + "|" + get("dtype", "bf16") + "|" + get("kv_dtype", "None") + "|"
           + variant_keys(kind, frame))
    return key.to_numpy(dtype=object)


def log_shapes(kind: str, frame: pd.DataFrame) -> np.ndarray:
    """Shape columns of ``kind`` as log1p (missing = 0): the space neighbours live in."""
    n = len(frame)
    cols = []
    for c in SHAPE_FEATURES[kind]:
        v = frame[c].to_numpy(dtype=float) if c in frame else np.zeros(n)
        cols.append(np.log1p(np.maximum(np.nan_to_num(v, nan=0.0), 0.0)))
    return np.column_stack(cols) if cols else np.zeros((n, 0))


class ResidualCorrector(BaseEstimator):
    """Per-variant distance-weighted kNN on log residuals ``log(y / prediction)``.

    ``max_rows_per_variant`` caps what is stored, and storage is compact so the bundle
    stays a few MB: measured shapes lie on grids, so each column is a small codebook of
    levels plus uint8/uint16 codes; residuals are int8 with a per-variant scale (about
    0.5% resolution on the latency ratio, well under the model's error).
    """

    # Weight of the grid interpolation where it brackets a query (the kNN average has the
    # rest): an even blend beat the kNN alone on unseen shapes of every kind, and weighting
    # the axes by closeness of their brackets did no better.
    AXIS_WEIGHT = 0.5

    def __init__(self, kind: str = "gemm", n_neighbors: int = 8, max_rows_per_variant: int = 4000,
                 random_state: int = 0, axis_weight: float = AXIS_WEIGHT) -> None:
        self.kind = kind
        self.n_neighbors = n_neighbors
        self.max_rows_per_variant = max_rows_per_variant
        self.random_state = random_state
        self.axis_weight = axis_weight

    def fit(self, frame: pd.DataFrame, log_resid: np.ndarray) -> "ResidualCorrector":
        r = np.asarray(log_resid, dtype=float)
        if len(r) != len(frame):
            raise ValueError("one residual per row of frame is needed")
        ok = np.isfinite(r)
        keys, X = variant_ids(self.kind, frame)[ok], log_shapes(self.kind, frame)[ok]
        r = r[ok]
        rng = np.random.default_rng(self.random_state)
        self.tables_: dict[str, tuple] = {}
        for key in np.unique(keys):
            idx = np.flatnonzero(keys == key)
            if len(idx) > self.max_rows_per_variant:
                idx = np.sort(rng.choice(idx, self.max_rows_per_variant, replace=False))
            self.tables_[str(key)] = _encode(X[idx], r[idx])
        self._knn: dict = {}
        return self

    def _neighbours(self, key: str) -> KNeighborsRegressor:
        cache = self.__dict__.setdefault("_knn", {})
        if key not in cache:  # built lazily: the pickle holds only the compact arrays
            X, r = _decode(*self.tables_[key])
            cache[key] = KNeighborsRegressor(n_neighbors=min(self.n_neighbors, len(r)), weights="distance",
                                             algorithm="kd_tree").fit(X, r.astype(float))
        return cache[key]

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Log correction per row (0 for a variant never seen in training)."""
        check_is_fitted(self, "tables_")
        out = np.zeros(len(frame))
        if not len(frame):
            return out
        keys, X = variant_ids(self.kind, frame), log_shapes(self.kind, frame)
        w = getattr(self, "axis_weight", 0.0)  # correctors pickled before the grid blend: kNN only
        for key in np.unique(keys):
            if key in self.tables_:
                idx = np.flatnonzero(keys == key)
                knn = self._neighbours(str(key)).predict(X[idx])
                if w > 0:
                    grid = self._grid(str(key)).predict(X[idx])
                    knn = np.where(np.isnan(grid), knn, (1 - w) * knn + w * grid)
                out[idx] = knn
        return out

    def _grid(self, key: str) -> "GridInterpolator":
        cache = self.__dict__.setdefault("_knn", {})
        if (key, "grid") not in cache:
            cache[(key, "grid")] = GridInterpolator(*self.tables_[key])
        return cache[(key, "grid")]

    def n_stored(self) -> int:
        return int(sum(len(t[1]) for t in getattr(self, "tables_", {}).values()))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_knn", None)
        return state


class GridInterpolator:
    """Axis-wise linear interpolation of residuals stored on a (partly filled) grid.

    For a query and one axis, the stored shapes equal to the query on every other axis
    form a line; the residuals of the nearest ones below and above (``merge_asof`` by the
    other axes' level codes) are interpolated linearly in log-shape. The result averages
    the axes that bracket the query; NaN where none does.
    """

    def __init__(self, levels: list, codes: np.ndarray, rq: np.ndarray, scale: float) -> None:
        self.levels = levels
        self.codes = codes.astype(np.int64)
        self.r = rq.astype(float) * scale
        self._lines: dict[int, pd.DataFrame] = {}

    def _line(self, j: int) -> pd.DataFrame:
        """Stored points sorted along axis ``j``, keyed by the other axes' codes."""
        if j not in self._lines:
            cols = {f"c{i}": self.codes[:, i] for i in range(self.codes.shape[1]) if i != j}
            x = self.levels[j][self.codes[:, j]].astype(float)
            self._lines[j] = pd.DataFrame({**cols, "_x": x, "_xs": x, "_r": self.r}).sort_values("_x")
        return self._lines[j]

    def _query_codes(self, X: np.ndarray) -> np.ndarray:
        """Level index of each query coordinate; -1 where it is not a stored level."""
        out = np.full(X.shape, -1, dtype=np.int64)
        for j, lv in enumerate(self.levels):
            v = X[:, j].astype(np.float32)
            pos = np.minimum(np.searchsorted(lv, v), len(lv) - 1)
            out[:, j] = np.where(lv[pos] == v, pos, -1)
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        n, d = X.shape
        if n == 0 or d == 0:
            return np.full(n, np.nan)
        qc = self._query_codes(X)
        acc, cnt = np.zeros(n), np.zeros(n)
        for j in range(d):
            by = [f"c{i}" for i in range(d) if i != j]
            q = pd.DataFrame({**{f"c{i}": qc[:, i] for i in range(d) if i != j},
                              "_x": X[:, j].astype(np.float32).astype(float), "_i": np.arange(n)}).sort_values("_x")
            line = self._line(j)
            lo = pd.merge_asof(q, line, on="_x", by=by or None, direction="backward").sort_values("_i")
            hi = pd.merge_asof(q, line, on="_x", by=by or None, direction="forward").sort_values("_i")
            x0, x1, x = lo["_xs"].to_numpy(), hi["_xs"].to_numpy(), lo["_x"].to_numpy()
            r0, r1 = lo["_r"].to_numpy(), hi["_r"].to_numpy()
            ok = np.isfinite(r0) & np.isfinite(r1)
            span = np.where(ok & (x1 > x0), x1 - x0, 1.0)
            f = np.where(ok & (x1 > x0), (x - x0) / span, 0.0)
            acc[ok] += (r0 + f * (r1 - r0))[ok]
            cnt[ok] += 1
        return np.where(cnt > 0, acc / np.maximum(cnt, 1), np.nan)


def _encode(X: np.ndarray, r: np.ndarray) -> tuple:
    """(levels per column, codes, int8 residuals, residual scale): a compact table."""
    levels = [np.unique(c).astype(np.float32) for c in X.T]
    wide = max((len(lv) for lv in levels), default=0) > 256
    codes = np.column_stack([np.searchsorted(lv, c.astype(np.float32)) for lv, c in zip(levels, X.T)])
    scale = float(np.max(np.abs(r))) / 127 or 1.0
    return levels, codes.astype(np.uint16 if wide else np.uint8), np.round(r / scale).astype(np.int8), scale


def _decode(levels: list, codes: np.ndarray, rq: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    X = np.column_stack([lv[codes[:, j]] for j, lv in enumerate(levels)]).astype(float)
    return X, rq.astype(float) * scale
