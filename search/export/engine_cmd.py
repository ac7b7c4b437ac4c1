"""Engine launch commands (vLLM, SGLang, TensorRT-LLM) for a scenario's LLM deployments.

A deployment becomes one ``Launch`` per role (``serve``, or ``prefill`` and ``decode`` when
disaggregated): the engine's own arguments in its own spelling, taken from the resolved
``engine:`` block, or mapped from the simulator's scheduler fields onto the engine the user
picked. Every flag is checked against the engine's known-argument list before anything is
written, and what an engine has no flag for is refused in one line.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from profiling.errors import HermesError
from profiling.hardware import HardwareSpec
from profiling.models import resolve_model
from profiling.operators import activation_dtype
from profiling.readers.runs.common import known_engine_args
from simulator.engine.config import Deployment
from simulator.engine.engines import LIMIT_ARGS, device, parse_version, resolve_for, version_entry
from simulator.engine.memory import GB, activation_bytes

ENGINES = ("vllm", "sglang", "trtllm")
# The release a scheduler-only deployment is exported for (--engine-version overrides).
DEFAULT_VERSION = {"vllm": "0.19.0", "sglang": "0.5.4", "trtllm": "1.0.0"}
IMAGE = {"vllm": "vllm/vllm-openai:v{v}", "sglang": "lmsysorg/sglang:v{v}",
         "trtllm": "nvcr.io/nvidia/tensorrt-llm/release:{v}"}
EXECUTABLE = {"vllm": ("vllm", "serve"), "sglang": ("python3", "-m", "sglang.launch_server"),
              "trtllm": ("trtllm-serve",)}
PORT = 8000
# vLLM booleans whose default is on: a False is written as --no-<flag> (argparse BooleanOptionalAction).
VLLM_NEGATABLE = frozenset({"enable_chunked_prefill", "enable_prefix_caching", "async_scheduling"})
# Arguments written for every engine block (the ones that set the simulated scheduler), besides
# those the scenario set itself; other resolved defaults are the release's own and stay unsaid.
CORE_ARGS = {"vllm": ("max_num_seqs", "max_num_batched_tokens", "enable_chunked_prefill",
                      "enable_prefix_caching", "block_size", "gpu_memory_utilization"),
             "sglang": ("max_running_requests", "chunked_prefill_size", "mem_fraction_static", "page_size",
                        "disable_radix_cache"),
             "trtllm": ("max_batch_size", "max_num_tokens")}
# TensorRT-LLM's flat names of nested LLM API settings (simulator.engine.engines.EXTRA_ARGS) -> section.
TRT_NESTED = {"free_gpu_memory_fraction": "kv_cache_config", "enable_block_reuse": "kv_cache_config",
              "tokens_per_block": "kv_cache_config", "capacity_scheduler_policy": "scheduler_config"}
# trtllm-serve's own command-line flags; every other TensorRT-LLM setting goes to the extra YAML.
TRT_CLI = ("tp_size", "pp_size", "max_batch_size", "max_num_tokens", "max_seq_len")
TORCH_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


@dataclass(frozen=True)
class Launch:
    """One engine process type of a deployment: ``replicas`` copies of one command."""

    deployment: str
    role: str                                  # serve | prefill | decode
    engine: str
    version: str
    model: str                                 # Hugging Face name
    hardware: str                              # catalog name
    product: str                               # nvidia.com/gpu.product label value
    replicas: int
    tp: int
    pp: int
    flags: tuple[tuple[str, Any], ...]         # (engine field name, value), without model/host/port
    extra_yaml: dict[str, Any] | None = None   # TensorRT-LLM extra LLM API options
    notes: tuple[str, ...] = field(default=())
    dp: int = 1                                # data-parallel ranks one command runs (expert parallelism)

    @property
    def name(self) -> str:
        return self.deployment if self.role == "serve" else f"{self.deployment}-{self.role}"

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def image_default(self) -> str:
        return IMAGE[self.engine].format(v=self.version)

    def args(self, *, port: int = PORT, extra_path: str | None = None, model: bool = True,
             host: bool = True, skip: tuple[str, ...] = ()) -> list[str]:
        """The command's arguments after the executable (model first, as each CLI expects)."""
        out: list[str] = []
        if model:
            out += ["--model-path", self.model] if self.engine == "sglang" else [self.model]
        if host:
            out += [flag(self.engine, "host"), "0.0.0.0", flag(self.engine, "port"), str(port)]
        rel = release_args(self.engine, self.version)
        for k, v in self.flags:
            if k not in skip:
                out += render(self.engine, k, v, rel.negatable if rel is not None else None)
        if self.extra_yaml and extra_path:
            out += [flag("trtllm", "extra_llm_api_options"), extra_path]
        return out

    def argv(self, **kw: Any) -> list[str]:
        return [*EXECUTABLE[self.engine], *self.args(**kw)]

    def shell(self, **kw: Any) -> str:
        return " ".join(shlex.quote(a) for a in self.argv(**kw))


