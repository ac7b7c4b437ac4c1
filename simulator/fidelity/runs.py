"""Real serving runs replayed through the simulator, and how far the simulation lands from them.

A ``profiling.readers.runs.ServingRun`` (any benchmark format) says what was served (engine,
release, its arguments, model, GPU, TP/PP/DP/EP) and what the client sent. ``scenario_for_run``
turns that into a deployment with an ``engine:`` block (the release's documented defaults plus
the run's recorded arguments), ``replay_run`` simulates the run's own requests (recorded
arrivals, or arrivals drawn at the recorded rate, or the recorded closed loop) and
``run_errors`` scores the replay per request and in distribution, with a note when one side
saturates and the other does not.

Every request of the run is either compared or listed in ``RunReplay.unsupported`` with why.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from math import isfinite
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from profiling.dtypes import normalize_dtype
from profiling.errors import HermesError, InputError
from profiling.hardware import load_catalog
from profiling.models import load_models, resolve_model
from profiling.readers.runs import RunInfo, ServingRun

from ..engine.config import OverheadConfig
from ..engine.engines import DEPLOYMENT_ARGS, ENGINES
from ..engine.workload import Requests
from ..scenario import Scenario, parse_scenario
from ..result import SimResult
from ..simulate import simulate

METRICS = ("ttft", "tpot", "e2e")
QUANTILES = (50, 90, 99)
# A server is saturated when its queue keeps growing: TTFT rises with arrival time. In an
# FCFS queue fed at rate lam and served at mu < lam, the n-th request waits n/mu - n/lam, so
# TTFT grows by lam/mu - 1 seconds per second of arrivals: 0.1 = 10% more load than capacity.
SATURATION_SLOPE = 0.1
# ... and the late requests wait clearly longer than the early ones (a slope alone can come
# from a few long prompts arriving late).
SATURATION_GROWTH = 2.0


@dataclass(frozen=True)
class RunReplay:
    """One run replayed: its info, the measured and the simulated requests (both indexed by
    the run's ``request_id``, in the run's order), the simulation's summary, the requests not
    compared (``"<request_id>: why"``) and notes on what the replay assumed."""

    info: RunInfo
    scenario: Scenario
    measured: pd.DataFrame      # request_id -> arrival_s, prompt/output_tokens, ttft_s, tpot_s, e2e_s, ok
    simulated: pd.DataFrame     # request_id -> arrival_s, tokens, ttft_s, tpot_s, e2e_s, queue_s, finish_s, ...
    summary: dict
    unsupported: list[str] = field(default_factory=list)
    notes: tuple[str, ...] = ()

    @property
    def compared(self) -> np.ndarray:
        """Requests that completed in both the real run and the simulation."""
        sim_done = self.simulated["finish_s"].notna().to_numpy() & (self.simulated["rejected"] == "").to_numpy()
        return self.measured["ok"].to_numpy(bool) & sim_done


def _where(info: RunInfo) -> str:
    return info.source or "run"


def _catalog_names(info: RunInfo) -> tuple[str, str]:
    """The run's model and GPU as catalog names; one line naming the field when not."""
    src = _where(info)
    if not info.model:
        raise InputError("model not recorded in the run (give --model)", file=src, column="model")
    try:
        model = resolve_model(info.model).name
    except HermesError as e:
        base = load_models().base_of(info.model)   # a quantized or instruct checkpoint of a catalog model
        if base is None:
            raise InputError(f"model '{info.model}' cannot be simulated ({e})", file=src, column="model") from None
        model = base.name
    if not info.gpu:
        raise InputError("GPU not recorded in the run (give --gpu)", file=src, column="gpu")
    try:
        gpu = load_catalog().get(info.gpu).name
    except HermesError:
        raise InputError(f"GPU '{info.gpu}' is not in the hardware catalog", file=src, column="gpu") from None
    return model, gpu


def _dtype(value: Any) -> str | None:
    """An engine's dtype argument as a deployment dtype ('auto' or unknown: the model's own)."""
    if value is None or str(value).lower() == "auto":
        return None
    try:
        return normalize_dtype(str(value))
    except HermesError:
        return None


