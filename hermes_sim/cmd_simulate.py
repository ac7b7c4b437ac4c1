"""`hermes-sim simulate` and `hermes-sim validate`."""
from __future__ import annotations

import json
import os

import click

from profiling.errors import HermesError, InputError

from .options import catalog_option, run_override_options


def _console():
    from rich.console import Console
    return Console(stderr=True)


def _progress_bar(console, label: str):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    # Off when stderr is not a terminal: a stopped transient bar leaves a blank line there,
    # which would precede an error line.
    return Progress(TextColumn(label), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                    TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal)


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


def uncertainty_tables(u: dict) -> list:
    """Bands (p10/p50/p90) of the sampled simulations, P(SLO met), and what each deployment's
    kernel-time factor spans."""
    from rich.table import Table
    b = Table(title=f"uncertainty: {u['samples']} sampled simulations (seed {u['seed']})", show_edge=False)
    b.add_column("metric")
    for q in ("p10", "p50", "p90"):
        b.add_column(q, justify="right")
    for k, v in u["bands"].items():
        ms = k.split("_")[0] in ("ttft", "tpot", "itl", "e2e", "queue")   # latencies in ms, rates as they are
        b.add_row(k.removesuffix("_s") + " (ms)" if ms else k, *[_fmt(v[q], "ms" if ms else "")
                                                                    for q in ("p10", "p50", "p90")])
    for k, p in u["slo_probability"].items():
        b.add_row(f"P(SLO {k} met)" if k != "all" else "P(all SLOs met)", "", f"{p:.0%}", "")
    d = Table(title="kernel-time factor per deployment (p10-p90)", show_edge=False, show_header=False)
    for _ in range(3):
        d.add_column()
    for name, v in u["deployments"].items():
        lo, hi = v["kernel_factor_p10_p90"]
        d.add_row(f"{name} on {v['hardware']}", f"x{lo:.2f} - x{hi:.2f}", v["note"]
                  + (f"; overhead from {v['overhead_sets']} profile fits" if v["overhead_sets"] else ""))
    return [b, d]


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
@click.option("--uncertainty", "uncertain", is_flag=True,
              help="also run --samples simulations with kernel time (and engine overhead) drawn from the "
                   "surrogate's intervals: p10/p50/p90 bands and P(SLO met), in summary.json 'uncertainty' "
                   "(costs --samples more simulations)")
@click.option("--samples", type=click.IntRange(2, 1000), default=16, show_default=True,
              help="--uncertainty: sampled simulations (seeded by the scenario's seed)")
@catalog_option
def simulate_cmd(scenario_file: str, surrogate: str | None, outdir: str | None, as_json: bool,
                 no_plots: bool, uncertain: bool, samples: int) -> None:
    """Simulate SCENARIO_FILE (YAML) and print the summary."""
    from simulator import check_fit, load_scenario, simulate
    scenario = load_scenario(scenario_file)
    if surrogate is not None:
        scenario = scenario.model_copy(update={"surrogate": surrogate})
    if outdir:
        check_out_dir(outdir)
    try:
        check_fit(scenario)
    except InputError:
        raise
    except HermesError as e:
        raise InputError(str(e), file=scenario_file) from None
    if "workload" not in scenario.model_fields_set:
        click.echo(f"hermes-sim: note: {scenario_file} has no 'workload': {default_workload()}", err=True)
    console = _console()
    with _progress_bar(console, f"simulating {scenario.name}") as bar:
        task = bar.add_task("sim", total=1.0)
        result = simulate(scenario, progress=lambda f: bar.update(task, completed=f))
    if uncertain:
        from simulator.uncertainty import uncertainty
        with _progress_bar(console, f"{samples} sampled simulations") as bar:
            task = bar.add_task("samples", total=1.0)
            result.summary["uncertainty"] = uncertainty(scenario, samples, scenario.seed,
                                                        progress=lambda f: bar.update(task, completed=f))
    if outdir:
        result.write(outdir, plots=not no_plots)
    if as_json:
        click.echo(result.summary_json())
        return
    for t in summary_table(result.summary):
        console.print(t)
    if uncertain:
        for t in uncertainty_tables(result.summary["uncertainty"]):
            console.print(t)
    reasons = result.summary["rejected"]["reasons"]
    for why, n in reasons.items():
        console.print(f"[yellow]rejected {n}: {why}[/]")
    for line in untrained_hardware(scenario):
        console.print(f"[yellow]{line}[/]")
    if outdir:
        console.print(f"outputs in {outdir}")


