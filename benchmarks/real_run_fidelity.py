"""Fidelity against real serving runs: every run under <traces>/serving_runs (found with the run
readers' ``detect``) replayed on its own engine, model and GPU, with no fitting.

Three simulations of each run, all sending the run's own requests (recorded arrivals and
lengths; ``simulator.fidelity.runs.replay_scenario``):

* now: the deployment's ``engine:`` block, i.e. the engine release's documented defaults plus
  the run's recorded arguments (CUDA-graph padding, async scheduling, the memory plan);
* before: the deployment as it was written before the engine block: a chunked scheduler with
  the run's max_num_seqs / max_num_batched_tokens (or the engine's names for them), the
  scheduler's other defaults and the default overheads;
* calibrated (``--overhead FILE``): the engine block with the overhead an engine profile
  (``hermes-sim calibrate --runs``) holds for the run's engine and GPU.

Per run and as the median over runs: per-request MAPE of E2E, TTFT and TPOT, the error of the
mean of each, and mean simulated / real E2E; beside them LLMServingSim's own mean errors
against the same run, read from the run's ``llmservingsim_summary.txt`` where there is one.

Then the engine calibration checked on runs it was not fitted on
(``simulator.fidelity.engine_fit.cross_validate``): leave one run out, and leave one GPU out;
each held-out run with the engine defaults and with the fit of the other runs (``--cv``
Optuna trials per fit; ``--cv 0`` skips this, the replays alone take seconds).

    python benchmarks/real_run_fidelity.py [--traces DIR] [--overhead FILE] [--cv 20] [--png FILE]

The last line printed is one JSON object with the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SUMMARY_FILE = "llmservingsim_summary.txt"
_SUMMARY_ROW = re.compile(r"^(TTFT|TPOT|Latency) Mean\s+([\d.]+)\s+([\d.]+)\s+([+-]?[\d.]+)%")


def find_runs(root: Path) -> list[tuple[Path, str]]:
    """Every serving run under ``root``: (path, format). A folder that is a run is not searched further."""
    from profiling.errors import HermesError
    from profiling.readers.runs import detect
    found: list[tuple[Path, str]] = []
    for folder, dirs, files in os.walk(root):
        d = Path(folder)
        try:
            found.append((d, detect(d)))
            dirs.clear()
            continue
        except HermesError:
            pass
        dirs.sort()
        for f in sorted(files):
            try:
                found.append((d / f, detect(d / f)))
            except HermesError:
                pass
    return found


def llmservingsim_figures(run_path: Path) -> dict | None:
    """LLMServingSim's own mean TTFT/TPOT/E2E error (%) against the run, from its summary."""
    folder = run_path if run_path.is_dir() else run_path.parent
    f = folder / SUMMARY_FILE
    if not f.is_file():
        return None
    out = {}
    for line in f.read_text().splitlines():
        m = _SUMMARY_ROW.match(line.strip())
        if m:
            key = {"TTFT": "ttft", "TPOT": "tpot", "Latency": "e2e"}[m.group(1)]
            out[f"{key}_mean_err"] = float(m.group(4))
            out[f"{key}_ratio"] = float(m.group(3)) / float(m.group(2))
    return out or None


def plain_scenario(run, surrogate: str = "builtin"):
    """The run's deployment without an engine block: a chunked scheduler with the run's
    sequence and token limits, default overheads."""
    from simulator.fidelity.runs import scenario_for_run
    from simulator.engine.engines import LIMIT_ARGS
    from simulator.scenario import parse_scenario
    sc = scenario_for_run(run, surrogate=surrogate)        # catalog names, TP/DP, dtype, client
    d = sc.deployments[0]
    seqs, tokens = LIMIT_ARGS.get(run.info.engine, ("", ""))
    sched = {"policy": "chunked"}
    if run.info.engine_args.get(seqs):
        sched["max_batch_size"] = int(run.info.engine_args[seqs])
    if run.info.engine_args.get(tokens):
        sched["max_tokens_per_step"] = int(run.info.engine_args[tokens])
    dep = {"name": d.name, "model": d.model, "hardware": d.hardware, "tp": d.tp, "pp": d.pp,
           "replicas": d.replicas, "dtype": d.dtype, "kv_dtype": d.kv_dtype, "scheduler": sched, "router": "jsq"}
    doc = {"name": sc.name + "-plain", "surrogate": surrogate, "deployments": [dep],
           "workload": sc.workload.model_dump()}
    return parse_scenario(doc, run.info.source)


def figures(err: dict) -> dict:
    """The benchmark's numbers of one replay."""
    out = {f"{k}_mape": err[f"{k}_mape"] for k in ("e2e", "ttft", "tpot")}
    out.update({f"{k}_mean_err": err[f"{k}_mean"]["err_pct"] for k in ("e2e", "ttft", "tpot")})
    out["e2e_ratio"] = err["e2e_ratio"]
    out["saturation_note"] = err["saturation"]["note"]
    return out


