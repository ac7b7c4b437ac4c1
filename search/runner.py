"""Run a search end to end: open/resume the study, run workers, then report and track.

The parent process owns the study setup, the MLflow parent run, the progress bar and
the final report; trials run in ``workers`` processes (or in-process for one worker).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from profiling.atomicfile import atomic_path
from profiling.errors import HermesError, interrupt_behind

from .objective import at_confidence, content_hash, prepare, score, simulate_doc
from .report import (best_scenario_yaml, best_trial, finished, pareto_front, plot_history,
                     plot_pareto, trials_table)
from .space import SearchSpace
from .storage import counts, make_storage, quiet_optuna, redact
from .bounds import unsupported
from .guide import OFF_ATTR
from .identity import describe, derived_name, identity_hash, study_identity, surrogate_hash
from .study import PROVEN_ATTR, StudyChanged, open_study, run_worker
from .tracking import EXPERIMENT_ATTR, PARENT_ATTR, Tracker, trial_callback


@dataclass
class SearchOutcome:
    """The report of a finished search (what ``--json`` prints)."""

    study: str
    storage: str
    trials: int
    best: dict[str, Any] | None
    baseline: dict[str, Any]
    mlflow_experiment: str | None
    mlflow_parent_run_id: str | None
    outdir: str
    pareto: list[dict[str, Any]] = field(default_factory=list)
    # branch and bound (guide.py): distinct configurations skipped without simulating, and
    # whether every configuration of the space was simulated or bounded out
    bounded_out: int = 0
    optimum_proven: bool = False
    bounding: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def identity_tags(space: SearchSpace) -> dict[str, str]:
    """Tags naming what was searched: scenario, space and surrogate content hashes, and the
    study identity (everything the objective depends on, ``identity.py``)."""
    sur = str(space.base.get("surrogate") or "builtin")
    return {"hermes.scenario": str(space.base.get("name", "")),
            "hermes.scenario_hash": content_hash(space.base), "hermes.space_hash": content_hash(space.doc),
            "hermes.surrogate": sur, "hermes.surrogate_hash": surrogate_hash(sur),
            "hermes.identity": identity_hash(study_identity(space))}


def study_params(space: SearchSpace, *, seed: int | None, storage_url: str, trials: int,
                 workers: int) -> dict[str, str]:
    """What a study was run on, as its MLflow parent run's params: the space (file, objective,
    parameters, SLOs), the seed, the Optuna storage (password hidden), the hardware catalog,
    the surrogate and each deployment's engine profile."""
    from profiling.hardware import CATALOG_ENV
    from simulator.engine.config import EngineConfig
    from simulator.engine.engines import profile_for

    profiles = []
    for dep in space.base.get("deployments") or []:
        eng = dep.get("engine") if isinstance(dep, dict) else None
        if isinstance(eng, dict):
            try:
                prof = profile_for(EngineConfig.model_validate(eng))
            except (ValueError, TypeError):
                prof = None
            profiles.append(f"{dep.get('name', 'llm')}: {prof.path if prof else 'engine defaults'}")
    return {"space": space.name, "space_file": space.source, "objective": space.objective,
            "parameters": ", ".join(space.params), "slo": ", ".join(f"{s.key}={s.target_s:g}" for s in space.slos),
            "seed": str(seed), "storage": redact(storage_url),
            "catalog": os.environ.get(CATALOG_ENV) or "builtin",
            "surrogate": str(space.base.get("surrogate") or "builtin"),
            "engine_profiles": "; ".join(profiles) or "no engine block", "trials": str(trials),
            "workers": str(workers)}


def _progress(console: Console, total: int, enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[best]}"),
                    console=console, disable=not enabled, transient=False)


def bounded_out(study: Any) -> int:
    """Distinct configurations branch and bound skipped without simulating."""
    return len({t.user_attrs.get("params_hash") for t in study.get_trials(deepcopy=False)
                if t.user_attrs.get("bounded")})


