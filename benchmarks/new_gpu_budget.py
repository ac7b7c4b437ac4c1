"""A new GPU from a small budget of measurements: MAPE vs the number of kernels measured.

    python benchmarks/new_gpu_budget.py [--traces ../shared/traces] [--budgets 0,25,50,100,200,400]
        [--max-rows 20000] [--pool 3000] [--score 20000] [--seeds 3] [--weighted N] [--cache DIR] [--png OUT.png]
        [--targeted] [--quick]

For each GPU of the AIConfigurator tables in turn (bf16 GEMM, prefill and decode attention,
all-reduce): train the surrogate on the other GPUs (the shipped recipe's trees, but
``--max-rows`` rows per kind as ``surrogate_accuracy.py``'s hold-outs subsample, so a fold takes
seconds), reveal N of the held-out GPU's rows, fit the few-row correction
(``surrogates/few_rows.py``) and score MAPE per op kind on its other rows. Strategies:

* ``plan``    — the rows ``profiling.plan.greedy_plan`` chooses (greedy integrated posterior
  variance over the pool; ``--targeted``: half over the pool and half over the shapes the
  ``TARGETS`` step tables query);
* ``random``  — the same number of rows per kind drawn at random (mean over ``--seeds`` seeds);
* ``nearest`` — the same shape's latency copied from the measured GPU nearest on spec (N-free);
* N = 0 is the spec-sheet transfer alone;
* ``weighted`` (with ``--weighted N``) — the alternative to a correction: retrain with the N
  planned rows repeated ``WEIGHT`` times among the other GPUs' rows.

Step time of the target deployments (``TARGETS``: Llama-3.1-8B TP1 and Qwen3-32B TP2, bf16):
the compiled step table (``surrogates.compiled.compile_step_table``) from the fold's surrogate
corrected by the N planned rows against the table from a reference surrogate trained on every
GPU's rows, the held-out one's included (its full tables), scored as the mean |relative
error| of decode steps and prefill steps over ``STEP_BATCHES`` x ``STEP_CONTEXTS``.

Both strategies choose from the same pool (``--pool`` rows per kind, drawn at random from the
GPU's table) and are scored on the same ``--score`` rows per kind (revealed rows excluded).
Prints one line per (GPU, N, strategy), the table of MAPE vs N, writes a PNG, and ends with
one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from profiling.atomicfile import savefig_atomic
from profiling.hardware import load_catalog
from profiling.plan import by_kind, deployment_candidates, greedy_plan
from surrogates import load_traces
from surrogates.build_bundle import BUNDLE_PARAMS, default_traces
from surrogates.evaluate import nearest_gpu
from profiling.models import resolve_model
from surrogates.compiled import StepTable, compile_step_table
from surrogates.few_rows import FewRowCorrection, FewRowSurrogate, fit_kind, kind_priors, with_basis
from surrogates.model import SurrogateModel

KINDS = ("gemm", "attn_prefill", "attn_decode", "collective")
# Repeats of each revealed row in the weighted-refit comparison (``--weighted N``).
WEIGHT = 20
LABEL = {"gemm": "gemm", "attn_prefill": "prefill", "attn_decode": "decode", "collective": "all-reduce"}
# Deployments whose compiled step times are scored (model, TP), bf16; and the grid scored:
# decode steps of B sequences at context C, prefill steps of one B*64-token chunk after C.
TARGETS = (("Llama-3.1-8B", 1), ("Qwen3-32B", 2))
STEP_BATCHES = (1, 4, 16, 64, 256)
STEP_CONTEXTS = (512, 2048, 8192, 32768)


def bf16_table(traces: Path) -> pd.DataFrame:
    aic = load_traces([traces / "aiconfigurator/data"], "aiconfigurator")
    t = aic[aic["op"].isin(KINDS) & aic["dtype"].isin(("bf16", "fp16"))]  # NCCL's all-reduce is "half"
    return t[(t["op"] != "collective") | (t["collective"] == "all_reduce")].reset_index(drop=True)


def mape(y: np.ndarray, p: np.ndarray) -> float:
    """MAPE (%) over the rows with a prediction (the nearest GPU may lack a shape)."""
    ok = np.isfinite(p)
    return float(np.mean(np.abs(p[ok] - y[ok]) / y[ok]) * 100) if ok.any() else float("nan")


def trained(train: pd.DataFrame, tag: str, a: argparse.Namespace) -> SurrogateModel:
    """A surrogate on ``train`` (the shipped trees, ``--max-rows`` per kind), from ``--cache`` if there."""
    cached = a.cache / f"{tag}-{a.max_rows}" if a.cache else None
    if cached is not None and (cached / "surrogate.joblib").is_file():
        return SurrogateModel.load(cached)
    model = SurrogateModel(params=dict(BUNDLE_PARAMS), max_rows=a.max_rows).fit(train)
    if cached is not None:
        model.save(cached)
    return model


def step_grid(st: StepTable) -> tuple[np.ndarray, np.ndarray]:
    """(decode, prefill) step seconds of ``st`` over ``STEP_BATCHES`` x ``STEP_CONTEXTS``."""
    dec = [st.step_time(b, b, b * c) for b in STEP_BATCHES for c in STEP_CONTEXTS]
    pre = [st.step_time(64 * b, prefill=((64 * b, 64 * b + c),)) for b in STEP_BATCHES for c in STEP_CONTEXTS]
    return np.array(dec), np.array(pre)


def step_errors(predictor, hw, refs: dict) -> dict[str, dict[str, float]]:
    """Per target deployment: mean |relative error| (%) of decode and prefill step times of
    ``predictor``'s compiled table against the reference's (``refs``: step_grid per target)."""
    out = {}
    for name, tp in TARGETS:
        dec, pre = step_grid(compile_step_table(resolve_model(name), hw, predictor, dtype="bf16", tp=tp))
        rdec, rpre = refs[(name, tp)]
        out[f"{name} TP{tp}"] = {"decode": float(np.mean(np.abs(dec / rdec - 1)) * 100),
                                 "prefill": float(np.mean(np.abs(pre / rpre - 1)) * 100)}
    return out


def plan_targets(model: SurrogateModel, hw) -> dict[str, pd.DataFrame]:
    """Per kind, the kernel shapes the ``TARGETS`` deployments' step tables query
    (``deployment_candidates``), with the pool's basis columns: what the plan must predict."""
    parts = [deployment_candidates([resolve_model(name)], [tp]) for name, tp in TARGETS]
    return {k: with_basis(model, k, pd.concat([p[k] for p in parts if k in p], ignore_index=True), hw)[1]
            for k in KINDS if any(k in p for p in parts)}


