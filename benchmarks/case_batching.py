"""Case study (d): which batching policy serves chat, code, RAG and KV-retrieval pipelines best
at low and high load — a recommendation table like the HERMES paper's.

Llama-3.1-8B on 4 x H100 in every variant: aggregated continuous (prefill-first, vLLM v0),
chunked prefill (vLLM v1 / Sarathi), mixed, and disaggregated prefill/decode with P:D splits
1:3, 2:2 and 3:1. Pipelines: chat and code (lengths from the Azure/Splitwise traces), RAG
(CPU embedding + vector search adding 1.5K tokens of context), KV retrieval (multi-turn chat
reading earlier turns' KV from host DRAM). Per cell: goodput (share of requests meeting TTFT
<= 1 s and TPOT <= 30 ms) then p90 TTFT; the best policy per row is the recommendation.

    python benchmarks/case_batching.py [--requests N]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from case_common import run

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces" / "workloads"
SCHED = {"max_batch_size": 256, "max_tokens_per_step": 8192, "chunk_size": 512}
POLICIES = {
    "continuous": {"policy": "continuous"},
    "chunked": {"policy": "chunked"},
    "mixed": {"policy": "mixed"},
    "disagg 1:3": {"policy": "disaggregated", "prefill_replicas": 1, "decode_replicas": 3},
    "disagg 2:2": {"policy": "disaggregated", "prefill_replicas": 2, "decode_replicas": 2},
    "disagg 3:1": {"policy": "disaggregated", "prefill_replicas": 3, "decode_replicas": 1},
}
LOADS = {"chat": (20, 90), "code": (10, 45), "rag": (10, 40), "kv": (20, 90)}   # req/s: low, high


def pipeline(kind: str) -> dict:
    if kind == "rag":
        return {"services": [
                    {"name": "embedder", "hardware": "Xeon-8480+", "devices": 4, "servers": 8, "max_batch": 16,
                     "cost": {"kind": "encoder", "model": "e5-large-v2", "dtype": "fp32"}},
                    {"name": "vdb", "hardware": "Xeon-8480+", "servers": 8,
                     "cost": {"kind": "vector_search", "index": {"kind": "hnsw", "corpus": 10_000_000, "dim": 1024}}}],
                "pipelines": [{"name": "rag", "stages": [
                    {"kind": "rag_embed", "deployment": "embedder"},
                    {"kind": "rag_retrieve", "deployment": "vdb", "context_tokens": 1536},
                    {"kind": "llm", "deployment": "llm"}]}]}
    if kind == "kv":
        return {"kv_cache": {"tiers": [{"name": "dram", "kind": "dram", "capacity_gb": 512}]},
                "pipelines": [{"name": "multiturn", "prefix": {"system_prompts": 4, "system_tokens": 1000,
                                                                "turns": 5, "concurrent_sessions": 64},
                               "stages": [{"kind": "kv_retrieve", "deployment": "llm"},
                                          {"kind": "llm", "deployment": "llm"}]}]}
    return {}


def workload(kind: str, rate: float, n: int) -> dict:
    if kind in ("chat", "code"):
        trace = TRACES / ("splitwise_conv.csv" if kind == "chat" else "splitwise_code.csv")
        return {"arrival": "poisson", "rate_rps": rate, "num_requests": n, "trace": str(trace),
                "max_total_tokens": 8192}
    prompt = {"dist": "lognormal", "mean": 200 if kind == "kv" else 300, "max": 2000}
    return {"arrival": "poisson", "rate_rps": rate, "num_requests": n, "prompt_tokens": prompt,
            "output_tokens": {"dist": "lognormal", "mean": 200, "max": 1000}}


def scenario(kind: str, policy: str, rate: float, n: int) -> dict:
    p = POLICIES[policy]
    dep = {"name": "llm", "model": "Llama-3.1-8B", "hardware": "H100-SXM", "dtype": "bf16",
           "max_model_len": 16384, "scheduler": {**SCHED, **p}, "router": "least_tokens"}
    if p["policy"] != "disaggregated":
        dep["replicas"] = 4
    return {"name": f"{kind}-{policy}-{rate}", "seed": 4, "surrogate": "builtin", "deployments": [dep],
            "workload": workload(kind, rate, n), "slo": {"ttft_p90_s": 1.0, "tpot_p90_s": 0.03},
            **pipeline(kind)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    n = ap.parse_args().requests
    print("case (d): batching policy per pipeline and load, Llama-3.1-8B on 4 x H100 "
          "(cell: goodput share under TTFT<=1s & TPOT<=30ms / p90 TTFT s)")
    print(f"{'pipeline':>8} {'load':>9} " + " ".join(f"{k:>15}" for k in POLICIES) + "   recommended")
    for kind, rates in LOADS.items():
        for level, rate in zip(("low", "high"), rates):
            cells = {}
            for pol in POLICIES:
                s = run(scenario(kind, pol, rate, n), f"{kind} {pol} {rate}").summary
                share = s["goodput_req_s"] / max(s["throughput_req_s"], 1e-12) * s["completed"] / max(s["requests"], 1)
                cells[pol] = (share, s["ttft_s"]["p90"], s["output_tokens_per_dollar"])
            best = max(cells, key=lambda k: (round(cells[k][0], 2), -cells[k][1]))
            print(f"{kind:>8} {level + f' {rate:g}/s':>9} "
                  + " ".join(f"{c[0]:6.0%} /{c[1]:6.2f}s" for c in cells.values()) + f"   {best}")


if __name__ == "__main__":
    main()