def _best_text(study: Any) -> str:
    b = best_trial(finished(study))
    n = bounded_out(study)
    text = f"best {b.values[0]:,.0f} tok/$" if b else "no feasible yet"
    return text + (f", {n} bounded out" if n else "")


def bounding_note(space: SearchSpace, study: Any, trials: int) -> str:
    """One line for the log: what branch and bound did (or why it was not used)."""
    why = unsupported(space) or study.user_attrs.get(OFF_ATTR)
    if why:
        return f"branch and bound off: {why}"
    n = bounded_out(study)
    proven = (f"; every other configuration simulated or bounded out: the best of {trials} "
              "trials is the optimum of the space") if study.user_attrs.get(PROVEN_ATTR) else ""
    return (f"branch and bound: {n} configuration{'s' if n != 1 else ''} bounded out without "
            f"simulating (their fleet $/h cannot beat the best tokens/$ at this load){proven}")


def _spawn(storage: str, study: str, trials: int, seed: int | None, index: int,
           heartbeat_s: int, track: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "search.worker", "--storage", storage, "--study", study,
           "--trials", str(trials), "--index", str(index), "--heartbeat", str(heartbeat_s)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if not track:
        cmd.append("--no-track")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL)


# A study name is a folder of search-results/ and an MLflow experiment: one plain path part.
NAME_BYTES = 200


def check_study_name(name: str, where: str) -> str:
    """``name`` when it is safe as one folder name; ``HermesError`` saying why otherwise
    (``where`` says where the name came from)."""
    why = ("is empty" if not name.strip() else
           "is a relative folder reference" if name.strip() in (".", "..") else
           "contains a path separator" if any(c in name for c in "/\\") else
           "contains a control character" if any(ord(c) < 32 or ord(c) == 127 for c in name) else
           f"is longer than {NAME_BYTES} bytes" if len(name.encode("utf-8", "replace")) > NAME_BYTES else "")
    if why:
        raise HermesError(f"{where} {name!r} {why}: a study name becomes a folder name under "
                          "search-results/ (use letters, digits, '-', '_', '.')")
    return name


def study_name_of(space: SearchSpace, study_name: str | None) -> str:
    """The study's name (``study_name``, else the space's), checked by ``check_study_name``."""
    if study_name is not None:
        return check_study_name(study_name, "--study")
    return check_study_name(space.name, f"{space.source}: name")


