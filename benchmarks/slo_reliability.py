"""Is P(SLO met) calibrated? A reliability table on held-out real serving measurements.

Rows: AIConfigurator's silicon_sample.csv, aggregated serving of the dense models
(Llama-3.1-8B, Llama-3.1-70B, Qwen3-32B), every k-th, each replayed as its closed-loop
scenario through its engine block (``silicon_rows``), i.e. as `simulate` prices a user's
scenario: the shipped surrogate and the shipped engine profile. Rows an engine's calibration
uses (a profile's ``fitted_on``, or the sample ``calibration_sets`` takes for an engine without
one) are left out, so every row is held out of the engine calibration and of the engine-model
error (the surrogate never sees serving rows). Each row is simulated ``--samples``
times with sampled kernel time and the engine-model error factor (``simulator.uncertainty``;
``--no-model-error`` leaves the factor out). For thresholds
x = the samples' median x f (f in 0.8, 0.9, 1.0, 1.1, 1.25) of the row's mean TTFT and mean TPOT,
the predicted probability is the fraction of samples at or under x and the outcome is whether
the measured value is. Predictions are binned (0-0.2, ..., 0.8-1); a calibrated
model's observed frequency in each bin lies inside it. Also reported: how often the measured
value falls inside the sampled p10-p90 band (nominal 80%), the expected calibration error, and
the median of p50 / measured per engine, harness and GPU (where a bias sits).

    python benchmarks/slo_reliability.py [--every 16] [--samples 12] [--processes 2] [--no-model-error]
    python benchmarks/slo_reliability.py --model-error    # re-estimate MODEL_ERROR (62 simulations)

Cost: rows x samples simulations (about 1 s each). Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TRACES = Path(os.environ.get("HERMES_TRACES", REPO.parent / "shared" / "traces"))
DENSE = r"Llama-3\.1-8B|Llama-3\.1-70B|Qwen3-32B"
FACTORS = (0.8, 0.9, 1.0, 1.1, 1.25)
BINS = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0 + 1e-9])


# An engine without a shipped profile has its model error measured on a seeded stratified
# sample of its rows (CALIBRATION_PER_GROUP per GPU / harness / model) when that holds at least
# MIN_CALIBRATION_ROWS; fewer only join "*".
CALIBRATION_PER_GROUP = 4
MIN_CALIBRATION_ROWS = 8


def calibration_sets() -> list[tuple[str, list, dict | None, dict | None]]:
    """Per engine, the silicon rows its engine-model error is measured on: (engine, rows,
    leave-one-group-out fits by group or None, full fit or None). A shipped profile's own
    ``fitted_on`` rows with its fits; for an engine without one, a seeded stratified sample
    (``engine_profiles.stratified``) of its dense-model rows, the population the table scores,
    replayed with the engine defaults."""
    from engine_profiles import silicon_targets, stratified
    from profiling.readers.serving import read_silicon
    from simulator.fidelity.silicon import silicon_rows
    df = read_silicon(TRACES / "aiconfigurator" / "silicon_sample.csv")
    out, profiled = [], set()
    for p in sorted((REPO / "simulator" / "engine" / "profiles").glob("*.json")):
        doc = json.loads(p.read_text())
        folds = (doc.get("held_out") or {}).get("leave_one_gpu_out") or {}
        ids = {x["silicon_row"] for x in doc.get("fitted_on", []) if "silicon_row" in x}
        if not folds or not ids:
            continue
        profiled.add(doc["engine"])
        rows = [r for r in silicon_rows(df[df.id.astype(str).isin(ids)].reset_index(drop=True))
                if r.scenario is not None]
        out.append((doc["engine"], rows, folds, doc["overhead"]))
    for engine in sorted(set(df["backend"].astype(str)) - profiled):
        targets, _ = silicon_targets(engine)
        dense = [t for t in targets if re.search(DENSE, t.row.scenario.deployments[0].model)]
        rows = [t.row for t in stratified(dense, CALIBRATION_PER_GROUP, 0)]
        if len(rows) >= MIN_CALIBRATION_ROWS:
            out.append((engine, rows, None, None))
    return out


def fitted_rows() -> set[str]:
    """Silicon rows any engine's model error is measured on (``calibration_sets``): the
    reliability table leaves them out."""
    return {str(r.id) for _, rows, _, _ in calibration_sets() for r in rows}


def sample_row(args) -> dict:
    """Mean TTFT and TPOT of ``samples`` sampled simulations of one row."""
    row, samples, seed, model_error = args
    from simulator.fidelity.calibrate import run_row
    from simulator.uncertainty import model_error_factors, sample_scenarios, spreads
    spread = spreads(row.scenario)
    factors = model_error_factors(samples, seed, spread) if model_error else [{}] * samples
    ttft, tpot = [], []
    for sc, f in zip(sample_scenarios(row.scenario, samples, seed, spread), factors):
        r = run_row(replace(row, scenario=sc))
        ttft.append(r.ttft_pred * f.get("ttft", 1.0))
        tpot.append(r.tpot_pred * f.get("tpot", 1.0))
    return {"id": row.id, "group": row.group, "ttft_meas": row.ttft_s, "tpot_meas": row.tpot_s,
            "ttft": ttft, "tpot": tpot, "kernel_sigma": spread[0].kernel_sigma}


def calibration_residual(args) -> dict:
    """One calibration row replayed twice: with the leave-one-group-out fit that left its group
    out (for TPOT, the metric the profiles are fitted on) and with the full fit that
    ``simulate --uncertainty`` runs (for TTFT, which no profile's loss contains): simulated and
    measured mean TTFT and TPOT, and the row's kernel sigma. Without a profile (``fold`` and
    ``full`` None) both are the engine defaults' replay: nothing was fitted on it."""
    row, fold, full = args
    from simulator.engine.config import OverheadConfig
    from simulator.fidelity.calibrate import run_row
    from simulator.uncertainty import spreads
    if fold is None:
        held = used = run_row(row)
    else:
        held = run_row(row, {row.group: OverheadConfig(**fold)})
        used = run_row(row, {row.group: OverheadConfig(**full)})
    return {"id": row.id, "engine": row.backend, "ttft": used.ttft_pred, "tpot": held.tpot_pred,
            "ttft_meas": row.ttft_s, "tpot_meas": row.tpot_s, "kernel_sigma": spreads(row.scenario)[0].kernel_sigma}


