"""`hermes-sim simulate` and `hermes-sim validate`."""
from __future__ import annotations

import json

import click

from profiling.errors import HermesError

from .options import catalog_option


def _console():
    from rich.console import Console
    return Console(stderr=True)


def _progress_bar(console, label: str):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    return Progress(TextColumn(label), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                    TimeElapsedColumn(), console=console, transient=True)


def _fmt(x, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "-"
    if unit == "ms":
        return f"{x * 1e3:,.1f}"
    return f"{x:,.4g}" if isinstance(x, float) else str(x)


def summary_table(s: dict):
    from rich.table import Table
    lat = Table(title="latency (ms)", show_edge=False)
    lat.add_column("metric")
    for k in ("mean", "p50", "p90", "p95", "p99"):
        lat.add_column(k, justify="right")
    for m in ("ttft_s", "tpot_s", "itl_s", "e2e_s", "queue_s"):
        lat.add_row(m[:-2].upper(), *[_fmt(s[m][k], "ms") for k in ("mean", "p50", "p90", "p95", "p99")])
    tot = Table(title="totals", show_edge=False, show_header=False)
    tot.add_column("k")
    tot.add_column("v", justify="right")
    for k in ("requests", "completed", "throughput_req_s", "output_tokens_per_s", "goodput_req_s",
              "makespan_s", "devices", "cost_usd", "output_tokens_per_dollar", "energy_j", "preemptions",
              "sim_wall_s"):
        tot.add_row(k, _fmt(s.get(k)))
    tot.add_row("rejected", str(s["rejected"]["count"]))
    for k, v in s.get("slo", {}).items():
        tot.add_row(f"SLO {k}", f"{_fmt(v['measured'], 'ms')} ms vs {_fmt(v['target'], 'ms')} ms "
                    f"{'[green]met[/]' if v['met'] else '[red]missed[/]'}")
    return (lat, tot, *_pipeline_tables(s))


def _pipeline_tables(s: dict) -> list:
    """Per-stage latency breakdown and KV-tier hit rates (multi-stage pipelines)."""
    from rich.table import Table
    out = []
    if s.get("stages"):
        st = Table(title="per-stage latency (ms)", show_edge=False)
        st.add_column("stage")
        for k in ("mean", "p50", "p90", "share of E2E"):
            st.add_column(k, justify="right")
        for name, v in s["stages"].items():
            share = v.get("share")
            st.add_row(name, *[_fmt(v[k], "ms") for k in ("mean", "p50", "p90")],
                       f"{share:.0%}" if isinstance(share, float) and share == share else "")
        out.append(st)
    tiers = {k: v for k, v in (s.get("kv_cache") or {}).items() if isinstance(v, dict)}
    if tiers:
        kv = Table(title=f"KV tiers (token hit rate {s['kv_cache'].get('overall_token_hit_rate', 0):.0%})",
                   show_edge=False)
        for c in ("tier", "served", "hit rate", "blocks"):
            kv.add_column(c, justify="left" if c == "tier" else "right")
        for name, v in tiers.items():
            kv.add_row(name, f"{v['served_fraction']:.0%}", f"{v['hit_rate']:.0%}", str(v["blocks_served"]))
        out.append(kv)
    return out


@click.command("simulate")
@click.argument("scenario_file", type=click.Path(dir_okay=False))
@click.option("--surrogate", "surrogate", default=None, help="builtin | roofline | a path | an MLflow run id")
@click.option("-o", "--out", "outdir", type=click.Path(file_okay=False), default=None,
              help="write summary.json, requests.parquet, trace.json and plots here")
@click.option("--json", "as_json", is_flag=True, help="print only the summary JSON on stdout")
@click.option("--no-plots", is_flag=True, help="skip the PNG plots")
@catalog_option
def simulate_cmd(scenario_file: str, surrogate: str | None, outdir: str | None, as_json: bool,
                 no_plots: bool) -> None:
    """Simulate SCENARIO_FILE (YAML) and print the summary."""
    from simulator import check_fit, load_scenario, simulate
    scenario = load_scenario(scenario_file)
    if surrogate is not None:
        scenario = scenario.model_copy(update={"surrogate": surrogate})
    check_fit(scenario)
    console = _console()
    with _progress_bar(console, f"simulating {scenario.name}") as bar:
        task = bar.add_task("sim", total=1.0)
        result = simulate(scenario, progress=lambda f: bar.update(task, completed=f))
    if outdir:
        result.write(outdir, plots=not no_plots)
    if as_json:
        click.echo(result.summary_json())
        return
    for t in summary_table(result.summary):
        console.print(t)
    reasons = result.summary["rejected"]["reasons"]
    for why, n in reasons.items():
        console.print(f"[yellow]rejected {n}: {why}[/]")
    for line in untrained_hardware(scenario):
        console.print(f"[yellow]{line}[/]")
    if outdir:
        console.print(f"outputs in {outdir}")


def untrained_hardware(scenario) -> list[str]:
    """How the scenario's surrogate prices each deployment GPU it has no traces of (the
    spec-sheet transfer model, maybe anchored to a measured sibling): the user should know."""
    from profiling.hardware import load_catalog
    from simulator.stepcost import load_predictor
    predictor = load_predictor(scenario.surrogate)
    if not hasattr(predictor, "describe_hardware"):
        return []
    cat, trained = load_catalog(), set(predictor.trained_hardware())
    names = dict.fromkeys(cat.get(d.hardware).name for d in scenario.deployments)
    return [predictor.describe_hardware(cat.get(n)) for n in names if n not in trained]


@click.command("validate")
@click.argument("measurements", type=click.Path(dir_okay=False))
@click.argument("scenario_arg", required=False, type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["silicon", "vllm-bench", "csv"]), default=None,
              help="silicon: silicon_sample.csv rows; vllm-bench: benchmark_serving JSON (+ --trace, "
                   "--scenario); csv: per-request arrival_s,prompt_tokens,output_tokens,ttft_s[,tpot_s,e2e_s]")
