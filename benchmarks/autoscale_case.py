"""Case study: a static fleet sized for the peak vs an autoscaled fleet on the same recorded load.

The load is the Azure LLM inference conversation trace as Vidur ships it
(../shared/traces/workloads/splitwise_conv.csv): 19,366 requests at their recorded arrival
times over 58 minutes, whose rate climbs from ~4.8 to ~7.5 req/s and falls to ~2.6 req/s
(5-minute bins). It holds one hour of the day, not a whole day, so the hour is replayed as
recorded (``--time-scale`` compresses it; the scaler's lead time, interval and cooldown are
compressed with it). The fleet: Llama-3.1-8B bf16 on L4 GPUs, chunked prefill, JSQ routing.

1. Static: the fewest replicas that meet the SLOs over the whole hour (sized for the peak).
2. Autoscaled: at most that many replicas, at least ``--min``, on the in-flight signal with a
   few scale-up thresholds; the scale-up lead time is an assumption (``--lead``, default 120 s:
   pulling and loading 16 GB of weights and warming the engine), not a measurement.

Then the same comparison on a whole day (``--day-s``, default 7,200 s: 24 hours compressed
12x, the scaler's times with them): Poisson arrivals at the trace's mean rate times an
ILLUSTRATIVE hourly shape (``DAY``, not a measurement) with the trace's request lengths.

Reported per fleet: output tokens per dollar, SLO attainment (share of requests meeting every
SLO), whether the p90 SLOs hold, replica-hours and the cost. Writes a PNG of the replicas over
time under the offered rate per part. Last line: one JSON object.

    python benchmarks/autoscale_case.py [--time-scale 1.0] [--lead 120] [--day-s 7200] [--png PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from time import perf_counter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TRACES = Path(os.environ.get("HERMES_TRACES", REPO.parent / "shared" / "traces"))
SLO = {"ttft_p90_s": 2.0, "tpot_p90_s": 0.15}
DEP = {"name": "llm", "model": "Llama-3.1-8B", "hardware": "L4", "dtype": "bf16", "router": "jsq",
       "scheduler": {"policy": "chunked", "max_batch_size": 256, "max_tokens_per_step": 2048, "chunk_size": 512}}


# An ILLUSTRATIVE diurnal shape (not measured; the shipped trace holds one hour): hourly
# multipliers of the mean rate, quiet at night, a mid-afternoon peak (as examples/autoscaling/).
DAY = [0.3, 0.2, 0.2, 0.2, 0.3, 0.4, 0.6, 0.9, 1.2, 1.4, 1.5, 1.6,
       1.6, 1.7, 1.8, 1.7, 1.6, 1.4, 1.2, 1.0, 0.9, 0.7, 0.5, 0.4]


def scenario(trace: Path, replicas: int, scaler: dict | None, time_scale: float, surrogate: str,
             day_s: float | None = None) -> dict:
    """The recorded trace replayed, or (``day_s``) a day of the DAY shape compressed into
    ``day_s`` seconds with the trace's lengths at its mean rate."""
    dep = {**DEP, "replicas": replicas}
    if scaler:
        dep["autoscaling"] = scaler
    if day_s is None:
        wl = {"arrival": "trace", "trace": str(trace), "num_requests": _rows(trace), "time_scale": time_scale}
    else:
        rate = (_rows(trace) - 1) / _span(trace)
        wl = {"arrival": "poisson", "trace": str(trace), "rate_rps": rate, "num_requests": 10_000_000,
              "duration_s": day_s, "daily_profile": {"multipliers": DAY, "day_s": day_s}}
    kind = "day" if day_s else trace.stem
    return {"name": f"{kind}-" + ("autoscaled" if scaler else f"static-{replicas}"), "seed": 0,
            "surrogate": surrogate, "deployments": [dep], "slo": SLO,
            "workload": {**wl, "max_total_tokens": 8192}}


def _span(trace: Path) -> float:
    import pandas as pd
    a = pd.read_csv(trace, usecols=["arrived_at"]).arrived_at
    return float(a.iloc[-1] - a.iloc[0])


def _rows(trace: Path) -> int:
    """Requests the trace records: the replay stops there (no Poisson continuation)."""
    with trace.open() as f:
        return sum(1 for _ in f) - 1


def figures(res) -> dict:
    from simulator.engine.metrics import met
    s, df = res.summary, res.requests
    scaled = s.get("autoscaling", {}).get("llm")
    return {"replicas": scaled["peak_replicas"] if scaled else s["devices"],
            "tokens_per_dollar": s["output_tokens_per_dollar"], "cost_usd": s["cost_usd"],
            "replica_hours": scaled["replica_hours"] if scaled else s["devices"] * s["makespan_s"] / 3600,
            "slo_attainment": float(met(df, SLO).mean()), "slo_met": s["slo_met"],
            "ttft_p90_s": s["ttft_s"]["p90"], "tpot_p90_s": s["tpot_s"]["p90"], "completed": s["completed"],
            "scale_ups": scaled["scale_ups"] if scaled else 0}


