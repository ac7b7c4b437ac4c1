"""Uncertainty to the end: the surrogate's prediction intervals (and the engine profile's
spread) propagated through whole simulations into bands of TTFT, TPOT, tokens per dollar
and the probability that each SLO is met.

The model, stated:

* **Kernel time.** Each deployment's kernel time is the point prediction times one
  log-normal factor ``exp(sigma z)``, shared by every step of the run, ``z`` stratified over
  the samples (the normal's quantile midpoints in a seeded order). ``sigma`` is the step's
  90% interval half-width (log) over the operators of a representative step (a 512-token
  prefill chunk beside 32 decoders) on that GPU, divided by z(0.95) = 1.645; one factor
  for the whole run, since the same shapes recur in every step, and deployments on the same
  GPU share ``z``. How the operators' half-widths combine is the assumption: on a GPU without
  kernel traces the transfer model's (leave-one-GPU-out) error is mostly the GPU's level,
  common to every kernel, so the step's half-width is their time-weighted mean; on a
  measured GPU a kernel's error belongs to its shape (shared by that shape in every layer,
  not by other shapes), so they add in quadrature (time-weighted root sum of squares) and
  the step's band is narrower than any kernel's.
* **Engine overhead.** Each sample runs the engine profile's full fit. The profile's
  leave-one-group-out fits (``held_out``) are not drawn: ``MODEL_ERROR`` is sized on replays
  with exactly those fits, so their spread is in it already; drawing them as well counts it
  twice, and a few folds with lopsided ratios to the full fit move the band's median away from
  the point estimate (``overhead_sets`` lists them; figures in ``benchmarks/README.md``,
  slo_reliability).
* **Engine-model error.** What no sampled input represents (the scheduler's and front end's
  structural error: the first wave of a closed loop, admission, queueing the model gets
  wrong) is an explicit log-normal factor on each sample's TTFT and TPOT statistics, one
  stratified draw per sample and metric, applied after the simulation (the simulator has one
  kernel-time knob for prefill and decode alike, so it cannot carry a TTFT-only error). Its
  location and sigma (``MODEL_ERROR``) come from each engine's calibration rows (a shipped
  profile's own, or for an engine without one a stratified sample of its dense-model rows
  replayed with its defaults), with e = log(measured / simulated): the profiles are fitted on
  TPOT alone, so TPOT is replayed with the leave-one-group-out fit that did not see the row's
  group and taken as unbiased (sigma 1.4826 x median |e|), while TTFT, in no fit's loss, is
  replayed with the full fit the samples run and its median residual is the model's TTFT bias,
  the factor's location (sigma 1.4826 x the median absolute deviation about it). Each sigma less the kernel sigma in
  quadrature (that part is sampled already). Engines without calibration rows and
  deployments without an engine block take the pooled value. It scales latency statistics
  only: throughput and tokens per dollar stay as simulated.
* Services (CPU/GPU RAG stages), the network and the workload carry no model uncertainty
  here; every sample replays the same requests (the scenario's seed), so the band is the
  model's, not the workload's.

Cost: ``samples`` full simulations (the step tables are compiled once and shared).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from time import perf_counter
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from profiling.operators import BatchShape, expand_step

from .engine.config import Deployment
from .engine.deployment import resolve
from .engine.engines import load_profile, profile_for
from .engine.stepcost import load_predictor
from .scenario import Scenario
from .simulate import simulate

Z90 = 1.6448536269514722          # a central 90% interval of a normal spans +-1.645 sigma
Z80 = 1.2815515655446004          # and its p10-p90 span +-1.28 sigma
REP_STEP = BatchShape(prefill=((512, 512),), decode_kv=(1024,) * 32)
OVERHEAD_FIELDS = ("step_s", "per_seq_s", "per_token_s")
QUANTILES = (10, 50, 90)
# summary metrics reported as bands: (key in the band table, summary block, stat)
BAND_METRICS = (("ttft_mean_s", "ttft_s", "mean"), ("tpot_mean_s", "tpot_s", "mean"))
SCALARS = ("throughput_req_s", "output_tokens_per_s", "output_tokens_per_dollar")
# Engine-model error, log sigma of the simulated mean TTFT / TPOT beyond the kernel spread, per
# engine ("*": pooled, for engines without calibration rows and for plain schedulers); produced by
# `python benchmarks/slo_reliability.py --model-error` from rows the reliability table never scores.
MODEL_ERROR = {"vllm": {"ttft": 0.322, "tpot": 0.0, "ttft_shift": 0.024},
               "trtllm": {"ttft": 0.663, "tpot": 0.163, "ttft_shift": 0.144},
               "*": {"ttft": 0.423, "tpot": 0.124, "ttft_shift": 0.042}}
MODEL_METRICS = ("ttft", "tpot")


@dataclass(frozen=True)
class DeploymentSpread:
    """What is sampled for one deployment: the kernel-time factor's log sigma, the 90%
    interval half-width it came from, and overhead ratio sets (empty: overhead known)."""

    name: str
    hardware: str
    kernel_sigma: float
    kernel_q90: float
    overhead_sets: tuple[dict[str, float], ...] = ()
    note: str = ""
    model_sigma: tuple[tuple[str, float], ...] = ()      # (metric, log sigma) of the engine-model error
    model_shift: tuple[tuple[str, float], ...] = ()      # (metric, log location) of the engine-model error

    def doc(self) -> dict:
        return {"hardware": self.hardware, "kernel_sigma_log": self.kernel_sigma,
                "kernel_interval90_log": self.kernel_q90,
                "kernel_factor_p10_p90": [math.exp(-Z80 * self.kernel_sigma), math.exp(Z80 * self.kernel_sigma)],
                "overhead_sets": len(self.overhead_sets), "model_error_sigma_log": dict(self.model_sigma),
                "model_error_shift_log": dict(self.model_shift),
                "note": self.note}


def _model_error(dep: Deployment) -> dict[str, float]:
    return MODEL_ERROR.get(dep.engine.name if dep.engine is not None else "*", MODEL_ERROR["*"])


def model_sigma(dep: Deployment) -> tuple[tuple[str, float], ...]:
    """The deployment's engine-model error sigmas (``MODEL_ERROR``)."""
    table = _model_error(dep)
    return tuple((m, float(table[m])) for m in MODEL_METRICS)