def fold(table: pd.DataFrame, hw_name: str, budgets: list[int], a: argparse.Namespace, log,
         reference: SurrogateModel) -> dict:
    """``{strategy: {N: {kind: MAPE}}}`` for one held-out GPU, and ``step[N]``: the compiled
    step-time errors of the target deployments (``step_errors``)."""
    hw = load_catalog().get(hw_name)
    train, test = table[table["hardware"] != hw_name], table[table["hardware"] == hw_name]
    t0 = time.perf_counter()
    model = trained(train, hw_name, a)
    log(f"{hw_name}: trained on {train['hardware'].nunique()} GPUs in {time.perf_counter() - t0:.0f}s")
    refs = {(name, tp): step_grid(compile_step_table(resolve_model(name), hw, reference, dtype="bf16", tp=tp))
            for name, tp in TARGETS}
    priors = kind_priors(model)
    rng = np.random.default_rng(0)
    pools, scores, base_pool, base_score = {}, {}, {}, {}
    for kind in KINDS:
        part = test[test["op"] == kind].reset_index(drop=True)
        if not len(part):
            continue
        pidx = np.sort(rng.choice(len(part), min(a.pool, len(part)), replace=False))
        sidx = np.sort(rng.choice(len(part), min(a.score, len(part)), replace=False))
        pools[kind], scores[kind] = part.iloc[pidx].reset_index(drop=True), part.iloc[sidx].reset_index(drop=True)
        pools[kind]["_row"], scores[kind]["_row"] = pidx, sidx
        base_pool[kind], pools[kind] = with_basis(model, kind, pools[kind], hw)
        base_score[kind], scores[kind] = with_basis(model, kind, scores[kind], hw)
    res: dict = {"nearest": {}, "plan": {}, "random": {}, "step": {}}
    # How far the step-time reference itself is from the GPU's rows (it trained on a subsample of them).
    res["reference"] = {k: mape(s["latency_ms"].to_numpy(), reference.predict(k, s.drop(
        columns=["latency_ms", "_row", *[c for c in s.columns if str(c).startswith("basis_")]]), hw).ms)
        for k, s in scores.items()}
    print(f"{hw_name:10s} reference (all GPUs' rows) " + " ".join(
        f"{LABEL[k]}={v:6.2f}%" for k, v in res["reference"].items()), flush=True)
    near = {k: nearest_gpu(train[train["op"] == k], s) for k, s in scores.items()}
    order = greedy_plan(pools, max(budgets), priors, targets=plan_targets(model, hw) if a.targeted else None)
    if a.weighted:
        res["weighted"] = {a.weighted: _weighted_refit(train, pools, scores, by_kind(order[:a.weighted]), hw, a)}
        print(f"{hw_name:10s} N={a.weighted:4d} weighted " + " ".join(
            f"{LABEL[k]}={v:6.2f}%" for k, v in res["weighted"][a.weighted].items()), flush=True)
    for n in budgets:
        res["nearest"][n] = {k: mape(s["latency_ms"].to_numpy(), near[k]) for k, s in scores.items()}
        chosen = by_kind(order[:n])
        counts = {k: len(chosen.get(k, ())) for k in pools}
        res["plan"][n], corr = _score(chosen, pools, scores, base_pool, base_score, priors)
        res["step"][n] = step_errors(FewRowSurrogate.wrap(model, {hw.name: corr}) if corr.kinds else model, hw, refs)
        runs = []
        for seed in range(a.seeds if n else 1):
            r = np.random.default_rng(1000 + seed)
            pick = {k: r.choice(len(p), counts[k], replace=False) for k, p in pools.items() if counts[k]}
            runs.append(_score(pick, pools, scores, base_pool, base_score, priors)[0])
        res["random"][n] = {k: float(np.mean([x[k] for x in runs])) for k in runs[0]}
        for strat in ("plan", "random", "nearest"):
            print(f"{hw_name:10s} N={n:4d} {strat:8s} " + " ".join(
                f"{LABEL[k]}={v:6.2f}%" for k, v in res[strat][n].items())
                + (f"  rows per kind {counts}" if strat == "plan" else ""), flush=True)
        print(f"{hw_name:10s} N={n:4d} step     " + " ".join(
            f"{t}: decode {e['decode']:5.2f}% prefill {e['prefill']:5.2f}%" for t, e in res["step"][n].items()),
            flush=True)
    return res


