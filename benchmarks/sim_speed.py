"""Simulator speed on the reference workload, side by side with Vidur.

Reference workload (as ../shared/peers/vidur runs it): Llama-2-7B bf16 on one H100,
chunked prefill with 512-token chunks and budget, max batch 128, the first N requests of
../shared/traces/workloads/splitwise_conv.csv at their recorded arrival times, prompts
truncated so prompt + output <= 4,096 tokens. 100,000 requests continue the ~19,000-row
trace with Poisson arrivals at its mean rate and its length mix.

Each size runs in a fresh process (so peak RSS is per run) after one small warm-up run
that compiles the step table (Vidur's figure is likewise warm: predictors trained once).
Prints one line per size, then the 10,000-request run as one JSON object on the last line.

    python benchmarks/sim_speed.py [--sizes 1000,10000,100000] [--surrogate builtin] [--engine 0.15.1]
                                   [--speculative]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACES = Path(os.environ.get("HERMES_TRACES", REPO.parent / "shared" / "traces"))
VIDUR_WORK = Path(os.environ.get("VIDUR_WORK", "/tmp/vidur-peer"))
VIDUR_README_S = 38.2   # ../shared/peers/vidur/README.md: 10,000 requests, warm, this machine


# --speculative: EAGLE with 4 proposed tokens at acceptance 0.7 (2.77 tokens per step)
SPECULATIVE = {"method": "eagle", "num_speculative_tokens": 4, "acceptance": 0.7}


def scenario(n: int, surrogate: str, engine: str | None = None, speculative: bool = False):
    """The reference deployment; with ``engine`` (a vLLM release) the same limits through its
    ``engine:`` block instead (CUDA-graph padding, async scheduling and its admission lag,
    prefix caching on); with ``speculative`` EAGLE speculative decoding on."""
    from simulator import Scenario
    dep = {"name": "llm", "model": "Llama-2-7B", "hardware": "H100-SXM", "dtype": "bf16",
           "scheduler": {"policy": "chunked", "max_batch_size": 128, "max_tokens_per_step": 512, "chunk_size": 512}}
    if engine:
        del dep["scheduler"]
        dep["engine"] = {"name": "vllm", "version": engine, "max_num_batched_tokens": 512, "max_num_seqs": 128}
    if speculative:
        dep["speculative"] = dict(SPECULATIVE)
    return Scenario.model_validate({
        "name": f"reference-{n}", "seed": 0, "surrogate": surrogate,
        "deployments": [dep],
        "workload": {"arrival": "trace", "trace": str(TRACES / "workloads" / "splitwise_conv.csv"),
                     "num_requests": n, "max_total_tokens": 4096}})


def run_one(n: int, surrogate: str, engine: str | None = None, speculative: bool = False) -> dict:
    sys.path.insert(0, str(REPO))
    from simulator import simulate
    t = time.perf_counter()
    simulate(scenario(50, surrogate, engine, speculative))   # warm-up: compiles the step table
    compile_s = time.perf_counter() - t
    sc = scenario(n, surrogate, engine, speculative)
    t = time.perf_counter()
    res = simulate(sc)
    wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    s = res.summary
    return {"requests": n, "wall_s": round(wall, 3), "req_per_s": round(n / wall, 1),
            "peak_rss_mb": round(rss, 1), "steps": s["steps"], "events": s["events"],
            "completed": s["completed"], "simulated_s": round(s["makespan_s"], 1),
            "warmup_s": round(compile_s, 3)}


def vidur_seconds() -> tuple[float, str]:
    """Vidur's warm 10,000-request wall time: from a local run of ../shared/peers/vidur if
    one exists, else the figure its README records for this machine."""
    res = VIDUR_WORK / "results.jsonl"
    if res.is_file():
        walls = []
        for line in res.read_text().splitlines():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "sarathi_10000" in str(d.get("log", "")) and d.get("wall_s"):
                walls.append(float(d["wall_s"]))
        if walls:
            return statistics.median(walls), f"measured here ({res}, median of {len(walls)})"
    return VIDUR_README_S, "../shared/peers/vidur/README.md (2026-11-22, this machine)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--surrogate", default="builtin")
    ap.add_argument("--repeats", type=int, default=3, help="runs per size; the fastest is kept")
    ap.add_argument("--engine", default=None, metavar="VLLM_VERSION",
                    help="run the reference deployment through a vLLM engine block of this release")
    ap.add_argument("--speculative", action="store_true",
                    help="EAGLE speculative decoding on the reference deployment (k=4, acceptance 0.7)")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(run_one(a.one, a.surrogate, a.engine, a.speculative)))
        return
    if not (TRACES / "workloads" / "splitwise_conv.csv").is_file():
        sys.exit(f"reference trace not found under {TRACES}")
    results = {}
    for n in [int(x) for x in a.sizes.split(",")]:
        runs = []
        for _ in range(a.repeats if n <= 10_000 else 1):
            out = subprocess.run([sys.executable, __file__, "--one", str(n), "--surrogate", a.surrogate,
                                  *(["--engine", a.engine] if a.engine else []),
                                  *(["--speculative"] if a.speculative else [])],
                                 capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = min(runs, key=lambda d: d["wall_s"])
        results[n] = r
        print(f"{n:>7} requests: wall {r['wall_s']:.3f} s, {r['req_per_s']:,.0f} req/s, "
              f"{r['steps']:,} steps, {r['events']:,} heap events, peak RSS {r['peak_rss_mb']:.0f} MB "
              f"(best of {len(runs)}; all: {', '.join(str(x['wall_s']) for x in runs)})")
    sizes = sorted(results)
    if len(sizes) > 1:
        lo, hi = results[sizes[0]], results[sizes[-1]]
        print(f"cost per request: {lo['wall_s'] / lo['requests'] * 1e6:.1f} us at {sizes[0]:,}, "
              f"{hi['wall_s'] / hi['requests'] * 1e6:.1f} us at {sizes[-1]:,} "
              f"(ratio {hi['wall_s'] / hi['requests'] / (lo['wall_s'] / lo['requests']):.2f}; 1.0 = linear)")
    if 10_000 in results:
        v, src = vidur_seconds()
        r = results[10_000]
        print(f"Vidur 0.0.26, 10,000 requests: {v:.1f} s [{src}] -> HERMES is {v / r['wall_s']:.0f}x faster")
        print(json.dumps({k: r[k] for k in ("requests", "wall_s", "req_per_s", "peak_rss_mb")}))


if __name__ == "__main__":
    main()
