"""The engine's configuration: one deployment's scheduler, router, overheads, and the workload.

These are the parts of a scenario the serving engine reads; ``simulator.scenario`` composes
them with the pipeline schema into a whole scenario and validates files at the edge.
"""
from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .engines import check_args, load_profile, normalize_args, profile_for, resolve_for, version_entry

POLICIES = ("static", "continuous", "chunked", "mixed", "disaggregated")
ROUTERS = ("round_robin", "jsq", "least_tokens", "least_kv", "heavy_light")


def _numbers(annotation: Any) -> tuple[bool, bool]:
    """(a number is accepted, a boolean is accepted) by a field's annotation, looking through
    ``X | None`` and ``dict[str, X]``."""
    if annotation is bool:
        return False, True
    if annotation in (int, float):
        return True, False
    origin = get_origin(annotation)
    if origin is dict:
        return _numbers(get_args(annotation)[1])
    if origin in (Union, types.UnionType):
        parts = [_numbers(a) for a in get_args(annotation)]
        return any(n for n, _ in parts), any(b for _, b in parts)
    return False, False


class _Frozen(BaseModel):
    """A scenario section: unknown keys, NaN and infinities are errors, and so is a boolean
    where a number goes (pydantic would read ``replicas: true`` as 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        number, boolean = _numbers(cls.model_fields[info.field_name].annotation)
        if not number or boolean:
            return v
        values = v.values() if isinstance(v, dict) else (v,)
        if any(isinstance(x, bool) for x in values):
            raise ValueError("expected a number, not true/false")
        return v


class SchedulerConfig(_Frozen):
    """Batching policy and its limits (one policy per class in ``simulator.engine.schedulers``)."""

    policy: Literal["static", "continuous", "chunked", "prefill_first", "mixed", "disaggregated"] = "chunked"
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
    # The engine's automatic prefix cache (vLLM enable_prefix_caching, SGLang's radix cache,
    # TensorRT-LLM enable_block_reuse): requests that carry their prompt's segments (a
    # replayed run's ``prefix``) skip the prefill of the blocks it holds.
    prefix_caching: bool = False
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


class EngineConfig(_Frozen):
    """The serving engine a deployment runs: its name, release and its OWN arguments (vLLM's
    ``max_num_seqs``, SGLang's ``chunked_prefill_size``, TensorRT-LLM's ``max_num_tokens``, ...),
    in ``args`` or beside ``name``; every argument left out takes that release's documented
    default (``simulator.engine.engines``)."""

    name: Literal["vllm", "sglang", "trtllm"]
    version: str
    # vLLM V1 sizes its token budget by how it is used: a server or the offline LLM class
    usage_context: Literal["openai_api_server", "llm_class"] = "openai_api_server"
    # A fitted engine profile (JSON from `hermes-sim calibrate --runs`) whose parameters fill
    # the overhead fields the deployment leaves unset; unset = the shipped profile of this
    # engine when its version is in range, "none" = the plain OverheadConfig defaults.
    profile: str | None = None
    args: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _own_args(cls, v: Any) -> Any:
        """Keys other than the block's own are engine arguments ('--max-num-seqs' spelling too)."""
        if not isinstance(v, dict):
            return v
        own = {k: v[k] for k in ("name", "version", "usage_context", "profile", "args") if k in v}
        extra = {k: x for k, x in v.items() if k not in own}
        args = own.get("args", {})
        if extra and isinstance(args, dict):
            own["args"] = {**args, **extra}
        if isinstance(own.get("args"), dict):
            own["args"] = normalize_args(own["args"])
        return own

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, v: Any) -> Any:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            raise ValueError(f"write the version as quoted text (e.g. \"0.10.0\"), not the number {v}")
        return v

    @model_validator(mode="after")
    def _known(self) -> "EngineConfig":
        check_args(self.name, self.args)
        version_entry(self.name, self.version)
        if self.profile is not None and self.profile != "none":
            prof = load_profile(self.profile)
            prof.check(self.name, self.version)
            try:
                OverheadConfig.model_validate(prof.parameters)
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(x) for x in err["loc"])
                raise ValueError(f"engine profile {prof.path}: overhead.{where}: {err['msg']}") from None
        return self


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
    # KV blocks per replica as the engine sized them (vLLM num_gpu_blocks_override, or what a
    # replayed run's log recorded); None plans them from memory.
    kv_blocks: int | None = Field(default=None, ge=1, description="KV blocks per replica (else planned)")
    # Kernels the serving engine folds into a neighbour (profiling.operators.FUSIONS); the
    # operator tables time each kernel alone. TensorRT-LLM does all three; vLLM and SGLang
    # residual_into_norm.
    fusions: list[Literal["rope_into_attention", "residual_into_norm", "norm_into_allreduce"]] = []
    scheduler: SchedulerConfig = SchedulerConfig()
    router: RouterConfig = RouterConfig()
    overhead: OverheadConfig = OverheadConfig()
    # The serving engine: its release's defaults plus its arguments set scheduler, memory and
    # fusions (resolved before validation, so the rest of the simulator reads those as usual).
    engine: EngineConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _resolve_engine(cls, v: Any) -> Any:
        if isinstance(v, dict) and v.get("engine") is not None:
            return _apply_engine(v)
        return v

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

    @field_validator("mean")
    @classmethod
    def _whole_if_fixed(cls, v: float, info: ValidationInfo) -> float:
        if info.data.get("dist") == "fixed" and v != int(v):
            raise ValueError(f"a fixed length is a whole number of tokens, not {v}")
        return v


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


