"""Scenario builders shared by the simulator tests (a uniquely named module, not conftest,
so test folders never clash on `import conftest`)."""
from __future__ import annotations

import copy

from simulator import Scenario

BASE = {
    "name": "t", "seed": 3, "surrogate": "roofline", "debug": True,
    "deployments": [{
        "name": "llm", "model": "Llama-3.1-8B", "hardware": "H100-SXM", "replicas": 1,
        "scheduler": {"policy": "chunked", "max_batch_size": 64, "max_tokens_per_step": 2048,
                      "chunk_size": 512}}],
    "workload": {"arrival": "poisson", "rate_rps": 15, "num_requests": 300,
                 "prompt_tokens": {"dist": "lognormal", "mean": 600, "max": 3000},
                 "output_tokens": {"dist": "lognormal", "mean": 150, "max": 1000}},
}


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make(dep: dict | None = None, **top) -> Scenario:
    """BASE with the first deployment updated by ``dep`` and top-level keys by ``top``."""
    doc = _merge(BASE, top)
    if dep:
        doc["deployments"] = [_merge(BASE["deployments"][0], dep)]
    return Scenario.model_validate(doc)
