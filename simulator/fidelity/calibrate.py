"""Fit the framework-overhead model to end-to-end measurements, one set per serving stack
and GPU (``SiliconRow.group``, e.g. ``vllm/h100_sxm``).

Step time is ``kernel_scale * kernels + step_s + per_seq_s * seqs``, so a request's TPOT
is linear in the three parameters given the step mix it lived through:
``tpot ~ kernel_scale * K + step_s + per_seq_s * seqs`` with ``K`` the kernel-only TPOT.
``kernel_scale`` stands for what the isolated (AIConfigurator-style) kernel timings miss
when the engine replays them fused and back-to-back in a CUDA graph; ``kernel_scale=False``
keeps it at 1 so only the additive terms are fitted. Under async scheduling (an engine
block that overlaps host work with the previous step's kernels) the host terms are hidden
and only the kernel factor moves TPOT, so there it is what is fitted. Each group starts
from what its uncalibrated replay uses (the engine's shipped profile, if any). Non-negative least
squares on the calibration rows' TPOT (relative error), re-simulated a few times until the
step mix settles. The per-token term is not identifiable from decode steps and stays 0;
the front-end ``request_s`` is the (relative-error) median TTFT shortfall. The front end's
per-streamed-token time ``stream_token_s`` shows only in TTFT once the token rate nears
its capacity, so it is not solved for: a few values (``STREAM_GRID``) are simulated on top
of the best fit. Each group keeps the simulated round that scored best (TTFT + TPOT
relative error on its calibration rows), so the defaults win when no fit improves on them.

Where a benchmark harness did not record its engine settings (AIConfigurator's generated
configs: a token budget that is some multiple of the prompt length, and how many
sequences the engine runs against its clients), ``fit_engines`` picks them per group
(there one model at one TP on one stack and GPU) from ``ENGINE_GRID`` on the calibration rows,
before the overhead fit.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError
from scipy.optimize import nnls

from profiling.atomicfile import write_text_atomic
from profiling.errors import InputError
from profiling.jsonfile import read_json

from ..scenario import OverheadConfig
from .silicon import SiliconRow, mape, with_engine
from ..simulate import simulate

# Front-end seconds per streamed token tried per group (0, the fitted rounds, included):
# 1/rate at which a single Python API-server process saturates, 8k-25k tokens/s.
STREAM_GRID = (40e-6, 80e-6, 120e-6)


@dataclass(frozen=True)
class RowResult:
    id: str
    group: str                      # serving stack / GPU
    ttft_pred: float
    tpot_pred: float
    ttft_meas: float
    tpot_meas: float
    x: tuple[float, float, float]   # mean per decode step: 1, sequences, tokens
    rejected: str = ""              # requests of the row the simulation could not serve, and why
    asyn: bool = False              # the engine overlaps host work with kernels (async scheduling)


def _with_overhead(r: SiliconRow, overhead: dict[str, OverheadConfig] | None):
    sc = r.scenario
    oh = None if overhead is None else overhead.get(r.group)
    if oh is not None:
        dep = sc.deployments[0].model_copy(update={"overhead": oh})
        sc = sc.model_copy(update={"deployments": [dep]})
    return sc


def run_row(r: SiliconRow, overhead: dict[str, OverheadConfig] | None = None) -> RowResult:
    """Simulate one supported row; also the mean step mix the overhead model multiplies.
    Means are over the measured requests: all of them, the first wave (all clients at t=0)
    included, as a benchmark client reports them, unless the row's protocol names warm-up
    requests (the first ``r.warmup`` by arrival), which are left out."""
    res = simulate(_with_overhead(r, overhead))
    df = res.requests
    if r.warmup:
        df = df.sort_values("arrival_s", kind="stable").iloc[r.warmup:]
    steps = np.concatenate(list(res.steps.values()))
    dec = steps[steps[:, 2] > 0]
    seqs = dec[:, 2] + (dec[:, 3] > 0)
    x = (1.0, float(seqs.mean()), float((dec[:, 2] + dec[:, 3]).mean())) if len(dec) else (1.0, 1.0, 1.0)
    lost = res.requests.rejected[res.requests.rejected != ""]
    why = f"{len(lost)} of {len(res.requests)} requests not simulated ({lost.iloc[0]})" if len(lost) else ""
    return RowResult(r.id, r.group, float(df.ttft_s.mean()), float(df.tpot_s.mean()), r.ttft_s, r.tpot_s, x, why,
                     _async(r.scenario))


def _async(sc) -> bool:
    from ..engine.engines import resolve_for
    d = sc.deployments[0]
    return d.engine is not None and resolve_for(d.engine, d.model, d.hardware, d.tp, d.pp, d.dtype).async_scheduling


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
                 history: list | None = None, kernel_scale: bool = False,
                 stream_grid: tuple[float, ...] = STREAM_GRID,
                 scores: dict[str, float] | None = None) -> dict[str, OverheadConfig]:
    """Overhead parameters per ``group`` (stack/GPU) from the TPOT and TTFT of ``rows``
    (each iteration's row results are appended to ``history``; the first uses defaults).
    By default the kernel times stay as the surrogate gives them (factor 1) and only the
    additive per-step / per-sequence / per-request terms are fitted; ``kernel_scale=True``
    also fits the kernel-replay factor (for a surrogate known to be biased on a GPU).
    Then each ``stream_grid`` value is simulated on top of each group's best set.
    ``scores`` receives each group's best score (``_score``)."""
    groups = sorted({r.group for r in rows if r.scenario is not None})
    # start from what an uncalibrated replay of the group uses (its engine's shipped profile, if any)
    start = {r.group: r.scenario.deployments[0].overhead for r in reversed(rows) if r.scenario is not None}
    theta = {g: start[g] for g in groups}
    best: dict[str, tuple[float, OverheadConfig]] = {}
    for _ in range(iterations):
        results = run_rows(rows, theta, processes=processes)
        if history is not None:
            history.append(results)
        for g in groups:   # keep each group's best simulated parameter set (TTFT + TPOT error)
            mine = [r for r in results if r.group == g]
            score = _score(mine)
            if g not in best or score < best[g][0]:
                best[g] = (score, theta[g])
        theta = {g: _fit_group([r for r in results if r.group == g], theta[g], kernel_scale) for g in groups}
    fitted = {g: best[g][1] for g in groups}
    for c in stream_grid:
        trial = {g: th.model_copy(update={"stream_token_s": c}) for g, th in fitted.items()}
        results = run_rows(rows, trial, processes=processes)
        if history is not None:
            history.append(results)
        for g in groups:
            score = _score([r for r in results if r.group == g])
            if score < best[g][0]:
                best[g] = (score, trial[g])
    if scores is not None:
        scores.update({g: best[g][0] for g in groups})
    return {g: best[g][1] for g in groups}


@dataclass(frozen=True)
class EngineFit:
    """Engine settings a harness ran with but did not record, fitted per group."""

    prompts_per_step: int       # token budget = this x isl
    held_slots: int = 0         # sequences below the clients the engine runs at most


# Engine settings tried where a harness did not record them: token budgets of k x isl
# (AIConfigurator's agg configs: k x isl candidates), with the engine running as many
# sequences as clients or one fewer (a slot freed only when another request finishes).
ENGINE_GRID = tuple(EngineFit(k, h) for h in (0, 1) for k in (2, 3, 4, 6))


def fit_engines(rows: list[SiliconRow], grid: tuple[EngineFit, ...] = ENGINE_GRID, iterations: int = 2,
                processes: int = 1) -> dict[str, EngineFit]:
    """Unrecorded engine settings per group of the rows that have them
    (``SiliconRow.budget_isl``; in the AIC harness a group is one model at one TP on one
    stack and GPU): for each candidate of ``grid`` the overhead is fitted on ``rows`` replayed with
    it, and each group keeps the candidate whose fit scores best on them (ties: the earlier
    one). The overhead itself is then fitted by ``fit_overhead`` with the settings chosen."""
    todo = [r for r in rows if r.budget_isl and r.scenario is not None]
    best: dict[str, tuple[float, EngineFit]] = {}
    for e in grid:
        scores: dict[str, float] = {}
        fit_overhead([with_engine(r, e.prompts_per_step, e.held_slots) for r in todo], iterations=iterations,
                     processes=processes, scores=scores)
        for g, sc in scores.items():
            if g not in best or sc < best[g][0]:
                best[g] = (sc, e)
    return {g: e for g, (_, e) in sorted(best.items())}


def apply_engines(rows: list[SiliconRow], engines: dict[str, EngineFit] | None) -> list[SiliconRow]:
    """``rows`` with their group's fitted engine settings (others unchanged)."""
    if not engines:
        return list(rows)
    return [with_engine(r, engines[r.group].prompts_per_step, engines[r.group].held_slots)
            if r.group in engines else r for r in rows]


def _score(rs: list[RowResult]) -> float:
    """Mean relative TTFT error + mean relative TPOT error of simulated rows."""
    t = np.mean([abs(r.ttft_pred - r.ttft_meas) / r.ttft_meas for r in rs])
    p = np.mean([abs(r.tpot_pred - r.tpot_meas) / r.tpot_meas for r in rs])
    return float(t + p)


def _fit_group(rs: list[RowResult], th: OverheadConfig, fit_scale: bool = True) -> OverheadConfig:
    x = np.array([r.x for r in rs])
    over = x @ np.array([th.step_s, th.per_seq_s, th.per_token_s])
    kern = (np.array([r.tpot_pred for r in rs]) - over) / th.kernel_scale   # kernel-only TPOT
    y = np.array([r.tpot_meas for r in rs])
    w = 1.0 / y                                                           # relative error
    if any(r.asyn for r in rs):
        # host work hides behind the kernels, so it is not additive: only the kernel factor
        # moves TPOT (fitted whatever fit_scale says), the host terms keep their values
        kern = np.array([r.tpot_pred for r in rs]) / th.kernel_scale
        coef, _ = nnls(kern[:, None] * w[:, None], y * w)
        ks = float(coef[0]) if coef[0] > 0 else th.kernel_scale
        gap = np.array([r.ttft_meas - (r.ttft_pred - th.request_s) for r in rs])
        req = max(_weighted_median(gap, 1.0 / np.array([r.ttft_meas for r in rs])), 0.0)
        return th.model_copy(update={"kernel_scale": ks, "request_s": req})
    if fit_scale:
        A = np.column_stack([kern, x[:, 0], x[:, 1]])
        coef, _ = nnls(A * w[:, None], y * w)
        ks = float(coef[0]) if coef[0] > 0 else th.kernel_scale
    else:   # kernels as given: only the additive terms absorb the gap
        coef, _ = nnls(x[:, :2] * w[:, None], (y - kern) * w)
        coef, ks = np.concatenate([[1.0], coef]), 1.0
    # front-end latency: the median TTFT shortfall, never negative. In a closed loop with
    # fixed lengths the delay also shifts arrivals against the step grid (prompts that
    # would have joined a running step wait for the next), so TTFT can move by more than
    # the delay; the best-round selection in ``fit_overhead`` guards against that.
    gap = np.array([r.ttft_meas - (r.ttft_pred - th.request_s) for r in rs])
    req = max(_weighted_median(gap, 1.0 / np.array([r.ttft_meas for r in rs])), 0.0)
    return OverheadConfig(step_s=float(coef[1]), per_seq_s=float(coef[2]), per_token_s=0.0,
                          request_s=req, kernel_scale=ks)


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    """Minimizer of sum w*|x - c| (relative error when w = 1/measured)."""
    o = np.argsort(x)
    cw = np.cumsum(w[o])
    return float(x[o][np.searchsorted(cw, cw[-1] / 2)])


def report(results: list[RowResult], source: str = "silicon rows") -> dict:
    """Rows predicted vs measured and the MAPE of each metric; ``source`` (the measurements
    file) names the comparison when no row has both a prediction and a measurement."""
    df = pd.DataFrame([r.__dict__ for r in results])
    if df.empty:
        return {"rows": [], "ttft_mape": None, "tpot_mape": None}
    lost = [{"id": r.id, "reason": r.rejected} for r in results if r.rejected]
    return {"rows": df.drop(columns=["x", "rejected"]).to_dict("records"), "unsupported": lost,
            "ttft_mape": mape(df.ttft_pred, df.ttft_meas, f"{source} (mean TTFT per row, simulated vs measured)"),
            "tpot_mape": mape(df.tpot_pred, df.tpot_meas, f"{source} (mean TPOT per row, simulated vs measured)")}


def split_rows(rows: list[SiliconRow], fraction: float, seed: int) -> tuple[list, list]:
    """Seeded random ``fraction`` of each stack/GPU group (at least one row) to fit the
    overhead on, and the rest to measure the error on."""
    rng = np.random.default_rng(seed)
    calib, held = [], []
    for g in sorted({r.group for r in rows}):
        mine = [r for r in rows if r.group == g]
        k = max(1, int(round(fraction * len(mine))))
        pick = set(rng.choice(len(mine), size=k, replace=False).tolist())
        calib += [r for i, r in enumerate(mine) if i in pick]
        held += [r for i, r in enumerate(mine) if i not in pick]
    return calib, held


def save_overhead(theta: dict[str, OverheadConfig], path: str | Path,
                  engines: dict[str, EngineFit] | None = None) -> None:
    """Fitted overhead per stack/GPU group as JSON (``load_overhead`` reads it back): each
    value of ``overhead`` is a scenario's ``overhead:`` block; ``engine`` holds the fitted
    engine settings of the groups that have them."""
    doc = {"overhead": {g: th.model_dump() for g, th in sorted(theta.items())},
           "engine": engine_doc(engines)}
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")


def engine_doc(engines: dict[str, EngineFit] | None) -> dict[str, dict[str, int]]:
    """Fitted engine settings per group as plain JSON (the overhead file's ``engine``)."""
    return {g: asdict(e) for g, e in sorted((engines or {}).items())}


def _engine(v: object, path, where: str) -> EngineFit:
    ok = isinstance(v, dict) and set(v) == {"prompts_per_step", "held_slots"} and all(
        isinstance(x, int) and not isinstance(x, bool) for x in v.values())
    if not ok or v["prompts_per_step"] < 1 or v["held_slots"] < 0:
        raise InputError("needs integers prompts_per_step >= 1 and held_slots >= 0", file=path, column=where)
    return EngineFit(v["prompts_per_step"], v["held_slots"])


def load_overhead(path: str | Path) -> tuple[dict[str, OverheadConfig], dict[str, EngineFit]]:
    """Overhead and engine settings per stack/GPU group from a
    ``save_overhead`` file (or a bare group -> overhead mapping); errors name the group
    and field."""
    doc = read_json(path, "overhead file")
    if isinstance(doc, dict) and isinstance(doc.get("overhead"), dict):
        groups, engine = doc["overhead"], doc.get("engine") or {}
        if set(doc) - {"overhead", "engine"} or not isinstance(engine, dict):
            raise InputError("must hold 'overhead' and 'engine' (each per stack/GPU group) only", file=path)
    elif isinstance(doc, dict):
        groups, engine = doc, {}
    else:
        raise InputError("must map stack/GPU groups to overhead parameters", file=path)
    theta = {}
    for g, v in groups.items():
        try:
            theta[str(g)] = OverheadConfig.model_validate(v)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(x) for x in err["loc"]) or "(value)"
            raise InputError(f"{err['msg']}", file=path, column=f"{g}.{field}") from None
    return theta, {str(g): _engine(v, path, f"engine.{g}") for g, v in engine.items()}