def model_shift(dep: Deployment) -> tuple[tuple[str, float], ...]:
    """The deployment's engine-model error locations (``MODEL_ERROR``, log measured / simulated)."""
    table = _model_error(dep)
    return tuple((m, float(table.get(f"{m}_shift", 0.0))) for m in MODEL_METRICS)


def kernel_interval(dep: Deployment, surrogate: str | None, hardware: str | None = None,
                    tp: int | None = None) -> tuple[float, str]:
    """90% interval half-width (log) of one representative step's kernel time of ``dep`` (on
    ``hardware``/``tp`` if given), and a note: on a GPU without traces the time-weighted mean
    of its operators' half-widths (errors common to all of them), on a measured GPU their
    time-weighted root sum of squares (each shape's error its own); 0 with a note for a
    predictor without intervals (the roofline)."""
    predictor = load_predictor(surrogate)
    predict = getattr(predictor, "predict", None)
    if predict is None:
        return 0.0, f"{type(predictor).__name__} gives no intervals: kernel time taken as known"
    model, hw = resolve(dep, hardware, tp or dep.tp)
    ops = expand_step(model, REP_STEP, dtype=dep.dtype, tp=tp or dep.tp, pp=dep.pp, kv_dtype=dep.kv_dtype,
                      fusions=tuple(dep.fusions))
    by_kind: dict[tuple, list] = {}
    for o in ops:
        by_kind.setdefault((o.kind, o.dtype, o.kv_dtype), []).append(o)
    w_sum = q_sum = q2_sum = 0.0
    for (kind, dtype, kv_dtype), group in by_kind.items():
        frame = pd.DataFrame([o.shape for o in group])
        frame["dtype"], frame["kv_dtype"], frame["name"] = dtype, kv_dtype, [o.name for o in group]
        p = predict(kind, frame, hw)
        ms = np.asarray(p.ms, float) * np.array([o.count for o in group], float)
        q = np.log(np.asarray(p.hi_ms, float) / np.asarray(p.ms, float))
        ok = np.isfinite(q) & np.isfinite(ms) & (ms > 0)   # a kind priced by the roofline has no interval
        w_sum += float(ms[ok].sum())
        q_sum += float((ms[ok] * q[ok]).sum())
        q2_sum += float(((ms[ok] * q[ok]) ** 2).sum())
    if w_sum <= 0:
        return 0.0, "no operator with an interval"
    trained = set(getattr(predictor, "trained_hardware", lambda: [])())
    if hw.name in trained:
        # Measured GPU: a kernel's error is its shape's own (the same shape in every layer shares
        # it, different shapes do not), so the step's errors add in quadrature.
        return math.sqrt(q2_sum) / w_sum, "measured GPU: per-shape errors add in quadrature"
    # No traces: the transfer's error is mostly the GPU's level, common to every kernel.
    return q_sum / w_sum, "no kernel traces: transfer intervals"


