"""KV-cache tiers: a memory hierarchy (HBM, host DRAM, CXL/pooled, local SSD, remote), each
with capacity, bandwidth, latency and a sharing scope, and a real prefix cache per tier.

Prompts are chains of fixed-size blocks (``block_tokens``, 256 as LMCache chunks); a block's
key hashes its content *and* the key before it, so two prompts share a block only when they
share everything up to it — hit rates come from the workload's shared system prompts and
multi-turn histories, never from a constant. A lookup walks the chain: each block is read
from the fastest tier that holds it, the first block no tier holds ends the hit, and the
rest of the prompt is recomputed by prefill. After a request, its blocks are written to
every tier (an inclusive hierarchy; writes are asynchronous offloads, off the request's
path). Each tier evicts least-recently-used blocks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.prefix import PrefixCache, Segment, block_keys  # noqa: F401  (shared with the engine)

SCOPES = ("deployment", "node", "rack", "cluster")
@dataclass(frozen=True)
class TierSpec:
    """One level of the hierarchy. ``bw`` in bytes/s, ``latency`` in s, ``capacity`` in bytes
    per cache instance; ``scope`` says who shares an instance."""

    name: str
    capacity: float
    bw: float
    latency: float
    scope: str = "node"


@dataclass(frozen=True)
class Hit:
    """Result of one lookup: blocks read from each tier (by tier index) and blocks missed."""

    per_tier: tuple[int, ...]
    missed: int

    @property
    def hit_blocks(self) -> int:
        return sum(self.per_tier)


class KVHierarchy:
    """Tiers fastest first; one ``PrefixCache`` per (tier, scope key)."""

    def __init__(self, tiers: list[TierSpec], block_tokens: int, bytes_per_token: float) -> None:
        if block_tokens < 1:
            raise ValueError("block_tokens must be >= 1")
        self.tiers, self.block_tokens = list(tiers), int(block_tokens)
        self.block_bytes = bytes_per_token * block_tokens
        self._caches: dict[tuple[int, str], PrefixCache] = {}
        self.looked = 0                          # blocks looked up
        self.served = [0] * len(self.tiers)      # blocks served by each tier
        self.tier_lookups = [0] * len(self.tiers)  # blocks that reached each tier
        self.prompt_tokens = 0
        self.hit_tokens = 0

    def cache(self, tier: int, scope_key: str) -> PrefixCache:
        c = self._caches.get((tier, scope_key))
        if c is None:
            cap = int(self.tiers[tier].capacity // self.block_bytes) if self.block_bytes > 0 else 0
            c = self._caches[(tier, scope_key)] = PrefixCache(cap)
        return c

    def lookup(self, keys: list[int], scopes: list[str], prompt_tokens: int | None = None) -> Hit:
        """Longest cached prefix of ``keys``; ``scopes[i]`` is the scope key of tier ``i`` for
        this request (e.g. its deployment, its node)."""
        caches = [self.cache(i, s) for i, s in enumerate(scopes)]
        per = [0] * len(caches)
        n = 0
        for k in keys:
            src = -1
            for i, c in enumerate(caches):
                self.tier_lookups[i] += 1
                if k in c:
                    src = i
                    break
            if src < 0:
                break
            caches[src].touch(k)
            per[src] += 1
            n += 1
        self.looked += len(keys)
        for i in range(len(caches)):
            self.served[i] += per[i]
        self.prompt_tokens += prompt_tokens if prompt_tokens is not None else len(keys) * self.block_tokens
        self.hit_tokens += n * self.block_tokens
        return Hit(tuple(per), len(keys) - n)

    def store(self, keys: list[int], scopes: list[str]) -> None:
        """The request's KV exists now: write its blocks into every tier."""
        for i, s in enumerate(scopes):
            self.cache(i, s).insert(keys)

    def hit_rates(self) -> dict:
        """Per tier: share of looked-up blocks it served, and of blocks that reached it;
        overall token hit rate (cached prompt tokens / prompt tokens)."""
        out = {}
        for i, t in enumerate(self.tiers):
            out[t.name] = {"served_fraction": self.served[i] / self.looked if self.looked else 0.0,
                           "hit_rate": self.served[i] / self.tier_lookups[i] if self.tier_lookups[i] else 0.0,
                           "blocks_served": self.served[i]}
        out["overall_token_hit_rate"] = self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
        return out


# ---- calibration against measured block reads ------------------------------------------------
@dataclass(frozen=True)
class ReadFit:
    """``latency + bytes / bw`` fitted to measured reads; errors in percent over the points."""

    device: str
    latency: float
    bw: float
    mape: float
    max_ape: float

    def predict(self, nbytes) -> np.ndarray:
        return self.latency + np.asarray(nbytes, dtype=float) / self.bw


def fit_read_latency(path: str | Path, device: str, min_bytes: float = 16 * 2**20) -> ReadFit:
    """Fit ``latency + size/bw`` to the streaming regime (blocks >= ``min_bytes``, the size of
    a KV chunk of even a small model) of a fio table (``device, block_size_bytes,
    measured_latency_us``), minimising relative error with non-negative coefficients."""
    from scipy.optimize import nnls

    from profiling.csvfile import read_csv
    df = read_csv(path, "fio table")
    g = df[(df.device == device) & (df.block_size_bytes >= min_bytes)]
    if len(g) < 2:
        raise ValueError(f"{path}: fewer than 2 rows for device '{device}' at >= {min_bytes:.0f} B")
    s = g.block_size_bytes.to_numpy(float)
    y = g.measured_latency_us.to_numpy(float) * 1e-6
    a = np.c_[np.ones_like(s), s] / y[:, None]
    (lat, inv_bw), _ = nnls(a, np.ones_like(y))
    ape = np.abs(a @ np.array([lat, inv_bw]) - 1) * 100
    return ReadFit(device, float(lat), float(1 / inv_bw), float(ape.mean()), float(ape.max()))


# Defaults per tier kind. DRAM and SSD come from fit_read_latency on
# mist/memory/fio_retrieval_latency.csv (DDR4: 6.6 us + 246 GB/s; NVMe: 8.8 GB/s, latency
# not identifiable from >= 16 MB reads so the 4 KB random-read figure of the catalog
# NVMe entry is used); HBM is H100's; CXL the catalog CXL card; remote a 400 Gb/s NIC.
TIER_DEFAULTS = {
    "hbm": dict(bw=3.35e12, latency=1e-6, scope="deployment"),
    "dram": dict(bw=246e9, latency=6.6e-6, scope="node"),
    "cxl": dict(bw=64e9, latency=0.4e-6, scope="rack"),
    "ssd": dict(bw=8.8e9, latency=80e-6, scope="node"),
    "remote": dict(bw=50e9, latency=20e-6, scope="cluster"),
}
