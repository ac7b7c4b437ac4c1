"""Numeric formats and their storage size; one place so every layer agrees."""
from __future__ import annotations

from .errors import HermesError

DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0, "tf32": 4.0, "bf16": 2.0, "fp16": 2.0,
    "fp8": 1.0, "int8": 1.0, "fp4": 0.5, "int4": 0.5,
}
_ALIASES = {
    "float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
    "float8": "fp8", "fp8_e4m3": "fp8", "e4m3": "fp8", "float8_e4m3fn": "fp8", "fp8_block": "fp8",
    "nvfp4": "fp4", "mxfp4": "fp4", "w4a16": "int4", "int4_wo": "int4", "auto": "bf16",
}


def normalize_dtype(name: str) -> str:
    """Map the many spellings in traces and configs onto one canonical name."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DTYPE_BYTES:
        raise HermesError(f"unknown dtype '{name}' (known: {', '.join(sorted(DTYPE_BYTES))})")
    return key


def dtype_bytes(name: str) -> float:
    return DTYPE_BYTES[normalize_dtype(name)]


def is_quantized(name: str) -> bool:
    """A storage format narrower than 16 bits (fp8/int8/fp4/int4): what quantized checkpoints
    apply to GEMM weights while activations stay in the model's 16-bit dtype."""
    return DTYPE_BYTES[normalize_dtype(name)] < 2
