"""Routing of arrivals across the replicas of a deployment: one class per rule.

Ties go to the lowest index so runs are deterministic.
"""
from __future__ import annotations

from .config import RouterConfig


class Router:
    def __init__(self, cfg: RouterConfig, replicas: list) -> None:
        self.cfg, self.replicas = cfg, replicas

    def pick(self, rid: int, store) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def resize(self) -> None:
        """The replica list changed (an autoscaler added or drained one): re-derive any state."""


class RoundRobin(Router):
    def __init__(self, cfg: RouterConfig, replicas: list) -> None:
        super().__init__(cfg, replicas)
        self._next = 0

    def pick(self, rid: int, store) -> int:
        i = self._next
        self._next = (i + 1) % len(self.replicas)
        return i

    def resize(self) -> None:
        if self._next >= len(self.replicas):        # the list shrank under the pointer
            self._next = 0


def _argmin(values) -> int:
    best, bi = None, 0
    for i, v in enumerate(values):
        if best is None or v < best:
            best, bi = v, i
    return bi


class JoinShortestQueue(Router):
    """Fewest requests waiting, prefilling or decoding."""

    def pick(self, rid: int, store) -> int:
        return _argmin(r.arriving + len(r.waiting) + len(r.ready) + len(r.prefilling) + r.n for r in self.replicas)


class LeastTokens(Router):
    """Fewest outstanding tokens (prompt + output of unfinished requests)."""

    def pick(self, rid: int, store) -> int:
        return _argmin(r.outstanding for r in self.replicas)


class LeastKV(Router):
    """Lowest fraction of KV blocks in use."""

    def pick(self, rid: int, store) -> int:
        return _argmin((r.used / max(r.total_blocks, 1), r.outstanding) for r in self.replicas)


class HeavyLight(Router):
    """Long requests to a reserved share of replicas, short ones to the rest (least tokens
    within each group), so long prompts do not stall short ones."""

    def __init__(self, cfg: RouterConfig, replicas: list) -> None:
        super().__init__(cfg, replicas)
        self.resize()

    def resize(self) -> None:
        k = len(self.replicas)
        cfg = self.cfg
        heavy = min(max(1, round(k * cfg.heavy_fraction)), k - 1) if k > 1 else k
        self.heavy = list(range(heavy)) if k > 1 else [0]
        self.light = list(range(heavy, k)) if k > 1 else [0]

    def pick(self, rid: int, store) -> int:
        by = self.cfg.by
        size = (store.prompt[rid] if by == "prompt" else store.output[rid] if by == "output"
                else store.prompt[rid] + store.output[rid])
        group = self.heavy if size >= self.cfg.threshold else self.light
        return group[_argmin(self.replicas[i].outstanding for i in group)]


ROUTERS: dict[str, type[Router]] = {
    "round_robin": RoundRobin, "jsq": JoinShortestQueue, "least_tokens": LeastTokens,
    "least_kv": LeastKV, "heavy_light": HeavyLight,
}
