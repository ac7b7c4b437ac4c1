"""Device memory of one replica: weights, activations, reserve, and what is left for paged KV.

All figures are per device (one GPU of a TP x PP group). ``plan_memory`` raises a
``HermesError`` showing the arithmetic when nothing is left for the KV cache.
"""
from __future__ import annotations

from dataclasses import dataclass

from profiling.dtypes import dtype_bytes
from profiling.errors import HermesError
from profiling.hardware import HardwareSpec
from profiling.models import ModelSpec
from profiling.operators import activation_dtype

GB = 1e9


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device and the resulting number of KV blocks per replica."""

    capacity: float
    utilization: float
    weights: float
    activations: float
    reserve: float
    kv_per_token: float      # KV bytes one token occupies on one device
    block_size: int
    num_blocks: int
    adapters: float = 0.0    # LoRA slots (simulator.engine.lora.slot_bytes)

    @property
    def usable(self) -> float:
        return self.capacity * self.utilization

    @property
    def kv_bytes(self) -> float:
        return self.usable - self.weights - self.activations - self.reserve - self.adapters

    @property
    def kv_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def describe(self) -> str:
        lora = f"+ LoRA slots {self.adapters / GB:.2f} GB " if self.adapters else ""
        return (f"weights {self.weights / GB:.2f} GB + activations {self.activations / GB:.2f} GB "
                f"+ reserve {self.reserve / GB:.2f} GB {lora}= "
                f"{(self.weights + self.activations + self.reserve + self.adapters) / GB:.2f} GB vs "
                f"{self.capacity / GB:.1f} GB x {self.utilization:.2f} = {self.usable / GB:.2f} GB "
                f"-> KV {max(self.kv_bytes, 0) / GB:.2f} GB = {self.num_blocks} blocks of {self.block_size} tokens")


def kv_bytes_per_token(model: ModelSpec, tp: int, pp: int, kv_dtype: str | None) -> float:
    """K and V of one token on one device; KV heads are replicated when fewer than TP.
    Sliding-window layers hold only their window, so only full-attention layers count."""
    if model.arch != "decoder":
        return 0.0
    heads = max(1, model.num_kv_heads // tp)
    layers = -(-model.kv_layers // pp)
    return 2.0 * layers * heads * model.head_dim * dtype_bytes(kv_dtype or model.dtype)


def activation_bytes(model: ModelSpec, tp: int, dtype: str, max_tokens: int, max_seqs: int) -> float:
    """Peak transient memory of one forward at the token budget (vLLM profiles this with a
    dummy batch): hidden states, QKV, the MLP intermediate and fp32 logits."""
    b = dtype_bytes(dtype)
    per_token = (4 * model.hidden_size + (model.q_dim + 2 * model.kv_dim) / tp
                 + 2 * model.expert_intermediate / tp) * b
    logits = max_seqs * model.vocab_size / tp * 4.0
    return max_tokens * per_token + logits


def plan_memory(model: ModelSpec, hw: HardwareSpec, *, tp: int, pp: int, dtype: str | None,
                kv_dtype: str | None, utilization: float, reserve_gb: float, max_tokens: int,
                max_seqs: int, block_size: int, label: str = "", num_blocks: int | None = None,
                adapters: float = 0.0, ep: int = 1) -> MemoryPlan:
    """Blocks of KV cache per replica (``num_blocks`` when the engine's count is known), after
    ``adapters`` bytes of LoRA slots per device; raises when the model does not fit its devices.
    With expert parallelism (``ep`` > ``tp``) a device holds 1/ep of the experts, 1/tp of the rest."""
    dtype = dtype or model.dtype
    weights = model.weight_bytes(dtype) / (tp * pp)
    if ep > tp and model.is_moe:
        experts = model.expert_weight_bytes(dtype)
        weights -= experts / (tp * pp) - experts / (ep * pp)
    plan = MemoryPlan(
        capacity=hw.mem_bytes, utilization=utilization, weights=weights,
        activations=activation_bytes(model, tp, activation_dtype(model, dtype), max_tokens, max_seqs),
        reserve=reserve_gb * GB, kv_per_token=kv_bytes_per_token(model, tp, pp, kv_dtype),
        block_size=block_size, num_blocks=0, adapters=adapters)
    per_block = plan.kv_per_token * block_size
    blocks = int(plan.kv_bytes // per_block) if per_block > 0 and plan.kv_bytes > 0 else 0
    if num_blocks is not None and blocks >= 1:
        blocks = int(num_blocks)
    plan = MemoryPlan(**{**plan.__dict__, "num_blocks": blocks})
    if blocks < 1:
        where = f"deployment '{label}': " if label else ""
        raise HermesError(
            f"{where}model '{model.name}' does not fit {hw.name} at TP={tp} PP={pp} "
            f"({dtype}): weights {model.weight_bytes(dtype) / GB:.2f} GB / {tp * pp} devices = "
            f"{weights / GB:.2f} GB + activations {plan.activations / GB:.2f} GB + reserve "
            f"{plan.reserve / GB:.2f} GB "
            + (f"+ LoRA slots {adapters / GB:.2f} GB " if adapters else "")
            + f"= {(weights + plan.activations + plan.reserve + adapters) / GB:.2f} GB "
            f"> {hw.mem_capacity_gb:g} GB x {utilization:.2f} = {plan.usable / GB:.2f} GB per device")
    return plan