def run_search(space: SearchSpace, *, trials: int, storage_url: str | None = None,
               study_name: str | None = None, workers: int = 1, seed: int | None = 0,
               heartbeat_s: int = 5, outdir: str | Path | None = None,
               console: Console | None = None, show_progress: bool = True,
               warn: Callable[[str], None] | None = None) -> SearchOutcome:
    """Run (or resume) the study until ``trials`` trials have finished, then report."""
    quiet_optuna()
    console = console or Console(stderr=True)
    warn = warn or (lambda m: console.print(f"[yellow]warning:[/] {m}", highlight=False))
    name = study_name_of(space, study_name)
    storage = make_storage(storage_url, heartbeat_s=heartbeat_s)
    url = storage.url
    ident = study_identity(space)
    try:
        study = open_study(space, storage, name, seed, ident)
    except StudyChanged as e:
        if study_name is not None:  # a study the user named is never swapped silently
            raise
        name = derived_name(name, ident)
        console.print(f"study '{e.name}' was run with another {describe(e.components)}; "
                      f"this run uses study '{name}'", highlight=False, soft_wrap=True)
        study = open_study(space, storage, name, seed, ident)
    if show_progress:  # after the study opened: a refused resume prints its error line only
        console.print(f"searching '{space.name}' ({len(space.params)} parameters, objective "
                      f"{space.objective}) for {trials} trials in study '{name}'",
                      highlight=False, soft_wrap=True)
    tracker = Tracker(warn=warn)
    exp_name = f"hermes-search/{name}"
    exp_id = tracker.experiment(exp_name) if tracker.enabled else None
    parent = study.user_attrs.get(PARENT_ATTR) if exp_id else None
    if exp_id and (parent is None or study.user_attrs.get(EXPERIMENT_ATTR) != exp_id):
        parent = tracker.start_parent(exp_id, name, identity_tags(space),
                                      study_params(space, seed=seed, storage_url=url, trials=trials,
                                                   workers=workers))
        if parent:
            study.set_user_attr(PARENT_ATTR, parent)
            study.set_user_attr(EXPERIMENT_ATTR, exp_id)
    track = tracker.enabled and parent is not None
    callbacks = [trial_callback(tracker, exp_id, parent, identity_tags(space))] if track else []

    try:
        with _progress(console, trials, show_progress) as prog:
            task = prog.add_task("trials", total=trials, best="")
            done = lambda: sum(counts(t) for t in study.get_trials(deepcopy=False))  # noqa: E731
            prog.update(task, completed=min(done(), trials), best=_best_text(study))
            if workers <= 1:
                def tick(st: Any, _t: Any) -> None:
                    prog.update(task, completed=min(done(), trials), best=_best_text(st))
                run_worker(url, name, n_trials=trials, seed=seed, heartbeat_s=heartbeat_s,
                           callbacks=[*callbacks, tick])
            else:
                procs = [_spawn(url, name, trials, seed, i, heartbeat_s, track) for i in range(workers)]
                console.print(f"workers: {', '.join(f'{i}:pid {p.pid}' for i, p in enumerate(procs))}",
                              highlight=False)
                while any(p.poll() is None for p in procs):
                    prog.update(task, completed=min(done(), trials), best=_best_text(study))
                    time.sleep(0.5)
                for i, p in enumerate(procs):
                    if p.returncode:
                        console.print(f"worker {i} (pid {p.pid}) exited with status {p.returncode}; "
                                      "its trial is retried", highlight=False)
                if done() < trials:  # every worker died: finish the budget here
                    run_worker(url, name, n_trials=trials, seed=seed, index=workers,
                               heartbeat_s=heartbeat_s, callbacks=callbacks)
            prog.update(task, completed=min(done(), trials), best=_best_text(study))
        note = bounding_note(space, study, done())
        if show_progress:
            console.print(note, highlight=False)

        out = Path(outdir or Path.cwd() / "search-results" / name)
        out.mkdir(parents=True, exist_ok=True)
        result = _finalize(space, study, out, name, url, console)
    except BaseException as e:  # the parent run must not stay RUNNING after an error
        if parent:
            tracker.end_parent(parent, "KILLED" if interrupt_behind(e) else "FAILED")
        raise
    result.bounded_out, result.bounding = bounded_out(study), note
    result.optimum_proven = bool(study.user_attrs.get(PROVEN_ATTR))
    result.mlflow_experiment = exp_name if track else None
    result.mlflow_parent_run_id = parent if track else None
    if track:
        b = result.best or {}
        metrics = {"best_output_tokens_per_dollar": b.get("output_tokens_per_dollar") or 0.0,
                   "trials": float(result.trials), "bounded_out": float(result.bounded_out),
                   "optimum_proven": float(result.optimum_proven)}
        if result.baseline.get("output_tokens_per_dollar"):
            metrics["baseline_output_tokens_per_dollar"] = result.baseline["output_tokens_per_dollar"]
        if result.baseline.get("gain"):
            metrics["gain_over_baseline"] = result.baseline["gain"]
        # best params as tags, not params: MLflow params are immutable, and a resumed study
        # (same parent run) may have found a new best
        best_tags = {f"hermes.best.{k}": str(v) for k, v in (b.get("params") or {}).items()}
        tracker.finish_parent(parent, {}, metrics,
                              {"hermes.best_trial": str(b.get("trial", "")), **best_tags}, out)
        if tracker.failed:
            result.mlflow_experiment = result.mlflow_parent_run_id = None
    if parent and tracker.failed:  # tracking broke mid-search: end the run it left open
        tracker.end_parent(parent, "FAILED")
    return result


