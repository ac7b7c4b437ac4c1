"""Scenario file: deployments, workload, SLOs and the surrogate, validated at the edge.

``load_scenario(path)`` reads YAML and turns any validation failure into one
``InputError`` line naming the file and the dotted field path, e.g.
``chat.yaml: deployments.0.tp: must be >= 1``. Inside the simulator values are trusted.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from profiling.errors import InputError
from profiling.yamlfile import read_yaml

from .pipeline_schema import KVCacheConfig, NetworkConfig, RequestClass, ServiceConfig, check_references

POLICIES = ("static", "continuous", "chunked", "mixed", "disaggregated")
ROUTERS = ("round_robin", "jsq", "least_tokens", "least_kv", "heavy_light")
SLO_KEY = re.compile(r"^(ttft|tpot|itl|e2e|queue)_(mean|p50|p90|p95|p99)_s$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SchedulerConfig(_Frozen):
    """Batching policy and its limits (one policy per class in ``simulator.schedulers``)."""

    policy: Literal["static", "continuous", "chunked", "mixed", "disaggregated"] = "chunked"
    max_batch_size: int = Field(default=256, ge=1)
    max_tokens_per_step: int = Field(default=8192, ge=1)
    chunk_size: int = Field(default=512, ge=1, description="largest prefill chunk of one request")
    block_size: int = Field(default=16, ge=1, description="tokens per paged KV block")
    preemption: Literal["recompute", "swap"] = "recompute"
    # on_demand (vLLM, SGLang): KV grows a block at a time and the newest decoders are
    # preempted when it runs out. full (TensorRT-LLM's default GUARANTEED_NO_EVICT): a
    # request starts only once KV for its prompt and all its output tokens is free, and
    # holds it, so nothing is ever preempted but fewer requests run at once.
    kv_reservation: Literal["on_demand", "full"] = "on_demand"
    # TensorRT-LLM batch waiting (batch_wait_timeout_iters / batch_wait_max_tokens_ratio,
    # "mixed" policy): while decodes run, new prompts are held back until they and the
    # decodes fill this share of the token budget or they have waited this many steps.
    batch_wait_iters: int = Field(default=0, ge=0)
    batch_wait_tokens_ratio: float = Field(default=0.0, ge=0, le=1)
    # disaggregated prefill/decode
    prefill_replicas: int = Field(default=1, ge=1)
    decode_replicas: int = Field(default=1, ge=1)
    decode_hardware: str | None = None
    decode_tp: int | None = Field(default=None, ge=1)
    mode: Literal["global", "local"] = "global"
    prefill_policy: Literal["chunked", "continuous"] = "chunked"


class RouterConfig(_Frozen):
    """How arrivals are spread over replicas; heavy_light splits by length at ``threshold``."""

    policy: Literal["round_robin", "jsq", "least_tokens", "least_kv", "heavy_light"] = "round_robin"
    by: Literal["prompt", "output", "total"] = "prompt"
    threshold: int = Field(default=2048, ge=1)
    heavy_fraction: float = Field(default=0.5, gt=0, lt=1, description="share of replicas for heavy requests")


class OverheadConfig(_Frozen):
    """Framework time on top of the kernels (s): per step fixed + per sequence + per token,
    and a per-request front-end latency (HTTP, tokenization) before the scheduler sees it."""

    step_s: float = Field(default=3.0e-3, ge=0)
    per_seq_s: float = Field(default=2.0e-5, ge=0)
    per_token_s: float = Field(default=5.0e-7, ge=0)
    request_s: float = Field(default=0.0, ge=0)
    # One front-end process streams every output token (detokenize, send) before it admits
    # the next request: new requests queue behind that work as the token rate nears 1/this.
    stream_token_s: float = Field(default=0.0, ge=0, description="front-end time per streamed token")
    # Isolated kernel timings (AIConfigurator-style microbenchmarks) vs the same kernels
    # replayed back-to-back in a CUDA graph with the engine's fusions: a per-stack factor.
    kernel_scale: float = Field(default=1.0, gt=0, description="multiplier on surrogate kernel time")


class Deployment(_Frozen):
    """A model on ``replicas`` x (tp x pp) devices with a scheduler and a KV memory."""

    name: str = "llm"
    model: str
    hardware: str
    replicas: int = Field(default=1, ge=1)
    tp: int = Field(default=1, ge=1)
    pp: int = Field(default=1, ge=1)
    dtype: str | None = None
    kv_dtype: str | None = None
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    reserve_gb: float = Field(default=1.0, ge=0, description="CUDA context, graphs, NCCL buffers per device")
    max_model_len: int | None = Field(default=None, ge=1)
    # Kernels the serving engine folds into a neighbour (profiling.operators.FUSIONS); the
    # operator tables time each kernel alone. TensorRT-LLM does all three; vLLM and SGLang
    # residual_into_norm.
    fusions: list[Literal["rope_into_attention", "residual_into_norm", "norm_into_allreduce"]] = []
    scheduler: SchedulerConfig = SchedulerConfig()
    router: RouterConfig = RouterConfig()
    overhead: OverheadConfig = OverheadConfig()

    @field_validator("router", mode="before")
    @classmethod
    def _router_shorthand(cls, v: Any) -> Any:
        return {"policy": v} if isinstance(v, str) else v


class LengthDist(_Frozen):
    """Token-length distribution; samples are rounded and clipped to [min, max]."""

    dist: Literal["fixed", "uniform", "lognormal", "normal"] = "fixed"
    mean: float = Field(default=512, gt=0)
    std: float | None = Field(default=None, ge=0, description="normal/lognormal spread (default mean/2)")
    min: int = Field(default=1, ge=1)
    max: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> "LengthDist":
        if self.max is not None and self.max < self.min:
            raise ValueError("max must be >= min")
        return self


class Workload(_Frozen):
    """Arrivals and lengths. A trace gives both (arrival=trace) or only lengths."""

    arrival: Literal["poisson", "gamma", "bursty", "closed_loop", "trace"] = "poisson"
    rate_rps: float = Field(default=10.0, gt=0)
    num_requests: int = Field(default=1000, ge=1)
    concurrency: int = Field(default=32, ge=1, description="closed_loop: requests in flight")
    think_time_s: float = Field(default=0.0, ge=0, description="closed_loop: pause before the next request")
    cv: float = Field(default=2.0, gt=0, description="gamma: coefficient of variation of gaps")
    burst_factor: float = Field(default=4.0, ge=1, description="bursty: rate multiplier while bursting")
    burst_fraction: float = Field(default=0.2, gt=0, lt=1, description="bursty: share of time bursting")
    burst_period_s: float = Field(default=60.0, gt=0)
    prompt_tokens: LengthDist = LengthDist(mean=512)
    output_tokens: LengthDist = LengthDist(mean=128)
    trace: str | None = None
    time_scale: float = Field(default=1.0, gt=0, description="trace: multiply recorded gaps")
    max_total_tokens: int | None = Field(default=None, ge=2,
                                         description="truncate prompts so prompt+output fits (as Vidur)")

    @model_validator(mode="after")
    def _trace_needed(self) -> "Workload":
        if self.arrival == "trace" and not self.trace:
            raise ValueError("arrival 'trace' needs a 'trace' file")
        return self


class Scenario(_Frozen):
    """A whole simulation: what is deployed, what load it serves, what it must meet."""

    name: str = "scenario"
    seed: int = 0
    surrogate: str | None = "builtin"
    deployments: list[Deployment] = Field(min_length=1)
    workload: Workload = Workload()
    # multi-stage pipelines (simulator.pipeline_schema); none: every request is one LLM call
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
