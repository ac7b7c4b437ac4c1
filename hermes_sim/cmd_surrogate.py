"""`hermes-sim surrogate train|eval` and `hermes-sim calibrate`."""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .options import (RUN_OVERRIDE_FLAGS, catalog_option, csv_options, load_column_map, run_override_options,
                      with_options)

_err = Console(stderr=True)


def _progress(quiet: bool):
    return (lambda msg: None) if quiet else (lambda msg: _err.print(f"[dim]{msg}[/dim]"))


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def _accuracy_rich(acc: dict, title: str) -> Table:
    t = Table(title=title)
    for c in ("op kind", "hardware", "MAPE %", "median APE %", "p90 APE %", "r", "n", "90% cover"):
        t.add_column(c, justify="left" if c in ("op kind", "hardware") else "right")
    for kind, by_hw in acc.items():
        for hw, m in by_hw.items():
            cov = m.get("coverage")
            t.add_row(kind, hw, _fmt(m["mape"]), _fmt(m["median_ape"]), _fmt(m["p90_ape"]),
                      "-" if math.isnan(m["r"]) else f"{m['r']:.3f}", str(m["n"]),
                      "-" if cov is None else f"{cov * 100:.0f}%")
    return t


def _study_rich(study: dict, title: str) -> Table:
    """Estimators side by side: MAPE (p90) per op kind and hardware."""
    t = Table(title=title)
    t.add_column("op kind")
    t.add_column("hardware")
    ests = list(study)
    for e in ests:
        t.add_column(f"{e} MAPE (p90)", justify="right")
    keys = sorted({(k, h) for e in ests for k, hs in study[e].items() for h in hs})
    for k, h in keys:
        cells = []
        for e in ests:
            m = study[e].get(k, {}).get(h)
            cells.append("-" if m is None else f"{_fmt(m['mape'])} ({_fmt(m['p90_ape'])})")
        t.add_row(k, h, *cells)
    return t


@dataclass(frozen=True)
class TraceSource:
    """Where training or evaluation rows come from (the trace options of a command)."""

    paths: tuple[str, ...]
    fmt: str | None = None
    hardware: str | None = None
    column_map: str | None = None
    op: str | None = None
    dtype: str | None = None

    def load(self, quiet: bool):
        from surrogates.sources import load_traces
        defaults = {k: v for k, v in (("op", self.op), ("dtype", self.dtype)) if v}
        return load_traces(list(self.paths), self.fmt, self.hardware, progress=_progress(quiet),
                           column_map=load_column_map(self.column_map), defaults=defaults)


_trace_opts = [
    click.argument("traces", nargs=-1, required=True),
    click.option("--format", "fmt", default=None,
                 help="Raw trace format (aiconfigurator, vidur, torch, vllm-steps, csv); omit for "
                      "canonical .parquet tables written by `hermes-sim profile ingest`."),
    click.option("--hardware", default=None, help="Override the hardware name of raw traces."),
    *csv_options,
    catalog_option,
]


def _with_traces(f):
    """The trace options, handed to the command as one ``src: TraceSource``."""
    @functools.wraps(f)
    def inner(traces, fmt, hardware, column_map, op, dtype, **kw):
        return f(src=TraceSource(tuple(traces), fmt, hardware, column_map, op, dtype), **kw)
    return with_options(_trace_opts)(inner)


_HP = {"n_estimators": int, "max_depth": int, "learning_rate": float, "min_child_weight": float,
       "subsample": float, "colsample_bytree": float, "reg_lambda": float}
# What XGBoost and scikit-learn accept, checked before loading traces and fitting (the
# estimators' own errors come only mid-training): (low, low included, high or None).
_HP_RANGE = {"n_estimators": (1, True, None), "max_depth": (1, True, None), "learning_rate": (0, False, None),
             "min_child_weight": (0, True, None), "subsample": (0, False, 1), "colsample_bytree": (0, False, 1),
             "reg_lambda": (0, True, None)}


