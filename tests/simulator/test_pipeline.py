"""Pipelines on the real core: stage times add up, routing fractions, reasoning steps,
RAG context, KV reuse from tiers — each request walking its class's stages."""
from __future__ import annotations

import numpy as np
import pytest

from simulator.engine.core import Environment
from simulator.engine.deployment import build_deployment
from simulator.pipelines.build import build_pipelines, build_service, prepare_requests
from simulator.pipelines.schema import KVCacheConfig, NetworkConfig, RequestClass, ServiceConfig
from simulator.scenario import Deployment, Workload
from simulator.engine.store import Store
from simulator.engine.workload import build_requests

LLM = {"model": "Llama-3.1-8B", "hardware": "H100-SXM",
       "scheduler": {"policy": "chunked", "max_batch_size": 64, "max_tokens_per_step": 2048}}
SERVICES = [
    {"name": "cpu", "hardware": "Xeon-8480+", "servers": 4, "cost": {"kind": "tokens"}},
    {"name": "embedder", "hardware": "Xeon-8480+", "servers": 2,
     "cost": {"kind": "encoder", "model": "e5-base-v2", "dtype": "fp32"}},
    {"name": "vdb", "hardware": "Xeon-8480+", "servers": 4,
     "cost": {"kind": "vector_search", "index": {"kind": "hnsw", "corpus": 1000000, "dim": 768}}},
    {"name": "reranker", "hardware": "H100-SXM", "max_batch": 4,
     "cost": {"kind": "encoder", "model": "bge-reranker-large", "dtype": "bf16"}},
]


def run(classes, n=200, rate=8.0, deployments=None, kv=None, network=None, seed=0, workload=None):
    """Build the real core deployments + services + pipelines and run to the end."""
    deps = [Deployment.model_validate({"name": k, **v}) for k, v in (deployments or {"llm": LLM}).items()]
    w = Workload.model_validate(workload or {"rate_rps": rate, "num_requests": n,
                                             "prompt_tokens": {"dist": "lognormal", "mean": 300, "max": 1500},
                                             "output_tokens": {"dist": "lognormal", "mean": 60, "max": 300}})
    classes = [RequestClass.model_validate(c) for c in classes]
    reqs, klass, segs = prepare_requests(build_requests(w, seed), classes, seed, max_context=8000)
    env, store = Environment(), Store(reqs)
    llms = {d.name: build_deployment(env, store, d, "roofline", debug=True) for d in deps}
    svcs = {s["name"]: build_service(env, ServiceConfig.model_validate(s), "roofline") for s in SERVICES}
    finished = {}
    pipe = build_pipelines(env, store, llms, svcs, classes, klass, segs,
                           KVCacheConfig.model_validate(kv) if kv else None,
                           NetworkConfig.model_validate(network) if network else None, seed,
                           lambda rid, t: finished.__setitem__(rid, t))
    for i in range(store.n):
        env.schedule(store.arrival[i], pipe.submit, i, store.arrival[i])
    env.run()
    return pipe, store, finished, llms


RAG = {"name": "rag", "stages": [
    {"kind": "preprocess", "deployment": "cpu"},
    {"kind": "rag_embed", "deployment": "embedder"},
    {"kind": "rag_retrieve", "deployment": "vdb"},
    {"kind": "rag_rerank", "deployment": "reranker", "candidates": 8, "context_tokens": 1024},
    {"kind": "llm", "deployment": "llm"},
    {"kind": "postprocess", "deployment": "cpu"}]}


