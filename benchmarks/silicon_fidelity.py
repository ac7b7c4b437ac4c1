"""End-to-end fidelity against real serving benchmarks (AIConfigurator silicon_sample.csv).

Dense-model rows (Llama-3.1-8B, Llama-3.1-70B, Qwen3-32B; aggregated serving) each become
a closed-loop scenario at the recorded concurrency (``silicon_concurrency``, else
batch_size) replaying the row's benchmark setup (``simulator.fidelity.silicon.bench_protocol``):
InferenceMAX rows use 10 x concurrency prompts with lengths uniform in [0.8 L, L] and an
8192-token budget (TRT-LLM 1k/1k below TP8 with the batch waiting its launch script sets);
AIConfigurator-harness rows use fixed lengths, 10 requests per client, and for TRT-LLM
(whole prompts) and vLLM (chunked) an engine token budget of k x isl (AIC's generated
``max_num_tokens``, not recorded in the rows); Dynamo rows spread the clients over
concurrency / batch_size engines. Every request is measured (the first wave included), as
the benchmark clients report. Calibrated, on a seeded random 25% of each stack/GPU group's
rows: the framework overhead (per step, per sequence, per request, per token the front end
streams; one set per serving stack and GPU, in the AIC harness per model and TP; ``--kernel-scale`` adds a kernel-replay factor)
and, for AIC-harness TRT-LLM/vLLM rows, the engine settings the harness did not record: k
from 2/3/4/6 and whether the engine runs one sequence fewer than its clients, per group
(there one model at one TP on one stack and GPU; ``--fixed-budget`` keeps k = 4 and none, chosen
earlier on all rows). TTFT and TPOT MAPE are reported on the other 75%, per group
(model / GPU / stack / TP) and overall. Rows the catalog cannot serve are listed.
The mixture-of-experts rows of catalog models (Qwen3-235B-A22B, MiniMax-M2.5, gpt-oss-120b) and the
disaggregated rows are then replayed with the dense aggregated rows' overhead of their
stack and GPU (in the AIC harness, calibrated per model and TP: of the calibrated model
with the nearest name at the same TP), as a model or deployment nobody calibrated on.

    python benchmarks/silicon_fidelity.py [--every 2] [--processes 2]
        [--legacy-budget | --fixed-budget] [--warmup 0] [--kernel-scale] [--plain] [--rows-out FILE]

Rows run through their engine block (``silicon_rows(engine=True)``: the backend's release
defaults, async scheduling, CUDA-graph padding); ``--plain`` replays them as the plain
deployments the figures before the engine block were measured with.

``--legacy-budget`` replays AIC-harness TRT-LLM/vLLM rows with the flat 8192-token budget
(the previous model) for a before/after comparison; ``--warmup n`` leaves the first n x concurrency
requests out (the steady-state client model).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TRACES = Path(os.environ.get("HERMES_TRACES", REPO.parent / "shared" / "traces"))
DENSE = r"Llama-3\.1-8B|Llama-3\.1-70B|Qwen3-32B"


def frame(rep: dict, meta: pd.DataFrame) -> pd.DataFrame:
    res = pd.DataFrame(rep["rows"])
    m = meta.loc[res.id]
    res["model"] = m.model_path.str.split("/").str[-1].str.replace("-Instruct", "").to_numpy()
    res["system"] = m.system.to_numpy()
    res["tp"] = m.tp_size.astype(int).to_numpy()
    res["stack"] = res.group.str.split("/").str[0]
    res["ttft_ape"] = (res.ttft_pred - res.ttft_meas).abs() / res.ttft_meas * 100
    res["tpot_ape"] = (res.tpot_pred - res.tpot_meas).abs() / res.tpot_meas * 100
    return res


def nearest_campaign(group: str, theta: dict) -> str | None:
    """For an AIConfigurator-harness model nobody calibrated
    (``trtllm-aic:Qwen3-235B-A22B-FP8:tp4/h100_sxm``), the calibrated group of the same
    harness stack and GPU at the same TP if there is one (else the nearest TP) whose model
    name shares the longest prefix with it (Qwen3-32B for Qwen3-235B); None outside that
    harness or without one."""
    stack, _, system = group.partition("/")
    backend, sep, rest = stack.partition("-aic:")
    if not sep:
        return None
    model, _, tp = rest.rpartition(":tp")

    def key(g: str) -> tuple[int, int]:
        m, _, t = g.split("/")[0].partition("-aic:")[2].rpartition(":tp")
        return -abs(int(t) - int(tp)), len(os.path.commonprefix([model, m]))

    mine = [g for g in theta if g.endswith(f"/{system}") and g.startswith(f"{backend}-aic:")]
    return max(sorted(mine), key=key, default=None)


def transfer(title: str, df: pd.DataFrame, theta: dict, a: argparse.Namespace, engines: dict) -> dict:
    """Rows never calibrated on (``title``), simulated with the overhead fitted on the
    dense aggregated rows of their stack and GPU, as a user's new model or deployment
    would be. Prints and returns their MAPE per model and overall."""
    from simulator.fidelity.calibrate import apply_engines, report, run_rows
    from simulator.fidelity.silicon import silicon_rows

    every = silicon_rows(df.iloc[::a.every], surrogate=a.surrogate, warmup_generations=a.warmup, engine=not a.plain)
    theta = {**theta, **{r.group: theta[n] for r in every if r.scenario is not None and r.group not in theta
                         for n in [nearest_campaign(r.group, theta)] if n}}
    rows = apply_engines([r for r in every if r.scenario is not None and r.group in theta], engines)
    unsupported = sum(r.scenario is None for r in every)
    no_group = sorted({r.group for r in every if r.scenario is not None and r.group not in theta})
    print(f"{title}, overhead from the dense rows of their stack/GPU (never fitted on them): {len(rows)} rows; "
          f"{unsupported} unsupported, {len(every) - len(rows) - unsupported} in stacks no dense row "
          f"calibrates ({', '.join(no_group) or 'none'})")
    if not rows:
        return {}
    results = run_rows(rows, theta, processes=a.processes)
    model_of = dict(zip(df["id"].astype(str), df.model_path.astype(str)))
    out = {}
    for name in sorted({model_of[r.id] for r in results}) + ["all"]:
        mine = [r for r in results if name in ("all", model_of[r.id])]
        rep = report(mine)
        print(f"  {name}: {len(mine)} rows, TTFT {rep['ttft_mape']:.1f}%, TPOT {rep['tpot_mape']:.1f}%")
        out[name] = {"rows": len(mine), "ttft_mape": round(rep["ttft_mape"], 2),
                     "tpot_mape": round(rep["tpot_mape"], 2)}
    return out


def main() -> None:
    from profiling.models import load_models
    from simulator.fidelity.calibrate import apply_engines, engine_doc, fit_engines, fit_overhead, report, run_rows, split_rows
    from profiling.readers.serving import read_silicon
    from simulator.fidelity.silicon import silicon_rows

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--surrogate", default="builtin")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--calib-fraction", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=1, help="use every k-th row (quick look)")
    ap.add_argument("--legacy-budget", action="store_true",
                    help="AIC-harness rows with the flat 8192-token budget (the previous model)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up generations left out")
    ap.add_argument("--kernel-scale", action="store_true",
                    help="also fit a kernel-replay factor (default: additive overhead only)")
    ap.add_argument("--rows-out", default=None, help="write held-out per-row results to this CSV")
    ap.add_argument("--plain", action="store_true",
                    help="replay rows as plain deployments (no engine block), as before the engine block existed")
    ap.add_argument("--fixed-budget", action="store_true",
                    help="keep AIC-harness rows at 4 x isl and as many sequences as clients instead of fitting them")
    a = ap.parse_args()
    t0 = time.perf_counter()
    everything = read_silicon(TRACES / "aiconfigurator" / "silicon_sample.csv")
    agg = everything["mode"] != "disagg"
    df = everything[agg & everything.model_path.astype(str).str.contains(DENSE, regex=True)].reset_index(drop=True)
    df = df.iloc[::a.every].reset_index(drop=True)
    rows = silicon_rows(df, surrogate=a.surrogate, warmup_generations=a.warmup,
                        prompts_per_step=None if a.legacy_budget else True, engine=not a.plain)
    ok = [r for r in rows if r.scenario is not None]
    for r in rows:
        if r.unsupported:
            print(f"unsupported {r.id}: {r.unsupported}")
    calib, held = split_rows(ok, a.calib_fraction, a.seed)
    engines = {} if a.legacy_budget or a.fixed_budget else fit_engines(calib, processes=a.processes)
    calib, held = apply_engines(calib, engines), apply_engines(held, engines)
    history: list = []
    theta = fit_overhead(calib, processes=a.processes, history=history,
                         kernel_scale=a.kernel_scale)
    before_held = report(run_rows(held, None, processes=a.processes))
    after_calib = report(run_rows(calib, theta, processes=a.processes))
    after = report(run_rows(held, theta, processes=a.processes))
    meta = df.set_index(df["id"].astype(str))
    res = frame(after, meta)
    res0 = frame(before_held, meta)
    print(f"rows: {len(rows)} aggregated dense-model rows, {len(ok)} simulated, {len(calib)} calibration "
          f"(seeded random {a.calib_fraction:.0%} of each stack/GPU group, seed {a.seed}), "
          f"{len(held)} held out, {len(rows) - len(ok)} unsupported")
    fitted = "; ".join(f"{g}: {e.prompts_per_step} x isl, {e.held_slots} held slot(s)" for g, e in engines.items())
    budget = "flat 8192 (legacy)" if a.legacy_budget else (f"fitted on the calibration rows: {fitted}" if engines
                                                             else "4 x isl")
    print(f"engine budget for TRT-LLM/vLLM harness rows: {budget}; "
          f"warm-up generations: {a.warmup or 0}; kernel scale {'fitted' if a.kernel_scale else 'fixed 1'}")
    for b, th in theta.items():
        print(f"overhead[{b}]: kernel x{th.kernel_scale:.3f}, step {th.step_s * 1e3:.3f} ms, "
              f"per seq {th.per_seq_s * 1e6:.2f} us, per request {th.request_s * 1e3:.1f} ms, "
              f"front end {th.stream_token_s * 1e6:.0f} us per streamed token")
    if a.rows_out:
        res.to_csv(a.rows_out, index=False)
    keys = ["model", "system", "stack", "tp"]
    g = res.groupby(keys).agg(n=("id", "size"), ttft_mape=("ttft_ape", "mean"), tpot_mape=("tpot_ape", "mean"))
    g0 = res0.groupby(keys).agg(ttft_default=("ttft_ape", "mean"), tpot_default=("tpot_ape", "mean"))
    print("held-out MAPE % per group (default overhead -> calibrated):")
    print(g0.join(g)[["n", "ttft_default", "ttft_mape", "tpot_default", "tpot_mape"]].round(1).to_string())
    s = res.groupby(["model", "system", "stack"]).agg(n=("id", "size"), ttft_mape=("ttft_ape", "mean"),
                                                    tpot_mape=("tpot_ape", "mean"))
    print(s.round(1).to_string())
    print(f"held-out rows with the default overhead: TTFT {before_held['ttft_mape']:.1f}%, "
          f"TPOT {before_held['tpot_mape']:.1f}%")
    print(f"calibration rows after fit: TTFT {after_calib['ttft_mape']:.1f}%, TPOT {after_calib['tpot_mape']:.1f}%")
    print(f"held-out MAPE after calibration: TTFT {after['ttft_mape']:.1f}%, TPOT {after['tpot_mape']:.1f}% "
          f"(target <= 15% each) in {time.perf_counter() - t0:.0f} s")
    models = load_models()
    is_moe = everything.model_path.map(lambda p: p in models and models.get(p).is_moe)
    moe = transfer("mixture-of-experts rows", everything[agg & is_moe], theta, a, engines)
    disagg = transfer("disaggregated rows", everything[~agg], theta, a, engines)
    print(json.dumps({"surrogate": a.surrogate, "moe": moe, "disaggregated": disagg,
                      "held_out_rows": len(held), "calibration_rows": len(calib),
                      "legacy_budget": a.legacy_budget, "engine": engine_doc(engines),
                      "warmup_generations": a.warmup or 0,
                      "ttft_mape": round(after["ttft_mape"], 2), "tpot_mape": round(after["tpot_mape"], 2),
                      "ttft_mape_uncalibrated": round(before_held["ttft_mape"], 2),
                      "tpot_mape_uncalibrated": round(before_held["tpot_mape"], 2),
                      "overhead": {b: th.model_dump() for b, th in theta.items()}}))


if __name__ == "__main__":
    main()
