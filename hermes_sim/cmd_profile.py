"""`hermes-sim profile` verbs: ingest real traces, run the local microbenchmarks."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from profiling.atomicfile import atomic_path, write_text_atomic
from profiling.errors import HermesError, InputError

from .options import catalog_option, csv_options, load_column_map, with_options

REASONS_SHOWN = 5


def _err_console() -> Console:
    return Console(stderr=True)


def _summary(table: pd.DataFrame) -> list[dict]:
    eff = table["t_roofline_ms"] / table["latency_ms"]
    g = table.assign(eff=eff).groupby(["op", "hardware"], sort=True)
    out = pd.DataFrame({"rows": g.size(), "median_efficiency": g["eff"].median()}).reset_index()
    return [{"op": r.op, "hardware": r.hardware, "rows": int(r.rows),
             "median_efficiency": round(float(r.median_efficiency), 4)} for r in out.itertuples()]


def _report(kind: str, per: list[dict], quarantine: pd.DataFrame, files: int, seconds: float,
            out: Path, qfile: Path | None, as_json: bool, skipped: tuple[Path, ...] = (), note: str = "") -> None:
    reasons = quarantine["reason"].astype(str).value_counts().head(REASONS_SHOWN) if len(quarantine) else pd.Series()
    if as_json:
        click.echo(json.dumps({
            "command": f"profile {kind}", "output": str(out), "rows": sum(p["rows"] for p in per),
            "files": files, "seconds": round(seconds, 3), "by_op_hardware": per,
            "quarantined": int(len(quarantine)), "quarantine_file": str(qfile) if qfile else None,
            "quarantine_reasons": {k: int(v) for k, v in reasons.items()},
            "skipped_files": [str(p) for p in skipped]}))
        return
    console = Console()
    table = Table(title=f"{sum(p['rows'] for p in per)} rows from {files} file(s) -> {out}")
    for col in ("op", "hardware", "rows", "median t_roofline/latency"):
        table.add_column(col, justify="right" if col != "op" and col != "hardware" else "left")
    for p in per:
        table.add_row(p["op"], p["hardware"], str(p["rows"]), f"{p['median_efficiency']:.3f}")
    console.print(table)
    if len(quarantine):
        console.print(f"[yellow]{len(quarantine)} row(s) quarantined[/] -> {qfile}")
        for reason, n in reasons.items():
            console.print(f"  {n:>8}  {reason}")
    if note:
        console.print(f"[yellow]{note}[/]", soft_wrap=True)
    console.print(f"done in {seconds:.1f} s")


def _progress(as_json: bool):
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=_err_console(), transient=True, disable=not sys.stderr.isatty())


@click.group("profile")
def profile() -> None:
    """Turn hardware measurements into the canonical trace table."""


@profile.command("ingest")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--format", "-f", "fmt", required=True,
              type=click.Choice(["aiconfigurator", "vidur", "splitwise", "torch", "vllm-steps", "csv"]),
              help="Trace format of PATH (a file or a directory tree).")
@click.option("--hardware", help="Device name from the catalog (overrides what the path says).")
@with_options(csv_options)
@catalog_option
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Output Parquet file.")
@click.option("--quarantine", "qfile", type=click.Path(path_type=Path),
              help="Quarantine CSV (default: <output>.quarantine.csv).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def ingest(path: Path, fmt: str, hardware: str | None, column_map: str | None, op: str | None,
           dtype: str | None, out: Path, qfile: Path | None, as_json: bool) -> None:
    """Read traces at PATH into a validated canonical table with roofline features."""
    from profiling.hardware import load_catalog
    from profiling.ingest import read_traces, refuse_output_over_input

    t0 = time.perf_counter()
    qfile = qfile or out.with_name(out.name + ".quarantine.csv")
    refuse_output_over_input(path, {"-o/--output": out, "--quarantine": qfile})
    catalog = load_catalog()
    defaults = {k: v for k, v in (("op", op), ("dtype", dtype)) if v}
    with _progress(as_json) as bar:
        task = bar.add_task(f"reading {fmt}", total=None)
        result = read_traces(path, fmt, hardware=hardware, column_map=load_column_map(column_map), catalog=catalog,
                             defaults=defaults,
                             progress=lambda i, n, f: bar.update(task, completed=i, total=n))
    _write(result.table, out)
    if len(result.quarantine):
        _write(result.quarantine, qfile, as_csv=True)
    elif qfile.exists():
        qfile.unlink()  # a stale quarantine of an earlier run would mislead
    _report("ingest", _summary(result.table), result.quarantine, result.files, time.perf_counter() - t0,
            out, qfile if len(result.quarantine) else None, as_json, result.skipped, result.skipped_note())


def _write(table: pd.DataFrame, out: Path, as_csv: bool = False) -> None:
    """Parquet (or CSV) at ``out``, replaced whole or not at all."""
    if out.parent and not out.parent.exists():
        raise InputError("output directory does not exist", file=out.parent)
    try:
        with atomic_path(out) as tmp:
            (table.to_csv if as_csv else table.to_parquet)(tmp, index=False)
    except OSError as e:
        raise InputError(f"cannot write {'CSV' if as_csv else 'Parquet'} ({e.strerror or e})", file=out) from None


@profile.command("bench")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--quick", is_flag=True, help="A small grid (seconds, not minutes).")
@click.option("--repeats", type=int, default=7, show_default=True, help="Timed runs per shape (median kept).")
@click.option("--warmup", type=int, default=2, show_default=True, help="Untimed runs before timing.")
@catalog_option
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Output Parquet file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def bench(device: str, quick: bool, repeats: int, warmup: int, out: Path, as_json: bool) -> None:
    """Run real microbenchmarks on this machine and write the canonical table."""
    try:
        from profiling.bench import bench_catalog, hardware_yaml, run_bench
    except ImportError as e:  # the local profiler is optional in partial installs
        raise HermesError(f"profile bench is unavailable ({e})") from None
    from profiling.hardware import HardwareSpec, load_catalog
    from profiling.roofline import add_roofline_features
    from profiling.schema import validate_traces

    t0 = time.perf_counter()
    with _progress(as_json) as bar:
        task = bar.add_task(f"bench {device}", total=None)
        df = run_bench(device=device, quick=quick, repeats=repeats, warmup=warmup,
                       progress=lambda i, n: bar.update(task, completed=i, total=n))
    catalog = bench_catalog(df, load_catalog())
    clean, quarantine = validate_traces(df)
    table = add_roofline_features(clean, catalog)
    _write(table, out)
    qfile = out.with_name(out.name + ".quarantine.csv")
    if len(quarantine):
        _write(quarantine, qfile, as_csv=True)
    spec = df.attrs.get("hardware_spec")
    if spec:  # the measured spec of a local CPU, usable later as --catalog
        write_text_atomic(out.with_name(out.name + ".hardware.yaml"),
                          hardware_yaml(HardwareSpec.model_validate(spec)))
    _report("bench", _summary(table), quarantine, 0, time.perf_counter() - t0, out,
            qfile if len(quarantine) else None, as_json)


COMMANDS: list[click.Command] = [profile]
