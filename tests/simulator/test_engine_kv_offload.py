"""KV offload to host memory in the engine (vLLM ``kv_offloading_size``, SGLang's hierarchical
cache, TensorRT-LLM ``host_cache_size``): prompt blocks the GPU's prefix cache evicted still
hit from a host tier, copied back over PCIe while the request waits aside."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator import Scenario, simulate
from simulator.engine.prefix import EnginePrefixCache
from simulator.engine.workload import Requests

from simkit import BASE

# vLLM's GPU KV pool cut to 200 blocks of 16 tokens: room for about three 1000-token prompts
SMALL_GPU_KV = {"num_gpu_blocks_override": 200}


def _scenario(engine: dict, debug: bool = False, hardware: str = "H100-SXM") -> Scenario:
    doc = copy.deepcopy(BASE)
    doc["debug"] = debug
    dep = doc["deployments"][0]
    del dep["scheduler"]
    dep["hardware"] = hardware
    dep["engine"] = engine
    return Scenario.model_validate(doc)


def _vllm(**args) -> dict:
    return {"name": "vllm", "version": "0.15.1", **SMALL_GPU_KV, **args}


def _cycling(n_prompts: int = 8, rounds: int = 3, tokens: int = 1000, gap: float = 1.0) -> Requests:
    """``n_prompts`` distinct prompts sent in turn, ``rounds`` times over, one a ``gap`` apart:
    with a small GPU pool each prompt's blocks are evicted before it comes back."""
    n = n_prompts * rounds
    segs = tuple(f"p{i % n_prompts}:{tokens}" for i in range(n))
    return Requests(np.arange(n) * gap, np.full(n, tokens, np.int64), np.full(n, 4, np.int64), segments=segs)


def test_the_host_tier_keeps_blocks_the_gpu_evicted():
    """GPU room for 4 blocks, host for 16: a's blocks, pushed out of the GPU by b's, still hit,
    and the lookup says how many came from the host."""
    cache = EnginePrefixCache(capacity_blocks=4, block_tokens=16, host_blocks=16)
    a, b = cache.keys("a:64"), cache.keys("b:64")
    cache.insert(a[:3])
    cache.insert(b[:3])
    assert cache.lookup(a, 64) == 48 and cache.last_host == 32     # a[0], a[1] only on the host
    assert cache.lookup(b, 64) == 48 and cache.last_host == 0
    assert cache.host_hit_tokens == 32


def test_without_a_host_tier_nothing_comes_from_the_host():
    cache = EnginePrefixCache(capacity_blocks=4, block_tokens=16)
    a, b = cache.keys("a:64"), cache.keys("b:64")
    cache.insert(a[:3])
    cache.insert(b[:3])
    assert cache.lookup(a, 64) == 0 and cache.last_host == 0 and cache.host is None


def test_offload_turns_evicted_prompts_into_hits_and_saves_prefill():
    """Eight 1000-token prompts in turn, three rounds, a GPU pool for about three: without
    offload no repeat hits; with 4 GiB of host KV every repeat hits its 992 cached tokens
    (62 whole blocks before the last token), all from the host, and the replica computes
    that much less prefill."""
    reqs = _cycling()
    off = simulate(_scenario(_vllm()), requests=reqs)
    on = simulate(_scenario(_vllm(kv_offloading_size=4)), requests=reqs)
    assert off.summary["engine_prefix_cache"]["hit_tokens"] == 0
    pc = on.summary["engine_prefix_cache"]
    assert pc["hit_tokens"] == pc["host_hit_tokens"] == 16 * 992
    assert on.summary["prefill_tokens_computed"] == 24 * 1000 - 16 * 992
    assert pc["host_load_seconds"] > 0
    ttft_off = off.requests["ttft_s"].to_numpy()[8:]
    ttft_on = on.requests["ttft_s"].to_numpy()[8:]
    assert np.all(ttft_on < ttft_off)            # an 8-token prefill after the copy beats 1000


def test_a_host_hit_waits_for_its_copy_over_pcie():
    """A repeat's host-held KV comes back at the device's PCIe bandwidth before it starts:
    it starts no earlier than arrival + hit tokens x KV bytes per token per device / PCIe B/s."""
    reqs = _cycling()
    sc = _scenario(_vllm(kv_offloading_size=4), debug=True)
    res = simulate(sc, requests=reqs)
    kv_per_token = 2 * 32 * 8 * 128 * 2                  # Llama-3.1-8B: K and V, 32 layers, 8 heads x 128, bf16
    load = 992 * kv_per_token / 64e9                     # H100-SXM's host link, PCIe Gen5 x16
    r = res.requests
    waited = (r["start_s"] - r["arrival_s"]).to_numpy()[8:]
    assert np.all(waited >= load * (1 - 1e-9))
    assert res.summary["engine_prefix_cache"]["host_load_seconds"] == pytest.approx(16 * load)


