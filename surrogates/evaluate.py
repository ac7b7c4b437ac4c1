"""Honest accuracy: grouped hold-outs, never random rows.

* ``unseen_shape`` — 20% of the distinct shapes (on every GPU and dtype at once) held out;
* ``unseen_model`` — leave one model's Vidur profile out (shapes of an unseen model);
* ``unseen_gpu``  — leave one GPU out (bf16/fp16 rows: the AIConfigurator tables' GEMMs,
  attention and all-reduce, Vidur's elementwise ops), predicted from its spec sheet by the
  transfer model; each fold trains only the kinds its GPU is scored on;
* ``unseen_gpu_fp8`` — the same for fp8 GEMMs, each GPU's fp8 rows predicted by a model
  trained on every GEMM (all dtypes) of the other GPUs, as the shipped bundle is.

Every hold-out is scored for each estimator (and, for unseen GPUs, the copy-the-nearest-
GPU baseline) as ``{estimator: {kind: {hardware: metrics}}}``; ``accuracy_table`` scores a
fitted model on a table as ``{kind: {hardware: metrics}}``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from profiling.hardware import load_catalog

from .estimators import ESTIMATORS
from .model import SurrogateModel, shape_groups

HOLDOUTS = ("unseen_shape", "unseen_model", "unseen_gpu", "unseen_gpu_fp8")
TRANSFER_HOLDOUTS = ("unseen_gpu", "unseen_gpu_fp8")  # a GPU never measured: spec-sheet transfer
Progress = Callable[[str], None]
_SHAPE_KINDS = ("gemm", "attn_prefill", "attn_decode")
_GPU_KINDS = ("gemm", "attn_prefill", "attn_decode", "collective", "elementwise")


def level_scale(y: np.ndarray, pred: np.ndarray) -> float:
    """The one factor that best puts ``pred`` on ``y``'s level: exp(median log(y / pred))."""
    ok = np.isfinite(pred) & (pred > 0)
    return float(np.exp(np.median(np.log(y[ok] / pred[ok])))) if ok.any() else float("nan")


