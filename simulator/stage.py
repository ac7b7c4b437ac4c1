"""The stage interface every part of a request's path implements, and a sequential pipeline.

A stage takes a request with ``submit(rid, t)`` and lets it go with ``done(rid, t)``; the
pipeline rebinds ``done`` to forward the request to the next stage. Deployments (LLM
serving) are stages today; retrieval, KV tiers, reward models and routers are added as new
stage classes with the same two names, without touching the event loop or the replicas.
"""
from __future__ import annotations

from typing import Callable, Protocol


class Stage(Protocol):
    done: Callable[[int, float], None]

    def submit(self, rid: int, t: float) -> None: ...


class Pipeline:
    """Stages in order; ``enter[k][rid]`` records when a request entered stage ``k`` so a
    per-stage latency breakdown is ``enter[k+1] - enter[k]``."""

    def __init__(self, stages: list[Stage], n: int, finish: Callable[[int, float], None]) -> None:
        self.stages, self.finish = stages, finish
        self.enter = [[float("nan")] * n for _ in stages]
        for k, stage in enumerate(stages):
            stage.done = self._forward(k)

    def _forward(self, k: int) -> Callable[[int, float], None]:
        if k + 1 == len(self.stages):
            return self.finish
        nxt, enter = self.stages[k + 1], self.enter[k + 1]

        def forward(rid: int, t: float) -> None:
            enter[rid] = t
            nxt.submit(rid, t)
        return forward

    def submit(self, rid: int, t: float) -> None:
        self.enter[0][rid] = t
        self.stages[0].submit(rid, t)