def _parse_params(items) -> dict:
    from profiling.errors import HermesError
    out = {}
    for it in items:
        name, sep, value = it.partition("=")
        if not sep or name not in _HP:
            raise HermesError(f"--param '{it}': expected NAME=VALUE with NAME one of {', '.join(_HP)}")
        try:
            v = out[name] = _HP[name](value)
        except ValueError:
            raise HermesError(f"--param '{it}': '{value}' is not a valid {_HP[name].__name__}") from None
        lo, closed, hi = _HP_RANGE[name]
        if not math.isfinite(v):
            raise HermesError(f"--param '{it}': {name} must be a finite number")
        if v < lo or (v == lo and not closed) or (hi is not None and v > hi):
            bound = f"{'>=' if closed else '>'} {lo}" + (f" and <= {hi}" if hi is not None else "")
            raise HermesError(f"--param '{it}': {name} must be {bound}")
    return out


def _recipe(hp: dict, max_rows: int | None, estimator: str = "xgboost", tune_trials: int = 0
            ) -> tuple[dict, dict, int]:
    """(params, seen-pipeline params, rows per kind). Without --param or --tune, XGBoost
    trains as the built-in bundle does (deep trees only for the seen-GPU GEMM and attention
    pipelines, where they measurably pay); given either, those params apply everywhere."""
    from surrogates.build_bundle import BUNDLE_PARAMS, BUNDLE_ROWS, BUNDLE_SEEN_PARAMS
    rows = max_rows or BUNDLE_ROWS
    if hp or tune_trials or estimator != "xgboost":
        return hp, {}, rows
    return dict(BUNDLE_PARAMS), {k: dict(v) for k, v in BUNDLE_SEEN_PARAMS.items()}, rows


@click.group("surrogate")
def surrogate() -> None:
    """Train and evaluate per-operator latency surrogates."""


@surrogate.command("train")
@_with_traces
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--estimator", type=click.Choice(["xgboost", "rf", "linear", "roofline"]), default="xgboost",
              show_default=True)
@click.option("--tune", "tune_trials", type=click.IntRange(min=0), default=0,
              help="Optuna trials on a grouped validation fold (xgboost).")
@click.option("--max-rows", type=click.IntRange(min=100), default=None,
              help="Training rows per op kind, spread over hardware (default: the built-in bundle's).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Estimator hyper-parameter for every pipeline, e.g. --param n_estimators=200 "
                   "(repeatable; default: the built-in bundle's recipe).")
@click.option("--no-mlflow", is_flag=True, help="Do not log the run to MLflow.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object on stdout.")
def train_cmd(src: TraceSource, out, estimator, tune_trials, max_rows, params, no_mlflow, as_json) -> None:
    """Fit surrogates on TRACES, save them to OUT and log the run to MLflow."""
    from surrogates.train import train_surrogate
    hp, seen, rows = _recipe(_parse_params(params), max_rows, estimator, tune_trials)
    table = src.load(as_json)
    res = train_surrogate(table, out, estimator=estimator, params=hp, tune_trials=tune_trials, max_rows=rows,
                          seen_params=seen, sources=list(src.paths), log_mlflow=not no_mlflow,
                          progress=_progress(as_json))
    info = {"directory": str(Path(res.directory).resolve()), "run_id": res.run_id,
            "reference": _reference(res), "trace_hash": res.trace_hash,
            "train_seconds": round(res.seconds, 2), "params": res.params, "tracking_error": res.tracking_error,
            "kinds": {k: {"n_train": m.n_train, "hardware": sorted(m.hardware)} for k, m in res.model.kinds_.items()}}
    _warn_untracked(res)
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"surrogate saved to {info['directory']} ({res.seconds:.0f} s)")
    if res.run_id:
        click.echo(f"MLflow run {res.run_id}; use --surrogate {res.run_id}{_catalog_hint(res.model)}")
    elif res.tracking_error:
        click.echo(f"use --surrogate {info['reference']}{_catalog_hint(res.model)}")


