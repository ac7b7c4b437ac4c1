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

from .options import catalog_option, csv_options, load_column_map, with_options

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


def _parse_params(items) -> dict:
    from profiling.errors import HermesError
    out = {}
    for it in items:
        name, sep, value = it.partition("=")
        if not sep or name not in _HP:
            raise HermesError(f"--param '{it}': expected NAME=VALUE with NAME one of {', '.join(_HP)}")
        try:
            out[name] = _HP[name](value)
        except ValueError:
            raise HermesError(f"--param '{it}': '{value}' is not a valid {_HP[name].__name__}") from None
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


@click.command("calibrate")
@_with_traces
@click.option("-o", "--out", "out", type=click.Path(file_okay=False), default=None,
              help="Where to save the surrogate (default mlruns/surrogates/<trace hash>).")
@click.option("--max-rows", type=click.IntRange(min=100), default=None,
              help="Training rows per op kind (default: the built-in bundle's).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="XGBoost hyper-parameter for every pipeline (default: the built-in bundle's recipe).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object on stdout.")
def calibrate(src: TraceSource, out, max_rows, params, as_json) -> None:
    """One shot for a new GPU: ingest TRACES, train, evaluate on unseen shapes against the
    roofline and Random Forest baselines, register in MLflow, print the reference."""
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


def _catalog_hint(model) -> str:
    """`` --catalog FILE...`` when a trained device is known only from an extra catalog
    (later commands need its spec sheet too)."""
    from profiling.hardware import CATALOG_ENV, builtin_catalog
    builtin = builtin_catalog()
    if all(h in builtin for h in model.trained_hardware()):
        return ""
    return "".join(f" --catalog {p}" for p in os.environ.get(CATALOG_ENV, "").split(os.pathsep) if p)


COMMANDS: list[click.Command] = [surrogate, calibrate]