# A quantized checkpoint says so in its repository name (RedHatAI/...-FP8-dynamic,
# nvidia/...-NVFP4, ...-AWQ); vLLM's --quantization names the method. Either sets the format
# the weights are stored (and the GEMMs priced) in.
_QUANT_NAMES = ((re.compile(r"(?i)(?<![a-z0-9])(fp8|w8a8|f8)(?=$|[^a-z0-9])"), "fp8"),
                (re.compile(r"(?i)(?<![a-z0-9])(nvfp4|mxfp4|fp4|w4a4)(?=$|[^a-z0-9])"), "fp4"),
                (re.compile(r"(?i)(?<![a-z0-9])(awq|gptq|w4a16|int4)(?=$|[^a-z0-9])"), "int4"),
                (re.compile(r"(?i)(?<![a-z0-9])(int8|w8a16)(?=$|[^a-z0-9])"), "int8"))
_QUANT_METHODS = {"fp8": "fp8", "fbgemm_fp8": "fp8", "ptpc_fp8": "fp8", "modelopt": "fp8", "fp_quant": "fp8",
                  "modelopt_fp4": "fp4", "mxfp4": "fp4", "awq": "int4", "awq_marlin": "int4", "gptq": "int4",
                  "gptq_marlin": "int4", "bitsandbytes": "int4", "experts_int8": "int8"}


def weight_dtype(info: RunInfo) -> str | None:
    """The weights' storage format a run's arguments or checkpoint name give, else None (the
    model's own)."""
    method = info.engine_args.get("quantization")
    if isinstance(method, str) and method.lower() in _QUANT_METHODS:
        return _QUANT_METHODS[method.lower()]
    for pattern, dtype in _QUANT_NAMES:
        if pattern.search(info.model):
            return dtype
    return None


def recorded_kv_blocks(info: RunInfo) -> int | None:
    """The KV block count the engine reported at start-up (vLLM's log or bench metadata)."""
    kv = info.engine_facts.get("kv_cache")
    blocks = kv.get("num_gpu_blocks") if isinstance(kv, dict) else None
    return int(blocks) if isinstance(blocks, (int, float)) and not isinstance(blocks, bool) and blocks >= 1 else None


def _engine_args(info: RunInfo, extra: dict | None) -> dict[str, Any]:
    """The run's recorded arguments (minus deployment fields and unset ones) + ``extra``; a
    vLLM run's KV cache is the size its engine reported, as ``num_gpu_blocks_override``."""
    drop = set(DEPLOYMENT_ARGS.get(info.engine, ()))
    args = {k: v for k, v in info.engine_args.items() if v is not None and k not in drop}
    blocks = recorded_kv_blocks(info)
    if info.engine == "vllm" and blocks and "num_gpu_blocks_override" not in args:
        args["num_gpu_blocks_override"] = blocks
    return {**args, **(extra or {})}


def scenario_for_run(run: ServingRun, *, overhead: OverheadConfig | None = None,
                     surrogate: str | None = "builtin", engine_args: dict | None = None) -> Scenario:
    """A scenario serving ``run``'s deployment: the engine block (name, version, the run's
    recorded arguments + ``engine_args``), model and GPU as catalog names, TP/PP, DP as
    replicas behind a join-shortest-queue router, ``overhead`` when given. The workload is the
    run's client (recorded arrivals, an open loop at its rate, or its closed loop)."""
    return scenario_for_info(run.info, len(run.requests), overhead=overhead, surrogate=surrogate,
                             engine_args=engine_args)