def flag(engine: str, name: str) -> str:
    """The engine's command-line spelling of an argument (trtllm-serve keeps underscores)."""
    return "--" + (name if engine == "trtllm" else name.replace("_", "-"))


def render(engine: str, name: str, value: Any, negatable: frozenset[str] | None = None) -> list[str]:
    """One argument as command-line words: booleans as bare flags, mappings as compact JSON.
    ``negatable``: the names the target release takes as --no-NAME (None: all of VLLM_NEGATABLE)."""
    if isinstance(value, bool):
        if value:
            return [flag(engine, name)]
        # A release without --no-NAME had a plain switch, off unless given: False is saying nothing.
        can = VLLM_NEGATABLE if negatable is None else VLLM_NEGATABLE & negatable
        return [flag(engine, "no_" + name)] if engine == "vllm" and name in can else []
    if isinstance(value, dict):
        return [flag(engine, name), json.dumps(value, separators=(",", ":"), sort_keys=True)]
    if isinstance(value, (list, tuple)):
        return [flag(engine, name), *(str(x) for x in value)]
    return [flag(engine, name), str(value)]


@dataclass(frozen=True)
class ReleaseArgs:
    """The argument names of one kept engine release (``engine_args_releases.yaml``)."""

    engine: str
    release: str                               # the kept release whose list applies
    names: frozenset[str]
    negatable: frozenset[str]                  # booleans that also take --no-NAME


@lru_cache(maxsize=1)
def _releases_doc() -> dict[str, Any]:
    text = resources.files("profiling.readers.runs").joinpath("engine_args_releases.yaml").read_text()
    return yaml.safe_load(text)


def _in_spans(spans: str, release: str, order: list[str]) -> bool:
    """Whether ``release`` lies in a span list such as "0.6.0..0.9.2, 0.15.1.." (over ``order``)."""
    at = order.index(release)
    for span in spans.split(","):
        lo, sep, hi = span.strip().partition("..")
        first = order.index(lo)
        last = (order.index(hi) if hi else len(order) - 1) if sep else first
        if first <= at <= last:
            return True
    return False


@lru_cache(maxsize=64)
def release_args(engine: str, version: str) -> ReleaseArgs | None:
    """The argument list of the newest kept release of ``engine`` at or below ``version``; None when
    the engine has no per-release lists. A version older than every kept release is refused: no list
    says what it accepted."""
    doc = _releases_doc().get(engine)
    if doc is None:
        return None
    order = [str(r) for r in doc["releases"]]
    want = parse_version(version)
    below = [r for r in order if parse_version(r) <= want]
    if not below:
        raise HermesError(f"{engine} {version} is older than the oldest release whose argument list the "
                          f"project keeps ({order[0]}, profiling/readers/runs/engine_args_releases.yaml); "
                          f"export for {engine} {order[0]} or later")
    rel = max(below, key=lambda r: (parse_version(r), order.index(r)))
    pick = lambda d: frozenset(n for n, s in (d or {}).items() if _in_spans(str(s), rel, order))
    return ReleaseArgs(engine, rel, pick(doc["args"]), pick(doc.get("negatable")))