def model_error(processes: int) -> dict:
    """``simulator.uncertainty.MODEL_ERROR`` from each engine's calibration rows
    (``calibration_sets``, which the reliability table leaves out). The profiles are fitted on TPOT
    alone, so TPOT is replayed with the leave-one-group-out fit that did not see the row's group
    and taken as unbiased (sigma about zero), while TTFT, out of every fit's loss, is replayed
    with the full fit the samples run, and its median residual is the model's TTFT bias. An
    engine without a profile has both from the defaults' replay, and TPOT keeps no shift there
    either (one measured that way over-corrected the table: benchmarks/README.md). Per engine
    and metric, with e = log(measured / simulated) and k the median kernel sigma: shift
    median(e) (TTFT; 0 for TPOT) and sigma sqrt(max(0, s^2 - k^2)), s = 1.4826 x median
    |e - shift|; "*" pools the engines."""
    jobs = []
    for _, rows, folds, full in calibration_sets():
        by_tp = folds is not None and next(iter(folds)).startswith("TP")
        for r in rows:
            if folds is None:
                jobs.append((r, None, None))
                continue
            key = f"TP{r.scenario.deployments[0].tp}" if by_tp else r.system
            if key in folds:
                jobs.append((r, folds[key]["params"], full))
    if processes > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(processes) as ex:
            res = list(ex.map(calibration_residual, jobs))
    else:
        res = [calibration_residual(j) for j in jobs]
    out: dict = {}
    for eng in [*sorted({r["engine"] for r in res}), "*"]:
        rs = [r for r in res if eng in ("*", r["engine"])]
        k = float(np.median([r["kernel_sigma"] for r in rs]))
        out[eng] = {"rows": len(rs)}
        for m in ("ttft", "tpot"):
            e = np.log(np.array([r[f"{m}_meas"] for r in rs]) / np.array([r[m] for r in rs]))
            shift = float(np.median(e)) if m == "ttft" else 0.0
            s = 1.4826 * float(np.median(np.abs(e - shift)))
            out[eng][m] = round(math.sqrt(max(0.0, s * s - k * k)), 3)
            out[eng][f"{m}_shift"] = round(shift, 3)
    return out


