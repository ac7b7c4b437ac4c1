"""Case study (b): reading cached KV from a remote tier versus recomputing it, at 4K and 24K
cached tokens.

Each request carries a long shared context (one of 8 documents of C tokens, the cached
part) plus ~100 new tokens, on Llama-3.1-8B / one H100. Variants: recompute (no KV tiers),
KV read from host DRAM over PCIe, from a local NVMe SSD, or from a remote memory pool over
a 100 Gb/s or 25 Gb/s network (12.5 / 3.1 GB/s, shared by concurrent reads). Prints TTFT at a light and a
heavier load; one line per case.

    python benchmarks/case_kv_retrieval.py
"""
from __future__ import annotations

from case_common import LLM8B_H100, ms, run, stage_mean

VARIANTS = {
    "recompute": None,
    "dram": [{"name": "dram", "kind": "dram", "capacity_gb": 512}],
    "ssd": [{"name": "ssd", "kind": "ssd", "capacity_gb": 4000}],
    "remote-100G": [{"name": "remote", "kind": "remote", "capacity_gb": 4000, "bw_gb_s": 12.5,
                     "latency_us": 20}],
    "remote-25G": [{"name": "remote", "kind": "remote", "capacity_gb": 4000, "bw_gb_s": 3.125,
                    "latency_us": 20}],
}


def scenario(cached: int, tiers, rate: float) -> dict:
    dep = {**LLM8B_H100, "max_model_len": 32768,
           "scheduler": {**LLM8B_H100["scheduler"], "max_tokens_per_step": 8192, "chunk_size": 2048}}
    doc = {
        "name": f"kv-{cached}", "seed": 2, "surrogate": "builtin", "deployments": [dep],
        "pipelines": [{"name": "doc_qa", "prefix": {"system_prompts": 8, "system_tokens": cached},
                       "stages": ([{"kind": "kv_retrieve", "deployment": "llm"}] if tiers else [])
                       + [{"kind": "llm", "deployment": "llm"}]}],
        "workload": {"arrival": "poisson", "rate_rps": rate, "num_requests": 400,
                     "prompt_tokens": {"dist": "fixed", "mean": 100},
                     "output_tokens": {"dist": "fixed", "mean": 100}},
    }
    if tiers:
        doc["kv_cache"] = {"block_tokens": 256, "tiers": tiers}
    return doc


def main() -> None:
    print("case (b): KV retrieval vs recomputation, Llama-3.1-8B on H100, 100 new tokens per request")
    print(f"{'cached':>7} {'variant':>12} {'rate':>5} {'hit rate':>8} {'kv read ms':>10} {'TTFT p50':>9} {'TTFT p90':>9}")
    ttft = {}
    for cached in (4096, 24576):
        for rate in (0.5, 3.0):
            for name, tiers in VARIANTS.items():
                res = run(scenario(cached, tiers, rate), f"{cached} {name} {rate}")
                s = res.summary
                hit = s.get("kv_cache", {}).get("overall_token_hit_rate", 0.0)
                read = stage_mean(res, "kv_retrieve")
                ttft[(cached, name, rate)] = s["ttft_s"]["p50"]
                print(f"{cached:7d} {name:>12} {rate:5.1f} {hit:8.0%} {ms(read)} {ms(s['ttft_s']['p50'])} {ms(s['ttft_s']['p90'])}")
    for cached in (4096, 24576):
        r, m, q = (ttft[(cached, v, 0.5)] for v in ("recompute", "remote-100G", "remote-25G"))
        rh, mh = ttft[(cached, "recompute", 3.0)], ttft[(cached, "remote-100G", 3.0)]
        print(f"finding: {cached // 1024}K cached tokens: recompute TTFT p50 {r * 1e3:.0f} ms vs remote read "
              f"{m * 1e3:.0f} ms (100G) / {q * 1e3:.0f} ms (25G) at 0.5 req/s; at 3 req/s recompute "
              f"{rh * 1e3:.0f} ms vs remote {mh * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
