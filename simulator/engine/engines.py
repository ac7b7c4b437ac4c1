"""Serving engines (vLLM, SGLang, TensorRT-LLM): a scenario's ``engine:`` block resolved into
the simulator's own knobs.

``resolve_engine`` takes the engine's name, version and its own arguments, fills every unset
argument with that release's documented default (``engine_defaults.yaml``: the token budget and
sequence cap vLLM V1 picks from the GPU's memory, SGLang's memory tiers, TensorRT-LLM's LLM API
defaults) and maps them onto the scheduler, the memory plan and the step-time effects:

* CUDA-graph batch padding: a decode-only step of ``b`` sequences replays the graph of the
  smallest capture size >= ``b`` (kernels priced at that batch); above the largest it runs eager;
* async scheduling: the host work of a step overlaps the previous step's kernels
  (``stepcost.StepCost``);
* the all-reduce kernel the engine runs per message size (``AllReduceRule``: custom kernels
  on NVLink or a PCIe pair with peer-to-peer, in or out of a CUDA graph, NCCL above 8 MiB
  or over PCIe), priced by the step table.

The engine facts the silicon replay uses (``BACKEND_*``) live here too.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from profiling.dtypes import dtype_bytes
from profiling.errors import HermesError
from profiling.hardware import CATALOG_ENV, HardwareSpec, load_catalog
from profiling.models import ModelSpec, resolve_model
from profiling.operators import activation_dtype

from .memory import GB, activation_bytes

ENGINES = ("vllm", "sglang", "trtllm")
DEFAULTS_FILE = Path(__file__).with_name("engine_defaults.yaml")
# Engine profiles shipped with the package (<engine>.json, written by simulator.fidelity.engine_fit).
PROFILES_DIR = Path(__file__).with_name("profiles")
PROFILE_FORMAT = "hermes-engine-profile/1"

# Serving stacks and the batching each uses by default.
BACKEND_POLICY = {"vllm": "chunked", "sglang": "continuous", "trtllm": "mixed"}
# TensorRT-LLM's default capacity scheduler (GUARANTEED_NO_EVICT) starts a request only
# when KV for its prompt and max_tokens is free; vLLM and SGLang grow KV on demand and
# preempt. The evidence is in benchmarks/README.md (silicon_fidelity.py).
BACKEND_KV_RESERVATION = {"trtllm": "full"}
# Kernels each stack fuses into a neighbour (profiling.operators.FUSIONS): TensorRT-LLM's
# isolated kernels alone are slower than its measured TPOT, so it fuses all three; vLLM and
# SGLang fuse the residual add too, but dropping that kernel did not help their rows, so
# they keep every kernel until a trace shows which is right (figures: benchmarks/README.md).
BACKEND_FUSIONS = {"trtllm": ["rope_into_attention", "residual_into_norm", "norm_into_allreduce"]}

# Argument names some releases accept that the shared known-arguments list
# (profiling/readers/runs/engine_args.yaml) lacks: vLLM 0.10's cuda_graph_sizes, V0's
# swap_space / preemption_mode, TensorRT-LLM's nested config keys as flat names.
EXTRA_ARGS = {
    "vllm": frozenset({"cuda_graph_sizes", "swap_space", "preemption_mode", "num_gpu_blocks_override"}),
    "sglang": frozenset(),
    "trtllm": frozenset({"free_gpu_memory_fraction", "enable_block_reuse", "tokens_per_block",
                         "capacity_scheduler_policy", "enable_padding"}),
}
# Each engine's own names of its two scheduler limits: (sequences, tokens per step).
LIMIT_ARGS = {"vllm": ("max_num_seqs", "max_num_batched_tokens"),
              "sglang": ("max_running_requests", "chunked_prefill_size"),
              "trtllm": ("max_batch_size", "max_num_tokens")}
# Scheduler fields an engine block decides (an explicit different value is a conflict).
ENGINE_SCHEDULER_FIELDS = ("policy", "max_batch_size", "max_tokens_per_step", "chunk_size", "block_size",
                           "kv_reservation", "preemption")


@lru_cache(maxsize=1)
def engine_defaults() -> dict[str, list[dict]]:
    """The defaults table (``engine_defaults.yaml``): engine -> version ranges."""
    return yaml.safe_load(DEFAULTS_FILE.read_text())


def known_args(engine: str) -> frozenset[str]:
    """Argument names ``engine`` accepts: the shared list plus ``EXTRA_ARGS``."""
    from profiling.readers.runs.common import known_engine_args
    return known_engine_args().get(engine, frozenset()) | EXTRA_ARGS.get(engine, frozenset())


def normalize_args(args: dict[str, Any]) -> dict[str, Any]:
    """Command-line spelling ('--max-num-seqs') to the engine's field name ('max_num_seqs')."""
    return {str(k).lstrip("-").replace("-", "_"): v for k, v in args.items()}


def check_args(engine: str, args: dict[str, Any]) -> None:
    """Refuse an argument name the engine does not have (a typo would silently change nothing),
    and one that says where the engine runs, which the deployment's own fields say."""
    known = known_args(engine)
    for name in args:
        if name not in known:
            raise ValueError(f"unknown {engine} engine argument '{name}'")
        if name in DEPLOYMENT_ARGS[engine]:
            raise ValueError(f"{engine} engine argument '{name}' is set by the deployment: write "
                             f"'{DEPLOYMENT_ARGS[engine][name]}' on the deployment instead")


