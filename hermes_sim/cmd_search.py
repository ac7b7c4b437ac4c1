"""`hermes-sim search` and `hermes-sim ui` verbs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from profiling.errors import HermesError

from .options import catalog_option


@click.command("search")
@click.argument("space", required=False, type=click.Path(dir_okay=False))
@click.option("--trials", type=click.IntRange(min=1), default=40, show_default=True,
              help="total finished trials in the study (a rerun only runs the missing ones)")
@click.option("--storage", default=None, help="Optuna RDB URL (default sqlite:///hermes-search.db)")
@click.option("--study", "study_name", default=None, help="study name (default: the space's name)")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="local worker processes sharing the storage")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--heartbeat", type=click.IntRange(min=1), default=5, show_default=True,
              help="worker heartbeat, seconds (a silent worker's trial is retried after 3x)")
@click.option("-o", "--out", "outdir", default=None, type=click.Path(file_okay=False),
              help="where the best scenario, plots and trials CSV go (default search-results/STUDY)")
@click.option("--json", "as_json", is_flag=True, help="print only the result JSON on stdout")
@click.option("--export", "export_target", default=None,
              type=click.Choice(("vllm", "sglang", "trtllm", "k8s", "llm-d", "dynamo", "all")),
              help="also export the best configuration for this target to OUT/export (as hermes-sim export)")
@catalog_option
def search_cmd(space: str | None, trials: int, storage: str | None, study_name: str | None,
               workers: int, seed: int, heartbeat: int, outdir: str | None, as_json: bool,
               export_target: str | None) -> None:
    """Find the deployment with the most output tokens per dollar under the SLOs.

    Without SPACE, runs the built-in example space (search/spaces/default.yaml).
    """
    from search import load_space, run_search

    err = Console(stderr=True)
    warned: list[str] = []

    def warn(msg: str) -> None:  # one line, once
        if not warned:
            warned.append(msg)
            click.echo(f"warning: {msg}", err=True)

    sp = load_space(space)
    res = run_search(sp, trials=trials, storage_url=storage, study_name=study_name,
                     workers=workers, seed=seed, heartbeat_s=heartbeat, outdir=outdir,
                     console=err, warn=warn)
    if as_json:
        click.echo(json.dumps(res.to_json(), default=_jsonable))
    else:
        _print(Console(), res)
    if export_target is not None:
        _export_best(res, export_target)


def _export_best(res, target: str) -> None:
    """``hermes-sim export`` of the best scenario into the search's output folder."""
    from search.export import export

    if res.best is None:
        click.echo("export: no configuration met the SLOs, nothing exported", err=True)
        return
    dest = Path(res.outdir) / "export"
    files = export(res.best["scenario_file"], target, dest)
    click.echo(f"exported the best configuration ({target}): {len(files)} files in {dest}", err=True)
    if res.mlflow_parent_run_id:                  # beside the study's other outputs in MLflow
        from search.tracking import Tracker
        Tracker(warn=lambda m: click.echo(f"warning: {m}", err=True)).add_artifacts(
            res.mlflow_parent_run_id, dest, "export")


def _jsonable(x: object) -> object:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def _print(con: Console, res) -> None:
    best, base = res.best, res.baseline
    if best is None:
        con.print(f"[red]No configuration met the SLOs[/] in {res.trials} trials of study "
                  f"'{res.study}'. See {res.outdir}/trials.csv for the reasons.")
        return
    t = Table(title=f"Best of {res.trials} trials (study '{res.study}', trial {best['trial']})")
    t.add_column("parameter")
    t.add_column("value")
    for k, v in best["params"].items():
        t.add_row(k, str(v))
    con.print(t)
    con.print(f"[bold]{best['output_tokens_per_dollar']:,.0f} output tokens per dollar[/]; "
              f"SLOs {'met' if best['slo_met'] else 'MISSED'}")
    for key, s in (best.get("slo") or {}).items():
        con.print(f"  {key}: {s['measured']:.3g}s vs target {s['target']:.3g}s "
                  f"(margin {s['margin']:+.0%})", highlight=False)
    if base.get("output_tokens_per_dollar"):
        gain = base.get("gain")
        con.print(f"Baseline ({base['description']}): {base['output_tokens_per_dollar']:,.0f} tokens/$, "
                  f"SLOs {'met' if base['slo_met'] else 'missed: ' + base['reason']}"
                  + (f" -> gain {gain:.2f}x" if gain else ""), highlight=False)
    else:
        con.print(f"Baseline ({base['description']}): {base.get('reason')}", highlight=False)
    con.print(f"Best scenario: {best['scenario_file']} (run: hermes-sim simulate {best['scenario_file']})",
              highlight=False)
    from simulator import load_scenario

    from .cmd_simulate import untrained_hardware
    for line in untrained_hardware(load_scenario(best["scenario_file"])):
        con.print(f"[yellow]{line}[/]", highlight=False)
    if res.mlflow_experiment:
        con.print(f"MLflow experiment: '{res.mlflow_experiment}' (open with: hermes-sim ui)",
                  highlight=False)
    else:
        con.print("MLflow: not tracked; results are in the Optuna storage", highlight=False)


@click.command("ui")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def ui_cmd(port: int, host: str) -> None:
    """Start the MLflow UI on the local store (mlruns/) and print where to point the browser."""
    from search.tracking import artifact_root, prepare_store, tracking_uri

    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        click.echo(f"MLflow tracking server in use: {uri} (open it in a browser)")
        return
    _refuse_taken_port(host, port)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.exists():
            raise HermesError(f"no MLflow store at {db}; run `hermes-sim search` first")
    else:  # a database or file store the user named: served by a local UI all the same
        db = uri
        prepare_store(uri)
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    cmd = [exe, "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    root = artifact_root()
    if root:
        cmd += ["--default-artifact-root", root]
    click.echo(f"MLflow UI on {db}: open http://{host}:{port}  (Ctrl-C to stop)")
    _serve(cmd)


def _refuse_taken_port(host: str, port: int) -> None:
    """Bind ``host:port`` once, as the UI server will (with SO_REUSEADDR, so a closed
    connection lingering in TIME_WAIT does not count): when another process listens there,
    "open http://..." would point the user at that process instead of the UI."""
    import socket
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise HermesError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise HermesError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror or e}); "
                              "another program may be using it: pick a free port with --port") from None


def _serve(cmd: list[str]) -> None:
    """Run the MLflow UI until it exits or we are stopped (Ctrl-C or SIGTERM), then stop
    it with its server workers: they live in their own session, which a signal to this
    process alone would otherwise leave running."""
    import signal

    proc = subprocess.Popen(cmd, env=os.environ.copy(), start_new_session=True)

    def stop(*_args) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        proc.wait()
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


COMMANDS: list[click.Command] = [search_cmd, ui_cmd]
