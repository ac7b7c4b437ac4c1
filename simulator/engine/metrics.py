"""Per-request table and the summary: latencies, throughput, goodput, SLOs, cost, energy.

Per-request figures come from a handful of timestamps (arrival, first scheduled, first
token, finish); inter-token latencies come from the decode step end times, weighted by
the number of sequences each step advanced, so no per-token record is ever kept.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

STATS = ("mean", "p50", "p90", "p95", "p99")
IDLE_POWER_FRACTION = 0.3   # idle draw as a share of TDP (simple idle/active power model)


def stats(x: np.ndarray, w: np.ndarray | None = None) -> dict[str, float]:
    """Mean and percentiles (optionally weighted by counts); NaN when empty."""
    x = np.asarray(x, dtype=float)
    keep = ~np.isnan(x)
    if w is not None:
        w = np.asarray(w, dtype=float)
        keep &= w > 0
        w = w[keep]
    x = x[keep]
    if x.size == 0:
        return {k: float("nan") for k in STATS}
    if w is None:
        q = np.percentile(x, [50, 90, 95, 99])
        return {"mean": float(x.mean()), **{k: float(v) for k, v in zip(STATS[1:], q)}}
    # Any sort order gives the stable sort's figures: tied values are one value, and the
    # weights (sequence counts) are whole numbers whose running sums are exact.
    order = np.argsort(x)
    xs, cw = x[order], np.cumsum(w[order])
    q = [float(xs[min(np.searchsorted(cw, p * cw[-1], side="left"), xs.size - 1)])
         for p in (0.5, 0.9, 0.95, 0.99)]
    return {"mean": float(np.dot(x, w) / w.sum()), **dict(zip(STATS[1:], q))}


def requests_frame(arrays: dict[str, np.ndarray], rejected: dict[int, str]) -> pd.DataFrame:
    df = pd.DataFrame(arrays)
    df.index.name = "request"
    out = df["output_tokens"].to_numpy()
    df["ttft_s"] = df.first_token_s - df.arrival_s
    df["e2e_s"] = df.finish_s - df.arrival_s
    df["queue_s"] = df.start_s - df.arrival_s
    with np.errstate(invalid="ignore", divide="ignore"):
        df["tpot_s"] = np.where(out > 1, (df.finish_s - df.first_token_s) / (out - 1), np.nan)
    df["rejected"] = ""
    if rejected:
        df.loc[list(rejected), "rejected"] = list(rejected.values())
    return df


def time_average_in_system(arrival: np.ndarray, finish: np.ndarray, t0: float, t1: float) -> float:
    """L: time-average number of requests between arrival and finish over [t0, t1]."""
    a, f = np.asarray(arrival, float), np.asarray(finish, float)
    times = np.concatenate([a, f])
    delta = np.concatenate([np.ones_like(a), -np.ones_like(f)])
    order = np.lexsort((delta, times))       # departures before arrivals at equal times
    times, delta = times[order], delta[order]
    level = np.cumsum(delta)
    widths = np.diff(np.append(times, t1))
    return float(np.dot(level, widths) / (t1 - t0)) if t1 > t0 else 0.0


def met(df: pd.DataFrame, slo: dict[str, float | None]) -> np.ndarray:
    """Per request: does it meet every SLO threshold (percentile targets read as per-request
    limits, the usual goodput definition)?"""
    ok = df.finish_s.notna().to_numpy()
    for key, target in slo.items():
        if target is None:
            continue
        col = key.split("_")[0] + "_s"
        if col not in df:  # inter-token latency has no per-request column
            continue
        v = df[col].to_numpy()
        ok &= np.isnan(v) | (v <= target) if col == "tpot_s" else (v <= target)
    return ok


def summarize(df: pd.DataFrame, itl: tuple[np.ndarray, np.ndarray], slo: dict[str, float | None],
              fleet: list[dict], makespan: float, wall_s: float, scaled_devices: int = 0) -> dict:
    """The stable summary dict (keys documented in ``SimResult``). A fleet entry with
    ``billed_s`` (an autoscaled replica) pays and draws power for those seconds only, and
    counts in ``devices`` through ``scaled_devices`` (the autoscaled fleets' peak)."""
    done = df[df.finish_s.notna()]
    out_tokens = float(done.output_tokens.sum())
    in_tokens = float(done.prompt_tokens.sum())
    span = max(makespan, 1e-12)
    if any("billed_s" in f for f in fleet):
        devices, cost, energy = _billed(fleet, makespan, scaled_devices)
    else:
        devices = sum(f["devices"] for f in fleet)
        cost = sum(f["devices"] * f["price_per_hour"] for f in fleet) * makespan / 3600.0
        energy = sum(f["devices"] * f["tdp_w"] * (IDLE_POWER_FRACTION + (1 - IDLE_POWER_FRACTION) * f["busy"])
                     * makespan for f in fleet)
    s = {
        "requests": int(len(df)), "completed": int(len(done)),
        "ttft_s": stats(done.ttft_s), "tpot_s": stats(done.tpot_s),
        "itl_s": stats(*itl), "e2e_s": stats(done.e2e_s), "queue_s": stats(done.queue_s),
        "makespan_s": makespan,
        "throughput_req_s": len(done) / span,
        "output_tokens_per_s": out_tokens / span,
        "total_tokens_per_s": (out_tokens + in_tokens) / span,
        "devices": devices, "cost_usd": cost,
        "output_tokens_per_dollar": out_tokens / cost if cost > 0 else float("nan"),
        "energy_j": energy,
        "preemptions": int(df.preemptions.sum()),
        "rejected": _rejections(df),
        "utilization": {f["name"]: f["busy"] for f in fleet},
        "mean_in_system": time_average_in_system(done.arrival_s, done.finish_s, 0.0, makespan)
        if len(done) else 0.0,
    }
    targets = {k: v for k, v in slo.items() if v is not None}
    s["slo"] = {}
    for key, target in targets.items():
        metric, stat, _ = key.split("_")
        measured = s[f"{metric}_s"][stat]
        s["slo"][key] = {"target": target, "measured": measured,
                         "met": bool(measured <= target)}
    s["slo_met"] = all(v["met"] for v in s["slo"].values())
    s["goodput_req_s"] = float(met(df, targets).sum()) / span
    s["sim_wall_s"] = wall_s
    return s


def _billed(fleet: list[dict], makespan: float, scaled_devices: int) -> tuple[int, float, float]:
    """(devices, cost, energy) when some replicas are billed per replica-second (``billed_s``)
    and the rest for the whole makespan."""
    devices = scaled_devices + sum(f["devices"] for f in fleet if "billed_s" not in f)
    cost = energy = 0.0
    for f in fleet:
        secs = f.get("billed_s", makespan)
        cost += f["devices"] * f["price_per_hour"] * secs / 3600.0
        energy += f["devices"] * f["tdp_w"] * (IDLE_POWER_FRACTION + (1 - IDLE_POWER_FRACTION) * f["busy"]) * secs
    return devices, cost, energy


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _rejections(df: pd.DataFrame) -> dict:
    """Rejected requests grouped by reason: reasons that differ only in their numbers form
    one group, named with the real numbers (a range where they vary within the group)."""
    r = df[df.rejected != ""]
    groups: dict[str, list[str]] = {}
    for why in r.rejected:
        groups.setdefault(_NUMBER.sub("\x00", why), []).append(why)
    reasons = sorted(((_ranged(v), len(v)) for v in groups.values()), key=lambda kv: (-kv[1], kv[0]))
    return {"count": int(len(r)), "reasons": dict(reasons),
            "examples": {int(i): str(v) for i, v in r.rejected.head(5).items()}}


def _ranged(messages: list[str]) -> str:
    """One message of a group with each number that varies shown as ``min-max``."""
    values = [[float(x) for x in _NUMBER.findall(m)] for m in messages]
    texts = [_NUMBER.findall(m) for m in messages]
    first = iter(range(len(values[0])))

    def span(_: re.Match) -> str:
        i = next(first)
        lo = min(range(len(values)), key=lambda j: values[j][i])
        hi = max(range(len(values)), key=lambda j: values[j][i])
        return texts[lo][i] if values[lo][i] == values[hi][i] else f"{texts[lo][i]}-{texts[hi][i]}"
    return _NUMBER.sub(span, messages[0])
