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
        arr = np.full(n, np.nan) if w.arrival == "closed_loop" else np.cumsum(_gaps(w, n, rng))
    prompt, output = prompt.astype(np.int64), output.astype(np.int64)
    if w.max_total_tokens:  # as Vidur: shorten the prompt so prompt + output fits
        output = np.minimum(output, w.max_total_tokens - 1)
        prompt = np.maximum(1, np.minimum(prompt, w.max_total_tokens - output))
    return Requests(np.asarray(arr, dtype=float), prompt, output)