def metrics(y: np.ndarray, pred: np.ndarray, lo: np.ndarray | None = None,
            hi: np.ndarray | None = None, level_scaled: np.ndarray | None = None) -> dict[str, float]:
    """MAPE, median and p90 absolute percentage error (%), Pearson r, n, interval coverage,
    and ``mape_level_known``: the MAPE left once the predictions are put on the measured
    level by one factor fitted on these very rows (``level_scale``; ``level_scaled`` gives
    predictions already rescaled, per GPU when rows of several are pooled). An oracle, not
    a model: on an unseen GPU it splits the error into the GPU's overall level, which a
    few measurements would fix, and the shape of its efficiency curve, which they would not."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    ok = np.isfinite(pred)
    scaled = pred * level_scale(y, pred) if level_scaled is None else np.asarray(level_scaled, float)
    y, pred, scaled = y[ok], pred[ok], scaled[ok]
    ape = np.abs(pred - y) / y * 100
    out = {"mape": float(ape.mean()) if len(y) else float("nan"),
           "mape_level_known": float(np.mean(np.abs(scaled - y) / y) * 100) if len(y) else float("nan"),
           "median_ape": float(np.median(ape)) if len(y) else float("nan"),
           "p90_ape": float(np.quantile(ape, 0.9)) if len(y) else float("nan"),
           "r": float(np.corrcoef(y, pred)[0, 1]) if len(y) > 2 and np.std(pred) > 0 else float("nan"),
           "n": int(len(y))}
    if lo is not None and hi is not None:
        lo, hi = np.asarray(lo, float)[ok], np.asarray(hi, float)[ok]
        if np.isfinite(hi).all():
            out["coverage"] = float(np.mean((y >= lo) & (y <= hi)))
    return out


def _predict_table(model: SurrogateModel, table: pd.DataFrame):
    """Yield (kind, hardware, rows, Prediction) for every group of a table."""
    cat = load_catalog()
    for (kind, hw), rows in table.groupby(["op", "hardware"], sort=True):
        if hw not in cat:
            continue
        shapes = rows.drop(columns=[c for c in ("latency_ms",) if c in rows])
        yield kind, cat.get(hw).name, rows, model.predict(kind, shapes, cat.get(hw))


def accuracy_table(model: SurrogateModel, table: pd.DataFrame) -> dict[str, dict[str, dict]]:
    """``{kind: {hardware: metrics}}`` of ``model`` on the rows of ``table``."""
    out: dict[str, dict[str, dict]] = {}
    for kind, hw, rows, p in _predict_table(model, table):
        out.setdefault(kind, {})[hw] = metrics(rows["latency_ms"].to_numpy(), p.ms, p.lo_ms, p.hi_ms)
    return out


def _merge(acc: dict, kind: str, hw: str, y, pred, lo=None, hi=None) -> None:
    """Accumulate per-(kind, hw) arrays across folds; metrics are computed at the end."""
    slot = acc.setdefault(kind, {}).setdefault(hw, {"y": [], "p": [], "lo": [], "hi": []})
    slot["y"].append(np.asarray(y, float))
    slot["p"].append(np.asarray(pred, float))
    n = len(slot["y"][-1])
    slot["lo"].append(np.asarray(lo, float) if lo is not None else np.full(n, np.nan))
    slot["hi"].append(np.asarray(hi, float) if hi is not None else np.full(n, np.nan))


def _finish(acc: dict) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for kind, by_hw in acc.items():
        ys = {h: {k: np.concatenate(v) for k, v in s.items()} for h, s in by_hw.items()}
        for h, s in ys.items():
            out.setdefault(kind, {})[h] = metrics(s["y"], s["p"], s["lo"], s["hi"])
        if len(ys) > 1:
            all_ = {k: np.concatenate([s[k] for s in ys.values()]) for k in ("y", "p", "lo", "hi")}
            scaled = np.concatenate([s["p"] * level_scale(s["y"], s["p"]) for s in ys.values()])
            out[kind]["all"] = metrics(all_["y"], all_["p"], all_["lo"], all_["hi"], level_scaled=scaled)
    return out


def _score(acc: dict, model: SurrogateModel, test: pd.DataFrame) -> None:
    for kind, hw, rows, p in _predict_table(model, test):
        _merge(acc, kind, hw, rows["latency_ms"].to_numpy(), p.ms, p.lo_ms, p.hi_ms)


def _folds(table: pd.DataFrame, holdout: str, seed: int):
    """(name, train, test) frames of a hold-out."""
    if holdout == "unseen_shape":
        t = table[table["op"].isin(_SHAPE_KINDS)]
        test = np.zeros(len(t), bool)
        rng = np.random.default_rng(seed)
        for kind in t["op"].unique():
            m = (t["op"] == kind).to_numpy()
            g = shape_groups(t[m], kind)
            u = np.unique(g)
            test[np.flatnonzero(m)[np.isin(g, rng.choice(u, max(1, len(u) // 5), replace=False))]] = True
        yield "20% of shapes", t[~test], t[test]
    elif holdout == "unseen_model":
        t = table[table["model"].notna() & table["op"].isin(("gemm", "elementwise"))]
        for name in sorted(t["model"].unique()):
            yield name, t[t["model"] != name], t[t["model"] == name]
    elif holdout == "unseen_gpu":
        t = table[table["op"].isin(_GPU_KINDS) & table["dtype"].isin(("bf16", "fp16"))]  # NCCL "half"
        t = t[(t["op"] != "collective") | (t["collective"] == "all_reduce")]
        for hw in sorted(t["hardware"].unique()):
            test = t[t["hardware"] == hw]
            yield hw, t[(t["hardware"] != hw) & t["op"].isin(test["op"].unique())], test
    elif holdout == "unseen_gpu_fp8":
        t = table[table["op"] == "gemm"]
        for hw in sorted(t.loc[t["dtype"] == "fp8", "hardware"].unique()):
            yield hw, t[t["hardware"] != hw], t[(t["hardware"] == hw) & (t["dtype"] == "fp8")]
    else:
        raise ValueError(f"unknown hold-out '{holdout}' (known: {', '.join(HOLDOUTS)})")


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    """Shape keys that merge: missing values as -1 (NaN never equals NaN), kept as objects."""
    return frame.astype(object).where(frame.notna(), -1)


def nearest_gpu(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """Baseline: the same shape's latency on the training GPU closest in spec sheet."""
    cat = load_catalog()
    hw = cat.get(test["hardware"].iloc[0])
    spec = lambda h: np.array([np.log(h.peak_flops("bf16")), np.log(h.mem_bw)])  # noqa: E731
    order = sorted(train["hardware"].unique(), key=lambda h: float(np.linalg.norm(spec(cat.get(h)) - spec(hw))))
    keys = [c for c in ("op", "m", "n", "k", "batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim",
                        "window", "msg_bytes", "world", "collective", "dtype", "kv_dtype") if c in test]
    pred = np.full(len(test), np.nan)
    t = _keyed(test[keys]).reset_index(drop=True)
    for h in order:
        ref = train[train["hardware"] == h]
        ref = _keyed(ref[keys]).assign(latency_ms=ref["latency_ms"]).groupby(keys, as_index=False)["latency_ms"].median()
        got = t.merge(ref, on=keys, how="left")["latency_ms"].to_numpy()
        pred = np.where(np.isnan(pred), got, pred)
    return pred


def holdout_study(table: pd.DataFrame, holdout: str, estimators=ESTIMATORS, max_rows: int = 20000,
                  seed: int = 0, params: dict | None = None, seen_params: dict | None = None,
                  progress: Progress | None = None) -> dict[str, dict[str, dict[str, dict]]]:
    """``{estimator: {kind: {hardware: metrics}}}`` for one grouped hold-out."""
    acc: dict[str, dict] = {}
    for name, train, test in _folds(table, holdout, seed):
        for est in estimators:
            if progress:
                progress(f"{holdout}: {name} / {est}")
            xgb = est == "xgboost"
            model = SurrogateModel(est, dict(params or {}) if xgb else {}, max_rows=max_rows,
                                   seen_params=dict(seen_params or {}) if xgb else {},
                                   random_state=seed, transfer=holdout in TRANSFER_HOLDOUTS)
            model.fit(train)
            _score(acc.setdefault(est, {}), model, test)
        if holdout in TRANSFER_HOLDOUTS:
            for kind, part in test.groupby("op"):
                p = nearest_gpu(train[train["op"] == kind], part)
                _merge(acc.setdefault("nearest-gpu", {}), kind, part["hardware"].iloc[0],
                       part["latency_ms"].to_numpy(), p)
    return {est: _finish(a) for est, a in acc.items()}