@click.option("--scenario", "scenario_opt", type=click.Path(dir_okay=False), default=None)
@click.option("--trace", type=click.Path(dir_okay=False), default=None, help="vllm-bench: the replayed request trace")
@click.option("--surrogate", default=None)
@click.option("--filter", "pattern", default=None, help="silicon: only rows whose model_path matches (regex)")
@click.option("--calibrate", "fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="silicon: fit the framework overhead (and engine settings a harness did not record) on "
                   "this seeded fraction of each stack/GPU group and report the error on the other rows")
@click.option("--seed", type=int, default=0, show_default=True, help="silicon: seed of the --calibrate split")
@click.option("--overhead", "overhead_in", type=click.Path(dir_okay=False), default=None,
              help="silicon: replay with the overhead per stack/GPU group saved by --overhead-out")
@click.option("--overhead-out", type=click.Path(dir_okay=False), default=None,
              help="silicon: write what --calibrate fitted (JSON: 'overhead' per group, each a scenario's "
                   "overhead: block, and 'engine' settings per group)")
@click.option("--processes", type=click.IntRange(1), default=1, show_default=True,
              help="silicon: rows simulated in parallel")
@click.option("--json", "as_json", is_flag=True)
@catalog_option
def validate_cmd(measurements: str, scenario_arg: str | None, fmt: str | None, scenario_opt: str | None,
                 trace: str | None, surrogate: str | None, pattern: str | None, fraction: float | None,
                 seed: int, overhead_in: str | None, overhead_out: str | None, processes: int,
                 as_json: bool) -> None:
    """Compare measured TTFT/TPOT/E2E with the simulation, row by row."""
    from simulator import load_scenario
    from simulator.validate import replay_requests
    scenario_file = scenario_opt or scenario_arg
    fmt = fmt or ("csv" if scenario_file else "silicon")
    console = _console()
    if fmt == "silicon":
        rep = _validate_silicon(console, measurements, surrogate, pattern, fraction, seed, overhead_in,
                                overhead_out, processes)
    elif fraction is not None or overhead_in or overhead_out:
        raise HermesError("--calibrate, --overhead and --overhead-out apply to --format silicon only")
    else:
        if not scenario_file:
            raise HermesError(f"--format {fmt} needs a scenario (--scenario FILE)")
        if fmt == "vllm-bench" and not trace:
            raise HermesError("--format vllm-bench needs --trace FILE (the replayed request trace)")
        scenario = load_scenario(scenario_file)
        if surrogate:
            scenario = scenario.model_copy(update={"surrogate": surrogate})
        rep = replay_requests(measurements, scenario, fmt, trace)
    if as_json:
        click.echo(json.dumps(rep, default=lambda x: None))
        return
    _print_report(console, rep)


