"""Per-request state as flat lists indexed by request id (fast to touch from the step loop).

Timestamps are NaN until they happen. ``complete`` hands the request to whatever comes
next (the next pipeline stage, a closed-loop client, the metrics) through ``on_complete``.
"""
from __future__ import annotations

from math import isnan, nan
from typing import Callable

import numpy as np

from .workload import Requests


class Store:
    def __init__(self, reqs: Requests) -> None:
        n = len(reqs)
        self.n = n
        self.arrival = [float(x) for x in reqs.arrival]
        self.prompt = reqs.prompt.tolist()
        self.output = reqs.output.tolist()
        self.plen = list(self.prompt)           # tokens the next prefill computes
        self.left = list(self.output)           # tokens still to emit
        self.base = [0] * n
        self.ver = [0] * n
        self.fin_at = [0] * n
        self.first = [nan] * n
        self.finish = [nan] * n
        self.started = [nan] * n
        self.preemptions = [0] * n
        self.where = [-1] * n                   # replica index that finished the request
        self.cached = [0] * n                   # prompt tokens whose KV is already there (prefix hit)
        self.shared = [0] * n                   # KV blocks shared with a sibling (parallel branches)
        # prompt composition per request (``Requests.segments``) for the engine's prefix cache
        self.segments: tuple[str, ...] | None = reqs.segments
        self.rejected: dict[int, str] = {}
        self.completed = 0
        self.prefill_tokens = 0
        self.on_complete: Callable[[int, float], None] = lambda rid, t: None
        self.on_prefill: Callable[[int, float], None] | None = None
        self.seed = 0                           # the scenario's seed, for streams drawn per deployment (LoRA)
        self.request_class: list[str] | None = None  # class names, for per-class speculative acceptance

    def spawn(self, prompt: int, output: int) -> int:
        """A sub-request (a reasoning branch, a scoring call) with its own state; rows of the
        request table stop at ``n``, so it never shows there."""
        rid = len(self.prompt)
        for name, v in vars(self).items():
            if isinstance(v, list) and len(v) == rid:
                v.append(_SPAWN.get(name, 0))
        self.prompt[rid] = self.plen[rid] = prompt
        self.output[rid] = self.left[rid] = output
        return rid

    def start(self, rid: int, t: float) -> None:
        if isnan(self.started[rid]):
            self.started[rid] = t

    def emit_first(self, rid: int, t: float) -> None:
        """A prefill finished (its KV exists from now): the first token, and the pipeline's hook."""
        if isnan(self.first[rid]):
            self.first[rid] = t
        if self.on_prefill is not None:
            self.on_prefill(rid, t)

    def complete(self, rid: int, t: float) -> None:
        self.finish[rid] = t
        self.completed += 1
        self.on_complete(rid, t)

    def reject(self, rid: int, reason: str, t: float) -> None:
        self.rejected[rid] = reason
        self.on_complete(rid, t)

    def arrays(self) -> dict[str, np.ndarray]:
        n = self.n
        return {k: v[:n] for k, v in self._arrays().items()}

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "arrival_s": np.asarray(self.arrival), "prompt_tokens": np.asarray(self.prompt),
            "output_tokens": np.asarray(self.output), "start_s": np.asarray(self.started),
            "first_token_s": np.asarray(self.first), "finish_s": np.asarray(self.finish),
            "preemptions": np.asarray(self.preemptions), "replica": np.asarray(self.where)}


_SPAWN = {"where": -1, "arrival": nan, "first": nan, "finish": nan, "started": nan}