def check_flags(engine: str, words: list[str], where: str, extra_known: frozenset[str] = frozenset(),
                version: str | None = None) -> None:
    """Every ``--flag`` in ``words`` names an argument of ``version``'s own argument list (the union
    over releases when no version is given or the engine has no per-release lists)."""
    rel = release_args(engine, version) if version is not None else None
    if rel is None:
        known = known_engine_args()[engine] | extra_known
        negatable = known
    else:
        known, negatable = rel.names | extra_known, rel.negatable
    for w in words:
        if not w.startswith("--"):
            continue
        name = w[2:].replace("-", "_")
        if name in known or (name.startswith("no_") and name[3:] in negatable):
            continue
        if rel is None:
            raise HermesError(f"{where}: {engine} has no argument '{w}' (not in profiling/readers/runs/"
                              "engine_args.yaml); the export cannot express it")
        raise HermesError(f"{where}: {engine} {version} has no argument '{w}' (not in the argument list of "
                          f"{engine} {rel.release}, profiling/readers/runs/engine_args_releases.yaml); "
                          "the export cannot express it")


def hf_name(model: str) -> str:
    """The model's Hugging Face name: its first catalog alias with a '/', else the catalog name."""
    spec = resolve_model(model)
    return next((a for a in spec.aliases if "/" in a), spec.name)


def gpu_product(hw: HardwareSpec) -> str:
    """The value NVIDIA's GPU feature discovery puts in ``nvidia.com/gpu.product``: the device's
    nvidia-smi name (its catalog alias starting with 'NVIDIA ') with spaces as dashes."""
    smi = next((a for a in hw.aliases if a.startswith(("NVIDIA ", "Tesla "))), hw.name)
    return smi.replace(" ", "-")


def _nvidia(hw: HardwareSpec, where: str) -> None:
    if hw.kind != "gpu" or hw.vendor.lower() != "nvidia":
        raise HermesError(f"{where}: hardware {hw.name} is a {hw.vendor} {hw.kind}; the exported images "
                          "(vLLM, SGLang, TensorRT-LLM, Dynamo) are CUDA builds for NVIDIA GPUs only")


def launches(dep: Deployment, target_engine: str | None, version: str | None, where: str, *,
             pinned: bool = True) -> list[Launch]:
    """The launches of one LLM deployment on ``target_engine`` (None: the engine block's, else
    vLLM); unless ``pinned``, an engine block's own engine wins over ``target_engine``."""
    eng = dep.engine
    if eng is not None and target_engine is not None and target_engine != eng.name and pinned:
        raise HermesError(f"{where}: the deployment runs {eng.name} {eng.version} (its engine: block); "
                          f"--target {target_engine} cannot express it, use --target {eng.name}")
    name = eng.name if eng is not None else (target_engine or "vllm")
    ver = eng.version if eng is not None else (version or DEFAULT_VERSION[name])
    hw = device(dep.hardware)
    _nvidia(hw, where)
    s = dep.scheduler
    model = hf_name(dep.model)
    if s.policy == "disaggregated":
        if name == "trtllm":
            raise HermesError(f"{where}: disaggregated prefill/decode on trtllm needs trtllm-serve's "
                              "disaggregated orchestrator config, which this export does not write; "
                              "use --target vllm, sglang or dynamo")
        dhw = device(s.decode_hardware) if s.decode_hardware else hw
        _nvidia(dhw, where)
        out = []
        for role, h, reps, tp in (("prefill", hw, s.prefill_replicas, dep.tp),
                                  ("decode", dhw, s.decode_replicas, s.decode_tp or dep.tp)):
            flags, extra, notes = _settings(dep, name, h, tp, where, role)
            flags += _disagg_flags(name, role)
            out.append(Launch(dep.name, role, name, ver, model, h.name, gpu_product(h), reps, tp, dep.pp,
                              tuple(flags), extra, tuple(notes)))
        return out
    flags, extra, notes = _settings(dep, name, hw, dep.tp, where, "serve")
    dp = dep.ep // dep.tp if dep.ep > dep.tp else 1
    experts = _expert_flags(dep, name, dp, where)
    if name == "trtllm" and experts:
        extra = {**(extra or {}), **dict(experts)}      # an LLM API option, not a trtllm-serve flag
    else:
        flags += experts
    if name == "trtllm" and extra:
        flags, extra, notes = _without_extra_yaml(ver, flags, extra, notes, where)
    return [Launch(dep.name, "serve", name, ver, model, hw.name, gpu_product(hw), dep.replicas // dp, dep.tp, dep.pp,
                   tuple(flags), extra, tuple(notes), dp)]


