"""End-to-end fidelity against real serving benchmarks (AIConfigurator silicon_sample.csv).

Dense-model rows (Llama-3.1-8B, Llama-3.1-70B, Qwen3-32B; aggregated serving) each become
a closed-loop scenario at concurrency = batch_size, replaying the row's benchmark client
(InferenceMAX rows: 10 x concurrency prompts, lengths uniform in [0.8 L, L]; other rows:
fixed lengths, 10 requests per client). ONLY the framework overhead (kernel-replay factor,
per step, per sequence, per request; one set per serving stack = framework + version or
benchmark setup, and GPU) is calibrated, on a seeded random 25% of each group's rows;
TTFT and TPOT MAPE are reported on the other 75%. Rows the catalog cannot serve are listed
with the reason.

    python benchmarks/silicon_fidelity.py [--surrogate builtin] [--processes 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TRACES = Path(os.environ.get("HERMES_TRACES", REPO.parent / "shared" / "traces"))
DENSE = r"Llama-3\.1-8B|Llama-3\.1-70B|Qwen3-32B"


def main() -> None:
    from simulator.calibrate import fit_overhead, report, run_rows
    from simulator.silicon import read_silicon, silicon_rows

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--surrogate", default="builtin")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--calib-fraction", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=1, help="use every k-th row (quick look)")
    ap.add_argument("--requests-per-client", type=int, default=None,
                    help="override the protocol's (InferenceMAX rows: 10 x concurrency prompts)")
    ap.add_argument("--rows-out", default=None, help="write held-out per-row results to this CSV")
    a = ap.parse_args()
    t0 = time.perf_counter()
    df = read_silicon(TRACES / "aiconfigurator" / "silicon_sample.csv")
    df = df[df.model_path.astype(str).str.contains(DENSE, regex=True)].reset_index(drop=True)
    df = df.iloc[::a.every].reset_index(drop=True)
    rows = silicon_rows(df, surrogate=a.surrogate, requests_per_client=a.requests_per_client)
    ok = [r for r in rows if r.scenario is not None]
    for r in rows:
        if r.unsupported:
            print(f"unsupported {r.id}: {r.unsupported}")
    rng = np.random.default_rng(a.seed)
    calib, held = [], []
    for b in sorted({r.group for r in ok}):
        mine = [r for r in ok if r.group == b]
        pick = set(rng.choice(len(mine), size=max(1, int(round(a.calib_fraction * len(mine)))), replace=False).tolist())
        calib += [r for i, r in enumerate(mine) if i in pick]
        held += [r for i, r in enumerate(mine) if i not in pick]
    history: list = []
    theta = fit_overhead(calib, processes=a.processes, history=history)
    before = report(history[0])
    after_calib = report(run_rows(calib, theta, processes=a.processes))
    after = report(run_rows(held, theta, processes=a.processes))
    res = pd.DataFrame(after["rows"])
    meta = df.set_index(df["id"].astype(str))
    res["model"] = meta.loc[res.id, "model_path"].str.split("/").str[-1].to_numpy()
    res["system"] = meta.loc[res.id, "system"].to_numpy()
    res["ttft_ape"] = (res.ttft_pred - res.ttft_meas).abs() / res.ttft_meas * 100
    res["tpot_ape"] = (res.tpot_pred - res.tpot_meas).abs() / res.tpot_meas * 100
    print(f"rows: {len(rows)} dense-model rows, {len(ok)} simulated, {len(calib)} calibration, "
          f"{len(held)} held out, {len(rows) - len(ok)} unsupported")
    for b, th in theta.items():
        print(f"overhead[{b}]: kernel x{th.kernel_scale:.3f}, step {th.step_s * 1e3:.3f} ms, "
              f"per seq {th.per_seq_s * 1e6:.2f} us, per request {th.request_s * 1e3:.1f} ms")
    res["backend"] = res.group.str.split("/").str[0]
    if a.rows_out:
        res.to_csv(a.rows_out, index=False)
    g = res.groupby(["model", "system", "backend"])[["ttft_ape", "tpot_ape"]].agg(["mean", "size"])
    print(g.round(1).to_string())
    print(f"calibration rows with the default overhead: TTFT {before['ttft_mape']:.1f}%, "
          f"TPOT {before['tpot_mape']:.1f}%")
    print(f"calibration rows after fit: TTFT {after_calib['ttft_mape']:.1f}%, TPOT {after_calib['tpot_mape']:.1f}%")
    print(f"held-out MAPE after calibration: TTFT {after['ttft_mape']:.1f}%, TPOT {after['tpot_mape']:.1f}% "
          f"(target <= 15% each) in {time.perf_counter() - t0:.0f} s")
    print(json.dumps({"surrogate": a.surrogate, "held_out_rows": len(held), "calibration_rows": len(calib),
                      "ttft_mape": round(after["ttft_mape"], 2), "tpot_mape": round(after["tpot_mape"], 2),
                      "ttft_mape_uncalibrated": round(before["ttft_mape"], 2),
                      "tpot_mape_uncalibrated": round(before["tpot_mape"], 2),
                      "overhead": {b: th.model_dump() for b, th in theta.items()}}))


if __name__ == "__main__":
    main()