def scenario_for_info(info: RunInfo, num_requests: int, *, overhead: OverheadConfig | None = None,
                      surrogate: str | None = "builtin", engine_args: dict | None = None) -> Scenario:
    """``scenario_for_run`` from a run's info and request count alone (a run known only by its
    aggregate report, whose requests are synthesized)."""
    src = _where(info)
    if info.engine not in ENGINES:
        raise InputError(f"engine '{info.engine}' cannot be replayed (known: {', '.join(ENGINES)}; "
                         "give --engine)", file=src, column="engine")
    if not info.engine_version:
        raise InputError(f"{info.engine} version not recorded in the run (give --engine-version)",
                         file=src, column="engine_version")
    model, gpu = _catalog_names(info)
    dep: dict[str, Any] = {
        "name": "llm", "model": model, "hardware": gpu, "tp": info.tp, "pp": info.pp, "replicas": info.dp,
        "engine": {"name": info.engine, "version": info.engine_version, "args": _engine_args(info, engine_args)},
        "router": "jsq"}
    if info.ep > info.tp and info.ep % info.tp == 0 and info.dp % (info.ep // info.tp) == 0:
        dep["ep"] = info.ep
    dtype = weight_dtype(info) or _dtype(info.engine_args.get("dtype"))
    if dtype:
        dep["dtype"] = dtype
    kv = _dtype(info.engine_args.get("kv_cache_dtype"))
    if kv:
        dep["kv_dtype"] = kv
    if overhead is not None:
        dep["overhead"] = overhead.model_dump()
    n = max(int(num_requests), 1)
    c = info.client
    if c.kind == "closed_loop":
        workload = {"arrival": "closed_loop", "concurrency": c.concurrency, "num_requests": n}
    elif c.kind == "open_loop" and c.rate is not None and isfinite(c.rate):
        workload = {"arrival": "poisson" if c.burstiness == 1 else "gamma", "rate_rps": c.rate,
                    "cv": 1 / np.sqrt(c.burstiness), "num_requests": n}
    else:
        workload = {"arrival": "poisson", "num_requests": n}
    doc = {"name": f"replay-{model}-{gpu}", "surrogate": surrogate, "deployments": [dep], "workload": workload}
    return parse_scenario(doc, src)


def replay_run(run: ServingRun, *, overhead: OverheadConfig | None = None, surrogate: str | None = "builtin",
               seed: int = 0, engine_args: dict | None = None) -> RunReplay:
    """Simulate ``run``'s own requests on ``scenario_for_run(run, ...)``."""
    sc = scenario_for_run(run, overhead=overhead, surrogate=surrogate, engine_args=engine_args)
    return replay_scenario(run, sc, seed=seed)


def _arrivals(run: ServingRun, keep: np.ndarray, seed: int) -> tuple[np.ndarray | None, int | None, list[str]]:
    """(arrival times, closed-loop concurrency, notes) of the replayed requests."""
    c, notes = run.info.client, []
    rec = run.requests["arrival_s"].to_numpy(float)[keep]
    n = int(keep.sum())
    if c.kind == "closed_loop":
        notes.append(f"closed loop of {c.concurrency} clients, as recorded")
        return None, c.concurrency, notes
    if c.kind == "trace" or np.isfinite(rec).all():
        if c.concurrency is not None:
            notes.append(f"the client's cap of {c.concurrency} requests in flight is not modelled")
        return rec - (rec.min() if n else 0.0), None, notes
    if c.rate is None or not isfinite(c.rate):
        if c.concurrency is not None:
            notes.append(f"all requests sent at once, at most {c.concurrency} in flight: replayed as a "
                         f"closed loop of {c.concurrency} clients")
            return None, c.concurrency, notes
        notes.append("all requests sent at once (rate inf), as recorded")
        return np.zeros(n), None, notes
    rng = np.random.default_rng(seed)
    gaps = rng.gamma(c.burstiness, 1.0 / (c.rate * c.burstiness), n)
    notes.append(f"arrivals not recorded: drawn as gamma inter-arrivals (shape {c.burstiness:g}) at the "
                 f"recorded {c.rate:g} req/s with seed {seed}")
    if c.concurrency is not None:
        notes.append(f"the client's cap of {c.concurrency} requests in flight is not modelled")
    return np.concatenate([[0.0], np.cumsum(gaps[:-1])]) if n else gaps, None, notes


def _deployment_notes(run: ServingRun, scenario: Scenario, kv_blocks: dict[str, int]) -> list[str]:
    info, out = run.info, []
    dep = scenario.deployments[0]
    if dep.ep > dep.tp:
        out.append(f"expert parallel {dep.ep}: each GPU holds 1/{dep.ep} of the experts; the "
                   f"{dep.ep // dep.tp} data-parallel engines meet them through an all-gather and a "
                   "reduce-scatter per MoE layer, loads taken as balanced and the engines unsynchronized")
    elif info.ep > info.tp:
        out.append(f"expert parallel {info.ep} does not divide into TP {info.tp} x DP {info.dp}: replayed as "
                   f"{dep.replicas} replica(s) each holding every expert")
    blocks = recorded_kv_blocks(info)
    if blocks:
        sim = sorted(set(kv_blocks.values()))
        out.append(f"KV blocks per replica: the engine recorded {blocks}, the simulation holds "
                   f"{', '.join(str(b) for b in sim)}")
    return out


def replay_scenario(run: ServingRun, scenario: Scenario, *, seed: int = 0) -> RunReplay:
    """Simulate ``run``'s requests (their lengths and the run's client) on ``scenario``'s
    deployments; its own workload section is not used."""
    df = run.requests
    prompt = df["prompt_tokens"].to_numpy(dtype=float, na_value=np.nan)
    output = df["output_tokens"].to_numpy(dtype=float, na_value=np.nan)
    keep = np.isfinite(prompt) & np.isfinite(output) & (prompt >= 1)
    arrival, conc, notes = _arrivals(run, keep, seed)
    n = int(keep.sum())
    prefix = df["prefix"].astype(str).to_numpy()[keep] if "prefix" in df else None
    reqs = Requests(np.full(n, np.nan) if arrival is None else arrival, prompt[keep].astype(np.int64),
                    np.maximum(output[keep], 1).astype(np.int64),
                    segments=tuple(prefix) if prefix is not None and any(prefix) else None)
    sc, res = simulate_requests(scenario, reqs, seed=seed, concurrency=conc)
    ids = df["request_id"].astype(str).to_numpy()
    measured = pd.DataFrame({
        "arrival_s": df["arrival_s"].to_numpy(float), "prompt_tokens": prompt, "output_tokens": output,
        "ttft_s": df["ttft_s"].to_numpy(float), "tpot_s": _real_tpot(df), "e2e_s": df["e2e_s"].to_numpy(float),
        "ok": df["ok"].to_numpy(bool), "error": df["error"].astype(str).to_numpy()},
        index=pd.Index(ids, name="request_id"))
    cols = ("arrival_s", "prompt_tokens", "output_tokens", "ttft_s", "tpot_s", "e2e_s", "queue_s", "finish_s",
            "preemptions", "replica")
    sim = pd.DataFrame(np.nan, index=measured.index, columns=list(cols))
    sim["rejected"] = "not replayed"
    part = res.requests.reset_index(drop=True)
    rows = np.flatnonzero(keep)
    for c in cols:
        sim.iloc[rows, sim.columns.get_loc(c)] = part[c].to_numpy(float)
    sim.iloc[rows, sim.columns.get_loc("rejected")] = part["rejected"].astype(str).to_numpy()
    unsupported = []
    for i, rid in enumerate(ids):
        why = []
        if not keep[i]:
            why.append("not replayed: prompt or output token count not recorded")
        elif sim["rejected"].iat[i]:
            why.append(f"not simulated: {sim['rejected'].iat[i]}")
        elif not np.isfinite(sim["finish_s"].iat[i]):
            why.append("not finished in the simulation")
        if not measured["ok"].iat[i]:
            why.append(f"failed in the real run: {measured['error'].iat[i] or 'no reason recorded'}")
        if why:
            unsupported.append(f"{rid}: {'; '.join(why)}")
    summary = dict(res.summary)
    summary["kv_blocks"] = dict(res.kv_blocks)
    pc = summary.get("engine_prefix_cache")
    if pc:
        notes.append(f"engine prefix cache: {pc['token_hit_rate']:.1%} of prompt tokens found cached "
                     f"({pc['hit_tokens']:,} of {pc['prompt_tokens_looked_up']:,}), from the run's prompts")
    elif reqs.segments is None:
        notes.append("engine prefix cache: the run records no prompt content, so no request reuses another's")
    pr = summary.get("preempted_recompute")
    if pr:
        notes.append(f"KV preemptions: {pr['requests']} resumes recomputed {pr['tokens'] - pr['cached_tokens']:,} "
                     f"tokens; the engine's prefix cache still held {pr['cached_share']:.0%} of their "
                     f"{pr['tokens']:,} (the blocks not allocated to others meanwhile)")
    return RunReplay(info=run.info, scenario=sc, measured=measured, simulated=sim, summary=summary,
                     unsupported=unsupported, notes=tuple(notes + _deployment_notes(run, sc, res.kv_blocks)))


def simulate_requests(scenario: Scenario, reqs: Requests, *, seed: int = 0,
                      concurrency: int | None = None) -> tuple[Scenario, SimResult]:
    """Simulate exactly ``reqs`` on ``scenario``'s deployments: at their arrival times, or as a
    closed loop of ``concurrency`` clients (arrivals NaN). Returns the scenario as run."""
    n = max(len(reqs), 1)
    w = scenario.workload
    wl = (w.model_copy(update={"arrival": "closed_loop", "concurrency": concurrency, "num_requests": n})
          if concurrency is not None else
          w.model_copy(update={"arrival": "trace", "trace": None, "num_requests": n}))
    sc = scenario.model_copy(update={"workload": wl, "seed": seed})
    return sc, simulate(sc, requests=reqs)


def _real_tpot(df: pd.DataFrame) -> np.ndarray:
    """TPOT as recorded, else the mean of the request's inter-token gaps."""
    tpot = df["tpot_s"].to_numpy(float).copy()
    for i, gaps in enumerate(df["itl_s"]):
        if not np.isfinite(tpot[i]) and gaps:
            tpot[i] = float(np.mean(gaps))
    return tpot


# ---- scoring ---------------------------------------------------------------------------

def _mape(sim: np.ndarray, real: np.ndarray) -> float | None:
    ok = np.isfinite(sim) & np.isfinite(real) & (real > 0)
    return float(np.mean(np.abs(sim[ok] - real[ok]) / real[ok]) * 100) if ok.any() else None


def _rel(sim: float, real: float) -> float | None:
    return float((sim - real) / real * 100) if isfinite(sim) and isfinite(real) and real > 0 else None


def _throughput(arrival: np.ndarray, e2e: np.ndarray, tokens: np.ndarray) -> float:
    """Output tokens per second from the first arrival to the last finish."""
    span = float(np.nanmax(arrival + e2e) - np.nanmin(arrival)) if len(arrival) else 0.0
    return float(tokens.sum() / span) if span > 0 else float("nan")


def _queue_trend(arrival: np.ndarray, ttft: np.ndarray) -> tuple[float | None, float | None]:
    """(TTFT growth in s per s of arrivals, late / early median TTFT) over requests by arrival."""
    ok = np.isfinite(arrival) & np.isfinite(ttft)
    a, t = arrival[ok], ttft[ok]
    if len(a) < 8:
        return None, None
    order = np.argsort(a, kind="stable")
    a, t = a[order], t[order]
    q = len(t) // 4
    early = float(np.median(t[:q]))
    growth = float(np.median(t[-q:]) / early) if early > 0 else None
    slope = float(np.polyfit(a, t, 1)[0]) if np.ptp(a) > 0 else None
    return slope, growth


def _occupancy(arrival: np.ndarray, e2e: np.ndarray, slots: int) -> float:
    """Time-average requests between arrival and finish, per batch slot of the deployment."""
    ok = np.isfinite(arrival) & np.isfinite(e2e)
    a, f = arrival[ok], arrival[ok] + e2e[ok]
    if not len(a):
        return float("nan")
    span = float(f.max() - a.min())
    return float((f - a).sum() / span / slots) if span > 0 else float("nan")


def _side(arrival: np.ndarray, ttft: np.ndarray, e2e: np.ndarray, slots: int) -> dict:
    slope, growth = _queue_trend(arrival, ttft)
    saturated = bool((slope is None or slope > SATURATION_SLOPE) and growth is not None
                     and growth > SATURATION_GROWTH)
    return {"saturated": saturated, "ttft_slope": slope, "ttft_growth": growth,
            "occupancy": _occupancy(arrival, e2e, slots)}


def _saturation(rep: RunReplay, both: np.ndarray) -> dict:
    """Whether each side's queue kept growing; a note when only one side's did."""
    d = rep.scenario.deployments[0]
    slots = sum(x.replicas * x.scheduler.max_batch_size for x in rep.scenario.deployments)
    m, s = rep.measured[both], rep.simulated[both]
    real = _side(m["arrival_s"].to_numpy(float), m["ttft_s"].to_numpy(float), m["e2e_s"].to_numpy(float), slots)
    sim = _side(s["arrival_s"].to_numpy(float), s["ttft_s"].to_numpy(float), s["e2e_s"].to_numpy(float), slots)
    busy = list((rep.summary.get("utilization") or {}).values())
    sim["gpu_busy"] = float(np.mean(busy)) if busy else None

    def part(name: str, x: dict) -> str:
        slope = "n/a" if x["ttft_slope"] is None else f"{x['ttft_slope']:+.2f}"
        extra = f", GPU busy {x['gpu_busy']:.0%}" if x.get("gpu_busy") is not None else ""
        return (f"{name} {'saturated' if x['saturated'] else 'not saturated'} (TTFT {slope} s per s of "
                f"arrivals, {x['occupancy']:.2f} requests in system per batch slot{extra})")

    line = (f"{part('real', real)}; {part('simulated', sim)}; {slots} batch slots "
            f"({d.scheduler.max_batch_size} x {sum(x.replicas for x in rep.scenario.deployments)} replicas)")
    note = None
    if sim["saturated"] != real["saturated"]:
        note = ("the simulated server saturates but the real one did not" if sim["saturated"]
                else "the real server saturated but the simulated one does not") + f": {line}"
    return {"real": real, "simulated": sim, "line": line, "note": note}


def run_errors(rep: RunReplay) -> dict:
    """Per-request MAPE (%) of TTFT, TPOT and E2E over the requests that completed in both;
    relative error (%) of their p50/p90/p99 and of output-token throughput; mean simulated /
    mean real E2E; and the saturation verdict of each side."""
    both = rep.compared
    m, s = rep.measured[both], rep.simulated[both]
    out: dict[str, Any] = {"requests": len(rep.measured), "compared": int(both.sum()),
                           "unsupported": len(rep.unsupported)}
    for k in METRICS:
        sv, rv = s[f"{k}_s"].to_numpy(float), m[f"{k}_s"].to_numpy(float)
        out[f"{k}_mape"] = _mape(sv, rv)
        fin = np.isfinite(sv) & np.isfinite(rv)
        for q in QUANTILES:
            sq = float(np.percentile(sv[fin], q)) if fin.any() else float("nan")
            rq = float(np.percentile(rv[fin], q)) if fin.any() else float("nan")
            out[f"{k}_p{q}"] = {"real": rq, "sim": sq, "err_pct": _rel(sq, rq)}
        out[f"{k}_mean"] = {"real": float(np.mean(rv[fin])) if fin.any() else float("nan"),
                            "sim": float(np.mean(sv[fin])) if fin.any() else float("nan")}
        out[f"{k}_mean"]["err_pct"] = _rel(out[f"{k}_mean"]["sim"], out[f"{k}_mean"]["real"])
    tok = m["output_tokens"].to_numpy(float)
    tr = _throughput(m["arrival_s"].to_numpy(float), m["e2e_s"].to_numpy(float), tok)
    ts = _throughput(s["arrival_s"].to_numpy(float), s["e2e_s"].to_numpy(float), tok)
    out["output_tokens_per_s"] = {"real": tr, "sim": ts, "err_pct": _rel(ts, tr)}
    re_, se = m["e2e_s"].to_numpy(float), s["e2e_s"].to_numpy(float)
    fin = np.isfinite(re_) & np.isfinite(se)
    out["e2e_ratio"] = float(se[fin].mean() / re_[fin].mean()) if fin.any() and re_[fin].mean() > 0 else None
    out["saturation"] = _saturation(rep, both)
    return out


# ---- report ----------------------------------------------------------------------------

def replay_report(rep: RunReplay) -> dict:
    """The replay as one JSON-ready object: run, deployment, errors, per-request rows."""
    err = run_errors(rep)
    d = rep.scenario.deployments[0]
    rows = []
    for rid, mrow in rep.measured.iterrows():
        srow = rep.simulated.loc[rid]
        r: dict[str, Any] = {"id": rid}
        for k in METRICS:
            p, v = float(srow[f"{k}_s"]), float(mrow[f"{k}_s"])
            r[f"{k}_pred"] = p if isfinite(p) else None
            r[f"{k}_meas"] = v if isfinite(v) else None
        rows.append(r)
    return {"run": {"source": rep.info.source, "format": rep.info.format, "engine": rep.info.engine,
                    "version": rep.info.engine_version, "model": rep.info.model, "gpu": rep.info.gpu,
                    "tp": rep.info.tp, "pp": rep.info.pp, "dp": rep.info.dp, "ep": rep.info.ep,
                    "client": rep.info.client.model_dump(), "requests": len(rep.measured)},
            "deployment": {"model": d.model, "hardware": d.hardware, "tp": d.tp, "pp": d.pp,
                           "replicas": d.replicas, "scheduler": d.scheduler.model_dump(),
                           "overhead": d.overhead.model_dump(),
                           "engine": (rep.summary.get("deployments") or {}).get(d.name, {}).get("engine"),
                           "kv_blocks": rep.summary.get("kv_blocks")},
            "ttft_mape": err["ttft_mape"], "tpot_mape": err["tpot_mape"], "e2e_mape": err["e2e_mape"],
            "errors": err, "notes": list(rep.notes),
            "unsupported": [{"id": u.split(": ", 1)[0], "reason": u.split(": ", 1)[1]} for u in rep.unsupported],
            "rows": rows}


def plot_replay(rep: RunReplay, path: str | Path) -> Path:
    """PNG: real vs simulated CDFs of TTFT, TPOT and E2E (top) and per-request simulated vs
    real scatter of each (bottom), over the requests compared."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots import save_png
    both = rep.compared
    m, s = rep.measured[both], rep.simulated[both]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for j, k in enumerate(METRICS):
        rv, sv = m[f"{k}_s"].to_numpy(float), s[f"{k}_s"].to_numpy(float)
        ok = np.isfinite(rv) & np.isfinite(sv)
        ax = axes[0, j]
        for v, label in ((rv[ok], "real"), (sv[ok], "simulated")):
            x = np.sort(v)
            ax.step(x, np.arange(1, len(x) + 1) / max(len(x), 1), where="post", label=label)
        ax.set_xlabel(f"{k.upper()} (s)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"{k.upper()} CDF")
        ax.legend()
        ax = axes[1, j]
        ax.scatter(rv[ok], sv[ok], s=6, alpha=0.6)
        hi = float(max(rv[ok].max(), sv[ok].max())) if ok.any() else 1.0
        ax.plot([0, hi], [0, hi], color="grey", lw=0.8)
        ax.set_xlabel(f"real {k.upper()} (s)")
        ax.set_ylabel(f"simulated {k.upper()} (s)")
    i = rep.info
    fig.suptitle(f"{i.engine} {i.engine_version} {i.model} on {i.gpu} (TP{i.tp} DP{i.dp}): "
                 f"{int(both.sum())} of {len(rep.measured)} requests compared")
    return save_png(fig, path)


def load_run_overhead(path: str | Path, info: RunInfo) -> OverheadConfig:
    """The overhead to replay ``info``'s run with, from a JSON file: a scenario's
    ``overhead:`` block, ``{"overhead": block}`` (an engine profile of ``hermes-sim calibrate
    --runs``, whose ``engine`` must be the run's), or ``{"overhead": {group: block}}`` per
    stack/GPU group (the group whose name holds the run's engine and GPU, else the one named
    as the engine, else 'default'). Errors name the file and field."""
    from pydantic import ValidationError

    from profiling.hardware import canonical_name
    from profiling.jsonfile import read_json

    doc = read_json(path, "overhead file")
    if not isinstance(doc, dict):
        raise InputError("must be a JSON object (an overhead block, or one per stack/GPU group)", file=path)
    if isinstance(doc.get("engine"), str) and doc["engine"] != info.engine:
        # an engine profile (hermes-sim calibrate --runs) holds one engine's overhead
        raise InputError(f"is a profile of engine '{doc['engine']}', the run is {info.engine}", file=path,
                         column="engine")
    body, where = (doc["overhead"], "overhead.") if isinstance(doc.get("overhead"), dict) else (doc, "")
    fields = set(OverheadConfig.model_fields)
    grouped = bool(body) and all(isinstance(v, dict) for v in body.values()) and not set(body) <= fields
    if not grouped:
        block, at = body, where
    else:
        def canon(x: str) -> str:
            return canonical_name(str(x))
        eng, gpu = canon(info.engine), canon(info.gpu)
        both = [g for g in body if eng in canon(g) and gpu and gpu in canon(g)]
        by_engine = [g for g in body if canon(g) == eng]
        pick = both or by_engine or [g for g in body if canon(g) in ("default", "")]
        if not pick:
            raise InputError(f"no overhead group for {info.engine} on {info.gpu} (groups: "
                             f"{', '.join(map(str, body))})", file=path, column=where.rstrip(".") or None)
        block, at = body[pick[0]], f"{where}{pick[0]}."
    try:
        return OverheadConfig.model_validate(block)
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(err["msg"], file=path, column=at + ".".join(str(x) for x in err["loc"])) from None