def overhead_sets(dep: Deployment) -> tuple[dict[str, float], ...]:
    """Ratios (field -> held-out fit / full fit) of the deployment's engine profile, the full
    fit (all ones) first; empty without a profile or without leave-one-out fits."""
    if dep.engine is None:
        return ()
    try:
        prof = profile_for(dep.engine)
    except ValueError:
        return ()
    if prof is None:
        return ()
    try:
        doc = json.loads(Path(prof.path).read_text())
    except (OSError, ValueError):
        return ()
    full = load_profile(prof.path).parameters
    out = [dict.fromkeys(OVERHEAD_FIELDS, 1.0)]
    for scheme in (doc.get("held_out") or {}).values():
        for entry in (scheme or {}).values():
            params = (entry or {}).get("params") or {}
            out.append({f: (float(params[f]) / full[f]) if full.get(f) and f in params else 1.0
                        for f in OVERHEAD_FIELDS})
    return tuple(out) if len(out) > 1 else ()


def spreads(scenario: Scenario) -> list[DeploymentSpread]:
    """What each deployment's samples vary (``DeploymentSpread``)."""
    out = []
    for d in scenario.deployments:
        q, note = kernel_interval(d, scenario.surrogate)
        s = d.scheduler
        if s.policy == "disaggregated" and (s.decode_hardware or s.decode_tp):
            q2, note2 = kernel_interval(d, scenario.surrogate, s.decode_hardware, s.decode_tp)
            if q2 > q:      # one factor for both pools: the wider interval (on the safe side)
                q, note = q2, f"decode pool: {note2}"
        # the profile's held-out fits are in MODEL_ERROR already (module docstring): not drawn
        out.append(DeploymentSpread(d.name, d.hardware, q / Z90, q, (), note, model_sigma(d), model_shift(d)))
    return out


def _strata(samples: int) -> list[float]:
    """The standard normal's ``samples`` quantile midpoints (a stratified sample of z)."""
    return [NormalDist().inv_cdf((i + 0.5) / samples) for i in range(samples)]


def model_error_factors(samples: int, seed: int, spread: Sequence[DeploymentSpread]) -> list[dict[str, float]]:
    """Per sample, metric -> the engine-model error factor exp(shift + sigma z), from the deployment
    with the largest sigma (a scenario's statistics mix its deployments). Its own seeded stream,
    so the kernel and overhead draws stay those of ``sample_scenarios``."""
    sig, mu = {}, {}
    for m in MODEL_METRICS:
        widest = max(spread, key=lambda s: dict(s.model_sigma).get(m, 0.0), default=None)
        sig[m] = dict(widest.model_sigma).get(m, 0.0) if widest is not None else 0.0
        mu[m] = dict(widest.model_shift).get(m, 0.0) if widest is not None else 0.0
    rng = np.random.default_rng([int(seed), 27, 1])
    # Stratified draws (the normal's K quantile midpoints, shuffled per metric): with a sigma as wide
    # as TensorRT-LLM's TTFT one, K plain draws would move the band's median by chance.
    z = {m: rng.permutation(_strata(samples)) for m in MODEL_METRICS}
    return [{m: math.exp(mu[m] + sig[m] * float(z[m][i])) for m in MODEL_METRICS} for i in range(samples)]


def with_model_error(summary: dict, factors: dict[str, float]) -> dict:
    """``summary`` with its TTFT and TPOT statistics (and those SLOs' measured values and
    verdicts) times the sample's engine-model error factors; other entries as simulated."""
    out = dict(summary)
    for m, f in factors.items():
        block = summary.get(f"{m}_s")
        if isinstance(block, dict):
            out[f"{m}_s"] = {k: v * f if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                             for k, v in block.items()}
    slo = {}
    for key, v in (summary.get("slo") or {}).items():
        f = factors.get(key.split("_")[0])
        if f is not None and isinstance(v, dict) and v.get("measured") is not None:
            measured = v["measured"] * f
            v = {**v, "measured": measured, "met": bool(measured <= v["target"])}
        slo[key] = v
    if "slo" in summary:
        out["slo"] = slo
        out["slo_met"] = all(v.get("met") for v in slo.values())
    return out


