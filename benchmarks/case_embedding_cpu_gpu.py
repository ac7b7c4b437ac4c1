"""Case study (a): a large embedding model on a CPU versus on a GPU — how TTFT changes.

A RAG pipeline (query embedding -> IVF-PQ retrieval on a CPU -> context into the prompt ->
Llama-3.1-8B on an H100) with the query encoder placed on a Xeon-8480+ socket or on an
H100, for a small encoder (e5-large-v2, 335M) and a large one (gte-Qwen2-7B, the Qwen2-7B
architecture). Prints TTFT p50/p90 and the embedding stage's share of TTFT, one line each.

    python benchmarks/case_embedding_cpu_gpu.py
"""
from __future__ import annotations

from case_common import LLM8B_H100, ms, run, stage_mean


def scenario(encoder: str, hardware: str, dtype: str, rate: float) -> dict:
    return {
        "name": f"embed-{encoder}-{hardware}", "seed": 1, "surrogate": "builtin",
        "deployments": [LLM8B_H100],
        "services": [
            {"name": "embedder", "hardware": hardware, "servers": 1, "max_batch": 16,
             "cost": {"kind": "encoder", "model": encoder, "dtype": dtype}},
            {"name": "vdb", "hardware": "Xeon-8480+", "servers": 8,
             "cost": {"kind": "vector_search", "index": {"kind": "ivfpq", "corpus": 10_000_000, "dim": 1024,
                                                         "nprobe": 32, "m": 64, "k": 10}}}],
        "network": {"places": {"llm": "0/0/0", "embedder": "0/0/1" if hardware != "Xeon-8480+" else "0/1",
                               "vdb": "0/1"}},
        "pipelines": [{"name": "rag", "stages": [
            {"kind": "rag_embed", "deployment": "embedder", "query_tokens": 512},
            {"kind": "rag_retrieve", "deployment": "vdb", "context_tokens": 2048},
            {"kind": "llm", "deployment": "llm"}]}],
        "workload": {"arrival": "poisson", "rate_rps": rate, "num_requests": 300,
                     "prompt_tokens": {"dist": "lognormal", "mean": 512, "max": 2000},
                     "output_tokens": {"dist": "lognormal", "mean": 150, "max": 600}},
    }


def main() -> None:
    print("case (a): query embedding on CPU vs GPU (512-token queries, RAG into Llama-3.1-8B/H100)")
    print(f"{'encoder':>16} {'device':>11} {'rate':>5} {'embed ms':>9} {'TTFT p50':>9} {'TTFT p90':>9} {'embed/TTFT':>10}")
    rows = []
    for encoder, label in (("e5-large-v2", "e5-large 335M"), ("Qwen-2-7B", "gte-Qwen2-7B")):
        for hw, dtype in (("Xeon-8480+", "fp32"), ("Xeon-8480+", "bf16"), ("H100-SXM", "bf16")):
            for rate in (0.5, 4.0):
                res = run(scenario(encoder, hw, dtype, rate), f"{label} {hw} {dtype} {rate}")
                s = res.summary
                emb = stage_mean(res, "rag_embed")
                ttft = s["ttft_s"]
                share = emb / ttft["mean"] if ttft["mean"] else float("nan")
                name = f"{hw}/{dtype}"
                print(f"{label:>16} {name:>11} {rate:5.1f} {ms(emb)} {ms(ttft['p50'])} {ms(ttft['p90'])} {share:10.0%}")
                rows.append((label, name, rate, emb, ttft["p50"], share))
    big_cpu = [r for r in rows if r[0].startswith("gte") and r[1] == "Xeon-8480+/fp32" and r[2] == 0.5][0]
    big_gpu = [r for r in rows if r[0].startswith("gte") and r[1] == "H100-SXM/bf16" and r[2] == 0.5][0]
    small_cpu = [r for r in rows if r[0].startswith("e5") and r[1] == "Xeon-8480+/fp32" and r[2] == 0.5][0]
    print(f"finding: 7B embedder on CPU (fp32) is {big_cpu[5]:.0%} of TTFT (TTFT p50 {big_cpu[4] * 1e3:.0f} ms) vs "
          f"{big_gpu[5]:.0%} on an H100 ({big_gpu[4] * 1e3:.0f} ms); a 335M embedder on CPU is {small_cpu[5]:.0%} "
          f"({small_cpu[4] * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
