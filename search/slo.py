"""Service-level objectives: parsing with explicit units, and violations from a summary.

An SLO is ``<metric>_<stat>`` (metric: ttft, tpot, itl, e2e; stat: mean, p50, p90, p95,
p99) with a unit either in the key (``ttft_p90_s: 1.0``, ``tpot_p90_ms: 50``) or in the
value (``ttft_p90: "1s"``, ``tpot_p90: "50ms"``). A bare number without a unit is an
error: silently guessing seconds vs milliseconds is how SLOs end up 1000x off.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

METRICS = ("ttft", "tpot", "itl", "e2e", "queue")
STATS = ("mean", "p50", "p90", "p95", "p99")
_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "min": 60.0}
_KEY = re.compile(r"^(?P<metric>[a-z0-9]+)_(?P<stat>mean|p\d+)(?:_(?P<unit>s|ms|us|min))?$")
_VALUE = re.compile(r"^\s*(?P<num>[0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*(?P<unit>s|ms|us|min)\s*$")


@dataclass(frozen=True)
class SLO:
    """One latency target in seconds, e.g. metric='ttft', stat='p90', target_s=1.0."""

    metric: str
    stat: str
    target_s: float

    @property
    def key(self) -> str:
        """The scenario-file key, always in seconds: ``ttft_p90_s``."""
        return f"{self.metric}_{self.stat}_s"

    def measured(self, summary: Mapping[str, Any]) -> float:
        """The measured value in seconds from a simulator summary (NaN when absent)."""
        block = summary.get(f"{self.metric}_s")
        if isinstance(block, Mapping) and block.get(self.stat) is not None:
            return float(block[self.stat])
        slo = summary.get("slo")
        if isinstance(slo, Mapping) and isinstance(slo.get(self.key), Mapping):
            m = slo[self.key].get("measured")
            return float(m) if m is not None else math.nan
        return math.nan

    def violation(self, summary: Mapping[str, Any]) -> float:
        """Relative excess over the target: <= 0 met, 0.5 means 50% over. NaN counts as 1."""
        m = self.measured(summary)
        if not math.isfinite(m):
            return 1.0
        return (m - self.target_s) / self.target_s


def parse_slos(raw: Mapping[str, Any] | None, *, where: str = "slo") -> tuple[SLO, ...]:
    """Parse an SLO mapping; raises ValueError('<where>.<key>: ...') naming the field."""
    out: list[SLO] = []
    for key, value in (raw or {}).items():
        m = _KEY.match(str(key))
        if not m or m["metric"] not in METRICS or m["stat"] not in STATS:
            raise ValueError(f"{where}.{key}: unknown SLO (use <metric>_<stat>[_unit] with metric "
                             f"in {', '.join(METRICS)} and stat in {', '.join(STATS)}, e.g. ttft_p90_s)")
        unit = m["unit"]
        if unit is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{where}.{key}: expected a number of {unit}, got {value!r}")
            seconds = float(value) * _UNITS[unit]
        elif isinstance(value, str) and _VALUE.match(value):
            v = _VALUE.match(value)
            seconds = float(v["num"]) * _UNITS[v["unit"]]
        else:
            raise ValueError(f"{where}.{key}: SLO without a unit (write {key}_s: {value} or "
                             f"{key}: '{value}ms')")
        if not seconds > 0:
            raise ValueError(f"{where}.{key}: target must be > 0")
        out.append(SLO(m["metric"], m["stat"], seconds))
    return tuple(out)


def slo_dict(slos: tuple[SLO, ...]) -> dict[str, float]:
    """The scenario-file form: ``{ttft_p90_s: 1.0, ...}``."""
    return {s.key: s.target_s for s in slos}
