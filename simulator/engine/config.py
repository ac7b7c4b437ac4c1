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
    # KV offload to host memory (vLLM kv_offloading_size, SGLang's hierarchical cache,
    # TensorRT-LLM host_cache_size): prompt blocks are also kept in host DRAM, so a block the
    # GPU evicted still hits, after a copy back over each device's PCIe link. Size in GB for the
    # whole replica, plus a multiple of the replica's GPU KV pool (SGLang's hicache_ratio).
    host_kv_gb: float = Field(default=0.0, ge=0, description="host memory holding offloaded KV blocks (GB)")
    host_kv_ratio: float = Field(default=0.0, ge=0, description="host KV tier as a multiple of the GPU KV pool")
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


class AutoscalingConfig(_Frozen):
    """Replicas that follow the load (simulator.engine.autoscale): every ``interval_s`` the
    signal is read; above ``scale_up_at`` ``step`` replicas are added (serving after
    ``lead_time_s``; for queue and in_flight as many as bring the signal under ``scale_up_at``),
    below ``scale_down_at`` one drains (no new requests, released once empty).
    Signals: queue = requests waiting for admission, in_flight = requests not finished (both per
    replica, counting starting ones), kv = mean KV use (0-1), ttft = recent p90 TTFT / ttft_target_s."""

    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(ge=1)
    signal: Literal["queue", "in_flight", "kv", "ttft"] = "in_flight"
    scale_up_at: float = Field(gt=0)
    scale_down_at: float = Field(ge=0)
    interval_s: float = Field(default=15.0, gt=0, description="how often the signal is read")
    lead_time_s: float = Field(default=120.0, ge=0, description="a new replica serves after this")
    cooldown_s: float = Field(default=120.0, ge=0, description="no scale-down sooner after a scaling")
    step: int = Field(default=1, ge=1, description="replicas added per scale-up (at least)")
    ttft_target_s: float | None = Field(default=None, gt=0, description="signal ttft: the TTFT it is read against")
    window_s: float | None = Field(default=None, gt=0, description="signal ttft: requests arrived in the last ... s (default max(interval_s, 60))")

    @model_validator(mode="after")
    def _consistent(self) -> "AutoscalingConfig":
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas {self.max_replicas} < min_replicas {self.min_replicas}")
        if self.scale_down_at >= self.scale_up_at:
            raise ValueError(f"scale_down_at {self.scale_down_at} must be below scale_up_at {self.scale_up_at}")
        if self.signal == "ttft" and self.ttft_target_s is None:
            raise ValueError("signal 'ttft' needs ttft_target_s")
        if self.signal == "kv" and self.scale_up_at > 1:
            raise ValueError(f"signal 'kv' is a fraction of the KV blocks: scale_up_at {self.scale_up_at} must be <= 1")
        return self


LORA_MODULES = ("q", "k", "v", "o", "gate", "up", "down")
LoraModule = Literal["q", "k", "v", "o", "gate", "up", "down"]


class LoraAdapter(_Frozen):
    """One adapter: its id, rank and the projections it adapts."""

    id: str
    rank: int = Field(default=16, ge=1)
    target_modules: list[LoraModule] = Field(default=list(LORA_MODULES), min_length=1)


class LoraPopularity(_Frozen):
    """Which adapter each request names (drawn from the scenario's seed): ``zipf`` (the i-th
    adapter with weight 1/i^exponent), ``uniform``, or explicit ``weights`` per adapter;
    ``base_share`` of requests name none (the base model)."""

    dist: Literal["zipf", "uniform", "weights"] = "zipf"
    exponent: float = Field(default=1.0, ge=0)
    weights: list[float] | None = None
    base_share: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _weights(self) -> "LoraPopularity":
        if (self.dist == "weights") != (self.weights is not None):
            raise ValueError("weights go with dist 'weights' (and dist 'weights' needs weights)")
        if self.weights is not None:
            bad = next((i for i, x in enumerate(self.weights) if x < 0), None)
            if bad is not None:
                raise ValueError(f"weights.{bad}: {self.weights[bad]} must be >= 0")
            if not any(x > 0 for x in self.weights):
                raise ValueError("weights: all zero, so no request names an adapter")
        return self


