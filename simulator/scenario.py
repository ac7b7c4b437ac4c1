"""Scenario file: deployments, workload, SLOs and the surrogate, validated at the edge.

``load_scenario(path)`` reads YAML and turns any validation failure into one
``InputError`` line naming the file and the dotted field path, e.g.
``chat.yaml: deployments.0.tp: must be >= 1``. Inside the simulator values are trusted.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from profiling.errors import InputError
from profiling.jsonfile import human_bytes, physical_memory
from profiling.yamlfile import read_yaml

from .engine.config import (POLICIES, ROUTERS, Deployment, LengthDist, OverheadConfig,  # noqa: F401
                            RouterConfig, SchedulerConfig, Workload, _Frozen)
from .pipelines.schema import KVCacheConfig, NetworkConfig, RequestClass, ServiceConfig, check_references

SLO_KEY = re.compile(r"^(ttft|tpot|itl|e2e|queue)_(mean|p50|p90|p95|p99)_s$")

# What the simulator holds in memory, roughly and on the safe side (peak RSS over 2e5 requests
# and 2e4 replicas, doubled for the result tables): a scenario must fit the machine it runs on.
BYTES_PER_REQUEST = 2_000
BYTES_PER_REPLICA = 16_000
BYTES_PER_STEP_ROW = 1_500   # step-cost rows precomputed per token of the step budget and per batch slot


class Scenario(_Frozen):
    """A whole simulation: what is deployed, what load it serves, what it must meet."""

    name: str = "scenario"
    seed: int = Field(default=0, ge=0)
    surrogate: str | None = "builtin"
    deployments: list[Deployment] = Field(min_length=1)
    workload: Workload = Workload()
    # multi-stage pipelines (simulator.pipelines.schema); none: every request is one LLM call
    services: list[ServiceConfig] = Field(default_factory=list)
    kv_cache: KVCacheConfig | None = None
    network: NetworkConfig | None = None
    pipelines: list[RequestClass] = Field(default_factory=list)
    slo: dict[str, float | None] = Field(default_factory=dict)
    debug: bool = Field(default=False, description="assert scheduler invariants every step")

    @field_validator("slo")
    @classmethod
    def _slo_keys(cls, v: dict[str, float | None]) -> dict[str, float | None]:
        for k, x in v.items():
            if not SLO_KEY.match(k):
                raise ValueError(f"unknown SLO '{k}' (use <ttft|tpot|itl|e2e|queue>_<mean|p50|p90|p95|p99>_s)")
            if x is not None and x <= 0:
                raise ValueError(f"SLO '{k}' must be > 0")
        return v

    @model_validator(mode="after")
    def _names(self) -> "Scenario":
        names = [d.name for d in self.deployments]
        if len(set(names)) != len(names):
            raise ValueError("deployment names must be unique")
        if self.pipelines:
            check_references(names, [s.name for s in self.services], list(self.pipelines), self.kv_cache)
        return self

    def memory_parts(self) -> list[tuple[str, int, int]]:
        """(field, value, bytes per unit of it) of what grows the simulator's memory."""
        parts = [("workload.num_requests", self.workload.num_requests, BYTES_PER_REQUEST)]
        for i, d in enumerate(self.deployments):
            s, at = d.scheduler, f"deployments.{i}"
            replica = BYTES_PER_REPLICA + 8 * s.block_size       # a counter per offset in a KV block
            if s.policy == "disaggregated":
                parts += [(f"{at}.scheduler.prefill_replicas", s.prefill_replicas, replica),
                          (f"{at}.scheduler.decode_replicas", s.decode_replicas, replica)]
            else:
                parts.append((f"{at}.replicas", d.replicas, replica))
            pools = 2 if s.policy == "disaggregated" else 1
            parts += [(f"{at}.scheduler.max_tokens_per_step", s.max_tokens_per_step, pools * BYTES_PER_STEP_ROW),
                      (f"{at}.scheduler.max_batch_size", s.max_batch_size, pools * BYTES_PER_STEP_ROW)]
        parts += [(f"services.{i}.servers", sv.servers, BYTES_PER_REPLICA) for i, sv in enumerate(self.services)]
        return parts

    @model_validator(mode="after")
    def _fits_memory(self) -> "Scenario":
        mem = physical_memory()
        parts = self.memory_parts()
        need = sum(v * b for _, v, b in parts)
        if mem is None or need <= mem:
            return self
        field, v, b = max(parts, key=lambda x: x[1] * x[2])
        most = max(0, (mem - (need - v * b)) // b)
        raise ValueError(f"{field}: {v:,} needs about {human_bytes(need)} of memory in all, more than this "
                         f"machine's {human_bytes(mem)} (at most about {most:,} fits here)")


def _one_line(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith("function-"))
    msg = err["msg"]
    msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
    msg = msg.replace("Input should be greater than or equal to", "must be >=")
    msg = msg.replace("Input should be greater than", "must be >").replace("Input should be less than", "must be <")
    msg = msg.replace("Extra inputs are not permitted", "unknown field")
    return f"{loc}: {msg}" if loc else msg


def parse_scenario(doc: Any, source: str | Path = "scenario") -> Scenario:
    """Validate a mapping (already read) into a Scenario; errors name the field."""
    if not isinstance(doc, dict):
        raise InputError("expected a mapping at the top level", file=source)
    try:
        return Scenario.model_validate(doc)
    except ValidationError as e:
        raise InputError(_one_line(e), file=source) from None


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario YAML; relative trace/model paths resolve against the file's folder."""
    p = Path(path)
    doc = read_yaml(p, "scenario file")
    if isinstance(doc, dict):
        doc = _resolve_paths(doc, p.parent)
    return parse_scenario(doc, p)


def _resolve_paths(doc: dict, base: Path) -> dict:
    doc = dict(doc)
    wl = doc.get("workload")
    if isinstance(wl, dict) and isinstance(wl.get("trace"), str):
        t = Path(wl["trace"])
        if not t.is_absolute() and (base / t).exists():
            doc["workload"] = {**wl, "trace": str((base / t).resolve())}
    deps = doc.get("deployments")
    if isinstance(deps, list):
        out = []
        for d in deps:
            if isinstance(d, dict) and isinstance(d.get("model"), str) and d["model"].endswith(".json"):
                m = Path(d["model"])
                if not m.is_absolute() and (base / m).exists():
                    d = {**d, "model": str((base / m).resolve())}
            out.append(d)
        doc["deployments"] = out
    return doc