# Engine arguments that place the engine (model, parallelism, dtypes): a scenario says these
# with the deployment's fields, and a replayed run's recorded ones become those fields.
DEPLOYMENT_ARGS: dict[str, dict[str, str]] = {
    "vllm": {"model": "model", "tensor_parallel_size": "tp", "pipeline_parallel_size": "pp",
             "data_parallel_size": "replicas (with ep for expert parallelism)",
             "enable_expert_parallel": "ep", "dtype": "dtype", "kv_cache_dtype": "kv_dtype"},
    "sglang": {"model_path": "model", "tp_size": "tp", "pp_size": "pp", "dp_size": "replicas", "ep_size": "ep",
               "dtype": "dtype", "kv_cache_dtype": "kv_dtype"},
    "trtllm": {"model": "model", "tensor_parallel_size": "tp", "pipeline_parallel_size": "pp",
               "moe_expert_parallel_size": "ep", "dtype": "dtype", "kv_cache_dtype": "kv_dtype"},
}


def parse_version(v: str) -> tuple[int, ...]:
    """'0.10.1rc2' -> (0, 10, 1): release numbers compared as integers."""
    parts = re.findall(r"\d+", str(v).split("+")[0])[:3]
    if not parts:
        raise ValueError(f"version '{v}' has no release number")
    return tuple(int(p) for p in parts) + (0,) * (3 - len(parts))


def version_entry(engine: str, version: str) -> dict:
    """The defaults range of ``engine`` that ``version`` falls in."""
    v = parse_version(version)
    entries = engine_defaults()[engine]
    for e in entries:
        lo = parse_version(e["since"])
        hi = parse_version(e["until"]) if e.get("until") else None
        if v >= lo and (hi is None or v < hi):
            return e
    first = min(entries, key=lambda e: parse_version(e["since"]))["since"]
    raise ValueError(f"{engine} version '{version}' predates the documented defaults (from {first})")


@lru_cache(maxsize=4)
def _catalog(extra_files: str):
    return load_catalog()


def device(name: str) -> HardwareSpec:
    """A catalog device (the same catalog, $HERMES_CATALOG included, the deployment uses)."""
    return _catalog(os.environ.get(CATALOG_ENV, "")).get(name)


def has_nvlink(hw: HardwareSpec) -> bool:
    """A device-to-device link faster than its PCIe slot (NVLink, NVSwitch, xGMI)."""
    return hw.intra_node_bw_gb_s > 1.5 * max(hw.pcie_bw_gb_s, 1.0)


def capture_sizes(spec: dict, max_num_seqs: int, max_tokens: int, *, explicit: list[int] | None = None,
                  max_size: int | None = None) -> tuple[int, ...]:
    """The batch sizes an engine captures CUDA graphs for (ascending), as its release builds them."""
    if explicit:
        return tuple(sorted({int(x) for x in explicit if int(x) >= 1}))
    pattern = spec.get("pattern", "none")
    if pattern == "none":
        return ()
    top = max_size
    if top is None:
        cap = spec.get("max")
        top = min(2 * max_num_seqs, 512) if cap == "seqs_x2_512" else int(cap or max_num_seqs)
    if pattern == "v0":
        # V0 pads max_num_seqs up to a captured size and captures up to there (at most 256)
        sizes = [1, 2, 4] + list(range(8, 257, 8))
        limit = next((s for s in sizes if s >= max_num_seqs), sizes[-1])
        return tuple(s for s in sizes if s <= min(limit, top))
    top = min(top, max_tokens) if pattern.startswith("v1") else top
    if pattern == "v1_flat":
        sizes = [1, 2, 4] + list(range(8, 513, 8))
    elif pattern == "v1_step8":
        sizes = [1, 2, 4] + list(range(8, top + 1, 8))
    elif pattern == "v1_step16":
        sizes = [1, 2, 4] + list(range(8, min(top + 1, 256), 8)) + list(range(256, top + 1, 16))
    elif pattern == "sglang_v04":
        sizes = [1, 2, 4] + list(range(8, 161, 8)) + list(range(168, top + 1, 8))
    elif pattern == "sglang_v05":
        sizes = [1, 2, 4, 8, 12] + list(range(16, 257, 8)) + list(range(272, 512, 16)) + list(range(512, top + 1, 32))
    elif pattern == "trtllm":
        sizes = (list(range(1, 32)) + [32, 64, 128]) if not spec.get("enable_padding") else \
            [1, 2, 4] + [8 * i for i in range(1, 17)]
        sizes += [2 ** i for i in range(8, max(8, (top - 1).bit_length()))]
        sizes = [s for s in sizes if s <= top]
        if not sizes or sizes[-1] != top:
            sizes.append(top)
    else:
        raise ValueError(f"unknown CUDA-graph pattern '{pattern}' in {DEFAULTS_FILE.name}")
    return tuple(sorted({s for s in sizes if s <= top}))


