"""Cheap checks before a simulation: parallelism rules, user requirements, memory fit.

Each returns the reason a candidate is infeasible (one line) or ``None``. The reason is
stored on the trial so a user sees *why* a configuration was rejected.
"""
from __future__ import annotations

from typing import Any, Iterable

from profiling.errors import HermesError
from profiling.models import resolve_model

from .expr import Requirement, catalog
from .simapi import sim_api


def parallelism_reason(scenario: dict) -> str | None:
    """TP divides the attention heads; TP fits in one node; KV heads shard or replicate."""
    cat = catalog()
    for i, dep in enumerate(scenario.get("deployments") or []):
        if not isinstance(dep, dict) or "model" not in dep:
            continue
        tp, pp = int(dep.get("tp", 1) or 1), int(dep.get("pp", 1) or 1)
        name = dep.get("name", f"#{i}")
        try:
            model = resolve_model(str(dep["model"]))
            sched = dep.get("scheduler") if isinstance(dep.get("scheduler"), dict) else {}
            hws = [cat.get(str(h)) for h in (dep.get("hardware"), sched.get("decode_hardware"))
                   if h]
        except HermesError as e:
            return f"deployment '{name}': {e}"
        if model.num_heads % tp:
            return f"deployment '{name}': tp={tp} does not divide {model.num_heads} attention heads"
        if tp > model.num_kv_heads and tp % model.num_kv_heads:
            return (f"deployment '{name}': tp={tp} neither divides nor is a multiple of "
                    f"{model.num_kv_heads} KV heads")
        if pp > model.num_layers:
            return f"deployment '{name}': pp={pp} exceeds {model.num_layers} layers"
        for hw in hws:
            if tp > hw.devices_per_node:
                return (f"deployment '{name}': tp={tp} exceeds {hw.devices_per_node} "
                        f"{hw.name} devices per node")
    return None


def requirement_reason(scenario: dict, requirements: Iterable[Requirement]) -> str | None:
    for r in requirements:
        try:
            ok = r.holds(scenario)
        except (HermesError, ValueError, TypeError, ZeroDivisionError) as e:
            return f"require '{r.text}': {e}"
        if not ok:
            return f"require '{r.text}' does not hold"
    return None


def fit_reason(scenario_obj: Any) -> str | None:
    """The simulator's memory check; its message carries the memory arithmetic."""
    try:
        sim_api().check_fit(scenario_obj)
    except HermesError as e:
        return f"does not fit: {e}"
    return None
