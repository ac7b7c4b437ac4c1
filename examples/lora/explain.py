"""The numbers behind examples/lora/README.md: how many adapters fit, what a cold adapter costs,
which requests wait, and what more GPU slots buy.

    python examples/lora/explain.py [--requests 1500]
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from simulator import parse_scenario, simulate  # noqa: E402
from simulator.engine.deployment import memory_plan, resolve  # noqa: E402
from simulator.engine.lora import LORA_MODULES, adapter_bytes  # noqa: E402

GB = 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--slots", default="4,8,16", help="max_loras values to compare")
    args = ap.parse_args()
    path = HERE / "lora_llama8b.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["workload"]["num_requests"] = args.requests
    sc = parse_scenario(doc, path)
    dep = sc.deployments[0]
    model, hw = resolve(dep)
    one = adapter_bytes(model, LORA_MODULES, dep.lora.rank, "bf16")
    disk = one / (dep.lora.disk_bw_gb_s * GB) + dep.lora.disk_latency_s
    h2d = one / (hw.pcie_bw_gb_s * GB)
    plain = memory_plan(dep.model_copy(update={"lora": None}), model, hw, dep.tp)
    print(f"one rank-{dep.lora.rank} adapter on all 7 projections of {model.name}: {one / 1e6:.1f} MB; "
          f"cold from disk {disk * 1e3:.1f} ms, from the CPU cache {h2d * 1e3:.2f} ms "
          f"({hw.name} host link {hw.pcie_bw_gb_s:g} GB/s)")
    per_block = plain.kv_per_token * plain.block_size
    print(f"KV cache without adapters: {plain.num_blocks} blocks ({plain.kv_bytes / GB:.1f} GB); "
          f"each GPU slot costs {one / per_block:.0f} blocks")
    print(f"{'max_loras':>9} {'slots GB':>8} {'KV blocks':>9} {'loads':>6} {'hit':>5} {'wait mean':>9} "
          f"{'wait p99':>8} {'TTFT p90':>8} {'base TTFT p90':>13} {'tok/$':>8}")
    for k in [int(x) for x in args.slots.split(",")]:
        d = copy.deepcopy(doc)
        d["deployments"][0]["engine"]["max_loras"] = k
        d["deployments"][0]["engine"]["max_cpu_loras"] = max(k, 16)
        r = simulate(parse_scenario(d, path))
        s, lo, df = r.summary, r.summary["lora"]["llm"], r.requests
        base = df[df.adapter == ""].ttft_s.quantile(0.9)
        print(f"{k:>9} {lo['slot_gb_per_device']:>8.2f} {r.kv_blocks['llm/0']:>9} {lo['loads']:>6} "
              f"{lo['hit_rate']:>5.2f} {lo['adapter_wait_s']['mean']:>8.2f}s {lo['adapter_wait_s']['p99']:>7.2f}s "
              f"{s['ttft_s']['p90']:>7.2f}s {base:>12.2f}s {s['output_tokens_per_dollar']:>8.0f}")
        if k == int(args.slots.split(",")[0]):
            first = df
    # which requests wait: by the adapter's popularity rank (Zipf: lora0 is the hottest)
    df = first[first.adapter != ""].copy()
    df["rank"] = df.adapter.str[4:].astype(int)
    print(f"which requests wait (max_loras {args.slots.split(',')[0]}): adapter wait by popularity")
    for lo, hi in ((0, 1), (1, 4), (4, 16), (16, 64)):
        g = df[(df["rank"] >= lo) & (df["rank"] < hi)]
        print(f"  adapters {lo:>2}-{hi - 1:<2} {len(g) / len(df):>5.0%} of adapter requests: "
              f"wait mean {g.adapter_wait_s.mean():.2f} s, p90 {np.quantile(g.adapter_wait_s, 0.9):.2f} s")


if __name__ == "__main__":
    main()
