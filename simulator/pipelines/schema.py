"""Scenario-file sections of multi-stage pipelines, validated by pydantic (errors name the field).

``services`` (CPU/GPU service deployments and their cost models), ``kv_cache`` (the tiers of
the KV memory hierarchy), ``network`` (link levels and where deployments sit) and
``pipelines`` (request classes: stages bound to deployments by name, mixed by weight).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..engine.config import _Frozen   # finite numbers, no booleans for numbers, no unknown keys


class Dist(_Frozen):
    """A count or length distribution (rounded, clipped to [min, max])."""

    dist: Literal["fixed", "uniform", "geometric", "lognormal"] = "fixed"
    mean: float = Field(default=1, gt=0)
    min: int = Field(default=1, ge=0)
    max: int | None = Field(default=None, ge=0)

    @field_validator("mean")
    @classmethod
    def _whole_if_fixed(cls, v: float, info: ValidationInfo) -> float:
        if info.data.get("dist") == "fixed" and v != int(v):
            raise ValueError(f"a fixed count is a whole number, not {v}")
        return v


class IndexConfig(_Frozen):
    kind: Literal["flat", "ivf", "ivfpq", "hnsw"] = "ivf"
    corpus: int = Field(default=1_000_000, ge=1)
    dim: int = Field(default=768, ge=1)
    k: int = Field(default=10, ge=1)
    nprobe: int = Field(default=16, ge=1)
    nlist: int | None = Field(default=None, ge=1)
    ef: int = Field(default=64, ge=1)
    m: int = Field(default=32, ge=1)


class CostConfig(_Frozen):
    """What a service runs: ``tokens`` (fixed + per token), ``fixed``, ``encoder`` (a model's
    forward through the surrogate/roofline; also cross-encoders and reward scorers) or
    ``vector_search`` (an ANN index, cost model calibrated on faiss)."""

    kind: Literal["tokens", "fixed", "encoder", "vector_search"] = "tokens"
    fixed_s: float = Field(default=1e-4, ge=0)
    per_token_s: float = Field(default=2e-7, ge=0)
    seconds: float = Field(default=1e-3, ge=0)
    model: str | None = None
    dtype: str | None = None
    index: IndexConfig = IndexConfig()

    @model_validator(mode="after")
    def _model_needed(self) -> "CostConfig":
        if self.kind == "encoder" and not self.model:
            raise ValueError("cost kind 'encoder' needs a 'model'")
        return self


class ServiceConfig(_Frozen):
    """A non-LLM deployment: ``servers`` workers on ``devices`` devices of ``hardware``."""

    name: str
    hardware: str
    devices: int = Field(default=1, ge=1)
    servers: int = Field(default=1, ge=1)
    max_batch: int = Field(default=1, ge=1)
    cost: CostConfig = CostConfig()


class TierConfig(_Frozen):
    """One KV tier; bandwidth/latency/scope default to the kind's calibrated values."""

    name: str
    kind: Literal["hbm", "dram", "cxl", "ssd", "remote"]
    capacity_gb: float = Field(gt=0)
    bw_gb_s: float | None = Field(default=None, gt=0)
    latency_us: float | None = Field(default=None, ge=0)
    scope: Literal["deployment", "node", "rack", "cluster"] | None = None


class KVCacheConfig(_Frozen):
    block_tokens: int = Field(default=256, ge=1, description="tokens per cached chunk (LMCache: 256)")
    tiers: list[TierConfig] = Field(min_length=1)


class LinkConfig(_Frozen):
    bw_gb_s: float = Field(gt=0)
    latency_us: float = Field(default=0.0, ge=0)


class NetworkConfig(_Frozen):
    """Link levels and the place (``rack/node/device``) of each deployment or service."""

    device: LinkConfig = LinkConfig(bw_gb_s=450, latency_us=2)
    node: LinkConfig = LinkConfig(bw_gb_s=50, latency_us=5)
    rack: LinkConfig = LinkConfig(bw_gb_s=400, latency_us=10)
    places: dict[str, str] = Field(default_factory=dict)


class RouteChoice(_Frozen):
    deployment: str
    weight: float = Field(default=1.0, ge=0)
    max_prompt: int | None = Field(default=None, ge=1, description="by prompt: tokens up to this go here")