def reliability(rows: list[dict], metrics=("ttft", "tpot")) -> pd.DataFrame:
    """One line per (metric, row, factor): predicted P(value <= threshold), outcome. The threshold
    is the samples' median x factor, a value fixed before the measurement is looked at, as an SLO
    is: a threshold drawn from the measured value itself (measured x factor) decides the outcome
    by the factor alone, and even a perfectly calibrated model then scores observed > predicted
    in the middle bins (ECE 0.10-0.15 at sigma 0.07-0.3, by simulation)."""
    out = []
    for r in rows:
        for m in metrics:
            s, meas = np.asarray(r[m], float), float(r[f"{m}_meas"])
            for f in FACTORS:
                t = float(np.median(s)) * f
                out.append({"metric": m, "id": r["id"], "factor": f, "p": float(np.mean(s <= t)),
                            "met": meas <= t})
    return pd.DataFrame(out)


def table(df: pd.DataFrame) -> pd.DataFrame:
    b = pd.cut(df.p, BINS, right=False, labels=[f"{lo:.1f}-{min(hi, 1):.1f}" for lo, hi in zip(BINS, BINS[1:])])
    return df.assign(bin=b).groupby("bin", observed=False).agg(n=("met", "size"), mean_p=("p", "mean"),
                                                               observed=("met", "mean"))


def ece(t: pd.DataFrame) -> float:
    t = t[t.n > 0]
    return float((t.n * (t.mean_p - t.observed).abs()).sum() / t.n.sum())


def coverage(rows: list[dict], m: str, nominal: int = 80) -> float:
    """Share of rows whose measured value lies in the sampled central ``nominal``% band
    (80: p10-p90)."""
    lo, hi = 50 - nominal / 2, 50 + nominal / 2
    inside = [np.percentile(r[m], lo) <= r[f"{m}_meas"] <= np.percentile(r[m], hi) for r in rows]
    return float(np.mean(inside))


def by_group(rows: list[dict]) -> pd.DataFrame:
    """Per engine, harness and GPU (from the row's stack/GPU group): rows, median p50 / measured
    of mean TPOT and TTFT, and the share of rows whose TPOT p50 lies above the measurement."""
    out = []
    for r in rows:
        stack, gpu = r["group"].rsplit("/", 1)
        engine, _, rest = stack.partition("-")
        ratio = {m: float(np.median(r[m]) / r[f"{m}_meas"]) for m in ("tpot", "ttft")}
        out.append({"engine": engine, "harness": rest.split(":")[0], "gpu": gpu, **ratio})
    d = pd.DataFrame(out)
    return d.groupby(["engine", "harness", "gpu"]).agg(
        rows=("tpot", "size"), tpot_p50_over_measured=("tpot", "median"),
        tpot_share_above=("tpot", lambda v: float((v > 1).mean())), ttft_p50_over_measured=("ttft", "median"))