def sample_scenarios(scenario: Scenario, samples: int, seed: int,
                     spread: Sequence[DeploymentSpread] | None = None) -> list[Scenario]:
    """``samples`` copies of ``scenario`` with sampled kernel_scale (and overhead) per
    deployment; deployments on one GPU share the kernel draw. Seeded: same seed, same draws."""
    spread = list(spread) if spread is not None else spreads(scenario)
    rng = np.random.default_rng([int(seed), 27])
    hws = sorted({s.hardware for s in spread})
    # Stratified like the model-error draw: K plain draws stretch or shift the band by chance, the
    # same way on every scenario run with that seed.
    zs = {hw: rng.permutation(_strata(samples)) for hw in hws}
    out = []
    for i in range(samples):
        z = {hw: float(zs[hw][i]) for hw in hws}
        picks = [int(rng.integers(len(s.overhead_sets))) if s.overhead_sets else -1 for s in spread]
        deps = []
        for d, s, pick in zip(scenario.deployments, spread, picks):
            o = d.overhead
            upd = {"kernel_scale": o.kernel_scale * math.exp(s.kernel_sigma * z[s.hardware])}
            if pick >= 0:
                upd.update({f: getattr(o, f) * s.overhead_sets[pick][f] for f in OVERHEAD_FIELDS})
            deps.append(d.model_copy(update={"overhead": o.model_copy(update=upd)}))
        out.append(scenario.model_copy(update={"deployments": deps}))
    return out


def run_samples(scenario: Scenario, samples: int = 16, seed: int = 0, *,
                progress: Callable[[float], None] | None = None,
                should_stop: Callable[[dict], bool] | None = None,
                spread: Sequence[DeploymentSpread] | None = None) -> list[tuple[dict, bool]]:
    """(summary, stopped early) of each sampled simulation."""
    spread = list(spread) if spread is not None else spreads(scenario)
    factors = model_error_factors(samples, seed, spread)
    out = []
    for i, scen in enumerate(sample_scenarios(scenario, samples, seed, spread)):
        res = simulate(scen, should_stop=should_stop)
        out.append((with_model_error(res.summary, factors[i]), bool(res.stopped_early)))
        if progress is not None:
            progress((i + 1) / samples)
    return out


def _band(values: Sequence[float]) -> dict[str, float | None]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if not len(v):
        return {f"p{q}": None for q in QUANTILES}
    return {f"p{q}": float(np.percentile(v, q)) for q in QUANTILES}


def slo_met(summary: dict, key: str) -> bool:
    """Whether SLO ``key`` (``ttft_p90_s``) holds in ``summary`` (a missing value misses)."""
    v = (summary.get("slo") or {}).get(key) or {}
    return bool(v.get("met"))


def uncertainty(scenario: Scenario, samples: int = 16, seed: int = 0, *,
                progress: Callable[[float], None] | None = None) -> dict:
    """The ``uncertainty`` section of summary.json: p10/p50/p90 of TTFT and TPOT (mean and
    each SLO's statistic), throughput and tokens per dollar over ``samples`` simulations, and
    P(SLO met) per SLO and for all together (the fraction of samples meeting it)."""
    if samples < 2:
        raise ValueError("samples must be >= 2")
    wall0 = perf_counter()
    spread = spreads(scenario)
    runs = run_samples(scenario, samples, seed, progress=progress, spread=spread)
    sums = [s for s, _ in runs]
    bands: dict[str, dict] = {}
    for key, block, stat in BAND_METRICS:
        bands[key] = _band([(s.get(block) or {}).get(stat) for s in sums])
    for key in scenario.slo:
        metric, stat, _ = key.split("_")
        bands.setdefault(f"{metric}_{stat}_s", _band([(s.get(f"{metric}_s") or {}).get(stat) for s in sums]))
    for key in SCALARS:
        bands[key] = _band([s.get(key) for s in sums])
    keys = [k for k, v in scenario.slo.items() if v is not None]
    prob = {k: float(np.mean([slo_met(s, k) for s in sums])) for k in keys}
    if keys:
        prob["all"] = float(np.mean([all(slo_met(s, k) for k in keys) for s in sums]))
    return {"samples": samples, "seed": seed, "bands": bands, "slo_probability": prob,
            "deployments": {s.name: s.doc() for s in spread},
            "assumption": "one log-normal kernel-time factor per GPU shared by every step (errors "
                          "correlated across kernels); the engine profile's full fit; an engine-model error "
                          "factor on TTFT and TPOT (MODEL_ERROR, sized on the profiles' leave-one-out replays)",
            "sim_wall_s": perf_counter() - wall0}
