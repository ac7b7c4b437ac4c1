"""Hardware catalog: spec sheets and prices of accelerators, CPUs and memory nodes.

The built-in catalog lives in ``profiling/data/hardware.yaml``. Users add or override
devices with their own YAML (same schema) via ``load_catalog(extra)`` or the
``HERMES_CATALOG`` environment variable (``os.pathsep``-separated paths). An
AIConfigurator system YAML (``gpu:``/``node:`` sections, e.g. ``b60.yaml``) is accepted
in their place as one device named after the file; it carries no price (0, which the
search refuses to price a fleet with).
"""
from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .dtypes import normalize_dtype
from .errors import HermesError, InputError
from .yamlfile import parse_yaml, read_yaml

CATALOG_ENV = "HERMES_CATALOG"


def canonical_name(name: str) -> str:
    """Lower-case, punctuation-free key so 'H100-SXM', 'h100_sxm' and 'H100 SXM' agree."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


class HardwareSpec(BaseModel):
    """One device. Units are in the field names; derived SI values are properties."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: Literal["gpu", "asic", "cpu", "memory"] = "gpu"
    vendor: str = ""
    arch: str = Field(default="", description="chip family whose kernels it runs (hopper, blackwell...); '' = unknown")
    aliases: tuple[str, ...] = ()
    peak_tflops: dict[str, float] = Field(
        default_factory=dict, description="dense peak TFLOP/s per dtype (bf16, fp8, int8, fp4...)")
    mem_capacity_gb: float = Field(gt=0, description="device memory, GB (1e9 bytes)")
    mem_bw_gb_s: float = Field(gt=0, description="peak memory bandwidth, GB/s")
    l2_cache_mb: float = Field(default=0.0, ge=0)
    intra_node_bw_gb_s: float = Field(default=0.0, ge=0, description="per device, one direction")
    intra_node_latency_us: float = Field(default=0.0, ge=0)
    inter_node_bw_gb_s: float = Field(default=0.0, ge=0, description="per device, one direction")
    inter_node_latency_us: float = Field(default=0.0, ge=0)
    pcie_bw_gb_s: float = Field(default=0.0, ge=0)
    tdp_w: float = Field(gt=0)
    price_per_hour: float = Field(ge=0, description="USD per device-hour")
    price_source: str = ""
    price_date: str = ""
    devices_per_node: int = Field(default=8, ge=1)
    cores: int = Field(default=0, ge=0, description="CPU cores (CPUs only)")
    compute_units: int = Field(default=0, ge=0, description="SMs (NVIDIA) or CUs (AMD); 0 = unknown")
    clock_ghz: float = Field(default=0.0, ge=0, description="boost clock, GHz; 0 = unknown")
    notes: str = ""

    @field_validator("peak_tflops")
    @classmethod
    def _dtypes(cls, v: dict[str, float]) -> dict[str, float]:
        out = {}
        for k, x in v.items():
            if x <= 0:
                raise ValueError(f"peak_tflops[{k}] must be > 0")
            out[normalize_dtype(k)] = float(x)
        return out

    # ---- SI accessors -------------------------------------------------
    def peak_flops(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype``; falls back to the nearest wider format."""
        d = normalize_dtype(dtype)
        for cand in (d, *_FALLBACK.get(d, ())):
            if cand in self.peak_tflops:
                return self.peak_tflops[cand] * 1e12
        raise HermesError(f"hardware '{self.name}' has no peak FLOP/s for dtype '{dtype}'")

    @property
    def mem_bytes(self) -> float:
        return self.mem_capacity_gb * 1e9

    @property
    def mem_bw(self) -> float:
        return self.mem_bw_gb_s * 1e9

    @property
    def issue_rate(self) -> float:
        """Compute-unit cycles per second (SMs x clock): what bounds kernels that spend a few
        instructions per element (norms, rotary, gathers) rather than DRAM bandwidth. A
        device without the two numbers is taken as balanced like the A100."""
        if self.compute_units > 0 and self.clock_ghz > 0:
            return self.compute_units * self.clock_ghz * 1e9
        return self.mem_bw / ISSUE_BALANCE_BYTES

    def link(self, nodes: int = 1) -> tuple[float, float]:
        """(bandwidth B/s, latency s) of the link a collective over ``nodes`` nodes crosses."""
        if nodes <= 1:
            return self.intra_node_bw_gb_s * 1e9, self.intra_node_latency_us * 1e-6
        return self.inter_node_bw_gb_s * 1e9, self.inter_node_latency_us * 1e-6


# DRAM bytes per compute-unit cycle of the A100 (2039 GB/s over 108 SMs x 1.41 GHz): the
# balance assumed for a device whose catalog entry lacks compute_units or clock_ghz.
ISSUE_BALANCE_BYTES = 13.4

# A missing format runs no faster than the next wider one the device has. 4-bit weights on a
# device without 4-bit math are dequantized into 16-bit MMAs (Marlin-style w4a16 kernels:
# vLLM's MXFP4/NVFP4 on Hopper; gpt-oss on H100 prefills at ~bf16 speed, not fp8).
_FALLBACK = {
    "fp4": ("bf16", "fp16"), "int4": ("bf16", "fp16"),
    "fp8": ("int8", "bf16"), "int8": ("fp8", "bf16"),
    "fp16": ("bf16",), "bf16": ("fp16",), "fp32": ("tf32", "bf16"), "tf32": ("fp32", "bf16"),
}


class HardwareCatalog:
    """Devices by canonical name and alias."""

    def __init__(self, specs: list[HardwareSpec]) -> None:
        self._by_key: dict[str, HardwareSpec] = {}
        self._specs: dict[str, HardwareSpec] = {}
        for s in specs:
            self.add(s)

    def add(self, spec: HardwareSpec) -> None:
        old = self._by_key.get(canonical_name(spec.name))
        if old is not None:  # an override replaces the old entry and its aliases
            self._specs.pop(old.name, None)
            for a in (old.name, *old.aliases):
                self._by_key.pop(canonical_name(a), None)
        self._specs[spec.name] = spec
        for a in (spec.name, *spec.aliases):
            self._by_key[canonical_name(a)] = spec

    def get(self, name: str) -> HardwareSpec:
        try:
            return self._by_key[canonical_name(name)]
        except KeyError:
            raise HermesError(
                f"unknown hardware '{name}' (known: {', '.join(sorted(self._specs))}; "
                f"add it with --catalog FILE or ${CATALOG_ENV})") from None

    def __contains__(self, name: object) -> bool:
        return canonical_name(str(name)) in self._by_key

    def __iter__(self) -> Iterator[HardwareSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return list(self._specs)


# AIConfigurator system YAML: ``gpu:`` key -> catalog dtype of its dense peak (FLOP/s).
_AIC_PEAKS = {"bfloat16_tc_flops": "bf16", "float16_tc_flops": "fp16", "fp8_tc_flops": "fp8",
              "int8_tc_flops": "int8", "fp4_tc_flops": "fp4", "float32_tc_flops": "fp32"}


def _aiconfigurator_device(doc: dict, source: str) -> dict:
    """Catalog fields of an AIConfigurator system YAML (SI units there, GB and TFLOP/s here)."""
    gpu, node = doc.get("gpu") or {}, doc.get("node") or {}
    try:
        peaks = {d: float(gpu[k]) / 1e12 for k, d in _AIC_PEAKS.items() if gpu.get(k)}
        if "bf16" not in peaks and "fp16" in peaks:
            peaks["bf16"] = peaks["fp16"]
        lat = float(node.get("p2p_latency") or 0.0) * 1e6
        return {"name": Path(source).stem, "kind": "gpu", "peak_tflops": peaks,
                "mem_capacity_gb": float(gpu["mem_capacity"]) / 1e9, "mem_bw_gb_s": float(gpu["mem_bw"]) / 1e9,
                "intra_node_bw_gb_s": float(node.get("intra_node_bw") or 0.0) / 1e9,
                "inter_node_bw_gb_s": float(node.get("inter_node_bw") or 0.0) / 1e9,
                "intra_node_latency_us": lat, "inter_node_latency_us": lat,
                "pcie_bw_gb_s": float(node.get("pcie_bw") or 0.0) / 1e9,
                "devices_per_node": int(node.get("num_gpus_per_node") or 8), "tdp_w": float(gpu["power"]),
                "price_per_hour": 0.0, "price_source": "none: an AIConfigurator spec sheet has no price",
                "notes": f"from the AIConfigurator system YAML {source}"}
    except KeyError as e:
        raise InputError(f"AIConfigurator system YAML without gpu.{e.args[0]}", file=source) from None
    except (TypeError, ValueError) as e:
        raise InputError(f"AIConfigurator system YAML with a non-numeric value ({e})", file=source) from None


# Fields an AIConfigurator sheet sets on a device the catalog already has (its name,
# aliases, architecture, SM count, clock, L2 and price stay the catalog's).
_AIC_MEASURED = ("peak_tflops", "mem_capacity_gb", "mem_bw_gb_s", "intra_node_bw_gb_s", "inter_node_bw_gb_s",
                 "intra_node_latency_us", "inter_node_latency_us", "pcie_bw_gb_s", "devices_per_node", "tdp_w")


def _validate(d: dict, source: str, i: int = 0) -> HardwareSpec:
    try:
        return HardwareSpec.model_validate(d)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "?"
        name = d.get("name", f"#{i}") if isinstance(d, dict) else f"#{i}"
        raise InputError(f"device '{name}' field '{field}': {err['msg']}", file=source) from None


def _load(text: str, source: str) -> dict:
    doc = parse_yaml(text, source) or {}
    return doc if isinstance(doc, dict) else {}


def _add_file(cat: HardwareCatalog, path: Path) -> None:
    doc = read_yaml(path, "catalog file") or {}     # binary, duplicate keys, size: one line
    doc = doc if isinstance(doc, dict) else {}
    if "devices" not in doc and isinstance(doc.get("gpu"), dict):  # AIConfigurator system YAML
        d = _aiconfigurator_device(doc, str(path))
        if d["name"] in cat:
            known = cat.get(d["name"]).model_dump()
            d = {**known, **{k: d[k] for k in _AIC_MEASURED}, "peak_tflops": {**known["peak_tflops"], **d["peak_tflops"]},
                 "notes": d["notes"]}
        cat.add(_validate(d, str(path)))
        return
    for s in _specs(doc, str(path)):
        cat.add(s)


def _specs(doc: dict, source: str) -> list[HardwareSpec]:
    devices = doc.get("devices")
    if not isinstance(devices, list):
        raise InputError("expected a top-level 'devices:' list (or an AIConfigurator system YAML)", file=source)
    return [_validate(d, source, i) for i, d in enumerate(devices)]


def builtin_catalog_text() -> str:
    return resources.files("profiling").joinpath("data/hardware.yaml").read_text()


def builtin_catalog() -> HardwareCatalog:
    """The devices shipped with the package only."""
    return HardwareCatalog(_specs(_load(builtin_catalog_text(), "builtin hardware.yaml"), "builtin hardware.yaml"))


def load_catalog(*extra: str | Path) -> HardwareCatalog:
    """Built-in devices, then ``$HERMES_CATALOG`` files, then ``extra`` files (later wins)."""
    cat = builtin_catalog()
    paths = [p for p in os.environ.get(CATALOG_ENV, "").split(os.pathsep) if p] + list(extra)
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise InputError("hardware catalog file not found", file=path)
        _add_file(cat, path)
    return cat
