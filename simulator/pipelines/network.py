"""Network: links with bandwidth and latency, a device/node/rack/cluster topology, and
transfers that share links max-min fairly (progressive filling).

A transfer pays the path's latency once, then streams its bytes; while several transfers
cross a link they share its bandwidth. Whenever a transfer starts or ends, every active
rate is recomputed by water-filling and the next completion is rescheduled on the event
loop (stale completions are recognised by a version number and ignored). So a link
never carries more than its bandwidth, and a lone transfer runs at its bottleneck rate.

Flows are kept in dicts keyed by a sequence number given at creation, so every loop over
them (rate sums, same-time completions and their callbacks) runs in creation order and a
seed gives the same run in every process, whatever the objects' memory addresses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count
from math import inf
from typing import Callable

from ..engine.core import URGENT, Environment

EPS_BYTES = 1e-6


@dataclass(frozen=True)
class LinkSpec:
    """Bandwidth (bytes/s, one direction) and one-way latency (s) of one level's links."""

    bw: float
    latency: float = 0.0


class Link:
    """One shared link; ``carried`` integrates bytes moved, ``peak_rate`` the largest total
    rate ever assigned (a test checks it never exceeds ``bw``)."""

    __slots__ = ("name", "bw", "latency", "flows", "carried", "peak_rate", "busy_s")

    def __init__(self, name: str, bw: float, latency: float = 0.0) -> None:
        if bw <= 0:
            raise ValueError(f"link '{name}' needs a bandwidth > 0")
        self.name, self.bw, self.latency = name, float(bw), float(latency)
        self.flows: dict[int, Flow] = {}          # by Flow.seq, in creation order
        self.carried = 0.0
        self.peak_rate = 0.0
        self.busy_s = 0.0


@dataclass
class Flow:
    """One transfer in flight. Unhashable on purpose (a dataclass with ``eq``): containers
    key flows by ``seq``, never by identity, so their order cannot follow addresses."""

    seq: int
    links: tuple[Link, ...]
    remaining: float
    done: Callable[[float], None]
    rate: float = 0.0
    started: float = 0.0