OUTPUT_FILES = ("summary.json", "requests.parquet", "trace.json")


def check_out_dir(outdir: str) -> None:
    """Refuse an output folder that cannot be written before simulating, not after: it, or
    the nearest part of its path that exists, must be a writable folder."""
    from pathlib import Path
    out = Path(outdir)
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"output folder: '{probe}' is a file, not a folder", file=out)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"output folder: '{probe}' is not writable", file=out)
    for name in OUTPUT_FILES:
        if probe == out and (out / name).is_dir():
            raise InputError(f"output folder: {name} there is a folder, not a file", file=out)


def default_workload() -> str:
    """What a scenario without a workload section simulates, in words."""
    from simulator.scenario import Workload
    w = Workload()
    return (f"simulating the default, {w.num_requests} {w.arrival} requests at {w.rate_rps:g} req/s with "
            f"{w.prompt_tokens.mean:g}-token prompts and {w.output_tokens.mean:g}-token outputs")


def untrained_hardware(scenario) -> list[str]:
    """How the scenario's surrogate prices each deployment GPU it has no traces of (the
    spec-sheet transfer model, maybe anchored to a measured sibling): the user should know."""
    from profiling.hardware import load_catalog
    from simulator.engine.stepcost import load_predictor
    predictor = load_predictor(scenario.surrogate)
    if not hasattr(predictor, "describe_hardware"):
        return []
    cat, trained = load_catalog(), set(predictor.trained_hardware())
    names = dict.fromkeys(cat.get(d.hardware).name for d in scenario.deployments)
    return [predictor.describe_hardware(cat.get(n)) for n in names if n not in trained]


# Serving-run formats `validate` replays with the run's own engine (profiling.readers.runs),
# besides the older silicon and csv comparisons; 'sglang' is short for sglang-bench.
RUN_FORMAT_CHOICES = ("auto", "vllm-bench", "llmservingsim", "sglang", "sglang-bench", "inference-perf",
                      "genai-perf", "aiperf", "request-csv")
# inference-perf's per-stage reports without per-request data (not a per-request run format).
STAGES_FORMAT = "inference-perf-stages"


@click.command("validate")
@click.argument("measurements", type=click.Path())
@click.argument("scenario_arg", required=False, type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["silicon", "csv", *RUN_FORMAT_CHOICES, STAGES_FORMAT]),
              default=None,
              help="silicon: silicon_sample.csv rows; csv: per-request arrival_s,prompt_tokens,output_tokens,"
                   "ttft_s[,tpot_s,e2e_s] against --scenario; vllm-bench with --trace and --scenario: the "
                   "per-request comparison; inference-perf-stages: a results folder of per-stage reports, its "
                   "requests synthesized and compared stage by stage; any other (auto detects it): a serving "
                   "run replayed on its own engine, model and GPU (a SCENARIO replaces that deployment)")
@run_override_options("run:")
@click.option("-o", "--out", "outdir", type=click.Path(file_okay=False), default=None,
              help="run: write validate.json and validate.png (latency CDFs, per-request scatter; per-stage "
                   "bars for inference-perf-stages) here")
@click.option("--scenario", "scenario_opt", type=click.Path(dir_okay=False), default=None)
@click.option("--trace", type=click.Path(dir_okay=False), default=None, help="vllm-bench: the replayed request trace")
@click.option("--surrogate", default=None)
@click.option("--filter", "pattern", default=None, help="silicon: only rows whose model_path matches (regex)")
@click.option("--calibrate", "fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="silicon: fit the framework overhead (and engine settings a harness did not record) on "
                   "this seeded fraction of each stack/GPU group and report the error on the other rows")
@click.option("--seed", type=int, default=0, show_default=True,
              help="silicon: seed of the --calibrate split; run: seed of arrivals drawn at the recorded rate")
