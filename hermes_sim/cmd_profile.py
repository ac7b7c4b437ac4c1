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
@click.option("--plan", "plan_file", type=click.Path(path_type=Path), default=None,
              help="Run exactly this `profile plan` table's kernels (.csv or .parquet) instead of the grid.")
@catalog_option
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Output Parquet file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def bench(device: str, quick: bool, repeats: int, warmup: int, plan_file: Path | None, out: Path,
          as_json: bool) -> None:
    """Run real microbenchmarks on this machine and write the canonical table."""
    try:
        from profiling.bench import bench_catalog, hardware_yaml, run_bench
    except ImportError as e:  # the local profiler is optional in partial installs
        raise HermesError(f"profile bench is unavailable ({e})") from None
    from profiling.hardware import HardwareSpec, load_catalog
    from profiling.roofline import add_roofline_features
    from profiling.schema import validate_traces

    t0 = time.perf_counter()
    plan_rows = _read_plan(plan_file) if plan_file is not None else None
    with _progress(as_json) as bar:
        task = bar.add_task(f"bench {device}", total=None)
        df = run_bench(device=device, quick=quick, repeats=repeats, warmup=warmup, plan=plan_rows,
                       progress=lambda i, n: bar.update(task, completed=i, total=n))
    if plan_rows is not None and not len(df):
        raise InputError("no kernel of the plan runs on one device (collectives need several)", file=plan_file)
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
    skipped = int(df.attrs.get("skipped", 0))
    _report("bench", _summary(table), quarantine, 0, time.perf_counter() - t0, out,
            qfile if len(quarantine) else None, as_json,
            note=f"{skipped} planned collective(s) not run: they need several GPUs" if skipped else "")


def _read_plan(path: Path) -> pd.DataFrame:
    """A plan table written by `profile plan` (.csv or .parquet)."""
    from profiling.csvfile import read_table
    plan = read_table(path, "--plan")
    if "op" not in plan or not len(plan):
        raise InputError("--plan: no 'op' column or no rows (write one with `hermes-sim profile plan`)", file=path)
    return plan.sort_values("plan_rank", kind="stable") if "plan_rank" in plan else plan


# Candidate shapes per kind a plan chooses among (a random subset beyond): the design's
# covariance grows with the square of their number.
MAX_CANDIDATES = 3000


def _deployments_of(scenario: Path | None, space: Path | None) -> list[tuple[str, int, str, int, int]]:
    """(model, TP, dtype, max batch, max tokens per step) of each deployment the user will
    simulate: a scenario's, every assignment of a search space's, or Llama-3.1-8B at TP 1
    and 2 when neither is given."""
    docs = []
    if scenario is not None:
        from simulator.scenario import load_scenario
        docs = [load_scenario(scenario)]
    elif space is not None:
        from search.space import load_space
        from simulator.scenario import parse_scenario
        sp = load_space(space)
        docs = [parse_scenario(sp.scenario(v), space) for v in sp.enumerate()[:256]]
    else:
        return [("Llama-3.1-8B", 1, "bf16", 256, 8192), ("Llama-3.1-8B", 2, "bf16", 256, 8192)]
    out = set()
    for sc in docs:
        for d in sc.deployments:
            out.add((d.model, int(d.tp), d.dtype or "bf16", int(d.scheduler.max_batch_size),
                     int(d.scheduler.max_tokens_per_step)))
    return sorted(out)


@profile.command("plan")
@click.option("--gpu", required=True, help="The new GPU: a catalog name (or one a --catalog spec sheet adds).")
@click.option("--budget", type=int, default=None, help="Kernels to measure (at least 1).")
@click.option("--minutes", type=float, default=None,
              help="GPU minutes to spend measuring (roofline estimate: set-up, warm-up and timed runs per kernel).")
@click.option("--scenario", type=click.Path(path_type=Path), default=None,
              help="Plan for this scenario's deployments (models, TP, batch and token limits).")
@click.option("--space", type=click.Path(path_type=Path), default=None,
              help="Plan for every deployment of this search space.")
@click.option("--surrogate", default="builtin", show_default=True,
              help="Surrogate whose transfer intervals and measured GPUs shape the plan.")