@dataclass(frozen=True)
class ResolvedEngine:
    """An engine block with every default filled in, and what it sets in the simulator."""

    name: str
    version: str
    source: str                                  # where the defaults were read
    args: dict[str, Any]                         # every engine argument used, explicit or default
    explicit: tuple[str, ...]                    # the arguments the scenario set itself
    scheduler: dict[str, Any]                    # SchedulerConfig fields the engine decides
    deployment: dict[str, Any]                   # Deployment fields (memory, context, fusions)
    cuda_graph_sizes: tuple[int, ...]            # () = eager (no graphs)
    pad_decode: bool                             # decode batches pad up to a captured size
    async_scheduling: bool
    all_reduce: str                              # custom | nccl | trtllm | none
    notes: tuple[str, ...] = field(default=())
    # the kernel each all-reduce message runs (None: no TP, or no traces of the engine's kernels)
    all_reduce_rule: AllReduceRule | None = None

    def summary(self) -> dict:
        """The resolved settings as the run's summary reports them."""
        return {"name": self.name, "version": self.version, "defaults_from": self.source,
                "args": dict(sorted(self.args.items())), "explicit": list(self.explicit),
                "scheduler": dict(self.scheduler), "deployment": dict(self.deployment),
                "cuda_graph_sizes": list(self.cuda_graph_sizes), "pad_decode_to_graph": self.pad_decode,
                "async_scheduling": self.async_scheduling, "all_reduce": self.all_reduce,
                **({"all_reduce_kernels": self.all_reduce_rule.describe()} if self.all_reduce_rule else {}),
                "notes": list(self.notes)}


def device_gib(hw: HardwareSpec) -> float:
    """Total memory in GiB, as the engines compare it (torch / nvidia-smi report GiB, MiB)."""
    return hw.mem_bytes / 2 ** 30


def _tier(tiers: list[dict], hw: HardwareSpec) -> dict:
    gib = device_gib(hw)
    name = f"{hw.name} {' '.join(hw.aliases)}".lower()
    for t in tiers:
        if gib + 1e-9 < t.get("min_mem_gib", 0):
            continue
        if any(x in name for x in t.get("exclude", ())):
            continue
        if "name_contains" in t and not any(x in name for x in t["name_contains"]):
            continue
        return t
    raise ValueError(f"no memory tier in {DEFAULTS_FILE.name} matches {hw.name}")


def _bool(args: dict, key: str, default: bool) -> bool:
    v = args.get(key)
    return default if v is None else bool(v)


def _vllm(e: dict, a: dict, ctx: str, model: ModelSpec, hw: HardwareSpec, tp: int, notes: list) -> tuple:
    max_len = int(a.get("max_model_len") or model.max_context)
    if e["core"] == "v0":
        chunked = a.get("enable_chunked_prefill")
        if chunked is None:
            chunked = e["enable_chunked_prefill"] is True or (
                e["enable_chunked_prefill"] == "long_context" and max_len > e["long_context_tokens"])
        seqs = int(a.get("max_num_seqs") or e["max_num_seqs"])
        tokens = a.get("max_num_batched_tokens") or (
            e["chunked_max_num_batched_tokens"] if chunked else max(max_len, e["unchunked_min_tokens"]))
    else:
        chunked = True                        # V1 always chunks prefills
        tier = _tier(e["batch_tiers"], hw)
        t_default, s_default = tier[ctx]
        tokens = a.get("max_num_batched_tokens") or t_default
        seqs = int(a.get("max_num_seqs") or s_default)
    tokens = int(tokens)
    policy = "chunked" if chunked else "continuous"
    sched = {"policy": policy, "max_batch_size": seqs, "max_tokens_per_step": tokens,
             # a V1 request's prefill chunk is bounded by the step budget only
             "chunk_size": tokens, "block_size": int(a.get("block_size") or e["block_size"])}
    if a.get("preemption_mode") in ("swap", "recompute"):
        sched["preemption"] = a["preemption_mode"]
    dep = {"gpu_memory_utilization": float(a.get("gpu_memory_utilization") or e["gpu_memory_utilization"])}
    if a.get("max_model_len"):
        dep["max_model_len"] = int(a["max_model_len"])
    eager = bool(a.get("enforce_eager"))
    cfg = a.get("compilation_config") if isinstance(a.get("compilation_config"), dict) else {}
    explicit = a.get("cudagraph_capture_sizes") or cfg.get("cudagraph_capture_sizes")
    top = a.get("max_cudagraph_capture_size") or cfg.get("max_cudagraph_capture_size")
    sizes_arg = a.get("cuda_graph_sizes")
    if isinstance(sizes_arg, (list, tuple)) and len(sizes_arg) == 1:
        top = int(sizes_arg[0])
    elif isinstance(sizes_arg, (list, tuple)) and sizes_arg:
        explicit = sizes_arg
    elif isinstance(sizes_arg, int):
        top = sizes_arg
    sizes = () if eager else capture_sizes(e["cuda_graph"], seqs, tokens, explicit=explicit,
                                          max_size=int(top) if top else None)
    asyn = _bool(a, "async_scheduling", e["async_scheduling"]) and e["core"] == "v1"
    prefix = _bool(a, "enable_prefix_caching", e["enable_prefix_caching"])
    sched["prefix_caching"] = prefix
    used = {"max_num_seqs": seqs, "max_num_batched_tokens": tokens, "enable_chunked_prefill": bool(chunked),
            "enable_prefix_caching": prefix, "block_size": sched["block_size"],
            "gpu_memory_utilization": dep["gpu_memory_utilization"], "max_model_len": max_len,
            "async_scheduling": asyn, "enforce_eager": eager,
            "max_cudagraph_capture_size": max(sizes) if sizes else 0,
            "disable_custom_all_reduce": bool(a.get("disable_custom_all_reduce"))}
    lora = _vllm_lora(a)
    if lora:                # the deployment's lora block takes its slots from these
        dep["lora"] = lora
        used.update(enable_lora=True, **{k: v for k, v in lora.items() if v is not None})
    if a.get("num_gpu_blocks_override"):
        dep["kv_blocks"] = int(a["num_gpu_blocks_override"])
        used["num_gpu_blocks_override"] = dep["kv_blocks"]
    if a.get("kv_offloading_size"):
        # GiB of host memory for the whole replica (vLLM: summed over the TP ranks)
        gib = float(a["kv_offloading_size"])
        backend = str(a.get("kv_offloading_backend") or "native")
        if backend not in ("native", "lmcache"):
            raise ValueError(f"vllm engine argument kv_offloading_backend: '{backend}' is not native or lmcache")
        used.update(kv_offloading_size=gib, kv_offloading_backend=backend)
        sched["host_kv_gb"] = gib * 2 ** 30 / 1e9
        notes.append(_HOST_KV_NOTE.format(f"kv_offloading_size: {gib:g} GiB"))
    if prefix:
        notes.append("enable_prefix_caching: hits from the requests' shared prompt prefixes (a replayed "
                     "run's prompts, or the pipelines' KV tiers)")
    spec = speculative_from_vllm(a.get("speculative_config"), a)
    if spec:                # the deployment's speculative block, its acceptance given by the scenario
        dep["speculative"] = spec
        used["speculative_config"] = dict(spec)
    return used, sched, dep, sizes, asyn, "v0 decode" if e["core"] == "v0" else e["cudagraph_mode"]


