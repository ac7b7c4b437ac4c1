"""Shared bits of the case-study benchmarks: run a scenario dict, pick summary figures."""
from __future__ import annotations

import copy
import os
import sys
from time import perf_counter

from simulator import parse_scenario, simulate

LLM8B_H100 = {"name": "llm", "model": "Llama-3.1-8B", "hardware": "H100-SXM", "dtype": "bf16",
              "scheduler": {"policy": "chunked", "max_batch_size": 128, "max_tokens_per_step": 4096,
                            "chunk_size": 512}}


# Operator-latency model of every case: the shipped bundle, or e.g. 'roofline' via the env.
SURROGATE = os.environ.get("HERMES_CASE_SURROGATE", "builtin")


def run(doc: dict, label: str = ""):
    """Simulate a scenario mapping; prints a progress line on stderr."""
    t0 = perf_counter()
    doc = {**copy.deepcopy(doc), "surrogate": SURROGATE}
    res = simulate(parse_scenario(doc, label or doc.get("name", "case")))
    print(f"  {label or doc.get('name')}: {res.summary['completed']} requests in {perf_counter() - t0:.1f} s",
          file=sys.stderr)
    return res


def stage_mean(res, stage: str) -> float:
    return res.summary.get("stages", {}).get(stage, {}).get("mean", 0.0)


def ms(x: float) -> str:
    return f"{x * 1e3:8.1f}"