@click.option("--overhead", "overhead_in", type=click.Path(dir_okay=False), default=None,
              help="silicon: replay with the overhead per stack/GPU group saved by --overhead-out; run: an "
                   "engine overhead file (a scenario's overhead: block as JSON, or per stack/GPU group)")
@click.option("--overhead-out", type=click.Path(dir_okay=False), default=None,
              help="silicon: write what --calibrate fitted (JSON: 'overhead' per group, each a scenario's "
                   "overhead: block, and 'engine' settings per group)")
@click.option("--processes", type=click.IntRange(1), default=1, show_default=True,
              help="silicon: rows simulated in parallel")
@click.option("--json", "as_json", is_flag=True)
@catalog_option
def validate_cmd(measurements: str, scenario_arg: str | None, fmt: str | None, overrides: dict,
                 outdir: str | None, scenario_opt: str | None,
                 trace: str | None, surrogate: str | None, pattern: str | None, fraction: float | None,
                 seed: int, overhead_in: str | None, overhead_out: str | None, processes: int,
                 as_json: bool) -> None:
    """Compare measured TTFT/TPOT/E2E with the simulation, row by row."""
    from simulator.fidelity.validate import load_replay_scenario, replay_requests, validate_mode
    scenario_file = scenario_opt or scenario_arg
    console = _console()
    if fmt in (None, "auto"):
        measurements, fmt = _inference_perf_folder(measurements, fmt)
    if fmt == STAGES_FORMAT:
        given = [flag for flag, v in (("SCENARIO", scenario_file), ("--trace", trace), ("--calibrate", fraction),
                                      ("--overhead-out", overhead_out), ("--filter", pattern)) if v is not None]
        if given:
            raise HermesError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to "
                              f"--format {STAGES_FORMAT}")
        _validate_stages(console, measurements, overrides, surrogate, seed, overhead_in, outdir, as_json)
        return
    fmt = validate_mode(measurements, fmt, scenario_file, trace, bool(overrides))
    if fmt not in ("silicon", "csv", "vllm-bench-trace"):
        if fraction is not None or overhead_out:
            raise HermesError("--calibrate and --overhead-out apply to --format silicon only")
        _validate_run(console, measurements, fmt, scenario_file, trace, overrides, surrogate, seed,
                      overhead_in, outdir, as_json)
        return
    if overrides or outdir:
        raise HermesError("--engine, --engine-version, --model, --gpu, --tp and -o apply to serving runs, "
                          f"not --format {'vllm-bench with --trace' if fmt == 'vllm-bench-trace' else fmt}")
    fmt = "vllm-bench" if fmt == "vllm-bench-trace" else fmt
    if fmt == "silicon":
        rep = _validate_silicon(console, measurements, surrogate, pattern, fraction, seed, overhead_in,
                                overhead_out, processes)
    elif fraction is not None or overhead_in or overhead_out:
        raise HermesError("--calibrate, --overhead and --overhead-out apply to --format silicon (--overhead "
                          "to serving runs too), not to a per-request comparison against a scenario")
    else:
        if not scenario_file:
            raise HermesError(f"--format {fmt} needs a scenario (--scenario FILE)")
        if fmt == "vllm-bench" and not trace:
            raise HermesError("--format vllm-bench with a scenario needs --trace FILE (the replayed request "
                              "trace); --format auto replays the result as a serving run")
        scenario = load_replay_scenario(scenario_file)   # its workload is replaced by the measured requests
        if surrogate:
            scenario = scenario.model_copy(update={"surrogate": surrogate})
        rep = replay_requests(measurements, scenario, fmt, trace)
    if as_json:
        click.echo(json.dumps(rep, default=lambda x: None))
        return
    _print_report(console, rep)