def _reference(res) -> str:
    """What ``--surrogate`` takes for a trained surrogate: its run id, else its directory."""
    return res.run_id or str(Path(res.directory).resolve())


def _warn_untracked(res) -> None:
    if res.tracking_error:
        click.echo(f"warning: {res.tracking_error}; the surrogate is saved in {res.directory} only", err=True)


@surrogate.command("eval")
@click.argument("model")
@_with_traces
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object on stdout.")
def eval_cmd(model, src: TraceSource, as_json) -> None:
    """Accuracy of MODEL (builtin, a directory or an MLflow run id) on TRACES, per op kind
    and hardware: MAPE, median and p90 absolute percentage error, Pearson r, n."""
    from surrogates.evaluate import accuracy_table
    from surrogates.tracking import load_surrogate
    m = load_surrogate(model)
    acc = accuracy_table(m, src.load(as_json))
    if as_json:
        click.echo(json.dumps(acc))
    else:
        Console().print(_accuracy_rich(acc, f"surrogate {model}"))


def _with_traces_or_runs(f):
    """``_with_traces`` whose TRACES may be absent (``calibrate --runs`` reads them as runs)."""
    @functools.wraps(f)
    def inner(traces, fmt, hardware, column_map, op, dtype, **kw):
        return f(src=TraceSource(tuple(traces), fmt, hardware, column_map, op, dtype), **kw)
    return with_options([click.argument("traces", nargs=-1, required=False, metavar="TRACES|RUNS..."),
                         *_trace_opts[1:]])(inner)


@click.command("calibrate")
@_with_traces_or_runs
@click.option("-o", "--out", "out", type=click.Path(), default=None,
              help="Where to save the surrogate (default mlruns/surrogates/<trace hash>); with --runs the "
                   "engine profile JSON (default <engine>-profile.json).")