def median(rows: list[dict], key: str, absolute: bool = False) -> float | None:
    v = [abs(r[key]) if absolute else r[key] for r in rows if r and r.get(key) is not None]
    return float(np.median(v)) if v else None


def _f(x, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def plot(results: list[dict], path: Path) -> None:
    """Bars per run: per-request MAPE (top) and |error of the mean| (bottom, where
    LLMServingSim's own figure sits beside ours) of E2E, TTFT and TPOT."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [r["name"] for r in results]
    keys = [("before", "before (plain)"), ("now", "now (engine block)")]
    if any(r.get("calibrated") for r in results):
        keys.append(("calibrated", "calibrated"))
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    x = np.arange(len(names))
    for j, k in enumerate(("e2e", "ttft", "tpot")):
        for row, (field, what) in enumerate(((f"{k}_mape", "per-request MAPE %"),
                                             (f"{k}_mean_err", "|error of the mean| %"))):
            series = [(label, [(r.get(key) or {}).get(field) for r in results]) for key, label in keys]
            if row == 1:
                series.append(("LLMServingSim", [r["llmservingsim"][field] if r.get("llmservingsim") else None
                                                 for r in results]))
            ax = axes[row, j]
            w = 0.8 / len(series)
            for i, (label, vals) in enumerate(series):
                ax.bar(x + i * w, [np.nan if v is None else abs(v) for v in vals], w, label=label)
            ax.set_xticks(x + w * (len(series) - 1) / 2, names, rotation=20, ha="right", fontsize=7)
            ax.set_ylabel(what)
            ax.set_title(k.upper())
            ax.legend(fontsize=7)
    fig.suptitle("simulated vs real vLLM runs (LLMServingSim's four), no fitting")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default=os.environ.get("HERMES_TRACES", str(REPO.parent / "shared" / "traces")),
                    help="traces folder (its serving_runs/ is searched; default $HERMES_TRACES)")
    ap.add_argument("--overhead", default=None, help="engine profile JSON (hermes-sim calibrate --runs)")
    ap.add_argument("--surrogate", default="builtin")
    ap.add_argument("--png", default=str(REPO / "benchmarks" / "results" / "real_run_fidelity.png"))
    ap.add_argument("--cv", type=int, default=20, metavar="TRIALS",
                    help="Optuna trials per leave-one-run-out / leave-one-GPU-out fit (0: skip them)")
    a = ap.parse_args()

    from profiling.errors import HermesError
    from profiling.readers.runs import read_run
    from simulator.fidelity.runs import load_run_overhead, replay_run, replay_scenario, run_errors

    root = Path(a.traces) / "serving_runs"
    if not root.is_dir():
        root = Path(a.traces)
    runs = find_runs(root)
    if not runs:
        sys.exit(f"no serving runs under {root}")
    results, loaded = [], []
    for path, fmt in runs:
        t0 = time.perf_counter()
        run = read_run(path, fmt)
        loaded.append(run)
        i = run.info
        name = f"{i.gpu}/{path.name if path.is_dir() else path.stem} TP{i.tp} DP{i.dp}"
        r = {"name": name, "path": str(path), "format": fmt, "requests": len(run.requests),
             "llmservingsim": llmservingsim_figures(path)}
        now = replay_run(run, surrogate=a.surrogate)
        r["now"] = figures(run_errors(now))
        r["unsupported"] = len(now.unsupported)
        r["notes"] = list(now.notes)
        r["before"] = figures(run_errors(replay_scenario(run, plain_scenario(run, a.surrogate))))
        if a.overhead:
            try:
                oh = load_run_overhead(a.overhead, i)
                r["calibrated"] = figures(run_errors(replay_run(run, overhead=oh, surrogate=a.surrogate)))
            except HermesError as e:
                r["calibrated"] = None
                r["notes"].append(f"calibrated: {e}")
        r["wall_s"] = time.perf_counter() - t0
        results.append(r)

    cols = [("before", "before"), ("now", "now")] + ([("calibrated", "calib")] if a.overhead else [])
    head = f"{'run':<42} {'metric':<5}" + "".join(f" {lab + ' MAPE':>12} {lab + ' mean':>11}" for _, lab in cols)
    head += f" {'LLMSS mean':>11}"
    print(head)
    for r in results:
        for k in ("e2e", "ttft", "tpot"):
            line = f"{r['name'][:42]:<42} {k.upper():<5}"
            for key, _ in cols:
                f = r.get(key) or {}
                line += f" {_f(f.get(f'{k}_mape')):>12} {_f(f.get(f'{k}_mean_err'), '{:+.1f}'):>11}"
            ls = r["llmservingsim"]
            line += f" {_f(ls[f'{k}_mean_err'] if ls else None, '{:+.1f}'):>11}"
            print(line)
        ratios = "  ".join(f"{lab} {_f((r.get(key) or {}).get('e2e_ratio'), '{:.3f}')}" for key, lab in cols)
        ls = r["llmservingsim"]
        print(f"{'':<42} sim/real mean E2E: {ratios}  LLMServingSim {_f(ls['e2e_ratio'] if ls else None, '{:.3f}')}"
              f"  ({r['requests']} requests, {r['unsupported']} not compared, {r['wall_s']:.0f} s)")
        for key, _ in cols:
            note = (r.get(key) or {}).get("saturation_note")
            if note:
                print(f"{'':<42} {key}: {note}")
        for n in r["notes"]:
            print(f"{'':<42} note: {n}")

    med: dict = {"runs": len(results)}
    for key, _ in cols:
        rows = [r.get(key) for r in results]
        med[key] = {**{f"{k}_mape": median(rows, f"{k}_mape") for k in ("e2e", "ttft", "tpot")},
                    **{f"{k}_abs_mean_err": median(rows, f"{k}_mean_err", True) for k in ("e2e", "ttft", "tpot")},
                    "e2e_ratio": median(rows, "e2e_ratio")}
    ls_rows = [r["llmservingsim"] for r in results if r["llmservingsim"]]
    med["llmservingsim"] = ({**{f"{k}_abs_mean_err": median(ls_rows, f"{k}_mean_err", True)
                                for k in ("e2e", "ttft", "tpot")}, "e2e_ratio": median(ls_rows, "e2e_ratio"),
                             "runs": len(ls_rows)} if ls_rows else None)
    print("median over runs (MAPE: per request; |mean err|: error of the mean, as LLMServingSim reports):")
    for key, _ in cols:
        m = med[key]
        print(f"  {key:<11} MAPE E2E {_f(m['e2e_mape'])}  TTFT {_f(m['ttft_mape'])}  TPOT {_f(m['tpot_mape'])}"
              f"  |mean err| E2E {_f(m['e2e_abs_mean_err'])}  TTFT {_f(m['ttft_abs_mean_err'])}"
              f"  TPOT {_f(m['tpot_abs_mean_err'])}  sim/real E2E {_f(m['e2e_ratio'], '{:.3f}')}")
    if med["llmservingsim"]:
        m = med["llmservingsim"]
        print(f"  {'LLMServSim':<11} |mean err| E2E {_f(m['e2e_abs_mean_err'])}  TTFT {_f(m['ttft_abs_mean_err'])}"
              f"  TPOT {_f(m['tpot_abs_mean_err'])}  sim/real E2E {_f(m['e2e_ratio'], '{:.3f}')}")
    plot(results, Path(a.png))
    print(f"plot: {a.png}")
    if a.cv > 0:
        med.update(cross_validated(loaded, a.cv, a.surrogate))
    print(json.dumps({"surrogate": a.surrogate, "overhead": a.overhead, **med}))


def cross_validated(runs: list, trials: int, surrogate: str) -> dict:
    """Leave one run out and leave one GPU out, per engine: each held-out run's per-request
    MAPE with the engine defaults and with the engine fitted on the other runs."""
    from simulator.fidelity.engine_fit import cross_validate, fold_summary
    out = {}
    for by in ("run", "gpu"):
        folds = []
        for engine in sorted({r.info.engine for r in runs}):
            mine = [r for r in runs if r.info.engine == engine]
            t0 = time.perf_counter()
            folds += cross_validate(mine, by, trials=trials, surrogate=surrogate,
                                    progress=lambda m: print(f"  {engine}: {m}", file=sys.stderr, flush=True))
            print(f"  {engine} leave-one-{by}-out: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        summ = fold_summary(folds)
        print(f"leave one {by} out ({trials} trials per fit): held-out run, per-request MAPE % "
              "with the engine defaults -> fitted on the others")
        for row in summ["runs"]:
            print(f"  {row['run'][:40]:<40} E2E {_f(row['e2e_mape_before'])} -> {_f(row['e2e_mape_after'])}"
                  f"  TTFT {_f(row['ttft_mape_before'])} -> {_f(row['ttft_mape_after'])}"
                  f"  sim/real E2E {_f(row['e2e_ratio_after'], '{:.3f}')}  (fitted on {len(row['fitted_on'])})")
        if summ["runs"]:
            print(f"  median E2E {_f(summ['median_e2e_mape_before'])} -> {_f(summ['median_e2e_mape_after'])}"
                  f"  TTFT {_f(summ['median_ttft_mape_before'])} -> {_f(summ['median_ttft_mape_after'])}")
        out[f"leave_one_{by}_out"] = {**summ, "trials": trials}
    return out


if __name__ == "__main__":
    main()