# What a search with a feasible best writes; a later search without one must not leave them
BEST_OUTPUTS = ("best.yaml", "best")
PLOTS = ("optimization_history.png", "pareto_front.png")


def remove_stale_outputs(out: Path, plots: bool) -> list[str]:
    """Delete the best scenario and its simulation (and with ``plots`` the plots) that an
    earlier run left in ``out``; the names removed."""
    gone = []
    for name in BEST_OUTPUTS + (PLOTS if plots else ()):
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
            gone.append(f"{name}/")
        elif p.exists() or p.is_symlink():
            p.unlink()
            gone.append(name)
    return gone


def _finalize(space: SearchSpace, study: Any, out: Path, name: str, url: str,
              console: Console) -> SearchOutcome:
    """Best trial (re-simulated in full for its plots), baseline, Pareto, CSV, plots."""
    trials = finished(study)
    with atomic_path(out / "trials.csv") as tmp:
        trials_table(study).to_csv(tmp, index=False)
    lat_key = f"{space.pareto_latency}_s"
    if trials:
        plot_history(trials, out / "optimization_history.png")
        plot_pareto(trials, out / "pareto_front.png", lat_key)
    base = _simulate_full(space, space.baseline_overrides, None)
    baseline = {"description": space.baseline_name, **base}
    best_t = best_trial(trials)
    best = None
    stale = remove_stale_outputs(out, plots=not trials) if best_t is None else []
    if stale:
        console.print(f"removed {', '.join(stale)} of an earlier run from {out}: nothing in this "
                      "study meets the SLOs", highlight=False)
    if best_t is not None:
        best = {"trial": best_t.number, "params": dict(best_t.params),
                **_simulate_full(space, dict(best_t.params), out / "best")}
        header = (f"Best configuration of study '{name}' (trial {best_t.number}), "
                  f"{best['output_tokens_per_dollar']:,.0f} output tokens per dollar.\n"
                  "Run it with: hermes-sim simulate best.yaml")
        best_scenario_yaml(space.scenario(dict(best_t.params)), out / "best.yaml", header)
        best["scenario_file"] = str(out / "best.yaml")
        if base.get("output_tokens_per_dollar"):
            baseline["gain"] = best["output_tokens_per_dollar"] / base["output_tokens_per_dollar"]
    pareto = [{"trial": t.number, "params": dict(t.params), "output_tokens_per_dollar": t.values[0],
               lat_key: (t.values[1] if len(t.values) > 1 else
                         (t.user_attrs.get("metrics") or {}).get(lat_key))}
              for t in pareto_front(trials, lat_key)] if space.objective == "pareto" else []
    return SearchOutcome(name, redact(url), sum(counts(t) for t in study.get_trials(deepcopy=False)),
                         best, baseline, None, None, str(out), pareto)


def _simulate_full(space: SearchSpace, values: dict, outdir: Path | None) -> dict[str, Any]:
    """Simulate without early stop; returns tokens/$, SLO verdict and margins (or the reason)."""
    scen, reason = prepare(space, values)
    if reason:
        return {"output_tokens_per_dollar": None, "slo_met": False, "reason": reason}
    summary, _, res = simulate_doc(space, scen, prune=False)
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)
        res.write(outdir)
    o = score(space, summary, False)
    if getattr(space, "slo_confidence", None) is not None:  # the verdict the search ranked by, not the point estimate's
        o = at_confidence(space, scen, o)
    conf = {k: o.metrics[k] for k in ("slo_probability", "output_tokens_per_dollar_at_confidence") if k in o.metrics}
    margins = {f"{s.key}": {"target": s.target_s, "measured": s.measured(summary),
                            "margin": -s.violation(summary)} for s in space.slos}
    return {"output_tokens_per_dollar": float(summary.get("output_tokens_per_dollar") or 0.0),
            "slo_met": o.feasible, "reason": o.reason, "slo": margins,
            "throughput_req_s": summary.get("throughput_req_s"), "cost_usd": summary.get("cost_usd"), **conf}