def test_a_request_waiting_for_its_copy_does_not_hold_up_the_queue():
    """Behind a host hit, a fresh prompt arriving at the same instant is admitted at once
    instead of waiting for the copy (vLLM keeps the loading request aside)."""
    segs = ("a:4000", "b:4000", "c:4000", "d:4000", "a:4000", "new:200")
    t = [0.0, 1.0, 2.0, 3.0, 6.0, 6.0]
    reqs = Requests(np.array(t), np.array([4000] * 5 + [200], np.int64), np.full(6, 2, np.int64),
                    segments=segs)
    res = simulate(_scenario(_vllm(kv_offloading_size=8, num_gpu_blocks_override=600), debug=True), requests=reqs)
    r = res.requests
    assert res.summary["engine_prefix_cache"]["host_hit_tokens"] > 0
    assert r["start_s"].iat[5] < r["start_s"].iat[4]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(4, 50), prompts=st.integers(2, 12), tokens=st.integers(40, 1500),
       rate=st.floats(1, 40), host_gib=st.sampled_from([0.05, 0.5, 4.0]), seed=st.integers(0, 1000))
def test_offload_conserves_tokens_and_the_fast_and_debug_paths_agree(n, prompts, tokens, rate, host_gib, seed):
    """Every request finishes; computed prefill + hits = all prompt tokens (more when a
    preempted request recomputes); host hits are part of the hits; the fast step loops and the
    debug (general) path give the same times."""
    rng = np.random.default_rng(seed)
    slot = rng.integers(0, prompts, n)
    reqs = Requests(np.cumsum(rng.exponential(1 / rate, n)), np.full(n, tokens, np.int64),
                    rng.integers(1, 40, n).astype(np.int64), segments=tuple(f"p{s}:{tokens}" for s in slot))
    eng = _vllm(kv_offloading_size=host_gib, num_gpu_blocks_override=300)
    fast = simulate(_scenario(eng), requests=reqs)
    slow = simulate(_scenario(eng, debug=True), requests=reqs)
    assert fast.requests["finish_s"].notna().all()
    pc = fast.summary["engine_prefix_cache"]
    done = fast.summary["prefill_tokens_computed"] + pc["hit_tokens"]
    assert done == n * tokens if fast.summary["preemptions"] == 0 else done >= n * tokens
    assert 0 <= pc["host_hit_tokens"] <= pc["hit_tokens"]
    cols = ["start_s", "first_token_s", "finish_s"]
    assert fast.requests[cols].equals(slow.requests[cols])


def test_engine_arguments_set_the_host_tier():
    """vLLM's kv_offloading_size (GiB, whole replica), SGLang's hierarchical cache (2 x the
    GPU pool by default, or hicache_size GB per rank) and TensorRT-LLM's host_cache_size
    (bytes per rank) become the replica's host tier; the resolved settings say so."""
    from simulator.engine.engines import resolve_for

    def sched(engine: dict, tp: int = 1) -> dict:
        dep = _scenario(engine).deployments[0]
        return resolve_for(dep.engine, dep.model, dep.hardware, tp).scheduler

    assert sched(_vllm(kv_offloading_size=10))["host_kv_gb"] == pytest.approx(10 * 2 ** 30 / 1e9)
    sg = {"name": "sglang", "version": "0.5.2"}
    assert sched({**sg, "enable_hierarchical_cache": True})["host_kv_ratio"] == 2.0
    assert sched({**sg, "enable_hierarchical_cache": True, "hicache_size": 30}, tp=2)["host_kv_gb"] == 60
    assert "host_kv_gb" not in sched(sg) and "host_kv_ratio" not in sched(sg)
    trt = {"name": "trtllm", "version": "1.0.0", "kv_cache_config": {"host_cache_size": 2 ** 33}}
    assert sched(trt, tp=4)["host_kv_gb"] == pytest.approx(4 * 2 ** 33 / 1e9)


def test_sglang_hierarchical_cache_sizes_the_host_tier_from_the_gpu_pool():
    """With hicache_ratio 2 the host tier holds twice the GPU's blocks: prompts evicted from a
    GPU pool that holds three of eight still hit (the host holds all eight)."""
    reqs = _cycling()
    eng = {"name": "sglang", "version": "0.5.2", "enable_hierarchical_cache": True, "hicache_ratio": 4,
           "max_total_tokens": 3200}
    res = simulate(_scenario(eng), requests=reqs)
    assert res.summary["engine_prefix_cache"]["host_hit_tokens"] > 0


def test_an_unknown_offloading_backend_is_one_line():
    with pytest.raises(ValueError, match="kv_offloading_backend: 'disk' is not native or lmcache"):
        _scenario(_vllm(kv_offloading_size=4, kv_offloading_backend="disk")).deployments[0]
        simulate(_scenario(_vllm(kv_offloading_size=4, kv_offloading_backend="disk")), requests=_cycling(2, 1))