def _weighted_refit(train, pools, scores, chosen, hw, a) -> dict[str, float]:
    """The alternative to a correction: retrain with the planned rows among the others',
    each repeated ``WEIGHT`` times (a sample weight the row budget's strata keep), and
    score the retrained model's prediction of the GPU (now a measured one)."""
    extra = [pools[k].iloc[idx] for k, idx in chosen.items() if len(idx)]
    extra = pd.concat(extra, ignore_index=True)
    extra = extra.drop(columns=[c for c in extra.columns if str(c).startswith("basis_") or c == "_row"])
    model = SurrogateModel(params=dict(BUNDLE_PARAMS), max_rows=a.max_rows).fit(
        pd.concat([train, *[extra] * WEIGHT], ignore_index=True))
    out = {}
    for kind, s in scores.items():
        idx = chosen.get(kind, np.zeros(0, int))
        keep = ~np.isin(s["_row"].to_numpy(), pools[kind]["_row"].to_numpy()[idx])
        shapes = s[keep].drop(columns=["latency_ms", "_row", *[c for c in s.columns if str(c).startswith("basis_")]])
        out[kind] = mape(s["latency_ms"].to_numpy()[keep], model.predict(kind, shapes, hw).ms)
    return out


def _score(chosen, pools, scores, base_pool, base_score, priors) -> tuple[dict[str, float], FewRowCorrection]:
    """MAPE per kind on the scored rows not revealed, and the correction the revealed rows fit."""
    out, corr = {}, FewRowCorrection("")
    for kind, s in scores.items():
        idx = chosen.get(kind, np.zeros(0, int))
        keep = ~np.isin(s["_row"].to_numpy(), pools[kind]["_row"].to_numpy()[idx])
        y = s["latency_ms"].to_numpy()[keep]
        pred = base_score[kind][keep]
        if len(idx):
            c = fit_kind(kind, pools[kind].iloc[idx], base_pool[kind][idx], priors[kind])
            pred = pred * np.exp(c.posterior(s[keep])[0])
            corr.kinds[kind] = c
        out[kind] = mape(y, pred)
    return out, corr


def pooled(results: dict, budgets: list[int]) -> dict:
    """``{strategy: {N: {kind: MAPE}}}``, the mean over GPUs (each GPU weighs the same)."""
    out: dict = {}
    for strat in ("plan", "random", "nearest"):
        for n in budgets:
            per = [r[strat][n] for r in results.values()]
            out.setdefault(strat, {})[n] = {k: float(np.mean([p[k] for p in per if k in p])) for k in KINDS
                                            if any(k in p for p in per)}
    return out