# LLM API settings a trtllm-serve without --extra_llm_api_options leaves at its release's defaults
# (engine_defaults.yaml names), and the one it takes as its own flag.
TRT_DEFAULTED = {("kv_cache_config", "tokens_per_block"): "tokens_per_block",
                 ("kv_cache_config", "enable_block_reuse"): "enable_block_reuse",
                 ("scheduler_config", "capacity_scheduler_policy"): "capacity_scheduler_policy",
                 ("enable_chunked_prefill",): "enable_chunked_prefill"}
TRT_FREE_FLAG = ("kv_cache_config", "free_gpu_memory_fraction")


def _without_extra_yaml(version: str, flags: list, extra: dict, notes: list,
                        where: str) -> tuple[list, dict | None, list]:
    """For a TensorRT-LLM release whose trtllm-serve has no --extra_llm_api_options (0.18): the
    KV memory fraction as its --kv_cache_free_gpu_memory_fraction, settings equal to the release's
    defaults left unsaid, any other setting refused in one line naming it. Other releases as given."""
    try:
        rel = release_args("trtllm", version)
    except HermesError:              # older than every kept list: check_launch says so
        return flags, extra, notes
    if rel is None or "extra_llm_api_options" in rel.names:
        return flags, extra, notes
    defaults = version_entry("trtllm", version)
    out = list(flags)
    for k, v in extra.items():
        for path, value in ([((k, kk), vv) for kk, vv in v.items()] if isinstance(v, dict) else [((k,), v)]):
            if path == TRT_FREE_FLAG:
                out.append(("kv_cache_free_gpu_memory_fraction", value))
            elif path in TRT_DEFAULTED and defaults.get(TRT_DEFAULTED[path]) == value:
                continue
            else:
                said = ".".join(path)
                dflt = defaults.get(TRT_DEFAULTED.get(path, ""), None)
                raise HermesError(f"{where}: trtllm {version}'s trtllm-serve has no --extra_llm_api_options (argument "
                                  f"list of trtllm {rel.release}, profiling/readers/runs/engine_args_releases.yaml): "
                                  f"{said} {value}" + (f" (its default is {dflt})" if dflt is not None else "")
                                  + " cannot be expressed")
    note = (f"trtllm {version}: no --extra_llm_api_options; KV block size, block reuse, capacity policy and "
            "chunked prefill are the release's defaults, the KV memory fraction is a flag")
    return out, None, [*notes, note]


