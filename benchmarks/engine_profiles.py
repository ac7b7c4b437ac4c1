"""One calibration per serving engine, fitted on every real measurement in <traces> and
checked on GPUs it was not fitted on; ``--write`` ships it as the engine's default profile.

For each engine (vLLM, SGLang, TensorRT-LLM) the targets are its aggregated
``silicon_sample.csv`` rows (closed loops at a fixed concurrency; mean TTFT and TPOT
measured), replayed through the row's ``engine:`` block (the release's documented defaults
plus the harness's settings), and, for vLLM, the real serving runs under
``<traces>/serving_runs`` (per-request E2E and TTFT). ``simulator.fidelity.engine_fit`` fits
the engine's own parameters (per-step, per-sequence and per-token host time, front-end
time per request and per streamed token, the kernel-replay factor) with Optuna TPE, the
simulator in the loop, on a seeded stratified sample of rows (``--per-group`` rows of each
GPU / harness / model) plus every run. Reported:

* leave-one-GPU-out: for each GPU of the engine, the fit on the other GPUs' targets,
  measured on that GPU's evaluation rows and runs (never fitted on), against the engine's
  plain defaults (``OverheadConfig()``); ``--holdout-by tp`` holds out one TP size at a time
  instead (for releases measured on one GPU only);
* the shipped fit (all GPUs) on the evaluation rows, fitting rows marked.

Evaluation rows: every ``--every``-th supported row of the engine. Error figures are per row
(|error of the mean TTFT| and TPOT, %) and per run (per-request E2E / TTFT MAPE, %).

    python benchmarks/engine_profiles.py [--engines vllm,sglang,trtllm] [--trials 40]
        [--per-group 3] [--every 4] [--processes 2] [--params step_s,...] [--row-metric tpot]
        [--since 0.8.0 --until 0.14.0] [--holdout-by gpu|tp] [--write]

The last line printed is one JSON object with the held-out figures.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TRACES = Path(os.environ.get("HERMES_TRACES", REPO.parent / "shared" / "traces"))


def silicon_targets(engine: str):
    """Every supported aggregated silicon row of ``engine`` as a target (engine block on)."""
    from profiling.readers.serving import read_silicon
    from simulator.fidelity.engine_fit import SiliconReplay
    from simulator.fidelity.silicon import silicon_rows
    df = read_silicon(TRACES / "aiconfigurator" / "silicon_sample.csv")
    df = df[(df["mode"] != "disagg") & (df["backend"] == engine)].reset_index(drop=True)
    rows = silicon_rows(df)
    return [SiliconReplay(r) for r in rows if r.scenario is not None], sum(r.scenario is None for r in rows)


def run_targets(engine: str):
    """The real serving runs of ``engine`` under <traces>/serving_runs, prepared for replay."""
    from profiling.readers.runs import read_run
    from real_run_fidelity import find_runs
    from simulator.fidelity.engine_fit import prepare
    root = TRACES / "serving_runs"
    runs = [read_run(p, fmt) for p, fmt in find_runs(root)] if root.is_dir() else []
    return [prepare(r) for r in runs if r.info.engine == engine]


def in_range(t, since: str | None, until: str | None) -> bool:
    """Whether a target's engine release is in [since, until)."""
    from simulator.engine.engines import parse_version
    v = parse_version(t.version)
    return (since is None or v >= parse_version(since)) and (until is None or v < parse_version(until))