class PrefixConfig(_Frozen):
    """Shared-prefix structure: system prompts and multi-turn sessions (see ``sessions``)."""

    system_prompts: int = Field(default=1, ge=0)
    system_tokens: int = Field(default=0, ge=0)
    zipf: float = Field(default=0.0, ge=0)
    turns: int = Field(default=1, ge=1)
    concurrent_sessions: int = Field(default=16, ge=1)


# Fields each stage kind needs (checked so a missing one is named in the error).
NEEDS = {"llm": (), "rag_embed": ("deployment",), "rag_retrieve": ("deployment",),
         "rag_rerank": ("deployment",), "preprocess": ("deployment",), "postprocess": ("deployment",),
         "kv_retrieve": (), "reasoning": ("reward",), "route": ("choices",)}


class StageConfig(_Frozen):
    """One stage; ``deployment`` names an LLM deployment or a service. An ``llm`` stage with
    no deployment uses the choice of the preceding ``route`` stage."""

    kind: Literal["preprocess", "postprocess", "rag_embed", "rag_retrieve", "rag_rerank",
                  "kv_retrieve", "llm", "reasoning", "route"]
    name: str | None = None
    deployment: str | None = None
    # rag
    query_tokens: int | None = Field(default=None, ge=1, description="embed: tokens (default: the prompt)")
    candidates: int = Field(default=20, ge=1, description="rerank: passages scored")
    passage_tokens: int = Field(default=256, ge=1)
    context_tokens: int = Field(default=0, ge=0, description="tokens added to the prompt after this stage")
    out_bytes: int = Field(default=4096, ge=0, description="payload sent to the next stage")
    # reasoning
    reward: str | None = None
    mode: Literal["sequential", "parallel"] = "sequential"
    steps: Dist = Dist(mean=3)
    step_tokens: Dist = Dist(mean=256)
    branches: int = Field(default=4, ge=1)
    # route
    by: Literal["weight", "prompt"] = "weight"
    choices: list[RouteChoice] = Field(default_factory=list)
    cost_s: float = Field(default=0.0, ge=0, description="route: fixed decision latency if no deployment")

    @model_validator(mode="after")
    def _needs(self) -> "StageConfig":
        for f in NEEDS[self.kind]:
            if not getattr(self, f):
                raise ValueError(f"stage kind '{self.kind}' needs '{f}'")
        return self


class RequestClass(_Frozen):
    """Requests of one kind: their stages in order, their share of arrivals, their prefixes."""

    name: str
    weight: float = Field(default=1.0, gt=0)
    stages: list[StageConfig] = Field(min_length=1)
    prefix: PrefixConfig | None = None


LLM_STAGES = ("llm", "reasoning", "kv_retrieve")


def check_references(deployments: list[str], services: list[str], classes: list[RequestClass],
                     kv: KVCacheConfig | None) -> None:
    """Every stage names a deployment of the right kind; raises ValueError naming the field."""
    if len(set(services)) != len(services) or set(services) & set(deployments):
        raise ValueError("services: names must be unique and differ from deployment names")
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise ValueError("pipelines: request class names must be unique")
    for i, c in enumerate(classes):
        routed = False
        for j, s in enumerate(c.stages):
            where = f"pipelines.{i}.stages.{j}"
            if s.kind == "route":
                routed = True
                if s.deployment and s.deployment not in services:
                    raise ValueError(f"{where}.deployment: '{s.deployment}' is not a service")
                for k, ch in enumerate(s.choices):
                    if ch.deployment not in deployments:
                        raise ValueError(f"{where}.choices.{k}.deployment: '{ch.deployment}' is not an LLM deployment")
            elif s.kind in LLM_STAGES:
                if s.deployment is None and s.kind != "kv_retrieve" and not routed:
                    raise ValueError(f"{where}.deployment: needed (no route stage before it)")
                if s.deployment is not None and s.deployment not in deployments:
                    raise ValueError(f"{where}.deployment: '{s.deployment}' is not an LLM deployment "
                                     f"(deployments: {', '.join(deployments)})")
                if s.kind == "reasoning" and s.reward not in deployments:
                    raise ValueError(f"{where}.reward: '{s.reward}' is not an LLM deployment")
                if s.kind == "kv_retrieve" and kv is None:
                    raise ValueError(f"{where}: kv_retrieve needs a 'kv_cache' section with tiers")
            elif s.deployment not in services:
                raise ValueError(f"{where}.deployment: '{s.deployment}' is not a service "
                                 f"(services: {', '.join(services) or 'none'})")