def _expert_flags(dep: Deployment, engine: str, dp: int, where: str) -> list[tuple[str, Any]]:
    """Expert parallelism: within the TP group (ep = tp), or over ``dp`` data-parallel ranks of
    one command (ep = tp x dp), which share their experts and so cannot be separate servers."""
    if dep.ep <= 1:
        return []
    if engine == "vllm":
        return [("enable_expert_parallel", True)] + ([("data_parallel_size", dp)] if dp > 1 else [])
    if engine == "sglang":
        return [("ep_size", dep.ep)] + ([("dp_size", dp), ("enable_dp_attention", True)] if dp > 1 else [])
    if dp > 1:
        raise HermesError(f"{where}: TensorRT-LLM spreads experts within its TP group only; ep {dep.ep} over "
                          f"{dp} replicas cannot be expressed (set tp = ep, or export for vllm or sglang)")
    return [("moe_expert_parallel_size", dep.ep)]


def _speculative_flags(dep: Deployment, engine: str, where: str) -> list[tuple[str, Any]]:
    """vLLM's ``speculative_config`` for the deployment's ``speculative:`` block. An EAGLE head is
    a checkpoint of its own that the block does not name, and the other engines' speculation
    arguments are not mapped: both are refused rather than exported without speculation."""
    s = dep.speculative
    if engine != "vllm":
        raise HermesError(f"{where}: speculative decoding is exported for vllm only (give --target vllm)")
    if s.method == "eagle":
        raise HermesError(f"{where}: an EAGLE head is a checkpoint of its own: name it in the engine block "
                          "(engine: {name: vllm, speculative_config: {method: eagle, model: HEAD, ...}})")
    cfg: dict[str, Any] = {"method": {"draft": "draft_model", "mtp": "mtp", "ngram": "ngram"}[s.method],
                           "num_speculative_tokens": s.num_speculative_tokens}
    if s.method == "draft":
        cfg["model"] = hf_name(s.draft_model)
    if s.disable_above_batch is not None:
        cfg["disable_by_batch_size"] = s.disable_above_batch
    return [("speculative_config", cfg)]


def _lora_flags(dep: Deployment, engine: str, where: str) -> list[tuple[str, Any]]:
    """vLLM's LoRA slot arguments for the deployment's ``lora:`` block (other engines count their
    slots differently and are refused rather than exported without adapters)."""
    if engine != "vllm":
        raise HermesError(f"{where}: LoRA adapters are exported for vllm only (give --target vllm)")
    lo = dep.lora
    out: list[tuple[str, Any]] = [("enable_lora", True), ("max_loras", lo.max_loras), ("max_lora_rank", lo.max_lora_rank)]
    if lo.max_cpu_loras is not None:
        out.append(("max_cpu_loras", lo.max_cpu_loras))
    return out


def _disagg_flags(engine: str, role: str) -> list[tuple[str, Any]]:
    if engine == "vllm":   # NIXL moves the KV; each side both sends and receives
        return [("kv_transfer_config", {"kv_connector": "NixlConnector", "kv_role": "kv_both"})]
    return [("disaggregation_mode", role)]


def _settings(dep: Deployment, engine: str, hw: HardwareSpec, tp: int, where: str,
              role: str) -> tuple[list[tuple[str, Any]], dict | None, list[str]]:
    """(flags, TensorRT-LLM extra YAML, notes) of one role of a deployment."""
    par = {"vllm": [("tensor_parallel_size", tp), ("pipeline_parallel_size", dep.pp)],
           "sglang": [("tp_size", tp), ("pp_size", dep.pp)],
           "trtllm": [("tp_size", tp), ("pp_size", dep.pp)]}[engine]
    common = _dtype_flags(dep, engine, where)
    if dep.engine is not None:
        flags, extra, notes = _from_engine(dep, hw, tp)
    else:
        flags, extra, notes = _from_scheduler(dep, engine, hw, tp, where, role)
    if dep.speculative is not None and not any(k == "speculative_config" for k, _ in flags):
        flags = flags + _speculative_flags(dep, engine, where)
    if dep.lora is not None and not any(k == "enable_lora" for k, _ in flags):
        flags = flags + _lora_flags(dep, engine, where)
        notes = notes + ["LoRA: the adapters themselves are named at launch (--lora-modules NAME=PATH) "
                         "or loaded at run time; the simulation knows their sizes, not their checkpoints"]
    if dep.autoscaling is not None:
        a = dep.autoscaling
        notes = notes + [f"autoscaling is not written as manifests: {dep.replicas} replicas are the starting fleet; "
                         f"the simulated policy scales {a.min_replicas}-{a.max_replicas} replicas on '{a.signal}' "
                         f"(up at {a.scale_up_at:g}, down at {a.scale_down_at:g}, every {a.interval_s:g} s, "
                         f"{a.lead_time_s:g} s lead time, {a.cooldown_s:g} s cooldown) for your autoscaler to follow"]
    if engine == "trtllm":
        cli = [(k, v) for k, v in par + flags + common if k in TRT_CLI]
        yaml_doc = _nest(list((extra or {}).items()) + [(k, v) for k, v in flags + common if k not in TRT_CLI])
        return cli, (yaml_doc or None), notes
    return par + flags + common, None, notes