def test_stage_times_add_up_to_e2e():
    """For every request of a RAG + chat mix (with network hops between places), the
    recorded stage times sum to finish - arrival, each stage took time, and the stages
    before the LLM's decode sum to the TTFT."""
    chat = {"name": "chat", "weight": 2, "stages": [{"kind": "llm", "deployment": "llm"}]}
    net = {"places": {"embedder": "0/1", "vdb": "1/0", "reranker": "0/0/1", "llm": "0/0/0"}}
    pipe, store, fin, _ = run([RAG, chat], n=150, network=net)
    assert len(fin) == store.n
    cols = pipe.stage_columns()
    total = sum(cols.values())
    e2e = np.array([fin[i] - store.arrival[i] for i in range(store.n)])
    assert np.allclose(total, e2e, rtol=1e-9, atol=1e-9)
    rag = pipe.class_names() == "rag"
    assert 0 < rag.sum() < store.n
    for k in ("rag_embed", "rag_retrieve", "rag_rerank", "network", "llm_prefill", "llm_decode"):
        assert (cols[f"stage_{k}_s"][rag] > 0).all(), k
    # an LLM call splits into queue + prefill (up to the first token) + decode
    ttft = np.array([store.first[i] - store.arrival[i] for i in range(store.n)])
    before_decode = total - cols["stage_llm_decode_s"] - cols["stage_postprocess_s"]
    assert np.allclose(ttft, before_decode, rtol=1e-9, atol=1e-9)
    assert (cols["stage_rag_embed_s"][~rag] == 0).all()
    # the retrieved context went into the LLM prompt
    assert all(pipe.prompt[i] == pipe.user[i] + 1024 for i in np.flatnonzero(rag))


def test_routing_sends_configured_fractions():
    """A probability table 0.2 / 0.8 over two deployments routes those shares (binomial
    tolerance), and a prompt-length rule routes exactly by the threshold."""
    deps = {"small": {**LLM, "model": "Llama-3.1-8B"}, "large": {**LLM, "model": "Qwen3-32B"}}
    route = {"name": "r", "stages": [
        {"kind": "route", "choices": [{"deployment": "small", "weight": 0.2},
                                      {"deployment": "large", "weight": 0.8}], "cost_s": 0.001},
        {"kind": "llm"}]}
    n = 1500
    pipe, store, fin, llms = run([route], n=n, rate=20, deployments=deps,
                                 workload={"rate_rps": 20, "num_requests": n,
                                           "prompt_tokens": {"mean": 50}, "output_tokens": {"mean": 4}})
    small = sum(1 for r in pipe.routed if r == "small")
    assert abs(small / n - 0.2) < 3 * np.sqrt(0.2 * 0.8 / n)
    served = {k: sum(1 for i in range(n) if pipe.routed[i] == k and store.where[i] >= 0) for k in deps}
    assert served["small"] + served["large"] == n
    by_len = {"name": "r", "stages": [
        {"kind": "route", "by": "prompt", "choices": [{"deployment": "small", "max_prompt": 300},
                                                      {"deployment": "large"}]},
        {"kind": "llm"}]}
    pipe, store, fin, _ = run([by_len], n=300, deployments=deps)
    assert all((pipe.routed[i] == "small") == (pipe.user[i] <= 300) for i in range(store.n))


def test_sequential_reasoning_generates_steps_and_scores_each():
    """think -> score x steps then answer: generated tokens = steps x step tokens + answer,
    the reward model is called once per step, and E2E grows with the steps."""
    deps = {"gen": LLM, "rm": {**LLM, "model": "Llama-3.1-8B"}}
    e2e = {}
    for steps in (1, 4):
        cls = {"name": "reason", "stages": [{"kind": "reasoning", "deployment": "gen", "reward": "rm",
                                             "steps": {"mean": steps}, "step_tokens": {"mean": 100}}]}
        pipe, store, fin, llms = run([cls], n=40, rate=2, deployments=deps)
        assert len(fin) == 40
        assert all(pipe.generated[i] == steps * 100 + pipe.answer[i] for i in range(40))
        rm_calls = sum(len(r.steps) > 0 for r in llms["rm"].replicas)
        assert rm_calls == 1
        cols = pipe.stage_columns()
        assert (cols["stage_reasoning_reward_s"] > 0).all() and (cols["stage_reasoning_think_s"] > 0).all()
        e2e[steps] = np.mean([fin[i] - store.arrival[i] for i in range(40)])
    assert e2e[4] > 2 * e2e[1]