def plot(tables: dict[str, pd.DataFrame], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from profiling.atomicfile import savefig_atomic
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="calibrated")
    for name, t in tables.items():
        t = t[t.n > 0]
        ax.plot(t.mean_p, t.observed, "o-", label=name)
    ax.set_xlabel("predicted P(SLO met)")
    ax.set_ylabel("observed frequency met")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("SLO reliability, held-out silicon rows")
    ax.legend()
    savefig_atomic(fig, path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=16, help="use every k-th dense aggregated row")
    ap.add_argument("--samples", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--png", default=str(REPO / "benchmarks" / "results" / "slo_reliability.png"))
    ap.add_argument("--rows-json", help="also write each row's measured values and samples here")
    ap.add_argument("--no-model-error", action="store_true",
                    help="leave out the engine-model error term (the kernel-time draw only)")
    ap.add_argument("--model-error", action="store_true",
                    help="only estimate simulator.uncertainty.MODEL_ERROR from each engine's calibration rows")
    a = ap.parse_args()
    if a.model_error:
        print(json.dumps(model_error(a.processes)))
        return
    from profiling.readers.serving import read_silicon
    from simulator.fidelity.silicon import silicon_rows
    t0 = time.time()
    df = read_silicon(TRACES / "aiconfigurator" / "silicon_sample.csv")
    df = df[(df["mode"] != "disagg") & df.model_path.astype(str).str.contains(DENSE, regex=True)]
    df = df[~df.id.astype(str).isin(fitted_rows())].reset_index(drop=True).iloc[::a.every]
    rows = [r for r in silicon_rows(df) if r.scenario is not None]
    jobs = [(r, a.samples, a.seed, not a.no_model_error) for r in rows]
    if a.processes > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(a.processes) as ex:
            res = list(ex.map(sample_row, jobs))
    else:
        res = [sample_row(j) for j in jobs]
    if a.rows_json:
        Path(a.rows_json).write_text(json.dumps(res))
    rel = reliability(res)
    tables = {"TTFT": table(rel[rel.metric == "ttft"]), "TPOT": table(rel[rel.metric == "tpot"]),
              "both": table(rel)}
    print(f"rows: {len(rows)} held-out dense aggregated rows (every {a.every}th of those no engine profile was "
          f"fitted on), {a.samples} sampled simulations each; GPUs {sorted({r.system for r in rows})}")
    for name, t in tables.items():
        print(f"\n{name}: reliability (thresholds = sampled p50 x {', '.join(map(str, FACTORS))})")
        print(t.to_string(float_format=lambda x: f"{x:.2f}"))
        print(f"expected calibration error {ece(t):.3f}")
    cov = {m: coverage(res, m) for m in ("ttft", "tpot")}
    print(f"\nmeasured mean inside the sampled p10-p90 band (nominal 80%): TTFT {cov['ttft']:.0%}, "
          f"TPOT {cov['tpot']:.0%}")
    bands = {f"{m}_{n}": coverage(res, m, n) for m in ("ttft", "tpot") for n in (50, 80, 90)}
    print("central bands (nominal 50/80/90%): " + "; ".join(
        f"{m.upper()} " + "/".join(f"{bands[f'{m}_{n}']:.0%}" for n in (50, 80, 90)) for m in ("ttft", "tpot")))
    sig = np.array([r["kernel_sigma"] for r in res])
    rel_err = {m: float(np.median([abs(np.median(r[m]) / r[f"{m}_meas"] - 1) for r in res])) for m in ("ttft", "tpot")}
    print(f"kernel sigma (log) median {np.median(sig):.3f}; median |p50 / measured - 1|: TTFT {rel_err['ttft']:.1%}, "
          f"TPOT {rel_err['tpot']:.1%}")
    groups = by_group(res)
    print("\nmedian p50 / measured by engine, harness and GPU:")
    print(groups.to_string(float_format=lambda x: f"{x:.3f}"))
    plot(tables, Path(a.png))
    print(f"plot: {a.png}; {time.time() - t0:.0f} s")
    print(json.dumps({"rows": len(rows), "samples": a.samples, "every": a.every,
                      "coverage_p10_p90": cov, "coverage_central": bands, "ece": {k: ece(t) for k, t in tables.items()},
                      "median_kernel_sigma": float(np.median(sig)), "median_abs_err_p50": rel_err,
                      "table": {k: {str(b): {"n": int(v.n), "mean_p": None if v.n == 0 else float(v.mean_p),
                                             "observed": None if v.n == 0 else float(v.observed)}
                                    for b, v in t.iterrows()} for k, t in tables.items()},
                      "by_group": {"/".join(k): {c: float(v[c]) for c in groups.columns} for k, v in groups.iterrows()},
                      "wall_s": time.time() - t0}))


if __name__ == "__main__":
    main()
