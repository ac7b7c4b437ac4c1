"""Case study: how many LoRA GPU slots does a multi-adapter deployment need, by popularity skew?

Llama-3.1-8B on one H100 (chunked prefill, 256 sequences, 8192-token budget), 64 rank-16
adapters on every projection, 10 requests/s (lognormal prompts 512, outputs 128), 1,200
requests; vLLM's rules (``simulator.engine.lora``): a waiting request whose adapter would make
the batch hold more than ``max_loras`` adapters is skipped, cold adapters load inside the step
(``blocking``) from a 32-adapter CPU cache or a 2 GB/s disk. Grid: ``max_loras`` 1..32 x Zipf
exponent 0 (uniform), 0.8, 1.2, 1.6, and the base model alone. Per cell: p99 TTFT, and tokens
per dollar counting only requests that meet TTFT <= 1 s (``slo_tok_per_usd``; plain tokens per
dollar barely moves, the arrivals set the makespan).

    python benchmarks/lora_case.py [--requests N] [--png benchmarks/results/lora_case.png]

Prints one row per cell, then a JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from case_common import run  # noqa: E402

SLOTS = (1, 2, 4, 8, 16, 32)
SKEW = (0.0, 0.8, 1.2, 1.6)
TTFT_SLO_S = 1.0


def scenario(n: int, slots: int | None, exponent: float) -> dict:
    dep = {"name": "llm", "model": "Llama-3.1-8B", "hardware": "H100-SXM", "dtype": "bf16",
           "scheduler": {"policy": "chunked", "max_batch_size": 256, "max_tokens_per_step": 8192,
                         "chunk_size": 8192}}
    if slots:
        dep["lora"] = {"adapters": 64, "rank": 16, "max_loras": slots, "max_lora_rank": 16,
                       "max_cpu_loras": 32, "disk_bw_gb_s": 2.0, "loading": "blocking",
                       "popularity": {"dist": "zipf", "exponent": exponent}}
    return {"name": f"lora-{slots}-{exponent}", "seed": 0, "deployments": [dep],
            "workload": {"arrival": "poisson", "rate_rps": 10, "num_requests": n,
                         "prompt_tokens": {"dist": "lognormal", "mean": 512, "std": 256, "max": 8000},
                         "output_tokens": {"dist": "lognormal", "mean": 128, "std": 64, "max": 2000}}}


def figures(res) -> dict:
    s, df = res.summary, res.requests
    ok = df[df.ttft_s <= TTFT_SLO_S]
    lo = s.get("lora", {}).get("llm", {})
    return {"ttft_p99_s": round(s["ttft_s"]["p99"], 4), "tok_per_usd": round(s["output_tokens_per_dollar"]),
            "slo_tok_per_usd": round(float(ok.output_tokens.sum()) / s["cost_usd"]),
            "hit_rate": round(lo.get("hit_rate", 1.0), 3), "loads": lo.get("loads", 0),
            "adapter_wait_mean_s": round(lo.get("adapter_wait_s", {}).get("mean", 0.0), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1200)
    ap.add_argument("--png", default=str(REPO / "benchmarks" / "results" / "lora_case.png"))
    args = ap.parse_args()
    base = figures(run(scenario(args.requests, None, 0.0), "base model"))
    print(f"base model alone: p99 TTFT {base['ttft_p99_s']:.3f} s, SLO tokens/$ {base['slo_tok_per_usd']:,}")
    cells: dict[str, dict[str, dict]] = {}
    print(f"{'zipf':>5} {'max_loras':>9} {'p99 TTFT':>9} {'SLO tok/$':>10} {'tok/$':>9} {'hit':>5} {'loads':>6} "
          f"{'wait mean':>9}")
    for e in SKEW:
        for k in SLOTS:
            f = figures(run(scenario(args.requests, k, e), f"zipf {e} max_loras {k}"))
            cells.setdefault(str(e), {})[str(k)] = f
            print(f"{e:>5} {k:>9} {f['ttft_p99_s']:>8.3f}s {f['slo_tok_per_usd']:>10,} {f['tok_per_usd']:>9,} "
                  f"{f['hit_rate']:>5.2f} {f['loads']:>6} {f['adapter_wait_mean_s']:>8.3f}s")
    # the fewest slots within 10% of the base model's SLO tokens per dollar, per skew
    enough = {e: next((int(k) for k, f in row.items() if f["slo_tok_per_usd"] >= 0.9 * base["slo_tok_per_usd"]),
                      None) for e, row in cells.items()}
    print("fewest max_loras within 10% of the base model's SLO tokens/$: "
          + ", ".join(f"zipf {e}: {k}" for e, k in enough.items()))
    _plot(cells, base, args.png)
    print(json.dumps({"base": base, "cells": cells, "slots_needed": enough, "png": args.png}))


def _plot(cells: dict, base: dict, png: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for e, row in cells.items():
        ks = [int(k) for k in row]
        a.plot(ks, [row[k]["ttft_p99_s"] for k in row], marker="o", label=f"zipf {e}")
        b.plot(ks, [row[k]["slo_tok_per_usd"] / 1e3 for k in row], marker="o", label=f"zipf {e}")
    a.axhline(base["ttft_p99_s"], color="k", ls="--", lw=1, label="base model")
    b.axhline(base["slo_tok_per_usd"] / 1e3, color="k", ls="--", lw=1, label="base model")
    for ax, title in ((a, "p99 TTFT (s)"), (b, "tokens per $ meeting TTFT <= 1 s (thousands)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("max_loras (GPU adapter slots)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    a.set_yscale("log")
    b.legend(fontsize=8)
    fig.suptitle("64 LoRA adapters on Llama-3.1-8B / H100, 10 req/s", fontsize=11)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main()