def test_kv_retrieve_reuses_multiturn_history():
    """Multi-turn sessions through a DRAM tier: later turns find their history cached, so
    fewer prompt tokens are prefilled than without the tier; the hit rate is positive."""
    kv = {"block_tokens": 64, "tiers": [{"name": "dram", "kind": "dram", "capacity_gb": 500}]}
    cls = {"name": "chat", "prefix": {"system_prompts": 2, "system_tokens": 500, "turns": 4,
                                      "concurrent_sessions": 4},
           "stages": [{"kind": "kv_retrieve"}, {"kind": "llm", "deployment": "llm"}]}
    pipe, store, fin, _ = run([cls], n=120, rate=1.0, kv=kv)
    rates = pipe.ctx.kv.hit_rates()
    assert rates["overall_token_hit_rate"] > 0.3
    assert sum(pipe.cached) > 0.3 * sum(pipe.prompt)
    cols = pipe.stage_columns()
    hit = np.array(pipe.cached) > 0
    assert (cols["stage_kv_retrieve_s"][hit] > 0).all() and (cols["stage_kv_retrieve_s"][~hit] == 0).all()


def test_concurrent_kv_reads_share_the_tier_link():
    """Many requests reading long cached prefixes from one remote tier at once: the tier's
    link is never assigned more than its bandwidth, and reads slow down as they overlap."""
    kv = {"block_tokens": 256, "tiers": [{"name": "remote", "kind": "remote", "capacity_gb": 1000,
                                          "bw_gb_s": 2.0, "latency_us": 10}]}
    cls = {"name": "doc", "prefix": {"system_prompts": 2, "system_tokens": 4096},
           "stages": [{"kind": "kv_retrieve"}, {"kind": "llm", "deployment": "llm"}]}
    wl = {"rate_rps": 30, "num_requests": 120, "prompt_tokens": {"mean": 50}, "output_tokens": {"mean": 20}}
    pipe, store, fin, _ = run([cls], kv=kv, workload=wl)
    links = pipe.ctx.network.links
    tier = links["kv:remote:all"]
    assert tier.peak_rate <= tier.bw * (1 + 1e-9)
    assert tier.peak_rate == pytest.approx(tier.bw)          # it did saturate
    read = pipe.stage_columns()["stage_kv_retrieve_s"]
    hits = np.array(pipe.cached) >= 4096 - 256
    alone = 10e-6 + 4096 * pipe.ctx.kv.block_bytes / 256 / 2e9
    assert read[hits].min() >= alone * 0.999 and read[hits].max() > 1.5 * alone


@pytest.mark.parametrize("branches", [1, 4])
def test_parallel_branches_share_the_prompt_kv(branches):
    """N parallel samples of one prompt hold N KV footprints minus the shared prefix: the
    generator's peak KV blocks equal blocks(P+g) + (N-1) x (blocks(P+g) - full prompt blocks)
    (vLLM n>1: full prompt blocks shared, the partial last one copied)."""
    deps = {"gen": {**LLM, "scheduler": {**LLM["scheduler"], "block_size": 16}}, "rm": LLM}
    cls = {"name": "bestof", "stages": [{"kind": "reasoning", "deployment": "gen", "reward": "rm",
                                         "mode": "parallel", "branches": branches,
                                         "step_tokens": {"mean": 200}}]}
    wl = {"rate_rps": 1, "num_requests": 1, "prompt_tokens": {"mean": 1000}, "output_tokens": {"mean": 200}}
    pipe, store, fin, llms = run([cls], deployments=deps, workload=wl)
    assert len(fin) == 1 and pipe.generated[0] == 200 * branches
    steps = np.asarray(llms["gen"].replicas[0].steps).reshape(-1, 6)
    peak = int(steps[:, 4].max())
    per = -(-(1000 + 200) // 16)
    assert peak == per + (branches - 1) * (per - 1000 // 16)
    assert llms["gen"].replicas[0].used == 0                  # everything freed at the end
