"""Operator taxonomy: generic kinds whose cost depends only on shape, so a latency model
trained on one model transfers to any other.

``op_cost`` gives FLOPs and bytes moved for a kind from its shape columns (scalars or
numpy arrays alike); ``expand_step`` turns one forward step of a model into operators.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

import numpy as np

from .dtypes import dtype_bytes, is_quantized, normalize_dtype
from .errors import HermesError
from .models import ModelSpec

GEMM, ATTN_PREFILL, ATTN_DECODE = "gemm", "attn_prefill", "attn_decode"
ELEMENTWISE, COLLECTIVE = "elementwise", "collective"
VECTOR_SEARCH, EMBEDDING, STEP_OVERHEAD = "vector_search", "embedding", "step_overhead"
# Whole-step / whole-request measurements (Splitwise perf model, vLLM step tables).
STEP_PREFILL, STEP_DECODE = "step_prefill", "step_decode"

# Shape columns each kind must have; the canonical trace table's validator uses this.
REQUIRED_SHAPE: dict[str, tuple[str, ...]] = {
    GEMM: ("m", "n", "k"),
    ATTN_PREFILL: ("batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim"),
    ATTN_DECODE: ("batch", "kv_len", "heads", "kv_heads", "head_dim"),
    ELEMENTWISE: ("elements", "io_bytes"),
    COLLECTIVE: ("collective", "msg_bytes", "world"),
    VECTOR_SEARCH: ("batch", "corpus", "dim", "topk", "index"),
    EMBEDDING: ("batch", "q_len", "params"),
    STEP_OVERHEAD: ("batch",),
    STEP_PREFILL: ("model", "tp", "batch", "q_len"),
    STEP_DECODE: ("model", "tp", "batch", "kv_len"),
}
OP_KINDS: tuple[str, ...] = tuple(REQUIRED_SHAPE)
GPU_KINDS = (GEMM, ATTN_PREFILL, ATTN_DECODE, ELEMENTWISE, COLLECTIVE)
CPU_KINDS = (VECTOR_SEARCH, EMBEDDING, STEP_OVERHEAD)
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "alltoall", "send_recv")

# Bytes each rank puts on the wire per message byte (ring algorithms).
def _wire_factor(kind, world):
    w = np.asarray(world, dtype=float)
    frac = np.where(w > 1, (w - 1) / np.maximum(w, 1), 0.0)
    kind = np.asarray(kind)
    return np.select(
        [kind == "all_reduce", kind == "send_recv"], [2 * frac, np.ones_like(frac)], frac)


def op_cost(kind: str, s: Mapping[str, object], dtype: str = "bf16",
            kv_dtype: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(FLOPs, bytes moved) of operators of one ``kind``; ``s`` maps shape columns to values.

    Bytes are HBM traffic for compute kinds and per-rank wire bytes for collectives.
    """
    b = dtype_bytes(dtype)
    kvb = dtype_bytes(kv_dtype) if kv_dtype else b
    f = lambda c: np.asarray(s[c], dtype=float)  # noqa: E731
    if kind == GEMM:
        m, n, k = f("m"), f("n"), f("k")
        # Activations and weights in dtype; output accumulates to 16-bit.
        return 2 * m * n * k, (m * k + k * n) * b + m * n * max(b, 2.0)
    if kind == ATTN_PREFILL:
        bs, q, kv, h, hk, d = (f(c) for c in REQUIRED_SHAPE[ATTN_PREFILL])
        # Causal: query i sees the (kv - q + i + 1) keys before it.
        pairs = q * (kv - q) + q * (q + 1) / 2
        flops = 4 * bs * h * d * pairs
        mem = bs * (2 * q * h * d * b + 2 * kv * hk * d * kvb)
        return flops, mem
    if kind == ATTN_DECODE:
        bs, kv, h, hk, d = (f(c) for c in REQUIRED_SHAPE[ATTN_DECODE])
        return 4 * bs * h * d * kv, bs * (2 * kv * hk * d * kvb + 2 * h * d * b)
    if kind == ELEMENTWISE:
        return f("elements"), f("io_bytes")
    if kind == COLLECTIVE:
        mb = f("msg_bytes")
        return np.zeros_like(mb), mb * _wire_factor(s["collective"], s["world"])
    if kind == VECTOR_SEARCH:
        bs, n, d = f("batch"), f("corpus"), f("dim")
        index = np.asarray(s["index"])
        nprobe = f("nprobe") if "nprobe" in s else np.full_like(n, 16.0)
        nlist = np.maximum(np.sqrt(n) * 4, 1)
        visited = np.select(
            [index == "flat", index == "hnsw"],
            [n, nprobe * np.log2(np.maximum(n, 2)) * 16],  # HNSW: ef x depth x M neighbours
            np.minimum(n, n * nprobe / nlist))
        code = np.where((index == "ivfpq") | (index == "ivf_pq"), d / 8, d * 4.0)
        return 2 * bs * visited * d, bs * visited * code
    if kind == EMBEDDING:
        p = f("params")
        return 2 * p * f("batch") * f("q_len"), p * b
    if kind in (STEP_OVERHEAD, STEP_PREFILL, STEP_DECODE):
        z = np.zeros_like(f("batch"))
        return z, z  # no closed form; roofline for whole steps comes from expand_step
    raise HermesError(f"unknown operator kind '{kind}' (known: {', '.join(OP_KINDS)})")