class LoraConfig(_Frozen):
    """LoRA adapters served on the base model (``simulator.engine.lora``): ``max_loras`` GPU slots
    (vLLM ``max_loras``, each reserving a ``max_lora_rank`` adapter's memory), an LRU CPU cache of
    ``max_cpu_loras`` (vLLM's default: ``max_loras``), the rest on disk or a remote store read at
    ``disk_bw_gb_s``. ``loading: blocking`` (vLLM) loads a cold adapter inside the step that first
    runs it; ``background`` (SGLang's overlap loading) loads it beside the steps while only its
    requests wait."""

    adapters: int | list[LoraAdapter]
    rank: int = Field(default=16, ge=1, description="rank of adapters given as a count")
    target_modules: list[LoraModule] = Field(default=list(LORA_MODULES), min_length=1,
                                             description="modules of adapters given as a count")
    max_loras: int = Field(default=1, ge=1)
    max_lora_rank: int = Field(default=16, ge=1)
    max_cpu_loras: int | None = Field(default=None, ge=1)
    # A local NVMe SSD's sequential read; a remote store: its bandwidth and latency here.
    disk_bw_gb_s: float = Field(default=2.0, gt=0, description="adapter reads from disk / remote, GB/s")
    disk_latency_s: float = Field(default=0.0, ge=0, description="per adapter read from disk / remote")
    loading: Literal["blocking", "background"] = "blocking"
    popularity: LoraPopularity = LoraPopularity()

    @field_validator("adapters")
    @classmethod
    def _some(cls, v: int | list) -> int | list:
        if isinstance(v, bool):
            raise ValueError("expected a count or a list of adapters, not true/false")
        if isinstance(v, int) and v < 1:
            raise ValueError(f"{v}: need at least one adapter")
        if isinstance(v, list):
            if not v:
                raise ValueError("empty list: need at least one adapter")
            ids = [a.id for a in v]
            dup = next((x for i, x in enumerate(ids) if x in ids[:i]), None)
            if dup is not None:
                raise ValueError(f"adapter id '{dup}' appears twice")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "LoraConfig":
        for a in self.adapter_list():
            if a.rank > self.max_lora_rank:
                raise ValueError(f"adapter '{a.id}' rank {a.rank} exceeds max_lora_rank {self.max_lora_rank}")
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(f"max_cpu_loras {self.max_cpu_loras} must be >= max_loras {self.max_loras}")
        w = self.popularity.weights
        if w is not None and len(w) != len(self.adapter_list()):
            raise ValueError(f"popularity.weights: {len(w)} weights for {len(self.adapter_list())} adapters")
        return self

    def adapter_list(self) -> list[LoraAdapter]:
        """The adapters, a count expanded to ids lora0, lora1, ... of ``rank`` and ``target_modules``."""
        if isinstance(self.adapters, int):
            return [LoraAdapter(id=f"lora{i}", rank=self.rank, target_modules=self.target_modules)
                    for i in range(self.adapters)]
        return list(self.adapters)

    @property
    def cpu_slots(self) -> int:
        return self.max_cpu_loras if self.max_cpu_loras is not None else self.max_loras


class AcceptanceDraw(_Frozen):
    """A per-request acceptance rate drawn once from a beta distribution of this ``mean`` and
    ``concentration`` (alpha + beta): requests differ in how predictable their text is."""

    dist: Literal["beta"] = "beta"
    mean: float = Field(gt=0, lt=1)
    concentration: float = Field(default=20.0, gt=0)


# a constant per-token acceptance rate, a per-position profile (k rates), or a per-request draw
Acceptance = Union[float, list[float], AcceptanceDraw]


class SpeculativeConfig(_Frozen):
    """Speculative decoding (simulator.engine.speculative): a proposer guesses
    ``num_speculative_tokens`` tokens per step and the model verifies them in one wider step.
    ``acceptance`` is the chance a proposed token is accepted given the ones before it were
    (per position, or per request class in ``by_class``); above ``disable_above_batch`` running
    sequences the engine turns speculation off (vLLM's speculative_disable_by_batch_size)."""

    method: Literal["draft", "eagle", "mtp", "ngram"] = "draft"
    draft_model: str | None = Field(default=None, description="method draft: a model of the catalog")
    num_speculative_tokens: int = Field(ge=1, le=64)
    acceptance: Acceptance
    by_class: dict[str, Acceptance] = {}
    disable_above_batch: int | None = Field(default=None, ge=1)

    @field_validator("acceptance", "by_class", mode="before")
    @classmethod
    def _rates(cls, v: Any, info: ValidationInfo) -> Any:
        """Rates outside [0, 1] said as such (a union's own error would name its first member)."""
        for a in (v.values() if info.field_name == "by_class" and isinstance(v, dict) else (v,)):
            if isinstance(a, dict):
                m = a.get("mean")
                if isinstance(m, (int, float)) and not isinstance(m, bool) and not 0 < m < 1:
                    raise ValueError(f"acceptance mean {m} is outside (0, 1)")
                continue
            for x in (a if isinstance(a, list) else [a]):
                if isinstance(x, bool):
                    raise ValueError("expected an acceptance rate, not true/false")
                if isinstance(x, (int, float)) and not 0 <= x <= 1:
                    raise ValueError(f"acceptance {x} is outside [0, 1]")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "SpeculativeConfig":
        _check_speculative(self)
        return self