def _validate_run(console, measurements: str, fmt: str, scenario_file: str | None, trace: str | None,
                  overrides: dict, surrogate: str | None, seed: int, overhead_in: str | None,
                  outdir: str | None, as_json: bool) -> None:
    """Replay a serving run on its own engine (or SCENARIO's deployment) and report fidelity."""
    from profiling.readers.runs import read_run
    from simulator.fidelity.runs import (load_run_overhead, plot_replay, replay_report, replay_run,
                                         replay_scenario)
    from simulator.fidelity.validate import load_replay_scenario
    if outdir:
        check_out_dir(outdir)
    extra = {"trace": trace} if trace and fmt == "vllm-bench" else {}
    if trace and fmt != "vllm-bench":
        raise HermesError(f"--trace applies to --format vllm-bench, not {fmt}")
    run = read_run(measurements, fmt, **overrides, **extra)
    overhead = load_run_overhead(overhead_in, run.info) if overhead_in else None
    with console.status(f"replaying {len(run.requests)} requests"):
        if scenario_file:
            scenario = load_replay_scenario(scenario_file)   # its deployments replace the run's
            if surrogate:
                scenario = scenario.model_copy(update={"surrogate": surrogate})
            if overhead is not None:
                scenario = scenario.model_copy(update={"deployments": [
                    d.model_copy(update={"overhead": overhead}) for d in scenario.deployments]})
            rep = replay_scenario(run, scenario, seed=seed)
        else:
            rep = replay_run(run, overhead=overhead, surrogate=surrogate or "builtin", seed=seed)
    _emit(console, replay_report(rep), outdir, lambda png: plot_replay(rep, png), as_json, _print_run_report)


def _emit(console, doc: dict, outdir: str | None, plot, as_json: bool, show) -> None:
    """A validation's outputs: ``validate.json`` and ``plot(validate.png)`` in ``outdir`` when
    given, then the JSON (``as_json``) or ``show(console, doc)``."""
    from pathlib import Path

    from profiling.atomicfile import write_text_atomic
    if outdir:
        out = Path(outdir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "validate.json", json.dumps(doc, default=lambda x: None) + "\n")
        plot(out / "validate.png")
    if as_json:
        click.echo(json.dumps(doc, default=lambda x: None))
        return
    show(console, doc)
    if outdir:
        console.print(f"outputs in {outdir} (validate.json, validate.png)")


def _inference_perf_folder(measurements: str, fmt: str | None) -> tuple[str, str | None]:
    """An inference-perf results folder (or its experiment folder): its per-request report
    when it kept one, else its stage reports (``STAGES_FORMAT``); anything else as given."""
    from pathlib import Path

    from profiling.readers.runs import inference_perf_stages as ips
    p = Path(measurements)
    if not p.is_dir() and not p.name.endswith("_lifecycle_metrics.json"):
        return measurements, fmt
    folder = ips.results_folder(p)
    if (folder / ips.PER_REQUEST).is_file():
        return str(folder / ips.PER_REQUEST), fmt
    return (measurements, STAGES_FORMAT) if ips.detect(p) else (measurements, fmt)


def _validate_stages(console, measurements: str, overrides: dict, surrogate: str | None, seed: int,
                     overhead_in: str | None, outdir: str | None, as_json: bool) -> None:
    """Replay an inference-perf run known by its stage reports and compare stage by stage."""
    from profiling.readers.runs.inference_perf_stages import read_stages
    from simulator.fidelity.runs import load_run_overhead
    from simulator.fidelity.stages import plot_stages, replay_stages
    if outdir:
        check_out_dir(outdir)
    run = read_stages(measurements, seed=seed, **overrides)
    overhead = load_run_overhead(overhead_in, run.info) if overhead_in else None
    with console.status(f"replaying {len(run.stages)} stages, {len(run.requests)} requests"):
        rep = replay_stages(run, overhead=overhead, surrogate=surrogate or "builtin", seed=seed)
    _emit(console, rep.to_dict(), outdir, lambda png: plot_stages(rep, png), as_json, _print_stages_report)