@dataclass(frozen=True)
class Operator:
    """One operator instance; ``count`` is how many times it runs in the step."""

    kind: str
    name: str
    shape: dict = field(compare=True)
    dtype: str = "bf16"
    kv_dtype: str | None = None
    count: int = 1
    groups: int = 1          # a grouped GEMM over this many experts (MoE), priced as one wide GEMM

    @property
    def cost(self) -> tuple[float, float]:
        fl, by = op_cost(self.kind, self.shape, self.dtype, self.kv_dtype)
        return float(fl) * self.count, float(by) * self.count

    @property
    def flops(self) -> float:
        return self.cost[0]

    @property
    def bytes(self) -> float:
        return self.cost[1]


@dataclass(frozen=True)
class BatchShape:
    """What one step computes: prefill chunks as (new tokens, context after the chunk)
    and the KV length of every decoding sequence."""

    prefill: tuple[tuple[int, int], ...] = ()
    decode_kv: tuple[int, ...] = ()

    @property
    def tokens(self) -> int:
        return sum(q for q, _ in self.prefill) + len(self.decode_kv)

    @property
    def sequences(self) -> int:
        return len(self.prefill) + len(self.decode_kv)


def _shard(x: int, tp: int, what: str, model: ModelSpec) -> int:
    if x % tp and x >= tp:
        raise HermesError(f"model '{model.name}': {what}={x} is not divisible by TP={tp}")
    return max(1, x // tp)


def elementwise_rows(tokens: int, tp: int) -> dict[str, int]:
    """Shape columns of an elementwise op beyond elements/bytes, as the Vidur reader writes
    them: its token rows (batch 1 x q_len) and the TP degree of the step around it."""
    return {"batch": 1, "q_len": tokens, "tp": tp}


# Kernels a serving engine fuses into a neighbour, so they cost no time of their own:
# fusion name -> (operators it removes, whether it needs tensor parallelism).
FUSIONS: dict[str, tuple[frozenset[str], bool]] = {
    # RoPE applied inside the attention kernel's QKV preprocessing (TensorRT-LLM)
    "rope_into_attention": (frozenset({"attn_rope"}), False),
    # residual add done by the next RMSNorm kernel (fused_add_rms_norm: vLLM, SGLang, TRT-LLM)
    "residual_into_norm": (frozenset({"residual_add"}), False),
    # add + RMSNorm done by the all-reduce kernel before it (TRT-LLM AllReduce fusion, TP > 1)
    "norm_into_allreduce": (frozenset({"input_norm", "post_attn_norm"}), True),
}


def active_experts(experts: int, top_k: int, tokens: int) -> int:
    """Expected distinct experts ``tokens`` tokens route to, each picking ``top_k`` of
    ``experts`` uniformly: E * (1 - (1 - top_k/E)^tokens), e.g. 16 decode tokens with
    top-8 of 128 hit 82 experts, not 128 (at least top_k, at most E)."""
    hit = experts * (1.0 - (1.0 - top_k / experts) ** tokens)
    return int(min(experts, max(top_k, round(hit))))


def activation_dtype(model: ModelSpec, dtype: str) -> str:
    """Dtype of activations, the residual stream, norms, attention math and all-reduces. A
    quantized checkpoint (fp8/fp4/int8/int4 weights) quantizes only GEMM weights (and GEMM
    inputs): the rest stays in the model's 16-bit dtype, as the LM head does (ModelOpt and
    vLLM leave it unquantized)."""
    if not is_quantized(dtype):
        return normalize_dtype(dtype)
    return model.dtype if not is_quantized(model.dtype) else "bf16"


def attention_dtype(kind: str, model: ModelSpec, dtype: str, kv_dtype: str | None) -> str:
    """Math dtype of an attention kernel: prefill over an FP8 KV cache runs FP8 math
    (TensorRT-LLM's FP8 context FMHA, the only FP8-math rows in the AIConfigurator
    tables); decode kernels read FP8 KV but compute in 16 bit (every generation table)."""
    if kind == ATTN_PREFILL and kv_dtype and normalize_dtype(kv_dtype) == "fp8":
        return "fp8"
    return activation_dtype(model, dtype)


def fused_away(fusions: Iterable[str], tp: int) -> frozenset[str]:
    """Names of the operators that ``fusions`` remove at tensor parallelism ``tp``."""
    out: set[str] = set()
    for f in fusions:
        if f not in FUSIONS:
            raise HermesError(f"unknown fusion '{f}' (known: {', '.join(FUSIONS)})")
        names, needs_tp = FUSIONS[f]
        if tp > 1 or not needs_tp:
            out |= names
    return frozenset(out)


def layer_ops(model: ModelSpec, tokens: int, tp: int, dtype: str,
              fusions: Iterable[str] = (), ep: int = 1) -> list[Operator]:
    """Token-wise operators of one transformer layer (no attention core), TP-sharded,
    without those the engine's ``fusions`` (``FUSIONS``) fold into a neighbour.

    ``ep`` > ``tp`` (a MoE model with expert parallelism across ``ep / tp`` data-parallel
    engines): each device holds ``E / ep`` whole experts, and the engines' tokens meet them
    through an all-gather before and a reduce-scatter after the experts (vLLM's default
    all-to-all), loads balanced across engines. ``ep`` <= ``tp`` prices as TP: whole experts
    split over the TP group read and compute the same as every expert split in width."""
    act = activation_dtype(model, dtype)  # GEMMs run in ``dtype``; everything else in ``act``
    dense = act if model.quantized_layers == "experts" and model.is_moe else dtype  # non-expert GEMMs
    h, b = model.hidden_size, dtype_bytes(act)
    rows = elementwise_rows(tokens, tp)
    qkv = _shard(model.q_dim + 2 * model.kv_dim, tp, "q+kv width", model)
    q_local = _shard(model.q_dim, tp, "q width", model)
    rope_w = q_local + (qkv - q_local) // 2
    ops = [
        Operator(ELEMENTWISE, "input_norm", {"elements": tokens * h, "io_bytes": 2 * tokens * h * b, **rows}, act),
        Operator(GEMM, "attn_qkv_proj", {"m": tokens, "n": qkv, "k": h}, dense),
        # RoPE rotates q and k in place (not v) and reads one int64 position per token.
        Operator(ELEMENTWISE, "attn_rope", {"elements": tokens * rope_w,
                                            "io_bytes": 2 * tokens * rope_w * b + 8 * tokens, **rows}, act),
        Operator(GEMM, "attn_out_proj", {"m": tokens, "n": h, "k": q_local}, dense),
    ]
    if tp > 1:
        ops.append(Operator(COLLECTIVE, "attn_all_reduce",
                            {"collective": "all_reduce", "msg_bytes": tokens * h * b, "world": tp}, act))
    ops.append(Operator(ELEMENTWISE, "post_attn_norm", {"elements": tokens * h, "io_bytes": 2 * tokens * h * b, **rows},
                        act))
    dp = ep // tp if model.is_moe and ep > tp else 1
    inter = _shard(model.expert_intermediate, 1 if dp > 1 else tp, "intermediate size", model)
    up = 2 * inter if model.gated_mlp else inter
    if model.is_moe and dp > 1:
        # Every engine's tokens, gathered, go to the experts this device holds: the picks of
        # dp engines' tokens over ep devices, on the local share of the experts they hit.
        picks = tokens * dp * model.experts_per_token / ep
        e = max(1.0, active_experts(model.num_experts, model.experts_per_token, tokens * dp) / ep)
        gathered = tokens * dp * h * b
        ops += [Operator(GEMM, "moe_router", {"m": tokens, "n": model.num_experts, "k": h}, act),
                Operator(COLLECTIVE, "moe_dispatch", {"collective": "all_gather", "msg_bytes": gathered,
                                                      "world": ep}, act),
                Operator(GEMM, "mlp_up_proj", {"m": picks / e, "n": up * e, "k": h}, dtype,
                         groups=round(e)),
                Operator(ELEMENTWISE, "mlp_act", {"elements": picks * inter, "io_bytes": 3 * picks * inter * b,
                                                  **elementwise_rows(max(1, round(picks)), 1)}, act),
                Operator(GEMM, "mlp_down_proj", {"m": picks / e, "n": h * e, "k": inter}, dtype,
                         groups=round(e)),
                Operator(COLLECTIVE, "moe_combine", {"collective": "reduce_scatter", "msg_bytes": gathered,
                                                     "world": ep}, act)]
    elif model.is_moe:
        # Each token picks top_k of E experts; the picks spread evenly (a mean, so FLOPs
        # stay exactly 2 x picks x expert weights) over the expected distinct experts hit.
        # Engines run all active experts in one grouped kernel (vLLM fused_moe, TRT-LLM and
        # SGLang grouped GEMM), priced as one GEMM as wide as their weights side by side:
        # one launch, each active expert's weights read once. One small GEMM per expert
        # would pay a launch each (Qwen3-235B TP4 decode: 7x the measured TPOT).
        picks = tokens * model.experts_per_token
        e = active_experts(model.num_experts, model.experts_per_token, tokens)
        per_expert = picks / e
        ops += [Operator(GEMM, "moe_router", {"m": tokens, "n": model.num_experts, "k": h}, act),  # gate: 16-bit
                Operator(GEMM, "mlp_up_proj", {"m": per_expert, "n": up * e, "k": h}, dtype, groups=e),
                Operator(ELEMENTWISE, "mlp_act", {"elements": picks * inter, "io_bytes": 3 * picks * inter * b,
                                                  **elementwise_rows(picks, tp)}, act),
                Operator(GEMM, "mlp_down_proj", {"m": per_expert, "n": h * e, "k": inter}, dtype, groups=e)]
    else:
        ops += [Operator(GEMM, "mlp_up_proj", {"m": tokens, "n": up, "k": h}, dtype),
                Operator(ELEMENTWISE, "mlp_act", {"elements": tokens * inter,
                                                  "io_bytes": (3 if model.gated_mlp else 2) * tokens * inter * b,
                                                  **rows}, act),
                Operator(GEMM, "mlp_down_proj", {"m": tokens, "n": h, "k": inter}, dtype)]
    if tp > 1 and dp == 1:
        ops.append(Operator(COLLECTIVE, "mlp_all_reduce",
                            {"collective": "all_reduce", "msg_bytes": tokens * h * b, "world": tp}, act))
    ops.append(Operator(ELEMENTWISE, "residual_add", {"elements": tokens * h, "io_bytes": 3 * tokens * h * b, **rows},
                        act))
    if fusions:
        gone = fused_away(fusions, tp)
        ops = [o for o in ops if o.name not in gone]
    return ops


def windowed_prefill(q: int, kv: int, window: int | None) -> tuple[int, int, int]:
    """(batch, q_len, kv_len) of plain causal attention doing the work of a ``q``-token
    chunk with context ``kv`` when each query sees only the last ``window`` keys: the chunk
    in ``ceil(q / window)`` blocks of ``qb`` queries, each over as many keys (about
    ``window + qb / 2``) as makes the blocks cover the query-key pairs a sliding-window
    kernel computes (the whole chunk at once would count ~q^2/2 pairs)."""
    if not window or kv <= window:
        return 1, q, kv
    blocks = -(-q // window)
    qb = -(-q // blocks)
    # exact pairs: the first m queries (context before the chunk shorter than the window)
    # see c + i + 1 keys, the rest the whole window; each block's keys are set so that
    # blocks x (causal block of qb queries over kk keys) covers them
    c = kv - q
    m = min(max(window - c, 0), q)
    pairs = m * c + m * (m + 1) // 2 + (q - m) * window
    per_block = -(-pairs // blocks)
    kk = qb + max(0, -(-(per_block - qb * (qb + 1) // 2) // qb))
    return blocks, qb, min(kv, kk)


def attention_ops(model: ModelSpec, batch: BatchShape, tp: int, dtype: str,
                  kv_dtype: str | None = None, window: int | None = None) -> list[Operator]:
    """Attention cores of one layer; with ``window``, of a sliding-window layer (each query
    sees at most ``window`` keys)."""
    heads = _shard(model.num_heads, tp, "attention heads", model)
    kv_heads = max(1, model.num_kv_heads // tp)
    common = {"heads": heads, "kv_heads": kv_heads, "head_dim": model.head_dim}
    kv_dtype = kv_dtype or activation_dtype(model, dtype)
    pre, dec = (attention_dtype(k, model, dtype, kv_dtype) for k in (ATTN_PREFILL, ATTN_DECODE))
    ops = []
    for q, kv in batch.prefill:
        bs, qq, kk = windowed_prefill(q, kv, window)
        ops.append(Operator(ATTN_PREFILL, "attn_prefill", {"batch": bs, "q_len": qq, "kv_len": kk, **common},
                            pre, kv_dtype))
    if batch.decode_kv:
        n = len(batch.decode_kv)
        # Decode attention cost is linear in total KV: the mean length is exact for FLOPs/bytes.
        kvs = batch.decode_kv if not window else [min(k, window) for k in batch.decode_kv]
        mean_kv = int(round(sum(kvs) / n))
        ops.append(Operator(ATTN_DECODE, "attn_decode", {"batch": n, "kv_len": mean_kv, **common}, dec, kv_dtype))
    return ops


def stage_layers(model: ModelSpec, pp: int) -> tuple[int, int]:
    """(full-attention, sliding-window) layers of one pipeline stage."""
    layers = model.num_layers // pp
    sliding = min(layers, model.sliding_layers // pp)
    return layers - sliding, sliding


def expand_step(model: ModelSpec, batch: BatchShape, *, dtype: str | None = None, tp: int = 1,
                pp: int = 1, kv_dtype: str | None = None, fusions: Iterable[str] = (),
                ep: int = 1) -> list[Operator]:
    """Operators of one forward step on one pipeline stage (the one holding the LM head).

    Per-layer operators carry ``count`` = layers in the stage; ``ep`` as in ``layer_ops``.
    """
    dtype = dtype or model.dtype
    if tp < 1 or pp < 1:
        raise HermesError(f"TP and PP must be >= 1 (got TP={tp}, PP={pp})")
    if model.num_layers % pp:
        raise HermesError(f"model '{model.name}': {model.num_layers} layers do not split into PP={pp} stages")
    if batch.tokens <= 0:
        return []
    layers = model.num_layers // pp
    full, sliding = stage_layers(model, pp)
    ops = [replace(o, count=o.count * layers) for o in layer_ops(model, batch.tokens, tp, dtype, fusions, ep)]
    for n, window in ((full, None), (sliding, model.sliding_window)):
        if n:
            ops += [Operator(o.kind, o.name + ("_window" if window else ""), o.shape, o.dtype, o.kv_dtype, o.count * n)
                    for o in attention_ops(model, batch, tp, dtype, kv_dtype, window)]
    act = activation_dtype(model, dtype)
    h, b = model.hidden_size, dtype_bytes(act)
    if model.arch == "decoder":
        vocab = _shard(model.vocab_size, tp, "vocab", model) if model.vocab_size >= tp else model.vocab_size
        ops.append(Operator(GEMM, "lm_head", {"m": batch.sequences, "n": vocab, "k": h}, act))
    ops.append(Operator(ELEMENTWISE, "embedding_lookup",
                        {"elements": batch.tokens * h, "io_bytes": 2 * batch.tokens * h * b + 8 * batch.tokens,
                         **elementwise_rows(batch.tokens, tp)}, act))  # + int64 token ids
    if pp > 1:
        ops.append(Operator(COLLECTIVE, "pp_send_recv",
                            {"collective": "send_recv", "msg_bytes": batch.tokens * h * b, "world": 2}, act))
    return ops


def step_cost(ops: Sequence[Operator]) -> tuple[float, float]:
    """Total (FLOPs, bytes) of a list of operators."""
    fl = by = 0.0
    for o in ops:
        a, c = o.cost
        fl += a
        by += c
    return fl, by