def _nest(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """TensorRT-LLM settings by their flat names into the LLM API's nested sections (later wins)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in TRT_NESTED:
            out.setdefault(TRT_NESTED[k], {})[k] = v
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return dict(sorted(out.items()))


def _dtype_flags(dep: Deployment, engine: str, where: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if dep.max_model_len and dep.engine is None:
        out.append(({"vllm": "max_model_len", "sglang": "context_length", "trtllm": "max_seq_len"}[engine],
                    dep.max_model_len))
    dt = (dep.dtype or "").lower()
    if dt in TORCH_DTYPE:
        out.append(("dtype", TORCH_DTYPE[dt]))
    elif dt == "fp8" and engine != "trtllm":
        out.append(("quantization", "fp8"))
    elif dt:
        raise HermesError(f"{where}.dtype: {dep.dtype} on {engine} needs a checkpoint quantized to it; "
                          "set model to that checkpoint and dtype to bf16 for the export")
    kv = (dep.kv_dtype or "").lower()
    if kv == "fp8":
        out.append({"vllm": ("kv_cache_dtype", "fp8"), "sglang": ("kv_cache_dtype", "fp8_e4m3"),
                    "trtllm": ("kv_cache_config", {"dtype": "fp8"})}[engine])
    elif kv and kv not in TORCH_DTYPE:
        raise HermesError(f"{where}.kv_dtype: {dep.kv_dtype} has no {engine} KV-cache dtype in this export")
    return out


def _from_engine(dep: Deployment, hw: HardwareSpec, tp: int) -> tuple[list, dict | None, list[str]]:
    """The resolved engine block: the scheduler-setting arguments plus every one the scenario set."""
    eng = dep.engine
    r = resolve_for(eng, dep.model, hw.name, tp, dep.pp, dep.dtype)
    keys = list(CORE_ARGS[eng.name]) + [k for k in eng.args if k not in CORE_ARGS[eng.name]]
    flags = []
    for k in keys:
        v = r.args[k] if k in r.args else eng.args[k]
        if eng.name == "sglang" and k == "disable_radix_cache" and not v:
            continue
        flags.append((k, v))
    unsaid = {k: v for k, v in sorted(r.args.items()) if k not in keys}
    notes = [f"{eng.name} {eng.version} defaults from {r.source}; the release's own defaults the simulation "
             "also used, not written as flags: " + ", ".join(f"{k}={v}" for k, v in unsaid.items())]
    if eng.name == "trtllm":
        used = r.args
        extra = {"kv_cache_config": {"free_gpu_memory_fraction": used["free_gpu_memory_fraction"],
                                     "tokens_per_block": used["tokens_per_block"],
                                     "enable_block_reuse": used["enable_block_reuse"]},
                 "scheduler_config": {"capacity_scheduler_policy": used["capacity_scheduler_policy"]},
                 "enable_chunked_prefill": used["enable_chunked_prefill"]}
        return flags, extra, notes
    return flags, None, notes


def _from_scheduler(dep: Deployment, engine: str, hw: HardwareSpec, tp: int, where: str,
                    role: str) -> tuple[list, dict | None, list[str]]:
    """The simulator's scheduler fields in the engine's own arguments."""
    s = dep.scheduler
    policy = s.prefill_policy if s.policy == "disaggregated" and role == "prefill" else s.policy
    if policy == "disaggregated":
        policy = "chunked"             # a decode pool receives its prompts' KV: nothing to chunk, nothing to refuse
    at = f"{where}.scheduler.policy"
    if policy == "static":
        raise HermesError(f"{at}: static batching has no {engine} flag (every engine batches continuously)")
    if policy == "mixed" and engine != "trtllm":
        raise HermesError(f"{at}: mixed is TensorRT-LLM's batching (no {engine} flag); use --target trtllm")
    if policy == "prefill_first" and engine != "sglang":
        raise HermesError(f"{at}: prefill_first is SGLang's scheduling (no {engine} flag); use --target sglang")
    seqs, budget = LIMIT_ARGS[engine]
    notes: list[str] = []
    if engine == "vllm":
        flags = [(seqs, s.max_batch_size), (budget, s.max_tokens_per_step),
                 ("enable_chunked_prefill", policy == "chunked"), ("enable_prefix_caching", s.prefix_caching),
                 ("block_size", s.block_size), ("gpu_memory_utilization", dep.gpu_memory_utilization)]
        if policy == "chunked" and role != "decode" and s.chunk_size < s.max_tokens_per_step:
            flags.append(("long_prefill_token_threshold", s.chunk_size))   # one request's largest chunk
        if policy == "continuous" and not dep.max_model_len:
            # without chunking vLLM refuses a context longer than the step budget
            flags.append(("max_model_len", s.max_tokens_per_step))
            notes.append(f"max_model_len {s.max_tokens_per_step}: vLLM without chunked prefill needs the "
                         "whole prompt in one step's budget")
        return flags, None, notes
    if engine == "sglang":
        if policy == "continuous":
            flags = [(seqs, s.max_batch_size), (budget, -1), ("max_prefill_tokens", s.max_tokens_per_step)]
        else:
            flags = [(seqs, s.max_batch_size), (budget, s.chunk_size)]
            if policy == "chunked":
                flags.append(("enable_mixed_chunk", True))
            if s.chunk_size != s.max_tokens_per_step:
                notes.append(f"SGLang's step budget is chunked_prefill_size ({s.chunk_size}); the scenario's "
                             f"max_tokens_per_step {s.max_tokens_per_step} has no separate flag")
        flags += [("mem_fraction_static", dep.gpu_memory_utilization), ("page_size", s.block_size)]
        if not s.prefix_caching:
            flags.append(("disable_radix_cache", True))
        notes.append("mem_fraction_static is set to the scenario's gpu_memory_utilization (SGLang counts "
                     "weights + KV pool in it; the simulator splits the same share the same way)")
        return flags, None, notes
    free = _trt_free_fraction(dep, hw, tp, where)
    flags = [(seqs, s.max_batch_size), (budget, s.max_tokens_per_step)]
    extra: dict[str, Any] = {
        "kv_cache_config": {"free_gpu_memory_fraction": free, "tokens_per_block": s.block_size,
                            "enable_block_reuse": s.prefix_caching},
        "scheduler_config": {"capacity_scheduler_policy":
                             "GUARANTEED_NO_EVICT" if s.kv_reservation == "full" else "MAX_UTILIZATION"},
        "enable_chunked_prefill": policy == "chunked"}
    if s.batch_wait_iters:
        extra["batch_wait_timeout_iters"] = s.batch_wait_iters
    if s.batch_wait_tokens_ratio:
        extra["batch_wait_max_tokens_ratio"] = s.batch_wait_tokens_ratio
    return flags, extra, notes


def _trt_free_fraction(dep: Deployment, hw: HardwareSpec, tp: int, where: str) -> float:
    """TensorRT-LLM's free_gpu_memory_fraction (of what weights and activations leave) that gives
    the KV bytes the scenario's gpu_memory_utilization (of the whole device) gives: the inverse of
    ``simulator.engine.engines._trtllm``."""
    s = dep.scheduler
    model = resolve_model(dep.model)
    dtype = dep.dtype or model.dtype
    weights = model.weight_bytes(dtype) / (tp * dep.pp)
    act = activation_bytes(model, tp, activation_dtype(model, dtype), s.max_tokens_per_step, s.max_batch_size)
    fixed = weights + act + 1.0 * GB
    left = hw.mem_bytes - fixed
    free = (dep.gpu_memory_utilization * hw.mem_bytes - fixed) / left if left > 0 else 0.0
    if free <= 0:
        raise HermesError(f"{where}.gpu_memory_utilization: {dep.gpu_memory_utilization} leaves no KV cache "
                          f"after weights and activations on {hw.name}")
    return round(min(free, 1.0), 4)


def check_launch(launch: Launch, where: str) -> None:
    """Every flag of the command and every top-level key of the extra YAML is the engine's own."""
    try:
        release_args(launch.engine, launch.version)
    except HermesError as e:        # a release older than every kept list: say where it came from
        raise HermesError(f"{where}: {e}") from None
    check_flags(launch.engine, launch.args(extra_path="x"), where, version=launch.version)
    if launch.extra_yaml:
        check_flags("trtllm", [f"--{k}" for k in launch.extra_yaml], f"{where} (extra LLM API YAML)")


def script(launches_: list[Launch], devices_per_node: int, data_parallel: bool,
           extra_path: str | None) -> str:
    """A shell script: one command per replica (port 8000 + i, GPUs counted on from 0 per node), or
    one data-parallel command per role with ``data_parallel``."""
    lines = ["#!/bin/sh", "# Generated by hermes-sim export; one engine per line, run each on its node.",
             "set -e", ""]
    port, used = PORT, 0            # GPUs handed out so far, counted per node
    for ln in launches_:
        lines.append(f"# {ln.name}: {ln.engine} {ln.version}, {ln.replicas} x TP{ln.tp} PP{ln.pp} on {ln.hardware}")
        if data_parallel and ln.replicas > 1 and ln.dp == 1:
            if ln.replicas * ln.gpus > devices_per_node:
                raise HermesError(f"--data-parallel: {ln.name}'s {ln.replicas} replicas x {ln.gpus} GPUs do not "
                                  f"fit one {ln.hardware} node ({devices_per_node} GPUs); drop --data-parallel")
            dp = {"vllm": ("data_parallel_size", ln.replicas), "sglang": ("dp_size", ln.replicas)}[ln.engine]
            words = [*EXECUTABLE[ln.engine], *ln.args(port=port, extra_path=extra_path), *render(ln.engine, *dp)]
            lines += [" ".join(shlex.quote(w) for w in words), ""]
            port += 1
            continue
        for _ in range(ln.replicas):
            per_node = max(devices_per_node, ln.gpus)
            if used % per_node + ln.gpus > per_node:
                used += per_node - used % per_node     # does not fit in this node's rest: next node
            if used and used % per_node == 0:
                lines.append(f"# node {used // per_node}")
            first = used % per_node
            used += ln.gpus
            gpus = ",".join(str(first + g) for g in range(ln.gpus))
            lines.append(f"CUDA_VISIBLE_DEVICES={gpus} {ln.shell(port=port, extra_path=extra_path)} &")
            port += 1
        lines.append("")
    lines.append("wait")
    return "\n".join(lines) + "\n"