def _validate_silicon(console, measurements: str, surrogate: str | None, pattern: str | None,
                      fraction: float | None, seed: int, overhead_in: str | None, overhead_out: str | None,
                      processes: int) -> dict:
    """Replay silicon rows; with ``fraction``, first fit the overhead on a seeded share of
    each stack/GPU group and report only the other rows."""
    from simulator.calibrate import (apply_engines, engine_doc, fit_engines, fit_overhead, load_overhead,
                                     report, run_rows, save_overhead, split_rows)
    from simulator.silicon import read_silicon, silicon_rows
    if fraction is not None and overhead_in:
        raise HermesError("give either --calibrate (fit the overhead here) or --overhead FILE (use a fitted one)")
    if overhead_out and fraction is None:
        raise HermesError("--overhead-out needs --calibrate FRACTION (there is nothing fitted to write)")
    theta, engines = load_overhead(overhead_in) if overhead_in else (None, {})
    df = read_silicon(measurements)
    if pattern:
        df = df[df.model_path.astype(str).str.contains(pattern, regex=True)]
    rows = silicon_rows(df, surrogate=surrogate or "builtin")
    ok = [r for r in rows if r.scenario is not None]
    calib: list = []
    if fraction is not None:
        if not ok:
            raise HermesError(f"{measurements}: no row can be simulated, so there is nothing to calibrate on")
        calib, ok = split_rows(ok, fraction, seed)
        with console.status(f"fitting the framework overhead on {len(calib)} rows"):
            engines = fit_engines(calib, processes=processes)
            calib = apply_engines(calib, engines)
            theta = fit_overhead(calib, processes=processes)
        if overhead_out:
            save_overhead(theta, overhead_out, engines)
    ok = apply_engines(ok, engines)
    with _progress_bar(console, "replaying rows") as bar:
        task = bar.add_task("rows", total=1.0)
        rep = report(run_rows(ok, theta, progress=lambda f: bar.update(task, completed=f), processes=processes))
    rep["unsupported"] = [{"id": r.id, "reason": r.unsupported} for r in rows if r.unsupported]
    if theta is not None:
        rep["overhead"] = {g: th.model_dump() for g, th in sorted(theta.items())}
        rep["default_overhead_groups"] = sorted({r.group for r in ok} - set(theta))
    if engines:
        rep["engine"] = engine_doc(engines)
    if fraction is not None:
        rep["calibration"] = {"fraction": fraction, "seed": seed, "rows": len(calib),
                              "ids": [r.id for r in calib]}
    return rep


def _print_report(console, rep: dict) -> None:
    from rich.table import Table
    rows = rep.get("rows", [])
    t = Table(title="predicted vs measured (ms)", show_edge=False)
    keys = [k for k in ("ttft", "tpot", "e2e") if rows and f"{k}_meas" in rows[0]]
    t.add_column("row")
    for k in keys:
        t.add_column(f"{k} sim", justify="right")
        t.add_column(f"{k} real", justify="right")
        t.add_column("err %", justify="right")
    for r in rows[:200]:
        cells = [str(r.get("id", ""))[:60]]
        for k in keys:
            p, m = r.get(f"{k}_pred"), r.get(f"{k}_meas")
            err = (p - m) / m * 100 if p is not None and m else float("nan")
            cells += [_fmt(p, "ms"), _fmt(m, "ms"), f"{err:+.1f}"]
        t.add_row(*cells)
    console.print(t)
    if len(rows) > 200:
        console.print(f"... {len(rows) - 200} more rows (use --json)")
    for k in ("ttft_mape", "tpot_mape", "e2e_mape"):
        if rep.get(k) is not None:
            console.print(f"{k}: {rep[k]:.1f}%")
    for u in rep.get("unsupported", []):
        console.print(f"[yellow]unsupported {u['id']}: {u['reason']}[/]")
    cal = rep.get("calibration")
    if cal:
        console.print(f"overhead fitted on {cal['rows']} rows ({cal['fraction']:.0%} of each stack/GPU group, "
                      f"seed {cal['seed']}); the errors above are on the other {len(rows)} rows")
    for g, th in rep.get("overhead", {}).items():
        console.print(f"overhead for {g}: step {th['step_s'] * 1e3:.3f} ms, per seq {th['per_seq_s'] * 1e6:.2f} us, "
                      f"per request {th['request_s'] * 1e3:.1f} ms, front end {th['stream_token_s'] * 1e6:.0f} us "
                      "per streamed token")
    for g, e in rep.get("engine", {}).items():
        console.print(f"engine settings fitted for {g}: {e['prompts_per_step']} x isl tokens per step, "
                      f"{e['held_slots']} slot(s) below the clients")
    for g in rep.get("default_overhead_groups", []):
        console.print(f"[yellow]no fitted overhead for {g}: its rows use the default[/]")


COMMANDS: list[click.Command] = [simulate_cmd, validate_cmd]
