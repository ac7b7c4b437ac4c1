"""Pipeline sections of the scenario file: bad references give one line naming the field;
a pipeline scenario runs end to end through simulate() with stage columns and summary keys."""
from __future__ import annotations

import pytest

from profiling.errors import InputError
from simulator import parse_scenario, simulate

BASE = {
    "name": "p", "seed": 1, "surrogate": "roofline",
    "deployments": [{"name": "llm", "model": "Llama-3.1-8B", "hardware": "H100-SXM",
                     "scheduler": {"policy": "chunked", "max_batch_size": 64, "max_tokens_per_step": 2048}}],
    "services": [{"name": "cpu", "hardware": "Xeon-8480+", "cost": {"kind": "tokens"}}],
    "workload": {"rate_rps": 5, "num_requests": 80, "prompt_tokens": {"mean": 300}, "output_tokens": {"mean": 50}},
}


def doc(**kw):
    return {**BASE, **kw}


@pytest.mark.parametrize("pipelines, extra, expect", [
    ([{"name": "a", "stages": [{"kind": "llm", "deployment": "nope"}]}], {},
     "pipelines.0.stages.0.deployment: 'nope' is not an LLM deployment"),
    ([{"name": "a", "stages": [{"kind": "preprocess", "deployment": "llm"}]}], {},
     "pipelines.0.stages.0.deployment: 'llm' is not a service"),
    ([{"name": "a", "stages": [{"kind": "kv_retrieve"}, {"kind": "llm", "deployment": "llm"}]}], {},
     "pipelines.0.stages.0: kv_retrieve needs a 'kv_cache' section"),
    ([{"name": "a", "stages": [{"kind": "llm"}]}], {}, "pipelines.0.stages.0.deployment: needed"),
    ([{"name": "a", "stages": [{"kind": "reasoning", "deployment": "llm"}]}], {}, "needs 'reward'"),
    ([{"name": "a", "stages": [{"kind": "llm", "deployment": "llm", "bogus": 1}]}], {},
     "pipelines.0.stages.0.bogus: unknown field"),
    ([{"name": "a", "stages": [{"kind": "llm", "deployment": "llm"}]}],
     {"kv_cache": {"tiers": [{"name": "t", "kind": "dram", "capacity_gb": -1}]}},
     "kv_cache.tiers.0.capacity_gb: must be > 0"),
])
def test_bad_pipeline_sections_name_the_field(pipelines, extra, expect):
    """Each mistake is one InputError line that names the file and the offending field."""
    with pytest.raises(InputError) as e:
        parse_scenario(doc(pipelines=pipelines, **extra), "s.yaml")
    msg = str(e.value)
    assert expect in msg and "s.yaml" in msg and "\n" not in msg


def test_pipeline_scenario_end_to_end():
    """simulate() runs a two-class pipeline: per-request stage columns add up to E2E, the
    summary has 'stages', 'kv_cache' hit rates and class counts, the CPU service is in the
    fleet's cost, and prompts include the added context."""
    d = doc(kv_cache={"block_tokens": 64, "tiers": [{"name": "dram", "kind": "dram", "capacity_gb": 100}]},
            pipelines=[
                {"name": "chat", "weight": 3, "prefix": {"system_prompts": 1, "system_tokens": 640},
                 "stages": [{"kind": "preprocess", "deployment": "cpu"}, {"kind": "kv_retrieve"},
                            {"kind": "llm", "deployment": "llm"}]},
                {"name": "ctx", "weight": 1, "stages": [
                    {"kind": "preprocess", "deployment": "cpu", "context_tokens": 500},
                    {"kind": "llm", "deployment": "llm"}]}])
    res = simulate(parse_scenario(d))
    s, df = res.summary, res.requests
    assert s["completed"] == 80
    cols = [c for c in df.columns if c.startswith("stage_")]
    assert (df[cols].sum(axis=1) - df.e2e_s).abs().max() < 1e-9
    assert set(s["request_classes"]) == {"chat", "ctx"} and sum(s["request_classes"].values()) == 80
    assert {"preprocess", "kv_retrieve", "llm_queue", "llm_prefill", "llm_decode"} <= set(s["stages"])
    assert 0.3 < s["kv_cache"]["overall_token_hit_rate"] < 1
    assert any(k.startswith("cpu/") for k in s["utilization"])
    ctx = df[df.request_class == "ctx"]
    assert (ctx.prompt_tokens >= 500).all()


def test_disaggregated_handoffs_share_the_network_link():
    """Prefill on H100, decode on A100 inside a pipeline scenario with a network: every KV
    handoff goes over the prefill replica's link, which is never over its bandwidth, and all
    requests finish."""
    d = doc(deployments=[{"name": "llm", "model": "Llama-3.1-8B", "hardware": "H100-SXM",
                          "scheduler": {"policy": "disaggregated", "decode_hardware": "A100-80GB",
                                        "prefill_replicas": 1, "decode_replicas": 2,
                                        "max_tokens_per_step": 4096}}],
            network={"places": {"llm": "0/0/0", "cpu": "0/1"}},
            pipelines=[{"name": "chat", "stages": [{"kind": "preprocess", "deployment": "cpu"},
                                                   {"kind": "llm", "deployment": "llm"}]}],
            workload={"rate_rps": 40, "num_requests": 120, "prompt_tokens": {"mean": 2000},
                      "output_tokens": {"mean": 20}})
    res = simulate(parse_scenario(d))
    assert res.summary["completed"] == 120
    link = res.summary["network"]["llm/prefill0:kv"]
    assert 0 < link["peak_gb_s"] <= link["bw_gb_s"] * (1 + 1e-9)
    assert link["carried_gb"] == pytest.approx(res.requests.prompt_tokens.sum() * 131072 / 1e9, rel=1e-6)
    assert res.summary["stages"]["network"]["mean"] > 0