def plot(mean: dict, budgets: list[int], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = list(mean["plan"][budgets[0]])
    fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.4))
    x = [max(n, 1) for n in budgets]
    for ax, k in zip(np.atleast_1d(axes), kinds):
        for strat, style in (("plan", "o-"), ("random", "s--"), ("nearest", ":")):
            ax.plot(x, [mean[strat][n][k] for n in budgets], style, label=strat)
        ax.set_xscale("log")
        ax.set_yscale("log")  # the nearest GPU's all-reduce is off by 10x: one scale for all
        ax.set_title(LABEL[k])
        ax.set_xlabel("kernels measured (N; 0 plotted at 1)")
        ax.set_ylabel("MAPE % (mean over GPUs)")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend()
    fig.tight_layout()
    savefig_atomic(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=Path, default=default_traces())
    ap.add_argument("--budgets", default="0,25,50,100,200,400")
    ap.add_argument("--max-rows", type=int, default=20000, help="training rows per kind (subsampled)")
    ap.add_argument("--pool", type=int, default=3000, help="candidate rows per kind the strategies choose from")
    ap.add_argument("--score", type=int, default=20000, help="scored rows per kind")
    ap.add_argument("--seeds", type=int, default=3, help="random-row draws averaged")
    ap.add_argument("--gpus", default="", help="comma-separated subset of held-out GPUs")
    ap.add_argument("--weighted", type=int, default=0,
                    help="also retrain with the N planned rows weighted (x20) among the others' (slow)")
    ap.add_argument("--targeted", action="store_true",
                    help="plan over the pool and the target deployments' step-table shapes (half each)")
    ap.add_argument("--cache", type=Path, default=None, help="folder keeping each fold's trained surrogate")
    ap.add_argument("--png", type=Path, default=Path(__file__).parent / "results" / "new_gpu_budget.png")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: L40S only, N = 0 and 50, 3000 scored rows, one random draw (about a minute)")
    a = ap.parse_args(argv)
    if a.quick:
        a.gpus, a.budgets, a.score, a.seeds = a.gpus or "L40S", "0,50", 3000, 1
        a.png = a.png.with_name(a.png.stem + "_quick.png")  # the full run's figure is kept
    if not a.traces.is_dir():
        ap.error(f"--traces {a.traces}: no such folder")
    try:
        budgets = sorted({int(x) for x in a.budgets.split(",") if x})
    except ValueError:
        ap.error(f"--budgets {a.budgets}: expected comma-separated integers")
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    table = bf16_table(a.traces)
    gpus = [g for g in a.gpus.split(",") if g] or sorted(table["hardware"].unique())
    t1 = time.perf_counter()
    reference = trained(table, "all", a)  # every GPU's full tables: the step-time reference
    log(f"reference: trained on {table['hardware'].nunique()} GPUs in {time.perf_counter() - t1:.0f}s")
    results = {g: fold(table, g, budgets, a, log, reference) for g in gpus}
    mean = pooled(results, budgets)
    steps = {n: {t: {ph: float(np.mean([r["step"][n][t][ph] for r in results.values()]))
                     for ph in ("decode", "prefill")} for t in results[gpus[0]]["step"][n]} for n in budgets}
    print("\nMAPE % (mean over held-out GPUs " + ", ".join(gpus) + ")")
    kinds = list(mean["plan"][budgets[0]])
    print(f"{'N':>5s} {'strategy':8s} " + " ".join(f"{LABEL[k]:>10s}" for k in kinds))
    for n in budgets:
        for strat in ("plan", "random", "nearest"):
            print(f"{n:5d} {strat:8s} " + " ".join(f"{mean[strat][n][k]:10.2f}" for k in kinds))
    ref = {k: float(np.mean([r["reference"][k] for r in results.values() if k in r["reference"]])) for k in kinds}
    print("  ref reference " + " ".join(f"{ref[k]:10.2f}" for k in kinds) + "   (trained on every GPU's rows)")
    print("\nCompiled step time, mean |relative error| % against the reference (mean over held-out GPUs)")
    targets = list(steps[budgets[0]])
    print(f"{'N':>5s} " + " ".join(f"{t + ' ' + ph:>26s}" for t in targets for ph in ("decode", "prefill")))
    for n in budgets:
        print(f"{n:5d} " + " ".join(f"{steps[n][t][ph]:26.2f}" for t in targets for ph in ("decode", "prefill")))
    plot(mean, budgets, a.png)
    wins = {n: all(mean["plan"][n][k] <= mean["random"][n][k] for k in kinds) for n in budgets if n}
    print(json.dumps({"benchmark": "new_gpu_budget", "gpus": gpus, "budgets": budgets, "max_rows": a.max_rows,
                      "pool": a.pool, "score": a.score, "seeds": a.seeds, "targeted": a.targeted, "mean_mape": mean,
                      "step_targets": [f"{m} TP{tp} bf16" for m, tp in TARGETS], "mean_step_error": steps,
                      "reference_mape": ref,
                      "per_gpu": results, "plan_beats_random_every_kind": wins, "png": str(a.png),
                      "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
