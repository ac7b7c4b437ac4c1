"""Case study (c): how the number of reasoning steps changes end-to-end latency and tokens
per dollar.

Qwen3-32B (TP 2 on H100) thinks in N steps of 256 tokens, a Llama-3.1-8B process reward
model on an L40S scores each step, then the 300-token answer follows; N = 0 is plain
generation. Also N parallel branches (best-of-N) for comparison. Latency is measured at a
light open load (0.5 req/s); tokens per dollar at saturation (closed loop, 48 clients: the
fleet's capacity divided by its price), as answer tokens and as all generated tokens.

    python benchmarks/case_reasoning.py
"""
from __future__ import annotations

from case_common import run

GEN = {"name": "gen", "model": "Qwen3-32B", "hardware": "H100-SXM", "tp": 2, "dtype": "bf16",
       "scheduler": {"policy": "chunked", "max_batch_size": 128, "max_tokens_per_step": 4096}}
PRM = {"name": "prm", "model": "Llama-3.1-8B", "hardware": "L40S", "dtype": "bf16",
       "scheduler": {"policy": "chunked", "max_batch_size": 64, "max_tokens_per_step": 8192, "chunk_size": 2048}}


def scenario(steps: int, mode: str, closed: bool = False) -> dict:
    if steps == 0:
        stages = [{"kind": "llm", "deployment": "gen"}]
    elif mode == "parallel":
        stages = [{"kind": "reasoning", "deployment": "gen", "reward": "prm", "mode": "parallel",
                   "branches": steps, "step_tokens": {"mean": 300}}]
    else:
        stages = [{"kind": "reasoning", "deployment": "gen", "reward": "prm", "steps": {"mean": steps},
                   "step_tokens": {"mean": 256}}]
    return {"name": f"reason-{mode}-{steps}", "seed": 3, "surrogate": "builtin", "deployments": [GEN, PRM],
            "pipelines": [{"name": "q", "stages": stages}],
            "workload": {"arrival": "closed_loop" if closed else "poisson", "rate_rps": 0.5,
                         "concurrency": 48, "num_requests": 150 if closed else 100,
                         "prompt_tokens": {"dist": "lognormal", "mean": 400, "max": 2000},
                         "output_tokens": {"dist": "fixed", "mean": 300}}}


def main() -> None:
    print("case (c): reasoning steps vs E2E and tokens per dollar (Qwen3-32B TP2 H100 + 8B PRM on L40S)")
    print(f"{'mode':>10} {'N':>3} {'E2E p50 s':>9} {'E2E p90 s':>9} {'gen tok/req':>11} {'answer tok/$':>12} {'all tok/$':>10}")
    base = None
    for mode, ns in (("sequential", (0, 1, 2, 4, 8)), ("parallel", (2, 4, 8))):
        for n in ns:
            s = run(scenario(n, mode), f"{mode} {n}").summary
            sat = run(scenario(n, mode, closed=True), f"{mode} {n} closed")
            df = sat.requests[sat.requests.finish_s.notna()]
            answer = 300 * len(df)
            gen = float(df.output_tokens.sum())
            cost = sat.summary["cost_usd"]
            if base is None:
                base = (s["e2e_s"]["p50"], answer / cost)
            print(f"{mode:>10} {n:3d} {s['e2e_s']['p50']:9.2f} {s['e2e_s']['p90']:9.2f} {gen / len(df):11.0f} "
                  f"{answer / cost:12.0f} {gen / cost:10.0f}")
            if mode == "sequential" and n == 8:
                print(f"finding: 8 reasoning steps multiply E2E p50 by {s['e2e_s']['p50'] / base[0]:.1f}x and divide "
                      f"answer tokens per dollar by {base[1] / (answer / cost):.1f}x versus no reasoning")


if __name__ == "__main__":
    main()
