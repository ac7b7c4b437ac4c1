"""Case study: when does offloading KV to host memory pay, for document Q&A over a corpus?

Llama-3.1-8B on one L40S under vLLM 0.15.1 (its defaults on a 48 GB GPU: chunked prefill,
2048-token budget, prefix caching on). Each request asks a 64-token question about one
document of a corpus (4,000-token documents, Zipf popularity over the corpus), so its prompt
is the document then the question: the engine's prefix cache can serve the document if its
blocks are still held. The GPU's KV pool holds a few dozen documents; ``kv_offloading_size``
adds a host tier (GiB for the replica) whose hits are copied back over PCIe (L40S: Gen4 x16).
Grid: corpus 100 / 400 / 1,600 documents x host 0 / 16 / 64 / 256 GiB; the request rate is
fixed near what the GPU sustains with no reuse at all. Per cell: the share of prompt tokens
served from cache (and from the host), p50 / p90 TTFT, and the prefill tokens computed.

    python benchmarks/kv_offload_case.py [--requests N] [--png benchmarks/results/kv_offload_case.png]

Prints one row per cell, then a JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from case_common import SURROGATE  # noqa: E402
from simulator import parse_scenario, simulate  # noqa: E402
from simulator.engine.workload import Requests  # noqa: E402

CORPUS = (100, 400, 1600)
HOST_GIB = (0, 16, 64, 256)
DOC_TOKENS, QUESTION_TOKENS, ANSWER_TOKENS = 4000, 64, 128
ZIPF = 1.0
RATE_RPS = 2.0
KV_BYTES_PER_TOKEN = 2 * 32 * 8 * 128 * 2    # Llama-3.1-8B: K and V, 32 layers, 8 KV heads x 128, bf16


def requests(n: int, docs: int, seed: int = 0) -> Requests:
    """Poisson arrivals; each request's document drawn by Zipf popularity, its question new."""
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, docs + 1) ** ZIPF
    doc = rng.choice(docs, size=n, p=w / w.sum())
    arrival = np.cumsum(rng.exponential(1 / RATE_RPS, n))
    segs = tuple(f"doc{d}:{DOC_TOKENS} q{i}:{QUESTION_TOKENS}" for i, d in enumerate(doc))
    prompt = np.full(n, DOC_TOKENS + QUESTION_TOKENS, dtype=np.int64)
    output = np.full(n, ANSWER_TOKENS, dtype=np.int64)
    return Requests(arrival, prompt, output, segments=segs)


def scenario(host_gib: int) -> dict:
    engine = {"name": "vllm", "version": "0.15.1"}
    if host_gib:
        engine["kv_offloading_size"] = host_gib
    return {"name": f"kv-offload-{host_gib}", "seed": 0, "surrogate": SURROGATE,
            "deployments": [{"name": "llm", "model": "Llama-3.1-8B", "hardware": "L40S", "dtype": "bf16",
                             "engine": engine}],
            "workload": {"arrival": "poisson", "rate_rps": RATE_RPS, "num_requests": 1,
                         "prompt_tokens": {"dist": "fixed", "mean": DOC_TOKENS},
                         "output_tokens": {"dist": "fixed", "mean": ANSWER_TOKENS}}}


def figures(res, n: int) -> dict:
    s, pc = res.summary, res.summary["engine_prefix_cache"]
    return {"hit_rate": round(pc["token_hit_rate"], 3),
            "host_share": round(pc.get("host_hit_tokens", 0) / max(pc["prompt_tokens_looked_up"], 1), 3),
            "ttft_p50_s": round(s["ttft_s"]["p50"], 4), "ttft_p90_s": round(s["ttft_s"]["p90"], 4),
            "prefill_per_request": round(s["prefill_tokens_computed"] / n),
            "load_s_per_request": round(pc.get("host_load_seconds", 0.0) / n, 5)}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for docs in CORPUS:
        r = [x for x in rows if x["corpus"] == docs]
        a.plot([x["host_gib"] for x in r], [x["hit_rate"] for x in r], "o-", label=f"{docs} documents")
        b.plot([x["host_gib"] for x in r], [x["ttft_p90_s"] for x in r], "o-", label=f"{docs} documents")
    for ax in (a, b):
        ax.set_xscale("symlog", linthresh=16)
        ax.set_xticks(HOST_GIB, [str(g) for g in HOST_GIB])
        ax.set_xlabel("kv_offloading_size (GiB of host memory)")
        ax.grid(alpha=0.3)
    a.set_ylabel("prompt tokens served from cache")
    b.set_ylabel("p90 TTFT (s)")
    b.set_yscale("log")
    a.legend()
    fig.suptitle(f"Llama-3.1-8B, one L40S, vLLM 0.15.1: {DOC_TOKENS}-token documents, Zipf {ZIPF:g}, "
                 f"{RATE_RPS:g} req/s")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--png", default=str(REPO / "benchmarks" / "results" / "kv_offload_case.png"))
    a = ap.parse_args()
    rows = []
    print(f"{'corpus':>7} {'host GiB':>8} {'cached':>7} {'of it host':>10} {'p50 TTFT':>9} {'p90 TTFT':>9} "
          f"{'prefill/req':>11} {'copy s/req':>10}")
    gpu_gib = None
    for docs in CORPUS:
        reqs = requests(a.requests, docs)
        for gib in HOST_GIB:
            res = simulate(parse_scenario(scenario(gib)), requests=reqs)
            if gpu_gib is None:     # the GPU's own KV pool, for comparison with the host tier
                gpu_gib = next(iter(res.kv_blocks.values())) * 16 * KV_BYTES_PER_TOKEN / 2 ** 30
            f = {"corpus": docs, "host_gib": gib, **figures(res, a.requests)}
            rows.append(f)
            print(f"{docs:>7} {gib:>8} {f['hit_rate']:>7.1%} {f['host_share']:>10.1%} {f['ttft_p50_s']:>8.3f}s "
                  f"{f['ttft_p90_s']:>8.3f}s {f['prefill_per_request']:>11,} {f['load_s_per_request']:>10.4f}",
                  flush=True)
    print(f"GPU KV pool: {gpu_gib:.1f} GiB ({gpu_gib * 2 ** 30 / (DOC_TOKENS * KV_BYTES_PER_TOKEN):.0f} documents); "
          "a write-through host tier adds hits only beyond it")
    plot(rows, Path(a.png))
    print(f"plot: {a.png}")
    print(json.dumps({"requests": a.requests, "rate_rps": RATE_RPS, "gpu_kv_gib": round(gpu_gib, 2), "cells": rows}))


if __name__ == "__main__":
    main()
