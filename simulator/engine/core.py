"""Discrete-event core: a heap of callbacks keyed ``(time, priority, seq)``.

SimPy-shaped but callback based: ties resolve by priority then insertion order, so a run
is deterministic and events are never compared. Components (arrival sources, replicas,
pipeline stages) schedule plain callables; tracing and metrics live outside the core.

A component may *run ahead* inline while its next event is strictly earlier than
everything queued (``peek``) — nothing can happen in between — which is how a replica
serves thousands of steps without touching the heap (see ``Replica``).
"""
from __future__ import annotations

from heapq import heappop, heappush
from itertools import count
from math import inf
from typing import Any, Callable

# Same-time ordering: step ends first (they free memory and finish requests), then
# arrivals, then schedulers planning their next step (they see every same-time arrival),
# then what must come after that planning (a request an async scheduler sees one step late).
URGENT, NORMAL, LATE, LATER = 0, 1, 2, 3


class StopSimulation(Exception):
    """Raised by a callback to end the run early (e.g. a pruning hook said stop)."""


class Environment:
    """Simulated clock and event queue. ``now`` is in seconds."""

    __slots__ = ("now", "_queue", "_seq", "events")

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._queue: list[tuple[float, int, int, Callable[..., Any], tuple]] = []
        self._seq = count()
        self.events = 0

    def schedule(self, time: float, callback: Callable[..., Any], *args: Any, priority: int = NORMAL) -> None:
        """Run ``callback(*args)`` at ``time`` (never in the past)."""
        if time < self.now:
            raise ValueError(f"cannot schedule in the past ({time} < {self.now})")
        heappush(self._queue, (time, priority, next(self._seq), callback, args))

    def step(self) -> None:
        """Pop the next event, advance the clock, fire it."""
        time, _, _, callback, args = heappop(self._queue)
        self.now = time
        self.events += 1
        callback(*args)

    def run(self, until: float = inf) -> bool:
        """Fire events until the queue is empty or ``until``; False if stopped early."""
        queue = self._queue
        try:
            while queue and queue[0][0] <= until:
                time, _, _, callback, args = heappop(queue)
                self.now = time
                self.events += 1
                callback(*args)
        except StopSimulation:
            return False
        return True

    def __len__(self) -> int:
        return len(self._queue)