def stratified(targets, per_group: int, seed: int):
    """A seeded sample of ``per_group`` silicon rows of each GPU / harness / model."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple, list] = {}
    for t in targets:
        dep = t.row.scenario.deployments[0]
        groups.setdefault((t.gpu, t.row.stack.split(":")[0], dep.model), []).append(t)
    out = []
    for key in sorted(groups):
        g = groups[key]
        pick = rng.choice(len(g), size=min(per_group, len(g)), replace=False)
        out += [g[i] for i in sorted(pick)]
    return out


def figures(scores) -> dict:
    """Row and run error figures of a list of scores."""
    rows = [s for s in scores if math.isnan(s.e2e_mape)]
    runs = [s for s in scores if not math.isnan(s.e2e_mape)]
    out = {"rows": len(rows), "runs": len(runs)}
    if rows:
        out["row_ttft_mape"] = float(np.mean([s.ttft_mape for s in rows]))
        out["row_tpot_mape"] = float(np.mean([s.tpot_mape for s in rows]))
        out["row_ttft_median"] = float(np.median([s.ttft_mape for s in rows]))
        out["row_tpot_median"] = float(np.median([s.tpot_mape for s in rows]))
    if runs:
        out["run_e2e_mape_median"] = float(np.median([s.e2e_mape for s in runs]))
        out["run_ttft_mape_median"] = float(np.median([s.ttft_mape for s in runs]))
        out["run_tpot_mape_median"] = float(np.median([s.tpot_mape for s in runs]))
    return out


def _line(title: str, f: dict) -> str:
    parts = []
    if f.get("rows"):
        parts.append(f"{f['rows']} rows: TTFT {f['row_ttft_mape']:.1f}% (median {f['row_ttft_median']:.1f}), "
                     f"TPOT {f['row_tpot_mape']:.1f}% (median {f['row_tpot_median']:.1f})")
    if f.get("runs"):
        parts.append(f"{f['runs']} runs: median E2E {f['run_e2e_mape_median']:.1f}%, "
                     f"TTFT {f['run_ttft_mape_median']:.1f}%, TPOT {f['run_tpot_mape_median']:.1f}%")
    return f"{title} {'; '.join(parts)}"


def main() -> None:
    from rich.console import Console

    from simulator.engine.config import OverheadConfig
    from simulator.engine.engines import PROFILES_DIR
    from simulator.fidelity import engine_fit as ef

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="vllm,sglang,trtllm")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--per-group", type=int, default=3)
    ap.add_argument("--every", type=int, default=4, help="evaluate every k-th supported row")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params", default=None,
                    help="fit only these engine parameters (comma-separated; default: all of engine_fit.SPACE)")
    ap.add_argument("--row-metric", choices=["both", "tpot"], default="both",
                    help="what a silicon row's error is in the fit: TTFT and TPOT, or TPOT alone")
    ap.add_argument("--since", default=None, help="only targets of this engine release or later")
    ap.add_argument("--until", default=None, help="only targets of releases before this one")
    ap.add_argument("--holdout-by", choices=["gpu", "tp"], default="gpu",
                    help="the cross-validation groups: GPUs (default) or TP sizes (for targets of one GPU)")
    ap.add_argument("--no-logo", action="store_true", help="skip leave-one-GPU-out (the shipped fit only)")
    ap.add_argument("--write", action="store_true", help=f"write the fits to {PROFILES_DIR}/<engine>.json")
    a = ap.parse_args()
    con = Console(stderr=True)
    params = a.params.split(",") if a.params else None
    summary: dict = {}
    for engine in a.engines.split(","):
        t0 = time.perf_counter()
        rows, unsupported = silicon_targets(engine)
        runs = run_targets(engine)
        if a.since or a.until:
            rows = [t for t in rows if in_range(t, a.since, a.until)]
            runs = [t for t in runs if in_range(t, a.since, a.until)]
        fit_rows = stratified(rows, a.per_group, a.seed)
        fit_set = fit_rows + runs
        chosen = {t.label for t in fit_rows}
        evals = [t for i, t in enumerate(rows) if i % a.every == 0] + runs
        gpus = sorted({t.gpu for t in fit_set})
        key = (lambda t: t.gpu) if a.holdout_by == "gpu" else (lambda t: f"TP{t.tp}")
        folds = sorted({key(t) for t in fit_set})
        print(f"== {engine}: {len(rows)} supported rows ({unsupported} unsupported), {len(runs)} runs; "
              f"fitting on {len(fit_rows)} rows + {len(runs)} runs over {', '.join(gpus)}; "
              f"evaluating on {len(evals)} targets")

        def progress(i, n, best, what=engine):
            con.print(f"  {what}: trial {i}/{n}, best loss {best:.2f}", end="\r")

        logo: dict = {}
        if not a.no_logo and len(folds) > 1:
            for g in folds:
                rest = [t for t in fit_set if key(t) != g]
                held = [t for t in evals if key(t) == g]
                if not rest or not held:
                    continue
                fit = ef.fit_targets(rest, trials=a.trials, seed=a.seed, processes=a.processes,
                                     params=params, row_metric=a.row_metric, progress=lambda i, n, b, g=g: progress(i, n, b, f"{engine} without {g}"))
                with ef.Scorer(held, a.processes) as sc:
                    before, after = figures(sc(OverheadConfig())), figures(sc(fit.params))
                logo[g] = {"defaults": before, "fitted_without": after, "params": fit.params.model_dump()}
                print(_line(f"  held-out {g}, engine defaults:", before))
                print(_line(f"  held-out {g}, fitted on {', '.join(x for x in folds if x != g)}:", after))
        fit = ef.fit_targets(fit_set, trials=a.trials, seed=a.seed, processes=a.processes, params=params,
                             row_metric=a.row_metric, progress=progress)
        with ef.Scorer(evals, a.processes) as sc:
            before, after = sc(OverheadConfig()), sc(fit.params)
        unseen = [i for i, t in enumerate(evals) if t.label not in chosen and not isinstance(t, ef.Replay)]
        print(_line("  all GPUs, engine defaults:", figures(before)))
        print(_line("  all GPUs, shipped fit:", figures(after)))
        print(_line("  all GPUs, shipped fit, rows it was not fitted on:", figures([after[i] for i in unseen])))
        th = fit.params
        print(f"  fit: kernel x{th.kernel_scale:.3f}, step {th.step_s * 1e3:.3f} ms, per seq {th.per_seq_s * 1e6:.2f} us, "
              f"per token {th.per_token_s * 1e9:.1f} ns, per request {th.request_s * 1e3:.1f} ms, "
              f"front end {th.stream_token_s * 1e6:.1f} us/token; loss {fit.loss_before:.2f} -> {fit.loss_after:.2f} "
              f"({time.perf_counter() - t0:.0f} s)")
        summary[engine] = {"leave_one_gpu_out": logo, "all": {"defaults": figures(before), "fitted": figures(after)},
                           "params": th.model_dump(), "fitted_rows": len(fit_rows), "fitted_runs": len(runs)}
        if a.write:
            doc = ef.profile_doc(fit, fit_set, held_out={"leave_one_gpu_out": logo})
            path = ef.save_profile(doc, PROFILES_DIR / f"{engine}.json")
            print(f"  wrote {path.relative_to(REPO)}")
    print(json.dumps(ef.clean(summary)))


if __name__ == "__main__":
    main()
