"""Service deployments: CPU or GPU workers that run a non-LLM stage (tokenizer, safety filter,
query encoder, vector index, cross-encoder reranker, reward scorer).

A multi-server FIFO queue: ``servers`` workers on ``devices`` devices of one hardware type;
a free worker takes up to ``max_batch`` waiting jobs at once and is busy for the batch's
service time from a cost model (``batch_s(jobs)`` with jobs as ``(sequences, tokens
each)``). Workers share the devices: with more workers than devices each runs that much
slower. Same-time arrivals batch together because workers start at LATE priority.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol

from profiling.hardware import HardwareSpec

from ..engine.core import LATE, Environment

Job = tuple[int, int]      # (sequences, tokens each)


class BatchCost(Protocol):
    def batch_s(self, jobs: list[Job]) -> float: ...


@dataclass(frozen=True)
class TokenCost:
    """CPU text work (tokenization, a rule-based safety filter): fixed + per token."""

    fixed_s: float = 1e-4
    per_token_s: float = 2e-7

    def batch_s(self, jobs: list[Job]) -> float:
        return self.fixed_s + self.per_token_s * sum(s * q for s, q in jobs)


@dataclass(frozen=True)
class FixedCost:
    """A constant per batch (e.g. a measured router or API latency)."""

    seconds: float = 1e-3

    def batch_s(self, jobs: list[Job]) -> float:
        return self.seconds


@dataclass(frozen=True)
class ServicePool:
    """What the fleet accounting needs: devices per worker and the hardware."""

    hw: HardwareSpec
    devices: float


class Worker:
    """One server of a service; ``steps`` stays empty (no LLM steps) for the core's plots."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.busy = 0.0
        self.jobs = 0
        self.steps: list[float] = []
        self.total_blocks = 0
        self.free = True


class ServiceDeployment:
    """``submit_job(rid, t, seqs, tokens, done)``; ``done(rid, t_end)`` when served."""

    def __init__(self, env: Environment, name: str, hw: HardwareSpec, cost: BatchCost, *,
                 devices: int = 1, servers: int = 1, max_batch: int = 1) -> None:
        if servers < 1 or devices < 1 or max_batch < 1:
            raise ValueError(f"service '{name}': servers, devices and max_batch must be >= 1")
        self.env, self.name, self.hw, self.cost = env, name, hw, cost
        self.max_batch = max_batch
        self.slowdown = max(servers / devices, 1.0)
        self.replicas = [Worker(f"{name}/{i}") for i in range(servers)]
        self.pools = [(ServicePool(hw, devices / servers), self.replicas)]
        self.queue: deque[tuple[int, int, int, Callable[[int, float], None]]] = deque()
        self.batches = 0
        self.max_queue = 0

    def submit_job(self, rid: int, t: float, seqs: int, tokens: int,
                   done: Callable[[int, float], None]) -> None:
        self.queue.append((rid, seqs, tokens, done))
        self.max_queue = max(self.max_queue, len(self.queue))
        for w in self.replicas:
            if w.free:
                w.free = False
                self.env.schedule(t, self._serve, w, priority=LATE)
                break

    def service_s(self, jobs: list[Job]) -> float:
        return self.cost.batch_s(jobs) * self.slowdown

    def _serve(self, w: Worker) -> None:
        if not self.queue:
            w.free = True
            return
        batch = [self.queue.popleft() for _ in range(min(self.max_batch, len(self.queue)))]
        dur = self.service_s([(s, q) for _, s, q, _ in batch])
        w.busy += dur
        w.jobs += len(batch)
        self.batches += 1
        self.env.schedule(self.env.now + dur, self._finish, w, batch)

    def _finish(self, w: Worker, batch) -> None:
        t = self.env.now
        for rid, _, _, done in batch:
            done(rid, t)
        self._serve(w)
