"""``SurrogateModel``: one fitted pipeline per operator kind, with intervals and provenance.

Per kind it keeps two pipelines: ``seen`` (with the absolute hardware numbers, best on
GPUs in the training data) and ``transfer`` (roofline-normalised features only, used
for a GPU with no training data, predicted from its spec sheet). Prediction intervals
are split-conformal quantiles of log residuals: on held-out *shapes* for seen GPUs and
on leave-one-GPU-out residuals for the transfer model.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import joblib
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from profiling.errors import HermesError
from profiling.hardware import HardwareSpec, load_catalog
from profiling.roofline import add_roofline_features

from .compiled import RooflinePredictor
from .estimators import make_surrogate
from .features import SHAPE_FEATURES, attach_roofline

PROVENANCE = ("trained", "extrapolated", "roofline-fallback")
MODEL_FILE, MANIFEST_FILE = "surrogate.joblib", "manifest.json"
# Kinds whose rows are trained on; whole-step rows are the simulator's validation data.
TRAINABLE = tuple(SHAPE_FEATURES)
# GEMM is the bulk of step time and has the most kernel variants on the same shapes: it
# gets twice the row budget so each variant's shape grid stays dense.
KIND_ROW_SCALE = {"gemm": 2.0}


def shape_groups(df: pd.DataFrame, kind: str) -> np.ndarray:
    """One id per distinct shape (any GPU, any dtype): the unit of a grouped hold-out."""
    cols = [c for c in (*SHAPE_FEATURES[kind], "collective") if c in df]
    return pd.util.hash_pandas_object(df[cols].astype(str), index=False).to_numpy()


def conformal_q(abs_resid: np.ndarray, level: float) -> float:
    """Split-conformal quantile with the finite-sample correction."""
    r = np.sort(np.asarray(abs_resid, dtype=float))
    if len(r) == 0:
        return float("nan")
    k = min(int(np.ceil((len(r) + 1) * level)), len(r)) - 1
    return float(r[k])


def _sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` rows, spread evenly over (hardware, dtype, kernel) so that no GPU and no
    kernel variant dominates: each variant's shapes stay dense enough to interpolate."""
    if len(df) <= n:
        return df
    keys = [c for c in ("hardware", "dtype", "kernel", "name") if c in df]
    strata = df[keys].astype(str).agg("|".join, axis=1)
    sizes = strata.value_counts()
    # Water-filling: small strata keep all rows, the rest share what is left equally.
    per, left, k = n / len(sizes), n, len(sizes)
    for s in sizes.sort_values().to_numpy():
        per = left / k
        if s > per:
            break
        left, k = left - s, k - 1
    order = df.sample(frac=1.0, random_state=seed)
    return order.groupby(strata.loc[order.index].to_numpy(), sort=False).head(max(int(per), 1))


@dataclass(frozen=True)
class Prediction:
    """Latencies (ms) with a nominal-coverage interval and a provenance tag per row."""

    ms: np.ndarray
    lo_ms: np.ndarray
    hi_ms: np.ndarray
    provenance: np.ndarray
    note: str = ""


@dataclass
class KindModel:
    seen: Pipeline
    transfer: Pipeline | None
    hardware: frozenset[str]
    dtypes: frozenset[str]
    ranges: dict[str, tuple[float, float]]
    q_seen: float
    q_transfer: float
    n_train: int


