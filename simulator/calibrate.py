"""Fit the framework-overhead model to end-to-end measurements, one set per serving stack.

The overhead enters every step linearly, so a request's TPOT moves by the overhead of
the steps it lived through: ``tpot ~ tpot_without + step_s + per_seq_s*seqs`` (averaged
over its steps): non-negative least squares on the calibration rows' TPOT, re-simulated a
few times until the step mix settles. The per-token term is not identifiable from decode
steps and is left at 0; the front-end ``request_s`` is the (relative-error) median TTFT
shortfall.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from .scenario import OverheadConfig
from .silicon import SiliconRow, mape
from .simulate import simulate


@dataclass(frozen=True)
class RowResult:
    id: str
    backend: str
    ttft_pred: float
    tpot_pred: float
    ttft_meas: float
    tpot_meas: float
    x: tuple[float, float, float]   # mean per decode step: 1, sequences, tokens


def _with_overhead(r: SiliconRow, overhead: dict[str, OverheadConfig] | None):
    sc = r.scenario
    if overhead is not None and r.backend in overhead:
        dep = sc.deployments[0].model_copy(update={"overhead": overhead[r.backend]})
        sc = sc.model_copy(update={"deployments": [dep]})
    return sc


def run_row(r: SiliconRow, overhead: dict[str, OverheadConfig] | None = None) -> RowResult:
    """Simulate one supported row; also the mean step mix the overhead model multiplies.
    Means are over all requests, the first wave (all clients at t=0) included, as a
    benchmark client reports them."""
    res = simulate(_with_overhead(r, overhead))
    df = res.requests
    steps = np.concatenate(list(res.steps.values()))
    dec = steps[steps[:, 2] > 0]
    seqs = dec[:, 2] + (dec[:, 3] > 0)
    x = (1.0, float(seqs.mean()), float((dec[:, 2] + dec[:, 3]).mean())) if len(dec) else (1.0, 1.0, 1.0)
    return RowResult(r.id, r.backend, float(df.ttft_s.mean()), float(df.tpot_s.mean()), r.ttft_s, r.tpot_s, x)


def run_rows(rows: list[SiliconRow], overhead: dict[str, OverheadConfig] | None = None,
             progress=None, processes: int = 1) -> list[RowResult]:
    """Simulate each supported row (with ``overhead`` per backend when given)."""
    todo = [r for r in rows if r.scenario is not None]
    if processes > 1 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(processes) as ex:
            out = []
            for i, res in enumerate(ex.map(run_row, todo, [overhead] * len(todo), chunksize=4)):
                out.append(res)
                if progress:
                    progress((i + 1) / len(todo))
            return out
    out = []
    for i, r in enumerate(todo):
        out.append(run_row(r, overhead))
        if progress:
            progress((i + 1) / len(todo))
    return out


def fit_overhead(rows: list[SiliconRow], iterations: int = 3, processes: int = 1,
                 history: list | None = None) -> dict[str, OverheadConfig]:
    """Overhead parameters per backend from the TPOT of ``rows`` (each iteration's row
    results are appended to ``history`` when given; the first uses the defaults)."""
    backends = sorted({r.backend for r in rows if r.scenario is not None})
    theta = {b: OverheadConfig() for b in backends}
    for _ in range(iterations):
        results = run_rows(rows, theta, processes=processes)
        if history is not None:
            history.append(results)
        new = {}
        for b in backends:
            rs = [r for r in results if r.backend == b]
            # per-token cost is not identifiable from TPOT (decode steps carry ~1 token per
            # sequence), and fitting it there inflates prefill steps: fit step + per sequence
            X = np.array([r.x[:2] for r in rs])
            X_full = np.array([r.x for r in rs])
            base = np.array([r.tpot_pred for r in rs]) - X_full @ np.array(
                [theta[b].step_s, theta[b].per_seq_s, theta[b].per_token_s])   # TPOT with no overhead
            y = np.array([r.tpot_meas for r in rs]) - base
            w = 1.0 / np.array([r.tpot_meas for r in rs])           # relative error
            coef, _ = nnls(X * w[:, None], y * w)
            coef = np.append(coef, 0.0)
            # front-end latency: the median TTFT shortfall, never negative
            gap = np.array([r.ttft_meas - (r.ttft_pred - theta[b].request_s) for r in rs])
            req = max(_weighted_median(gap, 1.0 / np.array([r.ttft_meas for r in rs])), 0.0)
            new[b] = OverheadConfig(step_s=float(coef[0]), per_seq_s=float(coef[1]),
                                    per_token_s=float(coef[2]), request_s=req)
        theta = new
    return theta


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    """Minimizer of sum w*|x - c| (relative error when w = 1/measured)."""
    o = np.argsort(x)
    cw = np.cumsum(w[o])
    return float(x[o][np.searchsorted(cw, cw[-1] / 2)])


def report(results: list[RowResult]) -> dict:
    df = pd.DataFrame([r.__dict__ for r in results])
    if df.empty:
        return {"rows": [], "ttft_mape": None, "tpot_mape": None}
    return {"rows": df.drop(columns=["x"]).to_dict("records"),
            "ttft_mape": mape(df.ttft_pred, df.ttft_meas), "tpot_mape": mape(df.tpot_pred, df.tpot_meas)}
