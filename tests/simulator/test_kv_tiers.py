"""KV tiers: hash-chained prefix blocks, LRU per tier, fall-through, analytic hit rates,
and tier parameters checked against measured DDR4/NVMe reads."""
from __future__ import annotations

import numpy as np
import pytest

from simulator.pipelines.kv_tiers import (TIER_DEFAULTS, KVHierarchy, PrefixCache, TierSpec, block_keys,
                                fit_read_latency)
from simulator.pipelines.sessions import PrefixSpec, analytic_token_hit_rate, build_segments


def test_block_keys_share_exactly_the_common_prefix():
    """Two streams share a block's key only if everything up to the block's end is equal."""
    a = block_keys([("sys", 300), ("u1", 100)], 128)
    b = block_keys([("sys", 300), ("u2", 100)], 128)
    c = block_keys([("other", 300), ("u1", 100)], 128)
    assert len(a) == 3 and a[:2] == b[:2] and a[2] != b[2]
    assert not set(a) & set(c)


def test_lru_evicts_least_recently_used():
    """A full cache drops the block touched longest ago."""
    c = PrefixCache(2)
    c.insert([1, 2])
    c.touch(1)
    c.insert([3])
    assert 1 in c and 3 in c and 2 not in c


def _replay(segs, output, tiers, block=64):
    """Requests one after another: look up, then store prompt + answer blocks."""
    h = KVHierarchy(tiers, block, bytes_per_token=1.0)
    for i, (seg, out) in enumerate(zip(segs, output)):
        keys = block_keys(seg, block)
        h.lookup(keys, ["x"] * len(tiers), prompt_tokens=sum(t for _, t in seg))
        h.store(block_keys(seg + [(("answer",) + tuple(seg[-1][0][1:]), int(out))], block), ["x"] * len(tiers))
    return h


@pytest.mark.parametrize("spec", [
    PrefixSpec(system_prompts=5, system_tokens=700),
    PrefixSpec(system_prompts=3, system_tokens=300, zipf=1.2, turns=4, concurrent_sessions=7),
    PrefixSpec(system_prompts=0, turns=6, concurrent_sessions=3),
])
def test_unbounded_cache_reaches_the_workload_hit_rate(spec):
    """With capacity for everything, the measured token hit rate equals the hit rate
    computed from the workload's segment structure alone."""
    rng = np.random.default_rng(0)
    user = rng.integers(20, 400, 400)
    out = rng.integers(10, 300, 400)
    segs, prompt, _ = build_segments(spec, user, out, rng)
    h = _replay(segs, out, [TierSpec("dram", 1e12, 1e9, 0.0)])
    assert h.hit_rates()["overall_token_hit_rate"] == pytest.approx(analytic_token_hit_rate(segs, out, 64), abs=1e-12)
    assert h.hit_rates()["overall_token_hit_rate"] > 0.1


def test_hit_rate_converges_to_closed_form_for_shared_system_prompts():
    """S system prompts of L tokens + U unique tokens: the hit rate tends to
    floor(L/b) b / (L + U) as the first use of each system prompt becomes negligible."""
    S, L, U, b, n = 4, 1000, 200, 64, 4000
    rng = np.random.default_rng(1)
    segs, prompt, _ = build_segments(PrefixSpec(system_prompts=S, system_tokens=L), np.full(n, U), np.full(n, 50), rng)
    h = _replay(segs, np.full(n, 50), [TierSpec("dram", 1e12, 1e9, 0.0)], block=b)
    expect = (L // b) * b / (L + U) * (1 - S / n)
    assert h.hit_rates()["overall_token_hit_rate"] == pytest.approx(expect, rel=0.01)


def test_misses_fall_through_tiers_and_small_tiers_hit_less():
    """A small first tier serves recent blocks, the large second tier catches what it
    evicted; served fractions add up to the overall block hit rate."""
    rng = np.random.default_rng(2)
    spec = PrefixSpec(system_prompts=50, system_tokens=640, turns=3, concurrent_sessions=40)
    user, out = rng.integers(50, 300, 1500), rng.integers(20, 200, 1500)
    segs, _, _ = build_segments(spec, user, out, rng)
    tiers = [TierSpec("hbm", 64 * 30, 1e9, 0.0), TierSpec("dram", 64 * 100_000, 1e9, 0.0)]
    h = _replay(segs, out, tiers)
    r = h.hit_rates()
    assert r["hbm"]["blocks_served"] > 0 and r["dram"]["blocks_served"] > 0
    both = r["hbm"]["served_fraction"] + r["dram"]["served_fraction"]
    h1 = _replay(segs, out, [TierSpec("dram", 64 * 100_000, 1e9, 0.0)])
    assert both == pytest.approx(h1.hit_rates()["dram"]["served_fraction"])
    assert r["hbm"]["hit_rate"] < r["dram"]["hit_rate"] or r["hbm"]["served_fraction"] < both


def test_tier_defaults_match_measured_reads(traces_dir):
    """DRAM and SSD tier bandwidths are the fio measurements' streaming fit (within 5%),
    and the fit predicts every >= 16 MB read within 15%."""
    path = traces_dir / "mist" / "memory" / "fio_retrieval_latency.csv"
    ddr, ssd = fit_read_latency(path, "DDR4"), fit_read_latency(path, "NVMe SSD")
    assert TIER_DEFAULTS["dram"]["bw"] == pytest.approx(ddr.bw, rel=0.05)
    assert TIER_DEFAULTS["ssd"]["bw"] == pytest.approx(ssd.bw, rel=0.05)
    assert TIER_DEFAULTS["dram"]["latency"] == pytest.approx(ddr.latency, rel=0.1)
    assert ddr.max_ape < 15 and ssd.max_ape < 15
    import pandas as pd
    df = pd.read_csv(path)
    g = df[(df.device == "NVMe SSD") & (df.block_size_bytes == 1 << 30)]
    assert ssd.predict(1 << 30) == pytest.approx(g.measured_latency_us.iloc[0] * 1e-6, rel=0.15)
