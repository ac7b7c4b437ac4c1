"""Request streams: arrival times and prompt/output lengths, from distributions or traces.

Open-loop arrivals (Poisson, gamma, bursty, trace replay) are drawn up front as arrays;
closed-loop arrivals happen when a request finishes (``ClosedLoop`` in ``simulate``),
so only their lengths are drawn here. Everything derives from one ``numpy`` Generator
seeded by the scenario, so a seed fixes the whole stream.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from profiling.errors import InputError
from profiling.readers.request_trace import TRACE_COLUMNS, read_trace  # noqa: F401  (re-exported)

from .config import LengthDist, Workload

@dataclass(frozen=True)
class Requests:
    """The offered load: one entry per request (arrival is NaN for closed loop)."""

    arrival: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    # each prompt's composition for the engine's prefix cache (``simulator.engine.prefix``:
    # space-separated ``ID:TOKENS``, '' unknown); None when the workload says nothing of it
    segments: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.prompt)


def sample_lengths(d: LengthDist, n: int, rng: np.random.Generator) -> np.ndarray:
    if d.dist == "fixed":
        x = np.full(n, d.mean)
    elif d.dist == "uniform":
        hi = d.max if d.max is not None else 2 * d.mean - d.min
        x = rng.uniform(d.min, max(hi, d.min), n)
    elif d.dist == "normal":
        x = rng.normal(d.mean, d.std if d.std is not None else d.mean / 2, n)
    else:  # lognormal with the requested mean and std
        sd = d.std if d.std is not None else d.mean / 2
        s2 = np.log1p((sd / d.mean) ** 2)
        x = rng.lognormal(np.log(d.mean) - s2 / 2, np.sqrt(s2), n)
    return np.clip(np.rint(x), d.min, d.max if d.max is not None else None).astype(np.int64)


def _gaps(w: Workload, n: int, rng: np.random.Generator) -> np.ndarray:
    if w.arrival == "poisson":
        return rng.exponential(1.0 / w.rate_rps, n)
    if w.arrival == "gamma":  # shape k = 1/cv^2 keeps the mean gap 1/rate
        k = 1.0 / w.cv ** 2
        return rng.gamma(k, 1.0 / (w.rate_rps * k), n)
    # bursty: a two-state modulated Poisson process with the same long-run rate
    hi = w.rate_rps * w.burst_factor
    lo = max(w.rate_rps * (1 - w.burst_fraction * w.burst_factor) / (1 - w.burst_fraction), w.rate_rps * 1e-3)
    out = np.empty(n)
    t, i, period = 0.0, 0, w.burst_period_s
    while i < n:
        phase = (t % period) / period
        rate = hi if phase < w.burst_fraction else lo
        gap = rng.exponential(1.0 / rate)
        out[i] = gap
        t += gap
        i += 1
    return out


def rate_steps(w: Workload) -> tuple[np.ndarray, np.ndarray, float | None]:
    """The time-varying rate as pieces: (ends, rates, period) — rate ``rates[k]`` until
    ``ends[k]``; the last rate holds after the last end unless ``period`` repeats the pieces."""
    if w.rate_schedule is not None:
        return (np.array([p.until_s for p in w.rate_schedule]),
                np.array([p.rate_rps for p in w.rate_schedule]), None)
    d = w.daily_profile
    m = np.asarray(d.multipliers, dtype=float)
    width = d.day_s / m.size
    # time 0 is start_hour into the day: rotate so the pieces start there (shifting the first)
    offset = d.start_hour / 24.0 * d.day_s
    k0 = int(offset // width)
    cut = offset - k0 * width
    m = np.roll(m, -k0)
    ends = np.arange(1, m.size + 1) * width - cut
    if cut > 0:                        # the partial first slice re-appears as the last piece
        ends, m = np.append(ends, d.day_s), np.append(m, m[0])
    return ends, w.rate_rps * m, d.day_s


def rate_at(w: Workload, t: np.ndarray | float) -> np.ndarray:
    """Offered rate (requests/s) at time(s) ``t`` of a time-varying workload (the plain rate otherwise)."""
    t = np.asarray(t, dtype=float)
    if w.rate_schedule is None and w.daily_profile is None:
        return np.full(t.shape, w.rate_rps if w.arrival != "closed_loop" else np.nan)
    ends, rates, period = rate_steps(w)
    x = np.mod(t, period) if period else t
    return rates[np.minimum(np.searchsorted(ends, x, side="right"), rates.size - 1)]


def varying_arrivals(w: Workload, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` arrival times of a non-homogeneous Poisson process by time rescaling: unit-rate
    arrivals mapped through the inverse of the cumulative rate (exact for piecewise rates)."""
    ends, rates, period = rate_steps(w)
    starts = np.concatenate([[0.0], ends[:-1]])
    cum = np.concatenate([[0.0], np.cumsum(rates * (ends - starts))])   # Lambda at each piece start
    unit = np.cumsum(rng.exponential(1.0, n))
    if period:
        laps = np.floor(unit / cum[-1])
        rest = unit - laps * cum[-1]
        base = laps * period
    else:
        rest, base = unit, np.zeros(n)
    # the piece whose cumulative range holds each point (pieces of rate 0 hold none)
    k = np.clip(np.searchsorted(cum, rest, side="left") - 1, 0, rates.size - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = base + starts[k] + (rest - cum[k]) / rates[k]
    if not period:                     # past the last breakpoint the last rate holds
        tail = rest > cum[-1]
        if rates[-1] > 0:
            t[tail] = ends[-1] + (rest[tail] - cum[-1]) / rates[-1]
        else:
            t = t[~tail]
    if w.duration_s is not None:
        t = t[t < w.duration_s]
    if t.size == 0:
        raise InputError("workload: the rate schedule offers no request "
                         + (f"before duration_s {w.duration_s}" if w.duration_s else "(all rates 0)"))
    return t


def build_requests(w: Workload, seed: int) -> Requests:
    """Draw the whole request stream of a workload."""
    rng = np.random.default_rng(seed)
    n = w.num_requests
    trace = read_trace(w.trace) if w.trace else None
    if trace is not None:
        if w.arrival == "trace":
            if trace.arrival.isna().all():
                raise InputError("workload.arrival 'trace' needs arrival times, and this trace has only "
                                 "token counts", file=w.trace)
            if w.trace_start_s:            # a window of the recording: from trace_start_s on
                keep = (trace.arrival - trace.arrival.iloc[0]).to_numpy() >= w.trace_start_s
                if not keep.any():
                    raise InputError(f"workload.trace_start_s {w.trace_start_s} is past the trace's last "
                                     "arrival", file=w.trace)
                trace = trace[keep].reset_index(drop=True)
            if len(trace) < n and len(trace) < 2:   # the continuation's rate comes from the gaps between arrivals
                raise InputError(f"one request cannot be continued to workload.num_requests {n} (no "
                                 "arrival rate): give num_requests: 1 or a longer trace", file=w.trace)
            k = min(n, len(trace))
            arr = trace.arrival.to_numpy()[:k]
            arr = (arr - arr[0]) * w.time_scale
            prompt, output = trace.prompt.to_numpy()[:k], trace.output.to_numpy()[:k]
            if n > k:  # continue past the trace: Poisson at its mean rate, its length mix
                rate = (k - 1) / max(arr[-1], 1e-9)
                idx = rng.integers(0, len(trace), n - k)
                arr = np.concatenate([arr, arr[-1] + np.cumsum(rng.exponential(1.0 / rate, n - k))])
                prompt = np.concatenate([prompt, trace.prompt.to_numpy()[idx]])
                output = np.concatenate([output, trace.output.to_numpy()[idx]])
        else:
            idx = rng.integers(0, len(trace), n)
            prompt, output = trace.prompt.to_numpy()[idx], trace.output.to_numpy()[idx]
            arr = None
    else:
        prompt = sample_lengths(w.prompt_tokens, n, rng)
        output = sample_lengths(w.output_tokens, n, rng)
        arr = None
    if arr is None:
        if w.rate_schedule is not None or w.daily_profile is not None:
            arr = varying_arrivals(w, n, rng)
            prompt, output = prompt[:arr.size], output[:arr.size]
        else:
            arr = np.full(n, np.nan) if w.arrival == "closed_loop" else np.cumsum(_gaps(w, n, rng))
    if w.duration_s is not None and w.arrival != "closed_loop":
        # arrivals stop at duration_s: the stream is shorter than num_requests
        m = int(np.searchsorted(arr, w.duration_s, side="left"))
        if m == 0:
            raise InputError(f"workload: no request arrives before duration_s {w.duration_s}")
        arr, prompt, output = arr[:m], prompt[:m], output[:m]
    prompt, output = prompt.astype(np.int64), output.astype(np.int64)
    if w.max_total_tokens:  # as Vidur: shorten the prompt so prompt + output fits
        output = np.minimum(output, w.max_total_tokens - 1)
        prompt = np.maximum(1, np.minimum(prompt, w.max_total_tokens - output))
    return Requests(np.asarray(arr, dtype=float), prompt, output)