@catalog_option
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Plan table (.csv or .parquet): canonical trace rows without latencies.")
@click.option("--script", "script", type=click.Path(path_type=Path), default=None,
              help="Also write the plan as one standalone Python file (PyTorch only) that measures it on a GPU.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def plan(gpu: str, budget: int | None, minutes: float | None, scenario: Path | None, space: Path | None,
         surrogate: str, out: Path, script: Path | None, as_json: bool) -> None:
    """Choose the kernels (at most --budget, within --minutes of GPU time) whose measurement
    on GPU narrows the surrogate's intervals most over the shapes your deployments run
    (greedy integrated-variance design)."""
    from profiling.hardware import load_catalog
    from profiling.models import resolve_model
    from profiling.plan import PLAN_KINDS, by_kind, deployment_candidates, greedy_plan, kernel_ms, plan_table
    from surrogates.few_rows import kind_priors, with_basis
    from surrogates.tracking import load_surrogate

    t0 = time.perf_counter()
    if budget is None and minutes is None:
        raise InputError("give --budget (kernels) or --minutes (GPU time), or both")
    if budget is not None and budget < 1:
        raise InputError(f"--budget must be at least 1 kernel (got {budget})")
    if minutes is not None and not minutes > 0:
        raise InputError(f"--minutes must be positive (got {minutes})")
    if script is not None and script.suffix != ".py":
        raise InputError("--script must end in .py", file=script)
    if scenario is not None and space is not None:
        raise InputError("give --scenario or --space, not both")
    for flag, f in (("--scenario", scenario), ("--space", space)):
        if f is not None and not f.is_file():
            raise InputError(f"{flag}: no such file", file=f)
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise InputError("-o must end in .csv or .parquet", file=out)
    hw = load_catalog().get(gpu)
    model = load_surrogate(surrogate)
    pools: dict[str, list[pd.DataFrame]] = {}
    deps = _deployments_of(scenario, space)
    for name, tp, dtype, max_batch, max_tokens in deps:
        cands = deployment_candidates([resolve_model(name)], [tp], dtype=dtype, max_batch=max_batch,
                                      max_tokens=max_tokens)
        for k, f in cands.items():
            pools.setdefault(k, []).append(f)
    frames = {}
    for k, parts in pools.items():
        f = pd.concat(parts, ignore_index=True)
        f = f.drop_duplicates(subset=[c for c in f.columns if c != "name"]).reset_index(drop=True)
        if len(f) > MAX_CANDIDATES:
            f = f.sample(MAX_CANDIDATES, random_state=0).sort_index().reset_index(drop=True)
        if k in PLAN_KINDS and k in model.kinds_:
            frames[k] = with_basis(model, k, f, hw)[1]
    cost = {k: kernel_ms(k, f, hw) for k, f in frames.items()} if minutes is not None else None
    order = greedy_plan(frames, budget, kind_priors(model), cost_ms=cost,
                        max_ms=minutes * 60_000 if minutes is not None else None)
    if not order:
        raise InputError(f"--minutes {minutes:g}: not even the first planned kernel fits "
                         f"(each costs at least {min(float(c.min()) for c in cost.values()) / 1000:.2f} s)")
    table = plan_table(frames, order, hw)
    table = table.drop(columns=[c for c in table.columns if str(c).startswith("basis_")])
    _write(table, out, as_csv=out.suffix.lower() == ".csv")
    if script is not None:
        from profiling.plan_script import plan_script
        if script.parent and not script.parent.exists():
            raise InputError("--script: directory does not exist", file=script.parent)
        write_text_atomic(script, plan_script(table, hw.name))
    chosen = {k: int(len(v)) for k, v in by_kind(order).items()}
    est_by_kind = table.groupby("op")["est_gpu_ms"].sum()
    info = {"command": "profile plan", "output": str(out), "gpu": hw.name, "budget": budget, "minutes": minutes,
            "kernels": len(table), "by_kind": chosen, "candidates": {k: int(len(f)) for k, f in frames.items()},
            "deployments": list(dict.fromkeys(f"{m} TP{tp} {dt}" for m, tp, dt, _, _ in deps)),
            "est_gpu_seconds": round(float(table["est_gpu_ms"].sum()) / 1000, 2),
            "est_gpu_seconds_by_kind": {k: round(float(v) / 1000, 2) for k, v in est_by_kind.items()},
            "script": str(script) if script is not None else None,
            "seconds": round(time.perf_counter() - t0, 2)}
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"{len(table)} kernels for {hw.name} from {sum(info['candidates'].values())} candidate shapes "
               f"of {', '.join(info['deployments'])}")
    t = Table()
    for c in ("op kind", "kernels", "est. GPU time (s)"):
        t.add_column(c, justify="left" if c == "op kind" else "right")
    for k, n in chosen.items():
        t.add_row(k, str(n), f"{info['est_gpu_seconds_by_kind'][k]:.2f}")
    t.add_row("total", str(len(table)), f"{info['est_gpu_seconds']:.2f}")
    Console().print(t)
    limit = f" of the {minutes:g} min allowed" if minutes is not None else ""
    click.echo(f"estimated GPU time {info['est_gpu_seconds']:.1f} s ({info['est_gpu_seconds'] / 60:.2f} min{limit}) "
               f"-> {out}" + (f"; measuring script -> {script}" if script is not None else ""))


COMMANDS: list[click.Command] = [profile]