def _print_stages_report(console, doc: dict) -> None:
    from rich.table import Table
    r = doc["run"]

    def err(c: dict) -> str:
        return "-" if c["err"] is None else f"{c['err'] * 100:+.1f}"

    t = Table(title=f"{r['engine']} {r['version']} {r['model']} on {r['gpu']} (TP{r['tp']}): simulated vs real "
                    f"per stage, {r['requests']} requests synthesized from the stage reports", show_edge=False)
    for c in ("stage", "load", "metric", "real (ms)", "simulated (ms)", "error %"):
        t.add_column(c, justify="left" if c in ("stage", "load", "metric") else "right")
    rows = [*doc["stages"], *([{**doc["summary"], "load": "summary"}] if doc["summary"] else [])]
    for st in rows:
        load = st.get("load") or (f"{st['rate']:g} req/s" if st.get("rate") else f"{st.get('concurrency')} clients")
        name = "all" if st["index"] is None else str(st["index"])
        first = True
        for m in ("ttft", "e2e"):
            for q in ("mean", "p90", "p99"):
                c = st["metrics"][m][q]
                t.add_row(name if first else "", load if first else "", f"{m.upper()} {q}", _fmt(c["real"], "ms"),
                          _fmt(c["sim"], "ms"), err(c))
                first = False
        c = st["output_tokens_per_s"]
        t.add_row("", "", "output tok/s", _fmt(c["real"]), _fmt(c["sim"]), err(c), end_section=True)
    console.print(t)
    for n in doc["notes"]:
        console.print(f"note: {n}", highlight=False)


def _print_not_compared(console, skipped: list[dict], most: int = 50) -> None:
    """The requests or rows left out of the comparison, with the reason (the first ``most``)."""
    for u in skipped[:most]:
        console.print(f"[yellow]not compared {u['id']}: {u['reason']}[/]", highlight=False)
    if len(skipped) > most:
        console.print(f"[yellow]... {len(skipped) - most} more not compared (use --json for all)[/]")


def _print_run_report(console, doc: dict) -> None:
    from rich.table import Table
    r, e = doc["run"], doc["errors"]
    t = Table(title=f"{r['engine']} {r['version']} {r['model']} on {r['gpu']} (TP{r['tp']} DP{r['dp']}): "
                    f"simulated vs real, {e['compared']} of {e['requests']} requests", show_edge=False)
    for c in ("metric", "real (ms)", "simulated (ms)", "error %", "per-request MAPE %"):
        t.add_column(c, justify="left" if c == "metric" else "right")
    for k in ("ttft", "tpot", "e2e"):
        for q in ("mean", "p50", "p90", "p99"):
            v = e[f"{k}_{q}"]
            mape = e[f"{k}_mape"] if q == "mean" else None
            t.add_row(f"{k.upper()} {q}", _fmt(v["real"], "ms"), _fmt(v["sim"], "ms"),
                      "-" if v["err_pct"] is None else f"{v['err_pct']:+.1f}",
                      "" if mape is None else f"{mape:.1f}", end_section=q == "p99")
    console.print(t)
    tp = e["output_tokens_per_s"]
    console.print(f"output tokens/s: real {_fmt(tp['real'])}, simulated {_fmt(tp['sim'])}"
                  + ("" if tp["err_pct"] is None else f" ({tp['err_pct']:+.1f}%)")
                  + ("" if e["e2e_ratio"] is None else f"; mean E2E simulated / real {e['e2e_ratio']:.3f}"),
                  highlight=False)
    sat = e["saturation"]
    console.print(f"[yellow]{sat['note']}[/]" if sat["note"] else f"saturation: {sat['line']}", highlight=False)
    for n in doc["notes"]:
        console.print(f"note: {n}", highlight=False)
    _print_not_compared(console, doc["unsupported"])


def _validate_silicon(console, measurements: str, surrogate: str | None, pattern: str | None,
                      fraction: float | None, seed: int, overhead_in: str | None, overhead_out: str | None,
                      processes: int) -> dict:
    """Replay silicon rows; with ``fraction``, first fit the overhead on a seeded share of
    each stack/GPU group and report only the other rows."""
    from simulator.fidelity.calibrate import (apply_engines, engine_doc, fit_engines, fit_overhead, load_overhead,
                                     report, run_rows, save_overhead, split_rows)
    from profiling.readers.serving import read_silicon
    from simulator.fidelity.silicon import silicon_rows
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
        rep = report(run_rows(ok, theta, progress=lambda f: bar.update(task, completed=f), processes=processes),
                     str(measurements))
    rep["unsupported"] = ([{"id": r.id, "reason": r.unsupported} for r in rows if r.unsupported]
                          + rep.get("unsupported", []))
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
    _print_not_compared(console, rep.get("unsupported", []))
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