@dataclass
class SurrogateModel:
    """Operator-latency model of the simulator (``OpLatencyModel``) learned from traces."""

    estimator: str = "xgboost"
    params: dict = field(default_factory=dict)
    max_rows: int = 40000
    interval: float = 0.9
    random_state: int = 0
    transfer: bool = True
    kinds_: dict[str, KindModel] = field(default_factory=dict)
    skipped_: dict[str, int] = field(default_factory=dict)

    # ---- training -----------------------------------------------------
    def fit(self, table: pd.DataFrame, progress: Callable[[str], None] | None = None) -> "SurrogateModel":
        cat = load_catalog()
        self.kinds_, self.skipped_ = {}, {}
        for kind in [k for k in TRAINABLE if (table["op"] == k).any()]:
            rows = table[table["op"] == kind]
            known = rows["hardware"].map(lambda h: h in cat)
            for h, n in rows.loc[~known, "hardware"].value_counts().items():
                self.skipped_[f"{kind}@{h}"] = int(n)  # no spec sheet: cannot normalise
            rows = add_roofline_features(rows[known], cat)
            rows = rows[(rows["t_roofline_ms"] > 0) & (rows["latency_ms"] > 0)]
            if len(rows) < 20:
                continue
            rows = rows.assign(hardware=rows["hardware"].map(lambda h: cat.get(h).name))
            if progress:
                progress(f"{kind}: {len(rows)} rows on {rows['hardware'].nunique()} device(s)")
            self.kinds_[kind] = self._fit_kind(kind, rows)
        if not self.kinds_:
            raise HermesError("no trainable rows (need gemm/attention/elementwise/collective rows "
                              "on hardware the catalog knows)")
        return self

    def _fit_kind(self, kind: str, rows: pd.DataFrame) -> KindModel:
        rng = np.random.default_rng(self.random_state)
        groups = shape_groups(rows, kind)
        uniq = np.unique(groups)
        cal_groups = rng.choice(uniq, size=max(1, int(0.15 * len(uniq))), replace=False)
        is_cal = np.isin(groups, cal_groups) if len(uniq) > 5 else np.zeros(len(rows), bool)
        budget = int(self.max_rows * KIND_ROW_SCALE.get(kind, 1.0))
        train = _sample(rows[~is_cal], budget, self.random_state)
        cal = _sample(rows[is_cal], self.max_rows // 4, self.random_state) if is_cal.any() else train
        seen = make_surrogate(kind, self.estimator, **self.params).fit(train, train["latency_ms"].to_numpy())
        q_seen = conformal_q(np.abs(np.log(cal["latency_ms"].to_numpy() / seen.predict(cal))), self.interval)
        transfer, q_transfer = None, float("nan")
        hws = sorted(train["hardware"].unique())
        if self.transfer and self.estimator in ("xgboost", "linear"):
            transfer = make_surrogate(kind, self.estimator, hardware_features=False, **self.params)
            transfer.fit(train, train["latency_ms"].to_numpy())
            if len(hws) > 1:  # honest transfer intervals: leave each GPU out once
                resid = []
                for h in hws:  # half the rows: these fits only size the interval
                    tr, te = train[train["hardware"] != h], train[train["hardware"] == h]
                    tr = _sample(tr, budget // 2, self.random_state)
                    p = make_surrogate(kind, self.estimator, hardware_features=False, **self.params)
                    p.fit(tr, tr["latency_ms"].to_numpy())
                    resid.append(np.abs(np.log(te["latency_ms"].to_numpy() / p.predict(te))))
                q_transfer = conformal_q(np.concatenate(resid), self.interval)
        ranges = {c: (float(np.nanmin(train[c])), float(np.nanmax(train[c])))
                  for c in SHAPE_FEATURES[kind] if c in train and train[c].notna().any()}
        return KindModel(seen, transfer, frozenset(hws), frozenset(train["dtype"].dropna().astype(str)),
                         ranges, q_seen, q_transfer, len(train))

    # ---- prediction ---------------------------------------------------
    def predict(self, kind: str, shapes: pd.DataFrame, hw: HardwareSpec) -> Prediction:
        """Latency per row of ``shapes`` (shape columns, ``dtype``, ``kv_dtype``) on ``hw``."""
        km = self.kinds_.get(kind)
        frame = attach_roofline(kind, shapes.reset_index(drop=True).assign(hardware=hw.name), hw)
        n = len(frame)
        if km is None:
            ms = RooflinePredictor().predict_ms(kind, frame, hw)
            return Prediction(ms, frame["t_roofline_ms"].to_numpy(dtype=float), np.full(n, np.nan),
                              np.full(n, "roofline-fallback", dtype=object),
                              f"no '{kind}' training data: spec-sheet roofline")
        seen = hw.name in km.hardware or km.transfer is None
        pipe, q = (km.seen, km.q_seen) if seen else (km.transfer, km.q_transfer)
        ms = pipe.predict(frame)
        floor = frame["t_roofline_ms"].to_numpy(dtype=float)
        inside = np.full(n, hw.name in km.hardware)
        for c, (lo, hi) in km.ranges.items():
            if c in frame:
                v = frame[c].to_numpy(dtype=float)
                inside &= np.isnan(v) | ((v >= lo) & (v <= hi))
        if "dtype" in frame:
            inside &= frame["dtype"].fillna("bf16").astype(str).isin(km.dtypes).to_numpy()
        prov = np.where(inside, "trained", "extrapolated").astype(object)
        note = "" if hw.name in km.hardware else (
            f"{hw.name} has no '{kind}' training data: transfer model from its spec sheet")
        return Prediction(ms, np.maximum(ms * np.exp(-q), floor), ms * np.exp(q), prov, note)

    def predict_ms(self, kind: str, shapes: pd.DataFrame, hw: HardwareSpec) -> np.ndarray:
        return self.predict(kind, shapes, hw).ms

    def trained_hardware(self) -> list[str]:
        return sorted(set().union(*(k.hardware for k in self.kinds_.values()))) if self.kinds_ else []

    def describe_hardware(self, hw: HardwareSpec) -> str:
        """One line saying how this model predicts ``hw``."""
        kinds = [k for k, m in self.kinds_.items() if hw.name in m.hardware]
        if kinds:
            return f"{hw.name}: trained on its traces for {', '.join(kinds)}"
        return f"{hw.name}: no training data; transfer model from its spec sheet (provenance 'extrapolated')"

    # ---- persistence --------------------------------------------------
    def save(self, directory: str | Path, manifest: dict | None = None) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, d / MODEL_FILE, compress=3)
        info = {"estimator": self.estimator, "params": self.params, "interval": self.interval,
                "kinds": {k: {"n_train": m.n_train, "hardware": sorted(m.hardware), "dtypes": sorted(m.dtypes),
                              "q_seen": m.q_seen, "q_transfer": m.q_transfer}
                          for k, m in self.kinds_.items()},
                "skipped_rows": self.skipped_, **(manifest or {})}
        (d / MANIFEST_FILE).write_text(json.dumps(info, indent=2, default=str))
        return d

    @staticmethod
    def load(directory: str | Path) -> "SurrogateModel":
        path = Path(directory) / MODEL_FILE
        if not path.is_file():
            raise HermesError(f"{directory}: no surrogate here (missing {MODEL_FILE})")
        obj = joblib.load(path)
        if not isinstance(obj, SurrogateModel):
            raise HermesError(f"{path}: not a HERMES surrogate")
        return obj