@click.option("--max-rows", type=click.IntRange(min=100), default=None,
              help="Training rows per op kind (default: the built-in bundle's).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="XGBoost hyper-parameter for every pipeline (default: the built-in bundle's recipe).")
@click.option("--runs", "runs_mode", is_flag=True,
              help="The arguments are serving runs (vLLM bench JSON, LLMServingSim folders, ...): fit the "
                   "engine on them and save an engine profile a scenario names (engine: {profile: FILE}).")
@click.option("--holdout", multiple=True, metavar="RUN",
              help="--runs: a run to measure on, not fit on (repeatable; one of the RUNS).")
@click.option("--holdout-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="--runs: hold out this seeded fraction of the runs (whole runs, never requests).")
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="--runs: Optuna trials, each replaying every fitting run (default 60).")
@click.option("--max-requests", type=click.IntRange(min=1), default=None,
              help="--runs: replay only each run's first N requests by arrival (faster trials).")
@click.option("--seed", type=int, default=0, show_default=True, help="--runs: sampler and split seed.")
@click.option("--fit", "fit_params", default=None, metavar="NAME,...",
              help="--runs: the engine parameters to fit (default all: kernel_scale, step_s, per_seq_s, "
                   "per_token_s, request_s, stream_token_s); the others keep the engine's defaults. "
                   "kernel_scale alone fits a kernel factor, e.g. for a GPU with few kernel traces.")
@run_override_options("--runs:")
@click.option("--surrogate", default=None, help="--runs: kernel surrogate the replays use (default builtin).")
@click.option("--no-mlflow", is_flag=True, help="--runs: do not log the calibration to MLflow.")
@click.option("--few-rows", "few_rows", type=click.Path(path_type=Path), default=None,
              help="A new GPU's measured rows (canonical .parquet or .csv, e.g. a measured `profile plan`): "
                   "correct the surrogate trained on TRACES (every other GPU's traces), or the --base one "
                   "without TRACES, for that GPU, and report how much each op kind's interval narrowed.")
@click.option("--base", default=None, help="--few-rows without TRACES: the surrogate to correct (default builtin).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object on stdout.")
def calibrate(src: TraceSource, out, max_rows, params, runs_mode, holdout, holdout_fraction, trials, max_requests,
              seed, fit_params, overrides, surrogate, no_mlflow, few_rows, base, as_json) -> None:
    """One shot for a new GPU: ingest TRACES, train, evaluate on unseen shapes against the
    roofline and Random Forest baselines, register in MLflow, print the reference.

    With --runs: fit the serving engine's parameters on RUNS (split by run: --holdout or
    --holdout-fraction are measured, not fitted on), print before/after per held-out run, save
    the engine profile (-o) and log it to MLflow."""
    from profiling.errors import HermesError
    run_opts = {"--holdout": holdout, "--holdout-fraction": holdout_fraction, "--trials": trials,
                "--max-requests": max_requests, "--fit": fit_params,
                **{RUN_OVERRIDE_FLAGS[k]: v for k, v in overrides.items()},
                "--surrogate": surrogate, "--no-mlflow": no_mlflow}
    if runs_mode and (few_rows is not None or base is not None):
        raise HermesError("--few-rows and --base correct a kernel surrogate; they do not apply to --runs")
    if runs_mode:
        if params or max_rows:
            raise HermesError("--param and --max-rows train a surrogate; they do not apply to --runs")
        _calibrate_runs(src, out, list(holdout), holdout_fraction, trials, max_requests, seed, overrides,
                        surrogate or "builtin", no_mlflow, as_json, _fit_names(fit_params))
        return
    given = [k for k, v in run_opts.items() if v not in (None, (), False)]
    if given:
        raise HermesError(f"{given[0]} applies to calibrate --runs only")
    if few_rows is not None:
        _calibrate_few_rows(src, few_rows, base, out, params, max_rows, as_json)
        return
    if base is not None:
        raise HermesError("--base applies to calibrate --few-rows only")
    if not src.paths:
        raise HermesError("calibrate needs TRACES (kernel traces) or --runs RUN... (serving runs)")
    if out and Path(out).is_file():
        raise HermesError(f"{out}: -o is the surrogate's directory, not a file")
    from surrogates.evaluate import holdout_study
    from surrogates.sources import table_hash
    from surrogates.tracking import store_root
    from surrogates.train import train_surrogate
    prog = _progress(as_json)
    hp, seen, rows = _recipe(_parse_params(params), max_rows)
    table = src.load(as_json)
    study = holdout_study(table, "unseen_shape", ("xgboost", "rf", "roofline"),
                          max_rows=min(rows, 20000), params=hp, seen_params=seen, progress=prog)
    out = out or str(store_root() / "surrogates" / table_hash(table)[:12])
    res = train_surrogate(table, out, params=hp, seen_params=seen, max_rows=rows, sources=list(src.paths),
                          metrics={"unseen_shape": study.get("xgboost", {})}, progress=prog)
    info = {"reference": _reference(res), "run_id": res.run_id, "directory": str(Path(res.directory).resolve()),
            "trace_hash": res.trace_hash, "tracking_error": res.tracking_error, "unseen_shape": study}
    _warn_untracked(res)
    if as_json:
        click.echo(json.dumps(info))
        return
    Console().print(_study_rich(study, "unseen shapes (20% of shapes held out): surrogate vs baselines"))
    if res.run_id:
        click.echo(f"registered MLflow run {res.run_id} (saved in {info['directory']})")
    click.echo(f"use it: hermes-sim simulate SCENARIO.yaml --surrogate {info['reference']}{_catalog_hint(res.model)}")


def _read_few_rows(path: Path):
    """The new GPU's measured rows: a canonical table (.parquet or .csv) of one GPU."""
    from profiling.csvfile import read_table
    from profiling.errors import InputError
    from profiling.schema import conform
    rows = read_table(path, "--few-rows")
    missing = [c for c in ("op", "hardware", "latency_ms") if c not in rows]
    if missing:
        raise InputError(f"--few-rows: missing column '{missing[0]}' (a canonical trace table is needed)", file=path)
    rows = conform(rows)
    rows = rows[rows["latency_ms"].notna() & (rows["latency_ms"] > 0)]
    gpus = sorted(rows["hardware"].dropna().astype(str).unique())
    if len(gpus) != 1:
        raise InputError(f"--few-rows: rows with a measured latency must name one GPU (found {len(gpus)}: "
                         f"{', '.join(gpus[:4]) or 'none'})", file=path)
    return rows, gpus[0]


def _calibrate_few_rows(src: TraceSource, path: Path, base: str | None, out, params, max_rows, as_json: bool) -> None:
    """``calibrate --few-rows``: a per-GPU correction on top of a trained surrogate."""
    from profiling.errors import HermesError
    from profiling.hardware import load_catalog
    from profiling.models import resolve_model
    from profiling.plan import PLAN_KINDS, deployment_candidates
    from surrogates.few_rows import FewRowSurrogate, fit_correction, narrowing
    from surrogates.tracking import load_surrogate, store_root

    rows, gpu = _read_few_rows(path)
    hw = load_catalog().get(gpu)
    prog = _progress(as_json)
    if src.paths:
        if base is not None:
            raise HermesError("--base names the surrogate to correct without TRACES; give one or the other")
        from surrogates.train import train_surrogate
        hp, seen, n = _recipe(_parse_params(params), max_rows)
        table = src.load(as_json)
        table = table[table["hardware"] != hw.name]  # the new GPU enters through its correction only
        model = train_surrogate(table, str(Path(out or store_root() / "surrogates" / f"base-{hw.name}")),
                                params=hp, seen_params=seen, max_rows=n, sources=list(src.paths),
                                log_mlflow=False, progress=prog).model
    else:
        if params or max_rows:
            raise HermesError("--param and --max-rows train a surrogate; with --few-rows they need TRACES")
        model = load_surrogate(base or "builtin")
    corr = fit_correction(model, rows, hw)
    # the intervals at the rows' own dtype: a device may have no peak for another (a CPU without bf16)
    dtype = str(rows["dtype"].mode().iloc[0]) if rows["dtype"].notna().any() else "bf16"
    pools = deployment_candidates([resolve_model("Llama-3.1-8B")], [1, 2], dtype=dtype)
    report = narrowing(model, corr, hw, {k: f for k, f in pools.items() if k in PLAN_KINDS})
    out = Path(out or store_root() / "surrogates" / f"few-rows-{hw.name}")
    FewRowSurrogate.wrap(model, {hw.name: corr}).save(out, manifest={"few_rows": {
        "hardware": hw.name, "file": str(path), "rows": {k: c.n for k, c in corr.kinds.items()},
        "narrowing": report}})
    info = {"command": "calibrate --few-rows", "hardware": hw.name, "directory": str(out.resolve()),
            "rows": {k: c.n for k, c in corr.kinds.items()}, "narrowing": report}
    if as_json:
        click.echo(json.dumps(info))
        return
    t = Table(title=f"{hw.name}: 90% interval (median factor over Llama-3.1-8B TP1/TP2 step-table shapes)")
    for c in ("op kind", "rows", "before", "after", "narrowed"):
        t.add_column(c, justify="left" if c == "op kind" else "right")
    for k, r in report.items():
        t.add_row(k, str(r["rows"]), f"x{r['before_x']:.2f}", f"x{r['after_x']:.2f}", f"{r['narrowed_pct']:.0f}%")
    Console().print(t)
    click.echo(f"corrected surrogate saved to {info['directory']}")
    click.echo(f"use it: hermes-sim simulate SCENARIO.yaml --surrogate {info['directory']}")


def _pick_holdout(paths: list[str], holdout: list[str], fraction: float | None, seed: int) -> list[int]:
    """Indices of the held-out runs: those named (each must be one of the runs) or a seeded
    fraction of them (at least one, never all)."""
    from profiling.errors import HermesError
    if holdout and fraction is not None:
        raise HermesError("give --holdout or --holdout-fraction, not both")
    if holdout:
        where = {str(Path(p).resolve()): i for i, p in enumerate(paths)}
        out = []
        for h in holdout:
            i = where.get(str(Path(h).resolve()))
            if i is None:
                raise HermesError(f"--holdout {h}: not among the runs given ({', '.join(paths)})")
            out.append(i)
        if len(set(out)) == len(paths):
            raise HermesError("--holdout names every run: none is left to fit the engine on")
        return sorted(set(out))
    if fraction is None:
        return []
    if len(paths) < 2:
        raise HermesError("--holdout-fraction needs at least two runs (one to fit on, one to hold out)")
    import numpy as np
    k = min(max(1, round(fraction * len(paths))), len(paths) - 1)
    return sorted(np.random.default_rng(seed).choice(len(paths), size=k, replace=False).tolist())


def _fit_names(text: str | None) -> list[str] | None:
    """``--fit a,b``: engine parameter names, each one of ``engine_fit.SPACE`` (None: all)."""
    if text is None:
        return None
    from profiling.errors import HermesError
    from simulator.fidelity.engine_fit import SPACE
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in SPACE]
    if bad or not names:
        raise HermesError(f"--fit: unknown engine parameter '{bad[0] if bad else text}' "
                          f"(one or more of {', '.join(SPACE)})")
    return list(dict.fromkeys(names))


def _calibrate_runs(src: TraceSource, out, holdout: list[str], fraction, trials, max_requests, seed: int,
                    overrides: dict, surrogate: str, no_mlflow: bool, as_json: bool,
                    fit_params: list[str] | None = None) -> None:
    """``calibrate --runs``: fit the engine on some runs, score the held-out ones, save the profile."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from profiling.errors import HermesError
    from profiling.readers.runs import read_run
    from simulator.fidelity import engine_fit as ef
    from surrogates.tracking import TrackingUnavailable
    paths = list(src.paths)
    if not paths:
        raise HermesError("calibrate --runs needs at least one RUN (a serving benchmark file or folder)")
    if src.hardware or src.column_map or src.op or src.dtype:
        raise HermesError("--hardware, --map, --op and --dtype describe kernel traces; with --runs give --gpu")
    held_idx = _pick_holdout(paths, holdout, fraction, seed)
    if out and Path(out).is_dir():
        raise HermesError(f"{out}: -o is the profile's JSON file, not a directory")
    try:   # an unwritable -o fails now, not after the fit
        Path(out or ".").resolve().parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HermesError(f"{out}: cannot create its folder ({e.strerror or type(e).__name__})") from None
    runs = [ef.first_requests(read_run(p, src.fmt, **overrides), max_requests) for p in paths]
    engine = ef._one_engine(runs)
    fit_runs = [r for i, r in enumerate(runs) if i not in held_idx]
    held_runs = [r for i, r in enumerate(runs) if i in held_idx]
    trials = trials or ef.DEFAULT_TRIALS
    with Progress(TextColumn("[dim]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[best]}"),
                  TimeElapsedColumn(), console=_err, transient=True, disable=as_json) as bar:
        task = bar.add_task(f"preparing {len(runs)} run(s)", total=trials, best="")
        reps = [ef.prepare(r, surrogate) for r in runs]
        fit_reps = [r for i, r in enumerate(reps) if i not in held_idx]
        bar.update(task, description=f"fitting {engine} on {len(fit_reps)} run(s)")
        fit = ef.fit_engine(fit_runs, trials=trials, seed=seed, surrogate=surrogate, replays=fit_reps,
                            params=fit_params,
                            progress=lambda i, n, b: bar.update(task, completed=i, best=f"loss {b:.2f}%"))
        bar.update(task, description="scoring held-out runs")
        held = [(ef.score(reps[i], ef.OverheadConfig(), seed), ef.score(reps[i], fit.params, seed)) for i in held_idx]
    doc = ef.profile_doc(fit, fit_reps, held_out={
        "runs": [{"run": b.run, "source": r.info.source, "before": ef.asdict(b), "after": ef.asdict(a)}
                 for (b, a), r in zip(held, held_runs)],
        "loss_before": ef.loss([b for b, _ in held]) if held else None,
        "loss_after": ef.loss([a for _, a in held]) if held else None})
    path = ef.save_profile(doc, out or f"{engine}-profile.json")
    plot = ef.plot_fit(fit, held, path.with_suffix(".png"))
    run_id, warning = None, None
    if not no_mlflow:
        try:
            run_id = ef.log_mlflow(doc, path, plot, held)
        except TrackingUnavailable as e:
            warning = f"{e}; the profile is saved in {path} only"
            click.echo(f"warning: {warning}", err=True)
    info = {"profile": str(path.resolve()), "plot": str(plot.resolve()), "run_id": run_id, "engine": engine,
            "versions": doc["versions"], "overhead": doc["overhead"], "fitted_params": list(fit.space),
            "fitted_on": [r["run"] for r in doc["fitted_on"]],
            "loss_before": fit.loss_before, "loss_after": fit.loss_after, "held_out": doc["held_out"],
            "tracking_error": warning}
    if as_json:
        click.echo(json.dumps(ef.clean(info)))
        return
    t = Table(title=f"{engine} engine: per-request MAPE % before (engine defaults) -> after (fitted)")
    for c in ("run", "role", "E2E MAPE %", "TTFT MAPE %", "sim/real mean E2E"):
        t.add_column(c, justify="left" if c in ("run", "role") else "right")
    rows = [(b, a, "fitted on") for b, a in zip(fit.before, fit.after)] + [(b, a, "held out") for b, a in held]
    for b, a, role in rows:
        t.add_row(b.run, role, f"{_fmt(b.e2e_mape)} -> {_fmt(a.e2e_mape)}", f"{_fmt(b.ttft_mape)} -> {_fmt(a.ttft_mape)}",
                  f"{b.e2e_ratio:.2f} -> {a.e2e_ratio:.2f}")
    Console().print(t)
    click.echo(f"loss on the fitting runs: {fit.loss_before:.2f} -> {fit.loss_after:.2f} "
               "(per GPU, the mean over its runs of (E2E + TTFT MAPE) / 2, %)")
    if fit.kept_defaults:
        click.echo(f"no trial lowered that loss by {ef.MIN_GAIN:.0%}: the profile keeps the engine defaults")
    if held:
        click.echo(f"loss on the held-out runs: {doc['held_out']['loss_before']:.2f} -> {doc['held_out']['loss_after']:.2f}")
    else:
        click.echo("no run held out: these figures are on the runs it was fitted on; --holdout RUN measures "
                   "the fit on a run it did not see")
    click.echo(f"engine profile saved to {path} (plot {plot.name})" + (f"; MLflow run {run_id}" if run_id else ""))
    click.echo(f"use it: engine: {{name: {engine}, version: ..., profile: {path}}} in a scenario, or "
               f"hermes-sim validate RUN --overhead {path}")


def _catalog_hint(model) -> str:
    """`` --catalog FILE...`` when a trained device is known only from an extra catalog
    (later commands need its spec sheet too)."""
    from profiling.hardware import CATALOG_ENV, builtin_catalog
    builtin = builtin_catalog()
    if all(h in builtin for h in model.trained_hardware()):
        return ""
    return "".join(f" --catalog {p}" for p in os.environ.get(CATALOG_ENV, "").split(os.pathsep) if p)


COMMANDS: list[click.Command] = [surrogate, calibrate]