def _apply_engine(raw: dict) -> dict:
    """A deployment mapping with its ``engine`` block resolved into ``scheduler`` and the memory
    fields; an explicit scheduler or deployment value that differs from the engine's is refused."""
    eng = raw["engine"]
    if not isinstance(eng, EngineConfig):
        try:
            eng = EngineConfig.model_validate(eng)
        except ValidationError:
            return raw                              # the engine field reports it, at engine.<field>
    if not isinstance(raw.get("model"), str) or not isinstance(raw.get("hardware"), str):
        return raw                                  # the field errors speak for themselves
    tp, pp = raw.get("tp", 1), raw.get("pp", 1)
    if not isinstance(tp, int) or not isinstance(pp, int) or isinstance(tp, bool) or tp < 1 or pp < 1:
        return raw
    r = resolve_for(eng, raw["model"], raw["hardware"], tp, pp, raw.get("dtype"))
    sched = raw.get("scheduler")
    if isinstance(sched, SchedulerConfig):
        given = sched.model_dump(include=sched.model_fields_set)
    elif isinstance(sched, dict):
        given = dict(sched)
    elif sched is None:
        given = {}
    else:
        return raw                                  # not a mapping: SchedulerConfig says why
    for k, v in r.scheduler.items():
        if k in given and given[k] != v:
            raise ValueError(f"scheduler.{k} {given[k]!r} conflicts with engine {r.name} {r.version} "
                             f"({v!r}); set it as an engine argument, not in scheduler:")
    for k, v in r.deployment.items():
        if k in raw and raw[k] is not None and raw[k] != v:
            raise ValueError(f"{k} {raw[k]!r} conflicts with engine {r.name} {r.version} ({v!r}); "
                             "set it as an engine argument")
    out = {**raw, **r.deployment, "engine": eng, "scheduler": {**given, **r.scheduler}}
    prof = profile_for(eng)
    if prof is not None:
        # the profile fills the overhead fields the deployment leaves unset
        oh = raw.get("overhead")
        if isinstance(oh, OverheadConfig):
            mine = oh.model_dump(include=oh.model_fields_set)
        elif isinstance(oh, dict):
            mine = dict(oh)
        elif oh is None:
            mine = {}
        else:
            return out                              # not a mapping: OverheadConfig says why
        out["overhead"] = {**prof.parameters, **mine}
    return out
