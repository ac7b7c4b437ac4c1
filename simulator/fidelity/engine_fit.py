"""One engine calibration per engine: the engine's parameters (``OverheadConfig`` fields)
fitted by replaying real serving runs with the simulator in the loop, saved as an engine
profile a scenario names (``engine: {name: vllm, profile: FILE}``).

The parameters are the engine's own, the same on every GPU, model and run: per-step,
per-sequence and per-token host work (hidden behind the kernels when the engine schedules
asynchronously), the front end's per-request and per-streamed-token time, and the factor
between isolated kernel timings and the same kernels replayed in a CUDA graph. What differs
by GPU comes from the spec sheet through the rest of the engine model, not from the fit: the
kernel tables (the surrogate on that device), the engine's memory tiers and KV blocks, the
all-reduce it picks (custom kernels over NVLink or two PCIe peers, NCCL otherwise).

Two kinds of measurement are replayed (``Target``): serving runs request by request
(``Replay``: per-request E2E and TTFT MAPE) and ``silicon_sample.csv`` rows, closed loops
whose means are measured (``SiliconReplay``: TTFT and TPOT error of the means). Loss
(``LOSS``): each target's error, capped at 100% so one pathological row cannot steer the
fit, averaged per GPU, then over GPUs (a GPU with many rows weighs as much as one with
few: the profile must transfer to the next GPU); a request the simulation could not serve
counts as 100% error. Optuna's TPE sampler (seeded) proposes parameter sets; the engine's
defaults are the first trial, so a fit never ends worse than the defaults on its own runs.
Runs are split whole (``cross_validate``): a figure is never measured on a run it was
fitted on.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from profiling.atomicfile import write_text_atomic
from profiling.errors import InputError
from profiling.readers.runs import ServingRun

from ..engine.config import OverheadConfig
from ..engine.engines import (
    PROFILE_FORMAT,
    engine_defaults,
    load_profile,
    parse_version,
    version_entry,
)
from ..scenario import Scenario
from .calibrate import run_row
from .runs import replay_scenario, scenario_for_run
from .silicon import SiliconRow

LOSS = ("mean over GPUs of the mean over that GPU's targets of min(100, error), in %; error = "
        "(per-request E2E MAPE + per-request TTFT MAPE) / 2 for a run, (|TTFT error| + |TPOT error|) / 2 "
        "of the means for a silicon row")
CAP = 100.0
# Search space per parameter: (low, high, log scale). Host times span decades (a C++
# scheduler's microseconds to a Python one's milliseconds), so they are searched in log.
SPACE: dict[str, tuple[float, float, bool]] = {
    "kernel_scale": (0.5, 1.6, False),
    "step_s": (1e-5, 3e-2, True),
    "per_seq_s": (1e-7, 3e-4, True),
    "per_token_s": (1e-9, 5e-6, True),
    "request_s": (1e-4, 0.3, True),
    "stream_token_s": (1e-7, 3e-4, True),
}
DEFAULT_TRIALS = 60
# A fit must lower its own loss by this share to replace the defaults: parameters that buy
# almost nothing on the fitting targets are moved by noise, and on other runs they hurt.
MIN_GAIN = 0.02


def run_label(run: ServingRun) -> str:
    """A short name of a run: GPU/model (and the source file's name when that is not unique)."""
    i = run.info
    return f"{i.gpu}/{i.model.rsplit('/', 1)[-1]}" if i.gpu and i.model else Path(i.source).name


def first_requests(run: ServingRun, n: int | None) -> ServingRun:
    """The run's first ``n`` requests by arrival (a time window at the recorded load; every
    request kept when ``n`` is None or not smaller)."""
    if n is None or n >= len(run.requests):
        return run
    df = run.requests.sort_values("arrival_s", kind="stable").iloc[:n].reset_index(drop=True)
    info = run.info.model_copy(update={"num_requests": len(df), "num_failed": int((~df["ok"]).sum())})
    return ServingRun(info, df)


# ---- replay -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Replay:
    """A run prepared for repeated simulation: its scenario and the recorded request stream."""

    label: str
    run: ServingRun
    scenario: Scenario

    @property
    def gpu(self) -> str:
        return self.run.info.gpu

    @property
    def engine(self) -> str:
        return self.run.info.engine

    @property
    def version(self) -> str:
        return self.run.info.engine_version

    @property
    def tp(self) -> int:
        return self.run.info.tp

    def ref(self) -> dict:
        return _run_ref(self.run)

    def score(self, overhead: OverheadConfig, seed: int = 0) -> RunScore:
        return score(self, overhead, seed)

    def with_overhead(self, overhead: OverheadConfig) -> Scenario:
        deps = [d.model_copy(update={"overhead": overhead}) for d in self.scenario.deployments]
        return self.scenario.model_copy(update={"deployments": deps})


def prepare(run: ServingRun, surrogate: str = "builtin") -> Replay:
    """Check that ``run`` can be replayed request by request (token counts, a completed request
    with TTFT and E2E) and build its scenario (``runs.scenario_for_run``)."""
    df = run.requests
    where = run.info.source or run_label(run)
    for c in ("prompt_tokens", "output_tokens"):
        if df[c].isna().all():
            raise InputError("no request records its token count: the run cannot be replayed", file=where,
                             column=c)
    done = df[df["ok"]]
    if done.empty or done["ttft_s"].isna().all() or done["e2e_s"].isna().all():
        raise InputError("no completed request records its TTFT and E2E: nothing to fit on", file=where,
                         column="e2e_s")
    return Replay(run_label(run), run, scenario_for_run(run, overhead=OverheadConfig(), surrogate=surrogate))


@dataclass(frozen=True)
class RunScore:
    """Per-request errors of one replayed run (%, completed requests)."""

    run: str
    gpu: str
    requests: int
    e2e_mape: float
    ttft_mape: float
    tpot_mape: float
    e2e_ratio: float          # mean simulated / mean measured E2E
    unserved: int             # measured-complete requests the simulation could not serve

    @property
    def loss(self) -> float:
        """(E2E + TTFT) / 2 for a run; (TTFT + TPOT) / 2 for a row that measures no E2E."""
        if math.isnan(self.e2e_mape):
            return (self.ttft_mape + self.tpot_mape) / 2
        return (self.e2e_mape + self.ttft_mape) / 2


def _ape(sim: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Absolute percentage error per request; a request not simulated counts 100%."""
    out = np.abs(sim - real) / np.maximum(real, 1e-9) * 100
    return np.where(np.isfinite(sim), out, 100.0)


def score(rep: Replay, overhead: OverheadConfig, seed: int = 0) -> RunScore:
    """Replay ``rep`` with ``overhead`` and compare each completed request with its measurement."""
    r = replay_scenario(rep.run, rep.with_overhead(overhead), seed=seed)
    ok = r.measured["ok"].to_numpy(bool)
    served = r.compared | ~ok
    cols = {}
    for c in ("e2e_s", "ttft_s", "tpot_s"):
        s = r.simulated[c].to_numpy(float).copy()
        s[~served] = np.nan
        m = r.measured[c].to_numpy(float)
        keep = ok & np.isfinite(m) & (m > 0)
        cols[c] = float(np.mean(_ape(s[keep], m[keep]))) if keep.any() else math.nan
    both = r.compared & np.isfinite(r.measured["e2e_s"].to_numpy(float))
    real_e2e = r.measured["e2e_s"].to_numpy(float)[both]
    ratio = float(r.simulated["e2e_s"].to_numpy(float)[both].mean() / real_e2e.mean()) \
        if both.any() and real_e2e.mean() > 0 else math.nan
    return RunScore(rep.label, rep.run.info.gpu, len(r.measured), cols["e2e_s"], cols["ttft_s"], cols["tpot_s"],
                    ratio, int((ok & ~served).sum()))


def _item_loss(sc: RunScore, row_metric: str) -> float:
    v = sc.tpot_mape if row_metric == "tpot" and math.isnan(sc.e2e_mape) else sc.loss
    return min(v, CAP) if math.isfinite(v) else CAP


def loss(scores: Sequence[RunScore], row_metric: str = "both") -> float:
    """``LOSS`` of replayed targets; ``row_metric='tpot'`` scores a silicon row by its TPOT
    alone (its TTFT also carries the harness's unrecorded client and front end)."""
    per_gpu: dict[str, list[float]] = {}
    for sc in scores:
        per_gpu.setdefault(sc.gpu, []).append(_item_loss(sc, row_metric))
    return float(np.mean([np.mean(v) for v in per_gpu.values()]))


@dataclass(frozen=True)
class SiliconReplay:
    """A ``silicon_sample.csv`` row prepared for repeated simulation (``silicon.silicon_rows``,
    replayed through its engine block)."""

    row: SiliconRow

    @property
    def label(self) -> str:
        return self.row.id

    @property
    def gpu(self) -> str:
        return self.row.system

    @property
    def engine(self) -> str:
        return self.row.backend

    @property
    def version(self) -> str:
        return self.row.scenario.deployments[0].engine.version

    @property
    def tp(self) -> int:
        return self.row.scenario.deployments[0].tp

    def ref(self) -> dict:
        dep = self.row.scenario.deployments[0]
        return {"silicon_row": self.label, "engine_version": self.version, "model": dep.model, "gpu": self.gpu,
                "tp": dep.tp, "stack": self.row.stack}

    def score(self, overhead: OverheadConfig, seed: int = 0) -> RunScore:
        """Replay the row with ``overhead``: the error of its mean TTFT and TPOT (%); the
        closed loop draws no random numbers, so ``seed`` is unused."""
        r = run_row(self.row, {self.row.group: overhead})
        ttft = abs(r.ttft_pred - r.ttft_meas) / r.ttft_meas * 100 if math.isfinite(r.ttft_pred) else CAP
        tpot = abs(r.tpot_pred - r.tpot_meas) / r.tpot_meas * 100 if math.isfinite(r.tpot_pred) else CAP
        return RunScore(self.label, self.gpu, 1, math.nan, ttft, tpot, math.nan, 1 if r.rejected else 0)


Target = Replay | SiliconReplay


_POOL_TARGETS: list = []


def _pool_init(targets: list) -> None:
    global _POOL_TARGETS
    _POOL_TARGETS = targets


def _pool_score(args: tuple[int, dict, int]) -> RunScore:
    i, oh, seed = args
    return _POOL_TARGETS[i].score(OverheadConfig(**oh), seed)


class Scorer:
    """Scores every target under one parameter set, in ``processes`` worker processes (each
    holds the targets once; a trial sends only the parameters)."""

    def __init__(self, targets: Sequence[Target], processes: int = 1, seed: int = 0) -> None:
        self.targets, self.seed = list(targets), seed
        self._ex = None
        if processes > 1 and len(self.targets) > 1:
            from concurrent.futures import ProcessPoolExecutor
            self._ex = ProcessPoolExecutor(processes, initializer=_pool_init, initargs=(self.targets,))

    def __call__(self, overhead: OverheadConfig) -> list[RunScore]:
        if self._ex is None:
            return [t.score(overhead, self.seed) for t in self.targets]
        oh = overhead.model_dump()
        return list(self._ex.map(_pool_score, [(i, oh, self.seed) for i in range(len(self.targets))]))

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown()
            self._ex = None

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- fit ----------------------------------------------------------------------------------

@dataclass
class EngineFit:
    """A fitted parameter set, with the fitting runs' scores before (defaults) and after."""

    engine: str
    params: OverheadConfig
    before: list[RunScore]
    after: list[RunScore]
    trials: int
    seed: int
    seconds: float
    history: list[float] = field(default_factory=list)   # loss of each trial, in order
    row_metric: str = "both"
    space: tuple[str, ...] = tuple(SPACE)
    kept_defaults: bool = False     # no trial beat the defaults by MIN_GAIN: they are the fit

    @property
    def loss_before(self) -> float:
        return loss(self.before, self.row_metric)

    @property
    def loss_after(self) -> float:
        return loss(self.after, self.row_metric)


def _engine_of(targets: Sequence[Target]) -> str:
    engines = sorted({t.engine for t in targets})
    if len(engines) != 1:
        raise InputError(f"an engine profile is fitted on targets of one engine; got {', '.join(engines)}",
                         file="targets")
    return engines[0]


def _one_engine(runs: Sequence[ServingRun]) -> str:
    engines = sorted({r.info.engine for r in runs})
    if len(engines) != 1 or engines[0] == "unknown":
        which = ", ".join(f"{Path(r.info.source).name or run_label(r)}: {r.info.engine}" for r in runs)
        raise InputError("an engine profile is fitted on runs of one engine (give --engine where a file "
                         f"does not record it); got {which}", file=runs[0].info.source or "runs")
    return engines[0]


def _suggest(trial, base: OverheadConfig, space: Sequence[str] = tuple(SPACE)) -> OverheadConfig:
    vals = {k: trial.suggest_float(k, *SPACE[k][:2], log=SPACE[k][2]) for k in space}
    return base.model_copy(update=vals)


def _start(base: OverheadConfig, space: Sequence[str] = tuple(SPACE)) -> dict[str, float]:
    """The defaults clipped into the search space (the first trial)."""
    return {k: float(min(max(getattr(base, k), SPACE[k][0]), SPACE[k][1])) for k in space}


def fit_engine(runs: Sequence[ServingRun], *, trials: int = DEFAULT_TRIALS, seed: int = 0,
               surrogate: str = "builtin", progress: Callable[[int, int, float], None] | None = None,
               replays: Sequence[Replay] | None = None, params: Sequence[str] | None = None) -> EngineFit:
    """Fit the engine parameters on ``runs`` (TPE, ``trials`` trials, each replaying every run);
    ``params`` limits the fit to some of ``SPACE`` (the others keep their defaults)."""
    if not runs:
        raise InputError("no runs to fit the engine on", file="runs")
    _one_engine(runs)
    reps = list(replays) if replays is not None else [prepare(r, surrogate) for r in runs]
    return fit_targets(reps, trials=trials, seed=seed, progress=progress, params=params)


def fit_targets(targets: Sequence[Target], *, trials: int = DEFAULT_TRIALS, seed: int = 0,
                progress: Callable[[int, int, float], None] | None = None, processes: int = 1,
                params: Sequence[str] | None = None, row_metric: str = "both") -> EngineFit:
    """Fit the engine parameters on ``targets`` (runs and silicon rows of one engine; TPE,
    ``trials`` trials, each replaying every target). ``params`` limits the fit to some of
    ``SPACE`` (the others keep their defaults); ``row_metric`` as in ``loss``."""
    space = tuple(params) if params else tuple(SPACE)
    unknown = [k for k in space if k not in SPACE]
    if unknown:
        raise ValueError(f"unknown engine parameter '{unknown[0]}' (one of {', '.join(SPACE)})")
    if not targets:
        raise InputError("nothing to fit the engine on", file="targets")
    import optuna
    engine = _engine_of(targets)
    t0 = time.perf_counter()
    base = OverheadConfig()
    with Scorer(targets, processes, seed) as scorer:
        before = scorer(base)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(5, min(15, trials // 4)),
                                             multivariate=True)
        study = optuna.create_study(direction="minimize", sampler=sampler)
        study.enqueue_trial(_start(base, space))
        history: list[float] = []

        def objective(trial) -> float:
            value = loss(scorer(_suggest(trial, base, space)), row_metric)
            history.append(value)
            if progress is not None:
                progress(len(history), trials, min(history))
            return value

        study.optimize(objective, n_trials=max(1, trials))
        best = base.model_copy(update=study.best_params)
        after = scorer(best)
        kept = loss(after, row_metric) > (1 - MIN_GAIN) * loss(before, row_metric)
        if kept:
            best, after = base, before
        return EngineFit(engine, best, before, after, trials, seed, time.perf_counter() - t0, history, row_metric,
                         space, kept)


@dataclass(frozen=True)
class Fold:
    """One held-out group: fitted on ``fitted_on``, measured on ``held`` (defaults vs fitted)."""

    held: list[str]
    fitted_on: list[str]
    before: list[RunScore]
    after: list[RunScore]
    params: dict[str, float]


def cross_validate(runs: Sequence[ServingRun], by: str = "run", *, trials: int = DEFAULT_TRIALS, seed: int = 0,
                   surrogate: str = "builtin", progress: Callable[[str], None] | None = None) -> list[Fold]:
    """Leave one run (``by='run'``) or one GPU (``by='gpu'``) out: fit on the others, score the
    held-out runs with the defaults and with that fit."""
    if by not in ("run", "gpu"):
        raise ValueError(f"by must be 'run' or 'gpu', not {by!r}")
    reps = [prepare(r, surrogate) for r in runs]
    key = (lambda r: r.label) if by == "run" else (lambda r: r.run.info.gpu)
    folds = []
    for g in sorted({key(r) for r in reps}):
        held = [r for r in reps if key(r) == g]
        rest = [r for r in reps if key(r) != g]
        if not rest:
            continue
        if progress:
            progress(f"leave-one-{by}-out: fitting without {g}")
        fit = fit_engine([r.run for r in rest], trials=trials, seed=seed, surrogate=surrogate, replays=rest)
        folds.append(Fold([r.label for r in held], [r.label for r in rest],
                          [score(r, OverheadConfig(), seed) for r in held],
                          [score(r, fit.params, seed) for r in held], fit.params.model_dump()))
    return folds


def fold_summary(folds: Sequence[Fold]) -> dict:
    """Held-out scores of every fold, with medians and means over runs (defaults vs fitted)."""
    rows = [{"run": b.run, "gpu": b.gpu, "fitted_on": f.fitted_on,
             "e2e_mape_before": b.e2e_mape, "ttft_mape_before": b.ttft_mape,
             "e2e_mape_after": a.e2e_mape, "ttft_mape_after": a.ttft_mape,
             "e2e_ratio_after": a.e2e_ratio, "loss_before": b.loss, "loss_after": a.loss}
            for f in folds for b, a in zip(f.before, f.after)]
    df = pd.DataFrame(rows)
    out = {"runs": rows}
    for c in ("e2e_mape_before", "ttft_mape_before", "e2e_mape_after", "ttft_mape_after", "loss_before",
              "loss_after"):
        out[f"median_{c}"] = float(df[c].median()) if len(df) else math.nan
        out[f"mean_{c}"] = float(df[c].mean()) if len(df) else math.nan
    return out


# ---- profile -------------------------------------------------------------------------------

def version_range(engine: str, versions: Sequence[str]) -> tuple[str, str | None]:
    """The release range a profile covers: the engine-defaults ranges of the fitted versions,
    from the earliest to the latest, widened over the neighbouring ranges that run the same
    engine core with the same scheduling mode (vLLM V1 without async scheduling from 0.8 to
    0.14: the same host loop per step, whose other release differences the engine block models)."""
    try:
        entries = [version_entry(engine, v) for v in versions]
    except ValueError as e:
        raise InputError(str(e), file="runs", column="engine_version") from None
    ranges = sorted(engine_defaults()[engine], key=lambda e: parse_version(e["since"]))
    lo = min(ranges.index(e) for e in entries)
    hi = max(ranges.index(e) for e in entries)
    kind = {(e.get("core"), e.get("async_scheduling")) for e in entries}
    if len(kind) == 1 and next(iter(kind))[0] is not None:
        same = lambda e: (e.get("core"), e.get("async_scheduling")) in kind   # noqa: E731
        while lo > 0 and same(ranges[lo - 1]):
            lo -= 1
        while hi + 1 < len(ranges) and same(ranges[hi + 1]):
            hi += 1
    last = ranges[hi]
    return str(ranges[lo]["since"]), (str(last["until"]) if last.get("until") else None)


def _run_ref(run: ServingRun) -> dict:
    i = run.info
    return {"run": run_label(run), "source": i.source, "format": i.format, "engine_version": i.engine_version,
            "model": i.model, "gpu": i.gpu, "tp": i.tp, "dp": i.dp, "ep": i.ep, "requests": len(run.requests)}


def _scores(scores: Sequence[RunScore]) -> list[dict]:
    return [{**asdict(s), "loss": s.loss} for s in scores]


def profile_doc(fit: EngineFit, targets: Sequence[Target], held_out: dict | None = None) -> dict:
    """The engine profile of ``fit`` (``engines.load_profile`` reads it): engine, release range,
    parameters, the targets it was fitted on, the losses and the held-out figures."""
    since, until = version_range(fit.engine, [t.version for t in targets])
    return {"format": PROFILE_FORMAT, "engine": fit.engine, "versions": {"since": since, "until": until},
            "overhead": fit.params.model_dump(),
            "fitted_on": [t.ref() for t in targets],
            "loss": {"definition": LOSS, "before": fit.loss_before, "after": fit.loss_after,
                     "kept_defaults": fit.kept_defaults, "min_gain": MIN_GAIN,
                     "before_runs": _scores(fit.before), "after_runs": _scores(fit.after)},
            "held_out": held_out or {},
            "optimizer": {"sampler": "optuna TPE (multivariate)", "seed": fit.seed, "trials": fit.trials,
                          "search_space": {k: list(SPACE[k]) for k in fit.space},
                          "row_metric": fit.row_metric},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def save_profile(doc: dict, path: str | Path) -> Path:
    """Write a profile as JSON and check it reads back as one."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(p, json.dumps(clean(doc), indent=2, allow_nan=False) + "\n")
    except OSError as e:
        raise InputError(f"cannot write the engine profile ({e.strerror or type(e).__name__})", file=p) from None
    load_profile(p)
    return p


def clean(x):
    """JSON-safe copy: NaN/inf -> None."""
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# ---- report: plot and MLflow ---------------------------------------------------------------

EXPERIMENT = "hermes-engine-calibration"


def plot_fit(fit: EngineFit, held: Sequence[tuple[RunScore, RunScore]], path: str | Path) -> Path:
    """PNG: per-run E2E and TTFT MAPE with the engine defaults and with the fit (fitting runs
    and held-out runs apart), and the loss of each trial."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots import save_png
    rows = [(f"{b.run} (fit)", b, a) for b, a in zip(fit.before, fit.after)] + \
           [(f"{b.run} (held out)", b, a) for b, a in held]
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.5 * len(rows) + 3), width_ratios=(2, 2, 1.4))
    y = np.arange(len(rows))
    for ax, metric in zip(axes[:2], ("e2e_mape", "ttft_mape")):
        ax.barh(y - 0.2, [getattr(b, metric) for _, b, _ in rows], 0.4, label="engine defaults")
        ax.barh(y + 0.2, [getattr(a, metric) for _, _, a in rows], 0.4, label="calibrated")
        ax.set_yticks(y, [r[0] for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"{metric.split('_')[0].upper()} MAPE (%)")
        ax.legend(fontsize=8)
    axes[1].set_yticks(y, [""] * len(rows))
    axes[2].plot(np.arange(1, len(fit.history) + 1), fit.history, ".", ms=3)
    axes[2].plot(np.arange(1, len(fit.history) + 1), np.minimum.accumulate(fit.history) if fit.history else [])
    axes[2].set_xlabel("trial")
    axes[2].set_ylabel("loss on the fitting runs (%)")
    fig.suptitle(f"{fit.engine} engine calibration: before / after per run")
    return save_png(fig, path, dpi=100)


def log_mlflow(doc: dict, profile: Path, plot: Path | None, held: Sequence[tuple[RunScore, RunScore]]) -> str:
    """Log a calibration to MLflow (the project's store: ``surrogates.tracking``): parameters,
    loss before/after on the fitting runs and the held-out ones, the profile and the plot.
    Returns the run id; raises ``TrackingUnavailable`` (one line) when the store cannot take it."""
    from surrogates.tracking import (
        TrackingUnavailable,
        artifact_root,
        first_line,
        git_commit,
        prepare_store,
        tracking_uri,
    )
    uri = tracking_uri()
    try:
        import logging

        import mlflow
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        prepare_store(uri)
        mlflow.set_tracking_uri(uri)
        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_root())
        mlflow.set_experiment(EXPERIMENT)
        with mlflow.start_run(run_name=f"{doc['engine']}-profile") as run:
            mlflow.log_params({"engine": doc["engine"], "versions": f"{doc['versions']['since']}.."
                               f"{doc['versions']['until'] or ''}", "trials": doc["optimizer"]["trials"],
                               "seed": doc["optimizer"]["seed"], "fitted_on": ",".join(
                                   r["run"] for r in doc["fitted_on"])[:500],
                               "held_out": ",".join(b.run for b, _ in held)[:500] or "-",
                               **{f"overhead.{k}": v for k, v in doc["overhead"].items()}})
            metrics = {"fit.loss_before": doc["loss"]["before"], "fit.loss_after": doc["loss"]["after"]}
            if held:
                metrics.update({"heldout.loss_before": loss([b for b, _ in held]),
                                "heldout.loss_after": loss([a for _, a in held]),
                                "heldout.e2e_mape_before": float(np.mean([b.e2e_mape for b, _ in held])),
                                "heldout.e2e_mape_after": float(np.mean([a.e2e_mape for _, a in held])),
                                "heldout.ttft_mape_before": float(np.mean([b.ttft_mape for b, _ in held])),
                                "heldout.ttft_mape_after": float(np.mean([a.ttft_mape for _, a in held]))})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)})
            mlflow.set_tags({"hermes.kind": "engine-profile", "git_commit": git_commit()})
            mlflow.log_artifact(str(profile), artifact_path="profile")
            if plot is not None:
                mlflow.log_artifact(str(plot), artifact_path="plots")
            return run.info.run_id
    except Exception as e:  # noqa: BLE001 - MLflow, SQLAlchemy and socket errors alike
        raise TrackingUnavailable(f"MLflow tracking at {uri} unavailable: {first_line(e)}") from None