def _check_speculative(cfg: SpeculativeConfig) -> None:
    """The checks a field type cannot express (raised as one-line ValueErrors)."""
    k = cfg.num_speculative_tokens
    if cfg.method == "draft":
        if not cfg.draft_model:
            raise ValueError("method 'draft' needs draft_model (a model of the catalog)")
        from profiling.errors import HermesError
        from profiling.models import resolve_model
        try:
            resolve_model(cfg.draft_model)
        except HermesError as e:
            raise ValueError(f"draft_model: {e}") from None
    elif cfg.draft_model:
        raise ValueError(f"draft_model is for method 'draft', not '{cfg.method}'")
    for where, a in [("acceptance", cfg.acceptance), *((f"by_class.{c}", x) for c, x in cfg.by_class.items())]:
        if isinstance(a, list) and len(a) != k:
            raise ValueError(f"{where}: a per-position profile needs num_speculative_tokens = {k} rates, "
                             f"not {len(a)}")


class Deployment(_Frozen):
    """A model on ``replicas`` x (tp x pp) devices with a scheduler and a KV memory."""

    name: str = "llm"
    model: str
    hardware: str
    replicas: int = Field(default=1, ge=1)
    tp: int = Field(default=1, ge=1)
    pp: int = Field(default=1, ge=1)
    # Expert parallelism (MoE models): experts spread over ep devices = tp x (ep / tp)
    # data-parallel replicas (vLLM enable_expert_parallel: EP = TP x DP); 1 = every replica
    # holds every expert, TP-sharded.
    ep: int = Field(default=1, ge=1)
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
    # LoRA adapters on this base model (simulator.engine.lora); None = the base model only
    lora: LoraConfig | None = None
    # None: a static fleet of ``replicas``; else replicas follow the load (billed per replica-second)
    autoscaling: AutoscalingConfig | None = None
    # speculative decoding (simulator.engine.speculative); None = one token per sequence per step
    speculative: SpeculativeConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _resolve_engine(cls, v: Any) -> Any:
        if isinstance(v, dict) and v.get("engine") is not None:
            return _apply_engine(v)
        return v

    @model_validator(mode="after")
    def _expert_groups(self) -> "Deployment":
        if self.ep > 1 and (self.ep % self.tp or self.replicas % (self.ep // self.tp)):
            raise ValueError(f"ep {self.ep} must be tp ({self.tp}) x a number of replicas that divides "
                             f"replicas ({self.replicas})")
        if self.ep > 1 and self.scheduler.policy == "disaggregated":
            raise ValueError("ep (expert parallelism) is not modelled for disaggregated prefill/decode pools")
        return self

    @field_validator("router", mode="before")
    @classmethod
    def _router_shorthand(cls, v: Any) -> Any:
        return {"policy": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _lora_fits(self) -> "Deployment":
        if self.lora is not None:
            if self.scheduler.policy == "disaggregated":
                raise ValueError("lora: not modelled for a disaggregated deployment")
            if self.scheduler.preemption == "swap":
                raise ValueError("lora: not modelled with preemption 'swap' (use 'recompute')")
            if getattr(self, "speculative", None) is not None:
                raise ValueError("lora: not modelled together with speculative decoding")
        return self

    @model_validator(mode="after")
    def _autoscaling_fits(self) -> "Deployment":
        a = self.autoscaling
        if a is not None:
            if self.scheduler.policy == "disaggregated":
                raise ValueError("autoscaling: not supported for a disaggregated deployment (scale its "
                                 "prefill_replicas / decode_replicas by search instead)")
            if not a.min_replicas <= self.replicas <= a.max_replicas:
                raise ValueError(f"replicas {self.replicas} (the starting fleet) must lie within autoscaling "
                                 f"min_replicas {a.min_replicas} .. max_replicas {a.max_replicas}")
        return self


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


class RatePoint(_Frozen):
    """One piece of a rate schedule: ``rate_rps`` until ``until_s`` (the last rate holds after)."""

    until_s: float = Field(gt=0)
    rate_rps: float = Field(ge=0)


class DailyProfile(_Frozen):
    """A day of load: ``multipliers`` of ``rate_rps``, each over an equal slice of the day (24
    = hourly), repeating; ``day_s`` compresses the day into fewer simulated seconds."""

    multipliers: list[float] = Field(min_length=1)
    day_s: float = Field(default=86400.0, gt=0, description="simulated seconds per day")
    start_hour: float = Field(default=0.0, ge=0, lt=24, description="hour of the day at time 0")

    @field_validator("multipliers")
    @classmethod
    def _nonnegative(cls, v: list[float]) -> list[float]:
        bad = next((i for i, x in enumerate(v) if x < 0), None)
        if bad is not None:
            raise ValueError(f"multipliers.{bad}: {v[bad]} must be >= 0")
        if not any(x > 0 for x in v):
            raise ValueError("multipliers: all zero, so no request ever arrives")
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
    # Time-varying open-loop load (simulator.engine.workload): Poisson arrivals whose rate
    # follows a piecewise schedule or a daily profile (times rate_rps); at most one of them.
    rate_schedule: list[RatePoint] | None = None
    daily_profile: DailyProfile | None = None
    duration_s: float | None = Field(default=None, gt=0, description="no arrivals after this (s)")
    trace_start_s: float = Field(default=0.0, ge=0, description="trace: skip arrivals recorded before this")

    @model_validator(mode="after")
    def _trace_needed(self) -> "Workload":
        if self.arrival == "trace" and not self.trace:
            raise ValueError("arrival 'trace' needs a 'trace' file")
        if self.rate_schedule is not None or self.daily_profile is not None:
            if self.rate_schedule is not None and self.daily_profile is not None:
                raise ValueError("give rate_schedule or daily_profile, not both")
            if self.arrival != "poisson":
                raise ValueError(f"a time-varying rate needs arrival 'poisson', not '{self.arrival}'")
        if self.rate_schedule is not None:
            if not self.rate_schedule:
                raise ValueError("rate_schedule: empty (give at least one {until_s, rate_rps})")
            ends = [p.until_s for p in self.rate_schedule]
            bad = next((i for i in range(1, len(ends)) if ends[i] <= ends[i - 1]), None)
            if bad is not None:
                raise ValueError(f"rate_schedule.{bad}.until_s {ends[bad]} must be after the previous "
                                 f"breakpoint {ends[bad - 1]} (breakpoints sorted, increasing)")
            if not any(p.rate_rps > 0 for p in self.rate_schedule):
                raise ValueError("rate_schedule: every rate_rps is 0, so no request ever arrives")
        if self.trace_start_s and self.arrival != "trace":
            raise ValueError("trace_start_s applies to arrival 'trace' only")
        return self


def _merge_lora(mine: Any, slots: dict | None, engine: str) -> Any:
    """The deployment's lora block with the engine's slot arguments (``enable_lora`` etc.) in it;
    a slot field the block sets differently, or one side without the other, is refused."""
    if slots is None:
        raise ValueError(f"lora: engine {engine} serves adapters only with the engine argument enable_lora: true")
    if mine is None:
        raise ValueError(f"engine {engine} enable_lora: give the deployment a lora: block naming its adapters")
    if isinstance(mine, LoraConfig):
        mine = mine.model_dump(include=mine.model_fields_set)
    if not isinstance(mine, dict):
        return mine                                 # not a mapping: LoraConfig says why
    for k, v in slots.items():
        if k in mine and mine[k] != v:
            raise ValueError(f"lora.{k} {mine[k]!r} conflicts with engine {engine} ({v!r}); "
                             "set it as an engine argument")
    return {**mine, **slots}


def _merge_speculative(raw: Any, engine_fields: dict[str, Any], engine_name: str) -> Any:
    """The deployment's ``speculative`` block with the engine's speculative arguments filled in;
    a field set both ways to different values is refused, and so is an engine that speculates
    with no acceptance rate given (acceptance is a property of the text, not an engine argument)."""
    if not engine_fields:
        return raw
    if raw is None:
        raise ValueError(f"engine {engine_name} speculative_config: add a 'speculative:' block with the "
                         "acceptance rate (acceptance is not an engine argument)")
    given = raw.model_dump(include=raw.model_fields_set) if hasattr(raw, "model_dump") else raw
    if not isinstance(given, dict):
        return raw                          # not a mapping: SpeculativeConfig says why
    for k, v in engine_fields.items():
        if k in given and given[k] != v:
            raise ValueError(f"speculative.{k} {given[k]!r} conflicts with engine {engine_name} "
                             f"speculative_config ({v!r})")
    return {**engine_fields, **given}


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
    fields = dict(r.deployment)
    spec = fields.pop("speculative", None)          # merged field by field with the scenario's block
    lora = fields.pop("lora", None)                 # the engine's LoRA slots, merged likewise
    for k, v in fields.items():
        if k in raw and raw[k] is not None and raw[k] != v:
            raise ValueError(f"{k} {raw[k]!r} conflicts with engine {r.name} {r.version} ({v!r}); "
                             "set it as an engine argument")
    out = {**raw, **fields, "engine": eng, "scheduler": {**given, **r.scheduler}}
    if spec:
        out["speculative"] = _merge_speculative(raw.get("speculative"), spec, f"{r.name} {r.version}")
    if lora or (eng.name == "vllm" and raw.get("lora") is not None):
        out["lora"] = _merge_lora(raw.get("lora"), lora, f"{r.name} {r.version}")
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