# vLLM's LoRAConfig defaults (vllm/config/lora.py): one GPU slot of rank 16; the CPU cache
# holds max_loras adapters unless max_cpu_loras says more.
VLLM_LORA_DEFAULTS = {"max_loras": 1, "max_lora_rank": 16, "max_cpu_loras": None}


def _vllm_lora(a: dict) -> dict | None:
    """The LoRA slots of vLLM's arguments (None without enable_lora), checked."""
    given = {k: a[k] for k in VLLM_LORA_DEFAULTS if a.get(k) is not None}
    if not _bool(a, "enable_lora", False):
        if given:
            raise ValueError(f"vllm engine argument {next(iter(given))} needs enable_lora: true")
        return None
    for k, v in given.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"vllm engine argument {k}: {v!r} must be a whole number >= 1")
    return {**VLLM_LORA_DEFAULTS, **given}


# SGLang's hicache_ratio default (python/sglang/srt/server_args.py): the host pool is twice the GPU's.
SGLANG_HICACHE_RATIO = 2.0
_HOST_KV_NOTE = ("{}: prompt blocks are also kept in host memory (LRU); a prefix the GPU evicted still "
                 "hits, copied back over each device's PCIe link while the request waits aside "
                 "(hits need requests that carry their prompt's content)")


def _sglang(e: dict, a: dict, model: ModelSpec, hw: HardwareSpec, tp: int, pp: int, notes: list) -> tuple:
    gib = device_gib(hw)
    if "mem_fraction_by_tp" in e:
        frac_default = next(f for t, f in e["mem_fraction_by_tp"] if tp >= t)
    else:
        tier = _tier(e["memory_tiers"], hw)
        a0, b0 = tier["reserved_gib"]
        frac_default = round((gib - (a0 + b0 * tp * pp)) / gib, 3)
    tier = _tier(e["memory_tiers"], hw)
    cg = tier["cuda_graph_max_bs"]
    cg_default = cg if isinstance(cg, int) else cg[0 if tp < 4 else 1]
    chunk = int(a["chunked_prefill_size"] if a.get("chunked_prefill_size") is not None
                else tier["chunked_prefill_size"])
    budget = int(a.get("max_prefill_tokens") or 16384)
    seqs = int(a.get("max_running_requests") or 2048)
    frac = float(a.get("mem_fraction_static") or frac_default)
    chunked = chunk > 0
    # Chunked prefill: a step's new tokens stop at chunked_prefill_size, a longer prompt goes
    # on in the next steps; -1 turns it off (whole prompts up to max_prefill_tokens a step).
    # Prefill and decode run in separate steps (prefill first) unless enable_mixed_chunk.
    mixed = chunked and bool(a.get("enable_mixed_chunk"))
    sched = {"policy": "chunked" if mixed else ("prefill_first" if chunked else "continuous"),
             "max_batch_size": seqs, "max_tokens_per_step": chunk if chunked else budget,
             "chunk_size": chunk if chunked else budget, "block_size": int(a.get("page_size") or e["page_size"])}
    dep = {"gpu_memory_utilization": min(frac, 1.0)}
    if a.get("context_length"):
        dep["max_model_len"] = int(a["context_length"])
    cg_max = int(a.get("cuda_graph_max_bs") or cg_default)
    eager = bool(a.get("disable_cuda_graph"))
    sizes = () if eager else capture_sizes(e["cuda_graph"], seqs, chunk, explicit=a.get("cuda_graph_bs"),
                                          max_size=cg_max)
    notes.append("mem_fraction_static (weights + KV pool) is used as the share of memory the plan "
                 "splits into weights, activations, reserve and KV")
    used = {"chunked_prefill_size": chunk, "max_prefill_tokens": budget, "max_running_requests": seqs,
            "mem_fraction_static": frac, "cuda_graph_max_bs": cg_max, "page_size": sched["block_size"],
            "disable_radix_cache": bool(a.get("disable_radix_cache", not e["radix_cache"])),
            "schedule_policy": a.get("schedule_policy") or e["schedule_policy"],
            "disable_cuda_graph": eager, "disable_custom_all_reduce": bool(a.get("disable_custom_all_reduce")),
            "disable_overlap_schedule": bool(a.get("disable_overlap_schedule", not e.get("overlap_schedule", False)))}
    sched["prefix_caching"] = not used["disable_radix_cache"]
    if a.get("max_total_tokens"):       # the KV pool's size in tokens, set instead of profiled
        used["max_total_tokens"] = int(a["max_total_tokens"])
        dep["kv_blocks"] = max(1, used["max_total_tokens"] // sched["block_size"])
    if _bool(a, "enable_hierarchical_cache", False):
        # HiCache's host pool per rank: hicache_size GB (1e9 B), or hicache_ratio x the GPU KV pool
        size = float(a.get("hicache_size") or 0)
        ratio = float(a["hicache_ratio"]) if a.get("hicache_ratio") is not None else SGLANG_HICACHE_RATIO
        used.update(enable_hierarchical_cache=True, hicache_size=size, hicache_ratio=ratio)
        if size > 0:
            sched["host_kv_gb"] = size * tp * pp
        else:
            sched["host_kv_ratio"] = ratio
        notes.append(_HOST_KV_NOTE.format(f"enable_hierarchical_cache: {size:g} GB per rank" if size > 0
                                          else f"enable_hierarchical_cache: {ratio:g} x the GPU KV pool"))
    # The overlap scheduler hides the host's scheduling behind the GPU's batch, as vLLM's async
    # scheduling does, and is modelled the same way.
    return used, sched, dep, sizes, not used["disable_overlap_schedule"], "decode"


def _trtllm(e: dict, a: dict, model: ModelSpec, hw: HardwareSpec, tp: int, pp: int, dtype: str | None,
            notes: list) -> tuple:
    kvc = a.get("kv_cache_config") if isinstance(a.get("kv_cache_config"), dict) else {}
    sch = a.get("scheduler_config") if isinstance(a.get("scheduler_config"), dict) else {}
    cgc = a.get("cuda_graph_config") if isinstance(a.get("cuda_graph_config"), dict) else None
    free = float(kvc.get("free_gpu_memory_fraction") or a.get("free_gpu_memory_fraction")
                 or a.get("kv_cache_free_gpu_memory_fraction") or e["free_gpu_memory_fraction"])
    seqs = int(a.get("max_batch_size") or e["max_batch_size"])
    tokens = int(a.get("max_num_tokens") or e["max_num_tokens"])
    block = int(kvc.get("tokens_per_block") or a.get("tokens_per_block") or e["tokens_per_block"])
    policy = str(sch.get("capacity_scheduler_policy") or a.get("capacity_scheduler_policy")
                 or e["capacity_scheduler_policy"]).upper()
    chunked = _bool(a, "enable_chunked_prefill", e["enable_chunked_prefill"])
    sched = {"policy": "mixed", "max_batch_size": seqs, "max_tokens_per_step": tokens,
             "chunk_size": tokens, "block_size": block,
             "kv_reservation": "full" if policy == "GUARANTEED_NO_EVICT" else "on_demand"}
    # free_gpu_memory_fraction is of the memory left after weights and activations; the
    # simulator's utilization is of the whole device: the same KV bytes either way.
    weights = model.weight_bytes(dtype or model.dtype) / (tp * pp)
    act = activation_bytes(model, tp, activation_dtype(model, dtype or model.dtype), tokens, seqs)
    reserve = 1.0 * GB
    left = max(hw.mem_bytes - weights - act - reserve, 0.0)
    util = min((weights + act + reserve + free * left) / hw.mem_bytes, 1.0)
    dep = {"gpu_memory_utilization": round(util, 6), "fusions": list(BACKEND_FUSIONS["trtllm"])}
    if a.get("max_seq_len"):
        dep["max_model_len"] = int(a["max_seq_len"])
    spec = dict(e["cuda_graph"])
    explicit, top = None, None
    if cgc is not None:
        explicit = cgc.get("batch_sizes")
        top = cgc.get("max_batch_size") or None
        if cgc.get("enable_padding") is not None:
            spec["enable_padding"] = bool(cgc["enable_padding"])
    if a.get("cuda_graph_batch_sizes"):
        explicit = a["cuda_graph_batch_sizes"]
    if a.get("cuda_graph_max_batch_size"):
        top = int(a["cuda_graph_max_batch_size"])
    if a.get("cuda_graph_padding_enabled") is not None or a.get("enable_padding") is not None:
        spec["enable_padding"] = bool(a.get("cuda_graph_padding_enabled", a.get("enable_padding")))
    off = a.get("use_cuda_graph") is False or ("cuda_graph_config" in a and a["cuda_graph_config"] is None)
    if spec.get("pattern") == "trtllm" and top is None:
        top = int(spec.get("max", 128))
    sizes = () if off else capture_sizes(spec, seqs, tokens, explicit=explicit, max_size=top)
    used = {"max_batch_size": seqs, "max_num_tokens": tokens, "free_gpu_memory_fraction": free,
            "tokens_per_block": block, "capacity_scheduler_policy": policy, "enable_chunked_prefill": chunked,
            "enable_block_reuse": _bool(kvc, "enable_block_reuse", _bool(a, "enable_block_reuse",
                                                                         e["enable_block_reuse"])),
            "cuda_graph_padding": bool(spec.get("enable_padding"))}
    sched["prefix_caching"] = used["enable_block_reuse"]
    host = kvc.get("host_cache_size")
    if host:
        # bytes of host memory per rank, holding the reusable blocks the GPU evicts
        used["host_cache_size"] = int(host)
        sched["host_kv_gb"] = int(host) * tp * pp / 1e9
        notes.append(_HOST_KV_NOTE.format(f"host_cache_size: {int(host) / 2 ** 30:g} GiB per rank"))
    notes.append("a decode batch without a captured graph of its exact size runs eager"
                 if not spec.get("enable_padding") else "decode batches pad up to a captured size")
    # The overlap scheduler is the PyTorch backend's (1.0 on): modelled as vLLM's async scheduling.
    overlap = False
    if e.get("overlap_scheduler"):
        used["disable_overlap_scheduler"] = _bool(a, "disable_overlap_scheduler", False)
        overlap = not used["disable_overlap_scheduler"]
    return used, sched, dep, sizes, overlap, "decode"


def _ar_table() -> dict:
    """The all-reduce section of ``engine_defaults.yaml`` (the custom all-reduce rule)."""
    return engine_defaults()["all_reduce"]


def _names(hw: HardwareSpec) -> str:
    return f"{hw.name} {' '.join(hw.aliases)}".lower()


def has_p2p(hw: HardwareSpec) -> bool:
    """Whether two of these devices reach each other's memory (NVLink, or PCIe peer-to-peer
    that the driver allows: not on GeForce cards)."""
    return has_nvlink(hw) or not any(x in _names(hw) for x in _ar_table()["no_p2p_name_contains"])


def all_reduce_impl(engine: str, hw: HardwareSpec, tp: int, disabled: bool) -> str:
    """The tensor-parallel all-reduce an engine runs on ``hw``: vLLM/SGLang's custom kernels
    need 2/4/6/8 GPUs that are all NVLink-connected, or two with peer-to-peer access over
    PCIe; otherwise (more than two PCIe-only GPUs, GeForce pairs, --disable-custom-all-reduce)
    NCCL. Which kernel a given message runs: ``all_reduce_rule``."""
    if tp <= 1:
        return "none"
    if engine == "trtllm":
        return "trtllm"
    if disabled or tp not in _ar_table()["world_sizes"]:
        return "nccl"
    if has_nvlink(hw) or (tp == 2 and has_p2p(hw)):
        return "custom"
    return "nccl"


# (stack, kernel) as the kernel traces name them (AIConfigurator comm tables).
AR_KERNELS = {"custom_graph": ("vllm", "vLLM_custom_graph"), "custom_eager": ("vllm", "vLLM_custom_eager"),
              "nccl": ("nccl", "NCCL"), "trtllm": ("trtllm", "TRTLLM")}


@dataclass(frozen=True)
class AllReduceRule:
    """The all-reduce kernel a TP group runs for a message of ``n`` bytes: custom below
    ``custom_max_bytes`` (CUDA-graph variant up to ``graph_max_bytes``, the message of the
    largest captured batch), NCCL above; ``impl`` nccl / trtllm: that one kernel throughout.
    Hashable: a step table is memoized on it."""

    impl: str                    # custom | nccl | trtllm
    custom_max_bytes: int = 0
    graph_max_bytes: int = 0

    def __call__(self, msg_bytes: float) -> tuple[str, str]:
        """(stack, kernel) of the traces for one all-reduce of ``msg_bytes``."""
        if self.impl != "custom":
            return AR_KERNELS[self.impl]
        if msg_bytes > self.custom_max_bytes:
            return AR_KERNELS["nccl"]
        return AR_KERNELS["custom_graph" if msg_bytes <= self.graph_max_bytes else "custom_eager"]

    @property
    def edges(self) -> tuple[int, ...]:
        """Message sizes (bytes) at which the kernel changes: the last size of each regime."""
        if self.impl != "custom":
            return ()
        return tuple(sorted({b for b in (self.graph_max_bytes, self.custom_max_bytes)
                             if 0 < b <= self.custom_max_bytes}))

    def describe(self) -> str:
        """One line: which kernel runs for which message sizes."""
        if self.impl != "custom":
            return f"{AR_KERNELS[self.impl][1]} for every message"
        parts = [f"{AR_KERNELS['custom_graph'][1]} up to {self.graph_max_bytes / 2 ** 20:g} MiB (CUDA graph)"
                 ] if self.graph_max_bytes else []
        if self.graph_max_bytes < self.custom_max_bytes:
            parts.append(f"{AR_KERNELS['custom_eager'][1]} up to {self.custom_max_bytes / 2 ** 20:g} MiB")
        return ", ".join(parts + [f"{AR_KERNELS['nccl'][1]} above"])


def custom_max_bytes(engine: str, version: str, hw: HardwareSpec, tp: int) -> int:
    """The custom all-reduce's size limit: 8 MiB, or less where vLLM (>= the symmetric-memory
    release) runs symmetric memory on an NVLink Hopper / Blackwell device."""
    t = _ar_table()
    limit = int(t["max_bytes"])
    symm = t["symm_mem"]
    if engine == "vllm" and has_nvlink(hw) and parse_version(version) >= parse_version(symm["vllm_since"]):
        for tier in symm["tiers"]:
            if any(x in _names(hw) for x in tier["name_contains"]):
                return min(limit, int(tier["max_bytes"].get(tp, limit)))
    return limit


def all_reduce_rule(engine: str, version: str, impl: str, hw: HardwareSpec, tp: int, model: ModelSpec,
                    dtype: str | None, graph_sizes: tuple[int, ...]) -> AllReduceRule | None:
    """The kernel choice of ``impl`` (``all_reduce_impl``) by message size, or None where the
    traces hold no kernel of this engine for the device (no TP, a non-NVIDIA device). The
    graph limit is the all-reduce message of the largest captured batch (token count)."""
    if impl == "none" or hw.vendor.lower() != "nvidia":
        return None
    if impl != "custom":
        return AllReduceRule(impl)
    per_token = model.hidden_size * dtype_bytes(activation_dtype(model, dtype or model.dtype))
    graph = int(max(graph_sizes) * per_token) if graph_sizes else 0
    limit = custom_max_bytes(engine, version, hw, tp)
    return AllReduceRule("custom", limit, min(graph, limit))


# vLLM's speculative_config "method" values and what they cost here.
VLLM_METHODS = {"ngram": "ngram", "[ngram]": "ngram", "eagle": "eagle", "eagle3": "eagle", "medusa": "eagle",
                "mlp_speculator": "eagle", "draft_model": "draft", "mtp": "mtp", "deepseek_mtp": "mtp",
                "ernie_mtp": "mtp", "qwen3_next_mtp": "mtp", "glm4_moe_mtp": "mtp", "mimo_mtp": "mtp"}


def speculative_from_vllm(value: Any, args: dict[str, Any]) -> dict[str, Any]:
    """The ``speculative`` fields vLLM's ``speculative_config`` (a mapping or its JSON text) and
    the older ``speculative_model`` / ``num_speculative_tokens`` /
    ``speculative_disable_by_batch_size`` arguments set; {} when none is given."""
    import json
    cfg = value
    if isinstance(cfg, str):
        try:
            cfg = json.loads(cfg)
        except json.JSONDecodeError:
            raise ValueError(f"speculative_config: not a JSON mapping: {value!r}") from None
    if not isinstance(cfg, (dict, type(None))):
        raise ValueError(f"speculative_config: expected a mapping, not {value!r}")
    cfg = dict(cfg or {})
    for old, new in (("speculative_model", "model"), ("num_speculative_tokens", "num_speculative_tokens"),
                     ("speculative_disable_by_batch_size", "disable_by_batch_size")):
        if args.get(old) is not None:
            cfg.setdefault(new, args[old])
    if not cfg:
        return {}
    method, model = cfg.get("method"), cfg.get("model")
    if method is None:      # vLLM infers it from the model name
        name = str(model or "").lower()
        method = "ngram" if name in ("[ngram]", "ngram") else "eagle" if "eagle" in name else \
            "mtp" if "mtp" in name else "draft_model"
    kind = VLLM_METHODS.get(str(method).lower())
    if kind is None:
        raise ValueError(f"speculative_config method '{method}' is not modelled "
                         f"(one of {', '.join(sorted(VLLM_METHODS))})")
    out: dict[str, Any] = {"method": kind}
    if kind == "draft":
        if not model:
            raise ValueError("speculative_config: method draft_model needs 'model'")
        out["draft_model"] = str(model)
    if cfg.get("num_speculative_tokens") is not None:
        out["num_speculative_tokens"] = cfg["num_speculative_tokens"]
    if cfg.get("disable_by_batch_size") is not None:
        out["disable_above_batch"] = cfg["disable_by_batch_size"]
    return out


def resolve_engine(name: str, version: str, args: dict[str, Any], *, model: ModelSpec, hw: HardwareSpec,
                   tp: int = 1, pp: int = 1, dtype: str | None = None,
                   usage_context: str = "openai_api_server") -> ResolvedEngine:
    """Defaults of ``name`` ``version`` + ``args`` on ``tp`` x ``pp`` ``hw`` serving ``model``.
    Raises ``ValueError`` (one line) on an unknown argument or version."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine '{name}' (one of {', '.join(ENGINES)})")
    args = normalize_args(args)
    check_args(name, args)
    e = version_entry(name, version)
    notes: list[str] = []
    if name == "vllm":
        used, sched, dep, sizes, asyn, mode = _vllm(e, args, usage_context, model, hw, tp, notes)
    elif name == "sglang":
        used, sched, dep, sizes, asyn, mode = _sglang(e, args, model, hw, tp, pp, notes)
    else:
        used, sched, dep, sizes, asyn, mode = _trtllm(e, args, model, hw, tp, pp, dtype, notes)
    sched.setdefault("kv_reservation", BACKEND_KV_RESERVATION.get(name, "on_demand"))
    dep.setdefault("fusions", list(BACKEND_FUSIONS.get(name, [])))
    pad = bool(sizes) and (name != "trtllm" or used.get("cuda_graph_padding", False))
    ar = all_reduce_impl(name, hw, tp, bool(used.get("disable_custom_all_reduce")))
    rule = all_reduce_rule(name, str(version), ar, hw, tp, model, dtype, tuple(sizes))
    notes.append(f"cudagraph mode: {mode}")
    return ResolvedEngine(name=name, version=str(version), source=e["source"], args=used,
                          explicit=tuple(sorted(args)), scheduler=sched, deployment=dep,
                          cuda_graph_sizes=tuple(sizes), pad_decode=pad, async_scheduling=asyn,
                          all_reduce=ar, notes=tuple(notes), all_reduce_rule=rule)


@lru_cache(maxsize=256)
def _resolve_cached(key: str, name: str, version: str, args_json: str, model: str, hardware: str, tp: int,
                    pp: int, dtype: str | None, usage_context: str) -> ResolvedEngine:
    import json
    try:
        spec, hw = resolve_model(model), device(hardware)
    except HermesError as err:
        raise ValueError(str(err)) from None
    return resolve_engine(name, version, json.loads(args_json), model=spec, hw=hw, tp=tp, pp=pp,
                          dtype=dtype, usage_context=usage_context)


def resolve_for(engine, model: str, hardware: str, tp: int = 1, pp: int = 1,
                dtype: str | None = None) -> ResolvedEngine:
    """``resolve_engine`` for a scenario's ``EngineConfig`` by model and device names (memoized:
    a search validates the same block many times)."""
    import json
    args_json = json.dumps(engine.args, sort_keys=True, default=str)
    return _resolve_cached(os.environ.get(CATALOG_ENV, ""), engine.name, engine.version, args_json, model,
                           hardware, tp, pp, dtype, engine.usage_context)


@dataclass(frozen=True)
class EngineProfile:
    """Fitted per-engine parameters (``OverheadConfig`` fields) for a range of releases."""

    path: str
    engine: str
    since: str
    until: str | None
    parameters: dict[str, float]

    def covers(self, version: str) -> bool:
        v = parse_version(version)
        return v >= parse_version(self.since) and (self.until is None or v < parse_version(self.until))

    def check(self, engine: str, version: str) -> None:
        """Refuse a profile of another engine or of releases that do not include ``version``."""
        if engine != self.engine:
            raise ValueError(f"engine profile {self.path} is for {self.engine}, not {engine}")
        if not self.covers(version):
            upto = f"before {self.until}" if self.until else "and later"
            raise ValueError(f"engine profile {self.path} covers {self.engine} {self.since} {upto}, "
                             f"not version {version}")


@lru_cache(maxsize=32)
def _read_profile(path: str, mtime: float) -> EngineProfile:
    import json

    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"engine profile {path}: not readable JSON ({type(e).__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != PROFILE_FORMAT:
        raise ValueError(f"engine profile {path}: format must be '{PROFILE_FORMAT}'")
    eng, ver, params = doc.get("engine"), doc.get("versions"), doc.get("overhead")
    if eng not in ENGINES:
        raise ValueError(f"engine profile {path}: engine must be one of {', '.join(ENGINES)}")
    if not isinstance(ver, dict) or not isinstance(ver.get("since"), str) or \
            not isinstance(ver.get("until"), (str, type(None))):
        raise ValueError(f"engine profile {path}: versions needs 'since' (text) and 'until' (text or null)")
    try:
        for v in (ver["since"], ver["until"]):
            if v is not None:
                parse_version(v)
    except ValueError as e:
        raise ValueError(f"engine profile {path}: versions: {e}") from None
    if not isinstance(params, dict):
        raise ValueError(f"engine profile {path}: overhead must map its fields to numbers")
    bad = [k for k, x in params.items()
           if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x)]
    if bad:
        raise ValueError(f"engine profile {path}: overhead.{bad[0]}: must be a finite number")
    return EngineProfile(path, eng, ver["since"], ver["until"], {k: float(x) for k, x in params.items()})


def load_profile(path: str | Path) -> EngineProfile:
    """An engine profile file (memoized per modification time); ``ValueError`` names the file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"engine profile {p}: file not found")
    return _read_profile(str(p.resolve()), p.stat().st_mtime)


def profile_for(eng) -> EngineProfile | None:
    """The profile an ``EngineConfig`` uses: the one it names, else the shipped one of its
    engine when that covers its version, else none (``profile: none`` asks for none)."""
    if eng.profile == "none":
        return None
    if eng.profile is not None:
        return load_profile(eng.profile)
    shipped = PROFILES_DIR / f"{eng.name}.json"
    if not shipped.is_file():
        return None
    prof = load_profile(shipped)
    return prof if prof.covers(eng.version) else None