class Network:
    """All links of one simulation and the transfers in flight on them."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.links: dict[str, Link] = {}
        self.flows: dict[int, Flow] = {}          # by Flow.seq, in creation order
        self._seq = count()
        self._last = 0.0
        self._version = 0

    def link(self, name: str, bw: float, latency: float = 0.0) -> Link:
        """The link called ``name``, created on first use."""
        lk = self.links.get(name)
        if lk is None:
            lk = self.links[name] = Link(name, bw, latency)
        return lk

    def transfer(self, links: list[Link] | tuple[Link, ...], nbytes: float, t: float,
                 done: Callable[[float], None]) -> None:
        """Move ``nbytes`` over ``links`` (a path) starting at ``t``; ``done(t_end)`` fires when
        the last byte arrives. An empty path or zero bytes costs only the latency."""
        lat = sum(lk.latency for lk in links)
        if nbytes <= 0 or not links:
            self.env.schedule(t + lat, done, t + lat)
            return
        self.env.schedule(t + lat, self._start, tuple(links), float(nbytes), done)

    # ---- fluid model --------------------------------------------------------------------
    def _advance(self, now: float) -> None:
        """Drain every active flow at its current rate up to ``now``."""
        dt = now - self._last
        if dt > 0:
            for f in self.flows.values():
                f.remaining -= f.rate * dt
            for lk in self.links.values():
                if lk.flows:
                    r = sum(f.rate for f in lk.flows.values())
                    lk.carried += r * dt
                    lk.busy_s += dt
        self._last = now

    def _start(self, links: tuple[Link, ...], nbytes: float, done: Callable[[float], None]) -> None:
        now = self.env.now
        self._advance(now)
        f = Flow(next(self._seq), links, nbytes, done, started=now)
        self.flows[f.seq] = f
        for lk in links:
            lk.flows[f.seq] = f
        self._reschedule(now)

    def _rates(self) -> None:
        """Max-min fair rates by progressive filling: raise all unfrozen flows together until
        a link saturates, freeze its flows, repeat."""
        busy = [lk for lk in self.links.values() if lk.flows]
        left = {lk.name: lk.bw for lk in busy}
        active = dict(self.flows)
        for f in active.values():
            f.rate = 0.0
        while active:
            share, tight = inf, None
            for lk in busy:
                n = sum(1 for s in lk.flows if s in active)
                if n and left[lk.name] / n < share:
                    share, tight = left[lk.name] / n, lk
            if tight is None:
                break
            frozen = [s for s in tight.flows if s in active]
            for f in active.values():
                f.rate += share
            for lk in busy:
                left[lk.name] -= share * sum(1 for s in lk.flows if s in active)
            for s in frozen:
                del active[s]
            left[tight.name] = 0.0
        for lk in busy:
            r = sum(f.rate for f in lk.flows.values())
            if r > lk.peak_rate:
                lk.peak_rate = r

    def _reschedule(self, now: float) -> None:
        self._rates()
        self._version += 1
        if not self.flows:
            return
        nxt = min(f.remaining / f.rate for f in self.flows.values() if f.rate > 0)
        self.env.schedule(now + max(nxt, 0.0), self._complete, self._version, priority=URGENT)

    def _complete(self, version: int) -> None:
        if version != self._version:
            return                              # rates changed since this was scheduled
        now = self.env.now
        self._advance(now)
        flows = self.flows.values()
        finished = [f for f in flows if f.remaining <= EPS_BYTES + 1e-12 * f.rate]
        if not finished:                        # float rounding: finish the closest (first-created on a tie)
            finished = [min(flows, key=lambda f: f.remaining / f.rate if f.rate else inf)]
        for f in finished:                      # callbacks below fire in creation order too
            del self.flows[f.seq]
            for lk in f.links:
                lk.flows.pop(f.seq, None)
        self._reschedule(now)
        for f in finished:
            f.done(now)


LEVELS = ("device", "node", "rack", "cluster")


@dataclass(frozen=True)
class Place:
    """Where something runs: rack, node within the rack, device within the node."""

    rack: int = 0
    node: int = 0
    device: int = 0

    @classmethod
    def parse(cls, text: str | None) -> "Place":
        """``"rack/node/device"`` (missing trailing parts are 0), e.g. ``"0/1"``."""
        if not text:
            return cls()
        parts = [int(p) for p in str(text).split("/")]
        if len(parts) > 3 or any(p < 0 for p in parts):
            raise ValueError(f"place '{text}' must be rack[/node[/device]] with integers >= 0")
        return cls(*parts)


@dataclass
class Topology:
    """Links by level: each device has a ``device`` link (NVLink/PCIe to its node), each
    node a ``node`` NIC, each rack a ``rack`` uplink into the ``cluster`` fabric."""

    net: Network
    levels: dict[str, LinkSpec] = field(default_factory=dict)

    def _lk(self, level: str, key: str) -> Link:
        spec = self.levels[level]
        return self.net.link(f"{level}:{key}", spec.bw, spec.latency)

    def path(self, a: Place, b: Place) -> list[Link]:
        """Links a transfer from ``a`` to ``b`` crosses (empty on the same device)."""
        if a == b:
            return []
        if (a.rack, a.node) == (b.rack, b.node):
            return [self._lk("device", f"{a.rack}/{a.node}/{a.device}"),
                    self._lk("device", f"{b.rack}/{b.node}/{b.device}")]
        out = [self._lk("node", f"{a.rack}/{a.node}")]
        if a.rack != b.rack:
            out += [self._lk("rack", str(a.rack)), self._lk("rack", str(b.rack))]
        return out + [self._lk("node", f"{b.rack}/{b.node}")]

    def send(self, a: Place, b: Place, nbytes: float, t: float, done: Callable[[float], None]) -> None:
        self.net.transfer(self.path(a, b), nbytes, t, done)

    def ideal_s(self, a: Place, b: Place, nbytes: float) -> float:
        """Time of a lone transfer (latency + bytes at the bottleneck)."""
        links = self.path(a, b)
        if not links:
            return 0.0
        return sum(lk.latency for lk in links) + nbytes / min(lk.bw for lk in links)


DEFAULT_LEVELS = {  # NVLink-class device link, 400 Gb/s NIC, 8x400G rack uplink
    "device": LinkSpec(450e9, 2e-6), "node": LinkSpec(50e9, 5e-6),
    "rack": LinkSpec(400e9, 10e-6), "cluster": LinkSpec(400e9, 20e-6)}
