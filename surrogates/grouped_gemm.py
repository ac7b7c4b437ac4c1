"""How much slower a grouped expert GEMM runs than the dense GEMM tables say.

A mixture-of-experts layer runs its experts in one grouped kernel (vLLM's fused_moe,
TensorRT-LLM's and SGLang's grouped GEMMs), which ``profiling.operators.layer_ops`` prices as
one GEMM as wide as the active experts' weights side by side. In decode each expert gets a
few rows and the kernel streams weights about as a dense GEMM would. Once each expert's rows
fill a tile, the kernel runs many small GEMMs, with padded tiles and per-expert scheduling,
and it falls behind a dense GEMM of the same FLOPs and bytes. There are no MoE kernel traces
to fit this from. The factor comes from end-to-end serving rows: vLLM and TensorRT-LLM, H100
and B200, gpt-oss-120b, MiniMax-M2.5 and Qwen3-235B-A22B. It was then checked on a real vLLM
run of another GPU and model (Qwen3-30B-A3B on RTX PRO 6000, expert parallel); the figures
are with ``benchmarks/real_run_fidelity.py`` in benchmarks/README.md.

Those models hold 128-256 small experts. A model with a few large experts (Mixtral's 8) runs
them as a handful of large GEMMs, and nothing measured says they lose efficiency, so the
factor is kept to layers with at least ``MIN_GROUPS`` active experts on the device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GroupedGemm:
    """Time multiplier of a grouped expert GEMM: 1 up to ``rows_from`` rows per expert, rising
    in log rows to ``factor`` at ``rows_full`` (a tile's worth), for ``groups`` >= ``min_groups``."""

    factor: float = 2.5
    rows_from: float = 8.0
    rows_full: float = 24.0
    min_groups: int = 32

    def __call__(self, rows_per_expert: float, groups: int) -> float:
        if groups < self.min_groups or rows_per_expert <= self.rows_from:
            return 1.0
        if rows_per_expert >= self.rows_full:
            return self.factor
        ramp = math.log(rows_per_expert / self.rows_from) / math.log(self.rows_full / self.rows_from)
        return 1.0 + (self.factor - 1.0) * ramp


GROUPED_GEMM = GroupedGemm()
MIN_GROUPS = GROUPED_GEMM.min_groups