def _round(d: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


def study(trace: Path, a, sim, day_s: float | None = None) -> dict:
    """Static fleet sized for the peak, then autoscaled fleets with the same peak budget."""
    ts = a.time_scale if day_s is None else day_s / 86400     # the scaler's times shrink with the load's
    runs: dict[int, object] = {}

    def static_run(k: int):
        if k not in runs:
            runs[k] = sim(scenario(trace, k, None, a.time_scale, a.surrogate, day_s))
        return runs[k]
    lo, hi = 0, 16                # the fewest replicas meeting the SLOs, by bisection (more never hurts)
    if not static_run(hi).summary["slo_met"]:
        sys.exit(f"{trace.name}: no static fleet of up to {hi} replicas meets the SLOs")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if static_run(mid).summary["slo_met"] else (mid, hi)
    n, static = hi, runs[hi]
    st = figures(static)
    # the in-flight requests per replica the peak-sized fleet carries on average (Little's law)
    per = static.summary["mean_in_system"] / n
    label = f"compressed day ({day_s:g} s) with {trace.name} lengths" if day_s else trace.name
    print(f"{label}: static fleet sized for the peak: {n} x L4; {st['tokens_per_dollar']:,.0f} tok/$, "
          f"{st['replica_hours']:.2f} replica-hours, ${st['cost_usd']:.2f}, SLO attainment "
          f"{st['slo_attainment']:.1%}; {per:.1f} requests in flight per replica on average")
    rows = []
    for k in [float(x) for x in a.factors.split(",")]:
        up = round(per * k, 1)
        scaler = {"min_replicas": min(a.min, n), "max_replicas": n, "signal": "in_flight", "scale_up_at": up,
                  "scale_down_at": round(up / 2, 1), "interval_s": 15 * ts, "lead_time_s": a.lead * ts,
                  "cooldown_s": 300 * ts}
        r = sim(scenario(trace, n, scaler, a.time_scale, a.surrogate, day_s))
        f = figures(r)
        rows.append((up, r, f))
        print(f"  autoscaled, up at {up:g} in flight ({k:g} x), down at {up / 2:.3g}: "
              f"{f['tokens_per_dollar']:,.0f} tok/$, {f['replica_hours']:.2f} replica-hours, ${f['cost_usd']:.2f}, "
              f"SLO attainment {f['slo_attainment']:.1%}, p90 SLOs {'met' if f['slo_met'] else 'missed'} "
              f"(TTFT p90 {f['ttft_p90_s']:.2f} s, TPOT p90 {f['tpot_p90_s'] * 1e3:.0f} ms), {f['scale_ups']} scale-ups")
    ok = [x for x in rows if x[2]["slo_met"]]
    up, res, bf = max(ok or rows, key=lambda x: x[2]["tokens_per_dollar"])
    cheapest = max(rows, key=lambda x: x[2]["tokens_per_dollar"])[2]
    saving = 1 - bf["cost_usd"] / st["cost_usd"]
    print(f"  best autoscaled fleet {'meeting the SLOs' if ok else '(none met the SLOs)'} (up at {up:g}): "
          f"{saving:.1%} cheaper ({bf['replica_hours']:.2f} vs {st['replica_hours']:.2f} replica-hours), "
          f"{bf['tokens_per_dollar'] / st['tokens_per_dollar'] - 1:+.1%} tokens per dollar, SLO attainment "
          f"{bf['slo_attainment']:.1%} vs {st['slo_attainment']:.1%}; the cheapest setting saves "
          f"{1 - cheapest['cost_usd'] / st['cost_usd']:.1%} at {cheapest['slo_attainment']:.1%} attainment")
    return {"static": _round(st), "autoscaled": {"scale_up_at": up, **_round(bf)}, "result": res,
            "slo_met_by_autoscaled": bool(ok), "cost_saving": round(saving, 4),
            "cheapest_saving": round(1 - cheapest["cost_usd"] / st["cost_usd"], 4),
            "cheapest_attainment": round(cheapest["slo_attainment"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default="splitwise_conv",
                    help="trace names under ../shared/traces/workloads (the first is the headline)")
    ap.add_argument("--time-scale", type=float, default=1.0, help="multiply the recorded gaps (< 1 compresses)")
    ap.add_argument("--lead", type=float, default=120.0, help="scale-up lead time (s, before compression)")
    ap.add_argument("--min", type=int, default=2, help="autoscaler min_replicas")
    ap.add_argument("--factors", default="1.0,1.25,1.5",
                    help="scale-up thresholds as multiples of the static fleet's mean in-flight requests per replica")
    ap.add_argument("--surrogate", default=os.environ.get("HERMES_CASE_SURROGATE", "builtin"))
    ap.add_argument("--day-s", type=float, default=7200.0,
                    help="also a day of the illustrative DAY shape compressed into this many seconds (0: skip)")
    ap.add_argument("--png", default=str(REPO / "benchmarks" / "results" / "autoscale_case.png"))
    a = ap.parse_args()
    traces = [TRACES / "workloads" / f"{t}.csv" for t in a.traces.split(",")]
    missing = [t for t in traces if not t.is_file()]
    if missing:
        sys.exit(f"trace not found: {missing[0]}")
    from simulator import parse_scenario, simulate
    from simulator.plots import write_scaling_plot
    t0 = perf_counter()

    def sim(doc):
        t = perf_counter()
        r = simulate(parse_scenario(doc, doc["name"]))
        print(f"    {doc['name']}: {r.summary['completed']} requests in {perf_counter() - t:.1f} s", file=sys.stderr)
        return r

    out = {}
    for tr in traces:
        out[tr.stem] = study(tr, a, sim)
    if a.day_s > 0:
        out["compressed_day"] = {"day_s": a.day_s, **study(traces[0], a, sim, a.day_s)}
    pngs = []
    for key, v in out.items():
        png = Path(a.png) if key == traces[0].stem else Path(a.png).with_name(f"{Path(a.png).stem}_{key}.png")
        pngs.append(str(write_scaling_plot(v.pop("result"), png)))
    print(f"plots: {', '.join(pngs)}")
    print(json.dumps({"time_scale": a.time_scale, "lead_time_s": a.lead * a.time_scale, "slo": SLO,
                      "hardware": DEP["hardware"], "model": DEP["model"], **out,
                      "wall_s": round(perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
