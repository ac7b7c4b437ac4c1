"""NVIDIA AIConfigurator perf tables (``data/<system>/<family>/<backend>/<ver>/*.parquet``,
and the CSV ``*.txt`` tables of its older ``systems/data/<system>/<backend>/<ver>/`` layout,
whose ``framework``/``version``/``device`` columns the Parquet tables also carry).

* ``gemm_perf``: ``gemm_dtype, m, n, k, latency`` -> ``gemm``.
* ``context_attention_perf``: prefill of ``batch_size`` sequences of ``isl`` tokens with no
  cached prefix -> ``attn_prefill`` (q_len = kv_len = isl); heads are per GPU.
* ``generation_attention_perf``: one decode token per sequence, ``step`` = cached KV
  length -> ``attn_decode`` (kv_len = step).
* ``nccl_perf`` / ``custom_allreduce_perf``: ``message_size`` is in ELEMENTS of the
  table's dtype -> ``collective`` with msg_bytes = elements x dtype bytes. Custom
  all-reduce has an eager and a CUDA-graph row per shape; ``kernel`` keeps them apart.

Latencies are milliseconds. ``beam_width`` multiplies the batch (always 1 in practice).
``stack`` is "<framework> <version>" from the directory's ``collection_meta.yaml``
(the directory, not the table's ``version`` column, which some legacy tables leave stale);
``kernel`` is the table's ``kernel_source``. The system directory names the device; the
system YAML next to ``data/`` gives GPUs per node for the collective's node count.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ..errors import InputError
from ..yamlfile import read_yaml
from .base import FormatReader, ReadOptions, ReadOutput, read_csv, require_columns, source_label

FORMAT = "aiconfigurator"
TABLES = ("gemm_perf", "context_attention_perf", "generation_attention_perf", "nccl_perf",
          "custom_allreduce_perf")
# AIConfigurator system directory -> hardware catalog name (the catalog also has aliases;
# this covers systems whose directory name is not one of them).
SYSTEM_HARDWARE = {
    "h100_sxm": "H100-SXM", "h200_sxm": "H200", "b200_sxm": "B200", "b300_sxm": "B300",
    "gb200": "GB200", "gb300": "GB300", "a100_sxm": "A100-80GB", "l40s": "L40S", "a30": "A30",
    "rtx_pro_6000_server": "RTX-PRO-6000", "h100_pcie": "H100-PCIe", "a100_pcie": "A100-PCIe",
    "l4": "L4", "b60": "B60",
}
# Table dtype spellings -> canonical dtypes. Weight-only (int8_wo/int4_wo) and SmoothQuant
# ("sq", W8A8) GEMMs are filed under their weight format: the roofline then uses the
# narrower format's peak and bytes, which can only lower the bound, never raise it.
DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "fp8": "fp8", "fp8_block": "fp8",
          "nvfp4": "fp4", "int8_wo": "int8", "int4_wo": "int4", "sq": "int8", "int8": "int8"}
_PLAIN = ("bfloat16", "float16", "half", "fp8", "int8", "fp16", "bf16")
_REQUIRED = {
    "gemm_perf": ("gemm_dtype", "m", "n", "k", "latency"),
    "context_attention_perf": ("batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim",
                               "attn_dtype", "kv_cache_dtype", "latency"),
    "generation_attention_perf": ("batch_size", "step", "num_heads", "num_key_value_heads", "head_dim",
                                  "attn_dtype", "kv_cache_dtype", "latency"),
    "nccl_perf": ("op_name", "nccl_dtype", "num_gpus", "message_size", "latency"),
    "custom_allreduce_perf": ("allreduce_dtype", "num_gpus", "message_size", "latency"),
}
_COLLECTIVES = {"all_reduce": "all_reduce", "allreduce": "all_reduce", "all_gather": "all_gather",
                "allgather": "all_gather", "reduce_scatter": "reduce_scatter", "alltoall": "alltoall",
                "all_to_all": "alltoall"}
_ELEMENT_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "fp32": 4.0}


SUFFIXES = (".parquet", ".txt")


def matches(path: Path) -> bool:
    return path.suffix in SUFFIXES and path.stem in TABLES


def _frame(path: Path) -> pd.DataFrame:
    if path.suffix == ".txt":
        return read_csv(path, "AIConfigurator")
    try:
        return pd.read_parquet(path)
    except (OSError, pa.ArrowException, ValueError) as e:
        raise InputError(f"not a readable Parquet file ({str(e).splitlines()[0]})", file=path) from None


def _dtype(col: pd.Series) -> pd.Series:
    """Map table spellings; unknown spellings pass through for the validator to reject."""
    mapping = {v: DTYPES.get(str(v).strip().lower(), v) for v in col.unique()}
    return col.map(mapping)


@lru_cache(maxsize=64)
def _meta_stack(directory: Path) -> str | None:
    meta = directory / "collection_meta.yaml"
    if not meta.is_file():
        return None
    doc = read_yaml(meta, "collection_meta.yaml")
    rt = doc.get("runtime") if isinstance(doc, dict) else None
    if isinstance(rt, dict) and rt.get("framework") and rt.get("version"):
        return f"{str(rt['framework']).lower()} {rt['version']}"
    return None


def _where(path: Path) -> Path:
    """Absolute path as given: a symlinked table is filed under the folder that links it
    (``resolve`` would name the system of the link's target)."""
    return Path(os.path.abspath(path))


def _system(path: Path) -> str | None:
    """``data/<system>/...`` -> system directory name."""
    parts = _where(path).parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "data":
            return parts[i + 1]
    return None


def _system_yaml(path: Path, system: str) -> Path | None:
    """The system YAML ``<root>/<system>.yaml`` beside a ``data/`` folder above ``path``."""
    for parent in _where(path).parents:
        if parent.name == "data" and (parent.parent / f"{system}.yaml").is_file():
            return parent.parent / f"{system}.yaml"
    return None


@lru_cache(maxsize=64)
def _gpus_per_node(path: Path, system: str) -> int:
    """From the system YAML; 8 when absent."""
    spec = _system_yaml(path, system)
    if spec is None:
        return 8
    doc = read_yaml(spec, "system YAML") or {}
    try:
        return int((doc.get("node") or {}).get("num_gpus_per_node") or 8)
    except (AttributeError, TypeError, ValueError):
        raise InputError("system YAML has no valid node.num_gpus_per_node", file=spec) from None


def spec_sheet(path: Path) -> tuple[str, Path] | None:
    """(hardware, ``<root>/<system>.yaml``) of a table under ``<root>/data/<system>/``, when
    that system YAML exists (the catalog reads it with --catalog)."""
    system = _system(path)
    sheet = _system_yaml(path, system) if system else None
    return (SYSTEM_HARDWARE.get(system, system), sheet) if sheet else None


def _kernel(kernel: pd.Series, df: pd.DataFrame, table: str) -> np.ndarray:
    """kernel_source, plus the quantization recipe when the dtype spelling names one
    (fp8 vs fp8_block, int8_wo vs sq share a canonical dtype but are different kernels)."""
    dcol = next((c for c in ("gemm_dtype", "attn_dtype") if c in df), None)
    k = kernel.astype(object).where(kernel.notna(), "").astype(str).to_numpy()
    if dcol is None:
        return k
    raw = df[dcol].astype(str).str.strip().str.lower()
    variant = ~raw.isin(_PLAIN).to_numpy()
    return np.where(variant, k + "/" + raw.to_numpy(), k)


def _hardware(path: Path, df: pd.DataFrame, opts: ReadOptions) -> str:
    if opts.hardware:
        return opts.hardware
    system = _system(path)
    if system:
        return SYSTEM_HARDWARE.get(system, system)
    if "device" in df and df["device"].nunique() == 1:
        return str(df["device"].iloc[0]).replace("NVIDIA ", "")
    raise InputError("cannot tell the hardware (no data/<system>/ in the path): pass --hardware", file=path)


def _stack(path: Path, df: pd.DataFrame) -> str | None:
    stack = _meta_stack(path.parent)
    if stack is None and {"framework", "version"} <= set(df.columns) and len(df):
        stack = f"{str(df['framework'].iloc[0]).lower()} {df['version'].iloc[0]}"
    return stack


def read(path: Path, opts: ReadOptions) -> ReadOutput:
    table = path.stem
    if not matches(path):
        raise InputError(f"not an AIConfigurator perf table (expected one of {', '.join(t + '.parquet' for t in TABLES)}"
                         " or its .txt)", file=path)
    df = _frame(path)
    require_columns(df, _REQUIRED[table], path, f"AIConfigurator {table} table")
    n = len(df)
    out: dict[str, object] = {"source_row": np.arange(n, dtype=float), "latency_ms": df["latency"].to_numpy(float)}
    kernel = df["kernel_source"] if "kernel_source" in df else pd.Series([None] * n)
    if table == "gemm_perf":
        out.update(op="gemm", name="gemm", m=df["m"], n=df["n"], k=df["k"], dtype=_dtype(df["gemm_dtype"]))
    elif table in ("context_attention_perf", "generation_attention_perf"):
        beam = df["beam_width"] if "beam_width" in df else 1
        window = df["window_size"] if "window_size" in df else 0
        out.update(batch=df["batch_size"] * beam, heads=df["num_heads"], kv_heads=df["num_key_value_heads"],
                   head_dim=df["head_dim"], window=pd.Series(window, index=df.index).astype(float),
                   dtype=_dtype(df["attn_dtype"]), kv_dtype=_dtype(df["kv_cache_dtype"]))
        if table == "context_attention_perf":
            out.update(op="attn_prefill", name="context_attention", q_len=df["isl"], kv_len=df["isl"])
        else:
            out.update(op="attn_decode", name="generation_attention", q_len=1, kv_len=df["step"])
    else:
        dcol = "nccl_dtype" if table == "nccl_perf" else "allreduce_dtype"
        dtype = _dtype(df[dcol])
        elem = dtype.map(_ELEMENT_BYTES).to_numpy(float)  # unknown dtype -> NaN -> quarantined
        op_name = df["op_name"] if "op_name" in df else pd.Series("all_reduce", index=df.index)
        coll = op_name.astype(str).str.lower().map(_COLLECTIVES)
        system = _system(path) or ""
        per_node = _gpus_per_node(path, system)
        out.update(op=np.where(coll.isna(), "collective:" + op_name.astype(str), "collective"),
                   name=table.removesuffix("_perf"), collective=coll, dtype=dtype,
                   msg_bytes=df["message_size"].to_numpy(float) * elem, world=df["num_gpus"],
                   nodes=np.ceil(df["num_gpus"].to_numpy(float) / per_node))
        if "kernel_source" not in df and "backend" in df:
            kernel = df["backend"]
    frame = pd.DataFrame({k: (v.to_numpy() if isinstance(v, pd.Series) else v) for k, v in out.items()},
                         index=pd.RangeIndex(n))
    frame["hardware"] = _hardware(path, df, opts)
    frame["stack"] = _stack(path, df)
    frame["kernel"] = _kernel(kernel, df, table)
    frame["source"] = source_label(FORMAT, path)
    return ReadOutput.of(frame)


READER = FormatReader(FORMAT, "NVIDIA AIConfigurator perf tables (gemm, attention, nccl, custom all-reduce)",
                      matches, read, spec_sheet)
