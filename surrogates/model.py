"""``SurrogateModel``: one fitted pipeline per operator kind, with intervals and provenance.

Per kind it keeps two pipelines: ``seen`` (with the absolute hardware numbers, best on
GPUs in the training data) and ``transfer`` (roofline-normalised features only, used
for a GPU with no training data, predicted from its spec sheet). On a seen GPU the
``seen`` prediction is refined by a local residual correction (``residual.py``: kNN of
the model's residuals on measured shapes of the same kernel variant). Prediction
intervals are split-conformal quantiles of log residuals: on held-out *shapes* for seen
GPUs, widened to the leave-models-out quantile for rows measured per model (Vidur) or of
an unknown kernel, and on leave-one-GPU-out residuals for the transfer model. How a GPU
never measured is priced (dominance bounds, sibling anchoring, transfer intervals) is a
policy of its own: ``transfer.py``.
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

from profiling.atomicfile import atomic_path, write_text_atomic
from profiling.errors import HermesError
from profiling.hardware import CATALOG_ENV, HardwareSpec, load_catalog
from profiling.roofline import add_roofline_features

from .compiled import RooflinePredictor
from .engine_kernel import choose_engine_kernels, with_engine_kernel
from .estimators import StreamPrior, make_surrogate
from .features import SHAPE_FEATURES, attach_roofline, variant_keys
from .residual import ResidualCorrector, variant_ids
from .transfer import (Sibling, anchored_note, named_variants, nearest_sibling, price_unseen, row_dtypes,
                       row_quantiles, transfer_quantiles)

PROVENANCE = ("trained", "extrapolated", "roofline-fallback")
MODEL_FILE, MANIFEST_FILE = "surrogate.joblib", "manifest.json"
# Kinds whose rows are trained on; whole-step rows are the simulator's validation data.
TRAINABLE = tuple(SHAPE_FEATURES)
# GEMM is the bulk of step time and has the most kernel variants on the same shapes: it
# gets twice the row budget so each variant's shape grid stays dense. Elementwise rows
# (Vidur's ~75k) all fit in 2.5x: a new model's ops sit between other models' rows of the
# same token count.
KIND_ROW_SCALE = {"gemm": 2.0, "elementwise": 2.5}
# Local residual correction (``residual.py``): measured shapes kept per kernel variant, and
# the estimators it corrects (the rf baseline stays what Vidur does). Only kinds measured on
# dense shape grids (AIConfigurator) gain from it; for elementwise ops the small gain did not
# pay for its bundle bytes near the size cap (test_bundle). Every measured shape is kept (no
# variant has more rows than this): more stored shapes kept lowering the unseen-shape error,
# and xz keeps the store small.
RESIDUAL_ROWS_PER_VARIANT = 100_000
CORRECTED = ("xgboost", "linear")
CORRECTED_KINDS = ("gemm", "attn_prefill", "attn_decode")
# Kinds whose variants are different ops (not implementations of one): a variant never
# trained on is priced by a memory-stream prior (``StreamPrior``), not by the regressor.
STREAM_PRIOR_KINDS = ("elementwise",)
# Folds of the leave-models-out calibration (when rows carry a ``model``).
MODEL_FOLDS = 3


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
    # ngroup, not a row-wise string join: the join cost seconds per 100k rows.
    strata = df.groupby(keys, dropna=False, sort=False).ngroup() if keys else pd.Series(0, index=df.index)
    sizes = strata.value_counts()
    # Water-filling: small strata keep all rows, the rest share what is left equally.
    per, left, k = n / len(sizes), n, len(sizes)
    for s in sizes.sort_values().to_numpy():
        per = left / k
        if s > per:
            break
        left, k = left - s, k - 1
    # Rank rows within their stratum in a random order; keep the first ``per`` of each
    # (index arithmetic only: shuffling a wide frame costs seconds).
    perm = np.random.default_rng(seed).permutation(len(df))
    codes = strata.to_numpy()[perm]
    rank = pd.Series(codes).groupby(codes, sort=False).cumcount().to_numpy()
    return df.iloc[np.sort(perm[rank < max(int(per), 1)])]


def _n_strata(df: pd.DataFrame) -> int:
    keys = [c for c in ("hardware", "dtype", "kernel", "name") if c in df]
    return int(df.groupby(keys, dropna=False, sort=False).ngroups) if keys else 1


def _seen_ms(pipe: Pipeline, residual: ResidualCorrector | None, frame: pd.DataFrame,
             prior: StreamPrior | None = None) -> np.ndarray:
    """Seen-GPU prediction with the local residual correction, never below the roofline;
    with a ``prior``, rows of a variant the pipeline never saw get the prior instead."""
    ms = pipe.predict(frame)
    floor = frame["t_roofline_ms"].to_numpy(dtype=float)
    if residual is not None:
        ms = np.maximum(ms * np.exp(residual.predict(frame)), floor)
    if prior is not None:
        feats = pipe.named_steps["features"]
        unseen = ~variant_keys(feats.kind, frame).isin(feats.variants_).to_numpy()
        if unseen.any():
            ms = np.where(unseen, np.maximum(prior.predict(frame), floor), ms)
    return ms


def _query_frame(kind: str, km: KindModel, shapes: pd.DataFrame, hw: HardwareSpec, where: str) -> pd.DataFrame:
    """``shapes`` on ``hw`` as a pipeline reads them: roofline columns, and the stack and
    engine kernel measured on ``where`` (the GPU's name, or "*" for the transfer model)."""
    frame = attach_roofline(kind, shapes.reset_index(drop=True).assign(hardware=hw.name), hw)
    frame = with_default_stack(frame, getattr(km, "default_stack", {}), where)
    return with_engine_kernel(frame, getattr(km, "engine_kernels", {}), where)


def _shape_ranges(kind: str, rows: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """(min, max) of each shape column of ``kind`` that ``rows`` give."""
    return {c: (float(np.nanmin(rows[c])), float(np.nanmax(rows[c])))
            for c in SHAPE_FEATURES[kind] if c in rows and rows[c].notna().any()}


def _within(frame: pd.DataFrame, ranges: dict[str, tuple[float, float]]) -> np.ndarray:
    """Rows of ``frame`` inside ``ranges`` on every column both have (a missing value is)."""
    inside = np.ones(len(frame), bool)
    for c, (lo, hi) in ranges.items():
        if c in frame:
            v = frame[c].to_numpy(dtype=float)
            inside &= np.isnan(v) | ((v >= lo) & (v <= hi))
    return inside


def _default_stacks(train: pd.DataFrame) -> dict[str, str]:
    """Most common ``stack`` of the training rows per GPU and over all ("*")."""
    if "stack" not in train or train["stack"].isna().all():
        return {}
    st = train["stack"].dropna().astype(str)
    out = {str(h): str(g.mode().iloc[0]) for h, g in st.groupby(train.loc[st.index, "hardware"].astype(str))}
    return {**out, "*": str(st.mode().iloc[0])}


def with_default_stack(frame: pd.DataFrame, stacks: dict[str, str], hardware: str) -> pd.DataFrame:
    """A query naming no stack (the simulator's ops) gets the stack its kernels were measured
    in on ``hardware``: elementwise variants are keyed by stack and op family, and an
    unmatched key would be priced as an unknown op."""
    if not stacks or "stack" in frame:
        return frame
    return frame.assign(stack=stacks.get(hardware, stacks["*"]))


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
    ranges: dict[str, tuple[float, float]]  # shape column -> (min, max) over all GPUs
    q_seen: float
    q_transfer: float
    n_train: int
    # Added with the local correction; a model pickled before has none of these (getattr).
    residual: ResidualCorrector | None = None
    q_model: float = float("nan")  # leave-models-out quantile (rows carrying a ``model``)
    shape_variants: frozenset[str] = frozenset()  # variants never measured per model
    q_model_hw: dict[str, float] = field(default_factory=dict)  # per GPU, where enough rows
    # (hardware, dtype) -> (stack, kernel) a query naming no kernel runs (engine_kernel.py)
    engine_kernels: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    stream_prior: StreamPrior | None = None  # elementwise ops of a family never trained on
    # hardware -> stack of its training rows ("*": all GPUs), for queries naming no stack
    default_stack: dict[str, str] = field(default_factory=dict)
    # variant ids (GPU, dtypes, kernel) with measurements: any other is an extrapolation
    variants: frozenset[str] = frozenset()
    # hardware -> shape column -> (min, max) measured on that GPU (``ranges`` pools all GPUs)
    hw_ranges: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    # Transfer quantiles of leave-one-GPU-out residuals by "dtype|kernel variant" and by
    # "dtype" (``q_transfer`` pools them all), where there are enough residuals.
    q_transfer_by: dict[str, float] = field(default_factory=dict)

    def transfer_quantile(self, dtypes: np.ndarray, variants: np.ndarray) -> np.ndarray:
        """Per-row interval half-width (log) on a GPU never measured: that of the row's
        dtype and kernel variant ("" for none), else of its dtype, else the pooled one."""
        return row_quantiles(getattr(self, "q_transfer_by", {}), self.q_transfer, dtypes, variants)

    def off_range_quantile(self) -> float:
        """Interval half-width (log) for a shape a GPU was never measured near: the measured
        error of shapes a GPU was not profiled at, a new model's on the GPU where those
        err most (leave-models-out); the shape quantile without per-model rows."""
        qs = [self.q_seen, getattr(self, "q_model", float("nan")), *getattr(self, "q_model_hw", {}).values()]
        return float(max((q for q in qs if np.isfinite(q)), default=float("nan")))

    def quantile(self, variants: np.ndarray, hardware: str = "") -> np.ndarray:
        """Per-row interval half-width (log). Variants measured only as shape grids get the
        shape quantile; the others (measured per model, or a kernel never seen, which a new
        model's layers could be) the larger of the shape and leave-models-out quantiles."""
        qm = getattr(self, "q_model_hw", {}).get(hardware, getattr(self, "q_model", float("nan")))
        if not np.isfinite(qm):
            return np.full(len(variants), self.q_seen)
        shape_only = getattr(self, "shape_variants", frozenset())
        narrow = np.array([v in shape_only for v in variants], dtype=bool)
        return np.where(narrow, self.q_seen, max(self.q_seen, qm))


@dataclass
class SurrogateModel:
    """Operator-latency model of the simulator (``OpLatencyModel``) learned from traces."""

    estimator: str = "xgboost"
    params: dict = field(default_factory=dict)
    max_rows: int = 40000
    # Per-kind overrides of ``params`` for the seen-GPU pipeline only ({kind: {name: value}}):
    # the shipped bundle keeps small trees everywhere but where bigger ones pay (build_bundle).
    seen_params: dict = field(default_factory=dict)
    interval: float = 0.9
    random_state: int = 0
    transfer: bool = True
    local_correction: bool = True
    kinds_: dict[str, KindModel] = field(default_factory=dict)
    specs_: dict[str, HardwareSpec] = field(default_factory=dict)  # spec sheets of the trained GPUs

    def __setstate__(self, state: dict) -> None:
        # Spec sheets pickled before a catalog field existed lack it: re-validate them so
        # the field gets its default (a surrogate saved by an older version still loads).
        specs = state.get("specs_") or {}
        state["specs_"] = {k: HardwareSpec.model_validate(
            {f: v for f, v in vars(s).items() if f in HardwareSpec.model_fields}) for k, s in specs.items()}
        self.__dict__.update(state)

    # ---- training -----------------------------------------------------
    def fit(self, table: pd.DataFrame, progress: Callable[[str], None] | None = None) -> "SurrogateModel":
        cat = load_catalog()
        self.kinds_ = {}
        for kind in [k for k in TRAINABLE if (table["op"] == k).any()]:
            rows = table[table["op"] == kind]
            hws = rows["hardware"].unique()  # per distinct name: a per-row lookup costs seconds
            unknown = [h for h in hws if h not in cat]  # no spec sheet: no roofline to normalise by
            if unknown:
                n = int((rows["hardware"] == unknown[0]).sum())
                raise HermesError(f"hardware '{unknown[0]}' ({n} {kind} rows) is not in the hardware catalog: "
                                  f"add its spec sheet with --catalog FILE or ${CATALOG_ENV}")
            rows = add_roofline_features(rows, cat)
            rows = rows[(rows["t_roofline_ms"] > 0) & (rows["latency_ms"] > 0)]
            if len(rows) < 20:
                continue
            rows = rows.assign(hardware=rows["hardware"].map({h: cat.get(h).name for h in hws}))
            if progress:
                progress(f"{kind}: {len(rows)} rows on {rows['hardware'].nunique()} device(s)")
            self.kinds_[kind] = self._fit_kind(kind, rows)
        if not self.kinds_:
            raise HermesError("no trainable rows (need gemm/attention/elementwise/collective rows "
                              "on hardware the catalog knows)")
        self.specs_ = {h: cat.get(h) for h in self.trained_hardware()}
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
        seen, residual = self._fit_seen(kind, train, rows[~is_cal])
        prior = StreamPrior().fit(rows[~is_cal]) if kind in STREAM_PRIOR_KINDS else None
        q_seen = conformal_q(np.abs(np.log(cal["latency_ms"].to_numpy() / _seen_ms(seen, residual, cal, prior))),
                             self.interval)
        q_model, shape_variants, q_model_hw = self._model_quantile(kind, rows[~is_cal], budget)
        transfer, q_transfer, q_transfer_by = None, float("nan"), {}
        hws = sorted(train["hardware"].unique())
        if self.transfer and self.estimator in ("xgboost", "linear"):
            transfer = make_surrogate(kind, self.estimator, hardware_features=False, **self.params)
            transfer.fit(train, train["latency_ms"].to_numpy())
            if len(hws) > 1:  # honest transfer intervals: leave each GPU out once
                def fit_without(tr: pd.DataFrame) -> Pipeline:  # half the rows: these fits only size the interval
                    tr = _sample(tr, budget // 2, self.random_state)
                    p = make_surrogate(kind, self.estimator, hardware_features=False, **self.params)
                    return p.fit(tr, tr["latency_ms"].to_numpy())
                q_transfer, q_transfer_by = transfer_quantiles(kind, train, fit_without,
                                                               lambda r: conformal_q(r, self.interval))
        ranges = _shape_ranges(kind, train)
        hw_ranges = {str(h): _shape_ranges(kind, part) for h, part in rows.groupby("hardware")}
        return KindModel(seen, transfer, frozenset(hws), frozenset(train["dtype"].dropna().astype(str)),
                         ranges, q_seen, q_transfer, len(train), residual, q_model, shape_variants, q_model_hw,
                         self._engine_kernels(kind, seen, transfer, train), prior,
                         _default_stacks(train) if kind in STREAM_PRIOR_KINDS else {},
                         frozenset(np.unique(variant_ids(kind, rows)).tolist()), hw_ranges, q_transfer_by)

    def _engine_kernels(self, kind: str, seen: Pipeline, transfer: Pipeline | None,
                        train: pd.DataFrame) -> dict[tuple[str, str], tuple[str, str]]:
        """Per (GPU, dtype) the kernel a kernel-less query runs; ("*", dtype) for a GPU never
        measured, chosen with the transfer pipeline (``engine_kernel.py``)."""
        out = choose_engine_kernels(kind, seen, train, self.random_state)
        if transfer is not None:
            out.update(choose_engine_kernels(kind, transfer, train, self.random_state, per_gpu=False))
        return out

    def _fit_seen(self, kind: str, train: pd.DataFrame, pool: pd.DataFrame
                  ) -> tuple[Pipeline, ResidualCorrector | None]:
        """The seen-GPU pipeline on ``train``, and its residual corrector on a capped sample of
        ``pool`` (all non-calibration rows: more shapes than the regressor's row budget)."""
        params = {**self.params, **getattr(self, "seen_params", {}).get(kind, {})}
        seen = make_surrogate(kind, self.estimator, **params).fit(train, train["latency_ms"].to_numpy())
        if not (self.local_correction and self.estimator in CORRECTED and kind in CORRECTED_KINDS):
            return seen, None
        store = _sample(pool, RESIDUAL_ROWS_PER_VARIANT * _n_strata(pool), self.random_state)
        resid = np.log(store["latency_ms"].to_numpy() / seen.predict(store))
        corr = ResidualCorrector(kind, max_rows_per_variant=RESIDUAL_ROWS_PER_VARIANT,
                                 random_state=self.random_state).fit(store, resid)
        return seen, corr

    def _model_quantile(self, kind: str, rows: pd.DataFrame, budget: int
                        ) -> tuple[float, frozenset[str], dict[str, float]]:
        """Interval quantile for the use case 'a model never profiled': leave-models-out
        residuals over ``MODEL_FOLDS`` folds of the rows' ``model`` names (NaN when fewer
        than 3 models), the variants measured only without a model (shape grids), and the
        quantile per GPU with at least 50 residuals (a GPU profiled for few models, such
        as Vidur's A30, has much wider errors on a new model than the pool; one with too
        few residuals gets the widest per-GPU quantile)."""
        models = rows["model"].dropna().unique() if "model" in rows else np.array([])
        if len(models) < 3:
            return float("nan"), frozenset(), {}
        rng = np.random.default_rng(self.random_state)
        fold_of = dict(zip(rng.permutation(models), np.arange(len(models)) % MODEL_FOLDS))
        fold = rows["model"].map(fold_of).to_numpy()
        resid, hw = [], []
        for f in range(MODEL_FOLDS):  # half the rows: these fits only size the interval
            out = fold == f
            tr = _sample(rows[~out], budget // 2, self.random_state)
            # Only GPUs the fold still trains on: a new model on a GPU without any data is
            # the transfer case, whose interval is sized separately.
            te = rows[out & rows["hardware"].isin(set(rows.loc[~out, "hardware"])).to_numpy()]
            te = _sample(te, self.max_rows // 4, self.random_state)
            seen, corr = self._fit_seen(kind, tr, rows[~out])
            prior = StreamPrior().fit(rows[~out]) if kind in STREAM_PRIOR_KINDS else None
            resid.append(np.abs(np.log(te["latency_ms"].to_numpy() / _seen_ms(seen, corr, te, prior))))
            hw.append(te["hardware"].to_numpy())
        resid, hw = np.concatenate(resid), np.concatenate(hw)
        by_hw = {h: conformal_q(resid[hw == h], self.interval) for h in np.unique(hw) if (hw == h).sum() >= 50}
        # A GPU profiled for one model has no residuals here (its fold leaves it nothing to
        # train on); a new model there errs at least like on the worst-known GPU.
        for h in set(rows.loc[rows["model"].notna(), "hardware"]) - set(by_hw):
            if by_hw:
                by_hw[h] = max(by_hw.values())
        per_model = set(variant_ids(kind, rows[rows["model"].notna()]))
        shape_only = set(variant_ids(kind, rows[rows["model"].isna()])) - per_model
        return conformal_q(resid, self.interval), frozenset(shape_only), by_hw

    # ---- prediction ---------------------------------------------------
    def predict(self, kind: str, shapes: pd.DataFrame, hw: HardwareSpec) -> Prediction:
        """Latency per row of ``shapes`` (shape columns, ``dtype``, ``kv_dtype``) on ``hw``."""
        km = self.kinds_.get(kind)
        n = len(shapes)
        if km is None:
            frame = attach_roofline(kind, shapes.reset_index(drop=True).assign(hardware=hw.name), hw)
            ms = RooflinePredictor().predict_ms(kind, frame, hw)
            return Prediction(ms, frame["t_roofline_ms"].to_numpy(dtype=float), np.full(n, np.nan),
                              np.full(n, "roofline-fallback", dtype=object),
                              f"no '{kind}' training data: spec-sheet roofline")
        seen = hw.name in km.hardware or km.transfer is None
        pipe = km.seen if seen else km.transfer
        frame = _query_frame(kind, km, shapes, hw, hw.name if seen else "*")
        floor = frame["t_roofline_ms"].to_numpy(dtype=float)
        if seen:  # the local correction only knows variants measured on this GPU
            ms = _seen_ms(pipe, getattr(km, "residual", None), frame, getattr(km, "stream_prior", None))
            qs = km.quantile(variant_ids(kind, frame), hw.name)
        else:
            memo: dict[str, np.ndarray] = {}  # measured GPUs' predictions, shared by bounds and anchor

            def measured(ref: HardwareSpec) -> np.ndarray:
                if ref.name not in memo:
                    memo[ref.name] = self.predict(kind, shapes, ref).ms
                return memo[ref.name]

            def transfer_on(ref: HardwareSpec) -> np.ndarray:
                return km.transfer.predict(_query_frame(kind, km, shapes, ref, "*"))
            ms, sibling = price_unseen(kind, hw, shapes, pipe.predict(frame), getattr(self, "specs_", {}),
                                       km.hardware, measured, transfer_on)
            qs = km.transfer_quantile(row_dtypes(frame), named_variants(kind, shapes, frame))
        inside = np.full(n, hw.name in km.hardware)  # a GPU never measured: all extrapolated
        if seen:
            # Shapes outside what this GPU was measured on, even where other GPUs' data
            # covers them: extrapolated (Vidur's A30 trained on one model's GEMMs flags half
            # of another model's: k 512-4096 where it had 3584 and up), with at least the
            # off-range interval (what widens is a shape-grid kernel's narrow one; per-model
            # kernels have it already). Surrogates pickled before per-GPU ranges: pooled ones.
            off = ~_within(frame, getattr(km, "hw_ranges", {}).get(hw.name, km.ranges))
            inside &= ~off
            qs = np.where(off, np.maximum(qs, km.off_range_quantile()), qs)
        if "dtype" in frame:
            inside &= frame["dtype"].fillna("bf16").astype(str).isin(km.dtypes).to_numpy()
        if seen and getattr(km, "variants", None):  # a named kernel must have run on this GPU
            named = np.zeros(n, bool)
            for c in ("stack", "kernel"):
                if c in frame:
                    named |= frame[c].notna().to_numpy()
            inside &= ~named | np.isin(variant_ids(kind, frame), list(km.variants))
        prov = np.where(inside, "trained", "extrapolated").astype(object)
        note = "" if seen else (
            f"{hw.name} has no '{kind}' training data: transfer model from its spec sheet" + anchored_note(sibling))
        return Prediction(ms, np.maximum(ms * np.exp(-qs), floor), ms * np.exp(qs), prov, note)

    def sibling(self, hw: HardwareSpec, measured, dtypes=("bf16",), link: bool = False) -> Sibling | None:
        """The measured GPU (of ``measured``) that ``hw`` is anchored to, and the weight
        (``transfer.nearest_sibling`` over this model's spec sheets)."""
        return nearest_sibling(hw, getattr(self, "specs_", {}), measured, dtypes, link)

    def predict_ms(self, kind: str, shapes: pd.DataFrame, hw: HardwareSpec) -> np.ndarray:
        return self.predict(kind, shapes, hw).ms

    def trained_hardware(self) -> list[str]:
        return sorted(set().union(*(k.hardware for k in self.kinds_.values()))) if self.kinds_ else []

    def describe_hardware(self, hw: HardwareSpec) -> str:
        """One line saying how this model predicts ``hw``."""
        kinds = [k for k, m in self.kinds_.items() if hw.name in m.hardware]
        if kinds:
            return f"{hw.name}: trained on its traces for {', '.join(kinds)}"
        return (f"{hw.name}: no training data; transfer model from its spec sheet (provenance 'extrapolated')"
                + anchored_note(self.sibling(hw, self.trained_hardware())))

    # ---- persistence --------------------------------------------------
    def save(self, directory: str | Path, manifest: dict | None = None) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for km in self.kinds_.values():  # compacted trees: under half the bytes, same predictions to 0.1%
            for pipe in (km.seen, km.transfer):
                if pipe is not None:
                    pipe.named_steps["regressor"].compact()
        # xz: the residual store is float tables, a third smaller than zlib level 3; loads in ~0.3 s
        # written aside and renamed: an interrupted save keeps the previous model whole
        with atomic_path(d / MODEL_FILE) as tmp:
            joblib.dump(self, tmp, compress=("xz", 6))
        info = {"estimator": self.estimator, "params": self.params,
                "seen_params": getattr(self, "seen_params", {}), "interval": self.interval,
                "kinds": {k: {"n_train": m.n_train, "hardware": sorted(m.hardware), "dtypes": sorted(m.dtypes),
                              "q_seen": m.q_seen, "q_transfer": m.q_transfer,
                              "q_transfer_by": getattr(m, "q_transfer_by", {}),
                              "q_model": getattr(m, "q_model", float("nan")),
                              "q_model_hw": getattr(m, "q_model_hw", {}),
                              "residual_rows": m.residual.n_stored() if getattr(m, "residual", None) else 0,
                              "engine_kernels": {f"{h} {d}": f"{st} {k}".strip()
                                                 for (h, d), (st, k) in getattr(m, "engine_kernels", {}).items()}}
                          for k, m in self.kinds_.items()},
                **(manifest or {})}
        write_text_atomic(d / MANIFEST_FILE, json.dumps(info, indent=2, default=str))
        return d

    @staticmethod
    def load(directory: str | Path) -> "SurrogateModel":
        path = Path(directory) / MODEL_FILE
        if not path.is_file():
            raise HermesError(f"{directory}: no surrogate here (missing {MODEL_FILE})")
        try:
            obj = joblib.load(path)
        except Exception as e:  # unpickling foreign bytes raises any type (EOFError, KeyError, ...)
            raise HermesError(f"{path}: not a HERMES surrogate, or truncated ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'no detail'})") from None
        if not isinstance(obj, SurrogateModel):
            raise HermesError(f"{path}: not a HERMES surrogate")
        return obj
