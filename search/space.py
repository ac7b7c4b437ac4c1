"""Search-space file: a base scenario, the choices per dotted path, conditions, objective.

```yaml
name: chat-gpu-mix
base: chat.yaml                 # or an inline scenario mapping
workload: {rate_rps: 8}         # optional: override the offered load of the base
slo: {ttft_p90_s: 1.0}          # optional: override the base's SLOs (units required)
objective: tokens_per_dollar    # or pareto (tokens/$ vs latency: ttft_p90 | e2e_p99)
slo_confidence: 0.9             # optional: P(all SLOs met) >= 0.9 over sampled simulations
params:
  deployments.0.hardware: {choices: [H100-SXM, A100-80GB]}
  deployments.0.replicas: {low: 1, high: 4}
  deployments.0.scheduler.chunk_size:
    choices: [256, 512, 1024]
    when: {deployments.0.scheduler.policy: [chunked, mixed]}
require: ["deployments.0.tp * deployments.0.pp <= devices_per_node(deployments.0.hardware)"]
baseline: {deployments.0.hardware: H100-SXM}   # overrides of base for the stated baseline
```
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from profiling.errors import InputError
from profiling.yamlfile import read_yaml

from .expr import catalog as hardware_catalog, compile_requirement
from .paths import MISSING, deep_merge, exceeds, get_path, with_values
from .slo import SLO, parse_slos, slo_dict
from .spacecheck import check_space

HARDWARE_KEYS = ("hardware", "decode_hardware", "prefill_hardware")
Scalar = Union[bool, int, float, str, None]
MAX_VALUES = 100_000  # values in a space or its base, counting alias reuse; real ones hold < 1,000


class Param(BaseModel):
    """One searched choice: categorical (``choices``) or a numeric range (``low``/``high``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    choices: tuple[Scalar, ...] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    type: Literal["int", "float"] | None = None
    when: dict[str, Union[Scalar, tuple[Scalar, ...]]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _shape(self) -> "Param":
        if self.choices is not None:
            if len(self.choices) == 0:
                raise ValueError("choices: empty choice list")
            if any(x is not None for x in (self.low, self.high, self.step)):
                raise ValueError("give either choices or low/high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("needs choices: [...] or a range low: / high:")
        if self.low > self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log range cannot have a step")
        return self

    @property
    def kind(self) -> str:
        if self.choices is not None:
            return "categorical"
        if self.type:
            return self.type
        ints = all(float(x).is_integer() for x in (self.low, self.high, self.step or 1))
        return "int" if ints else "float"

    def active(self, values: dict[str, Any], base: dict) -> bool:
        """True when every ``when`` condition holds on the values chosen so far (or base)."""
        for path, want in self.when.items():
            have = values.get(path, get_path(base, path))
            allowed = want if isinstance(want, tuple) else (want,)
            if have is MISSING or have not in allowed:
                return False
        return True

    def suggest(self, trial: Any, name: str) -> Any:
        """Ask an Optuna trial for this parameter."""
        if self.kind == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high),
                                     step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list[Any]:
        """Every value (for exhaustive enumeration); float ranges need a step."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise ValueError("a float range without a step cannot be enumerated")
        n = int(round((self.high - self.low) / self.step))
        return [self.low + i * self.step for i in range(n + 1)]


class Capacity(BaseModel):
    """Capacity mode: the highest offered load (req/s) that meets the SLOs, by bisection."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_rps: float = Field(gt=0)
    max_rps: float = Field(gt=0)
    steps: int = Field(default=5, ge=1, le=12)


class Prune(BaseModel):
    """Stop a simulation early once a partial tail latency is ``factor`` x over its SLO."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    factor: float = Field(default=3.0, gt=1)
    min_completed: int = Field(default=30, ge=1)


class SpaceFile(BaseModel):
    """The raw file, validated field by field."""

    model_config = ConfigDict(extra="forbid")

    name: str = "search"
    base: Union[str, dict[str, Any]]
    workload: dict[str, Any] = Field(default_factory=dict)
    slo: dict[str, Any] | None = None
    objective: Literal["tokens_per_dollar", "pareto"] = "tokens_per_dollar"
    pareto_latency: Literal["ttft_p90", "e2e_p99"] = "ttft_p90"
    capacity: Capacity | None = None
    prune: Prune = Prune()
    # Feasible only when P(all SLOs met) >= this over sampled simulations (simulator.uncertainty),
    # ranked by the tokens per dollar reached with that probability; none: the point estimate.
    slo_confidence: float | None = Field(default=None, gt=0, lt=1)
    confidence_samples: int = Field(default=8, ge=2, le=256)
    params: dict[str, Param]
    require: list[str] = Field(default_factory=list)
    baseline: dict[str, Any] = Field(default_factory=dict)
    baseline_name: str = ""

    @model_validator(mode="after")
    def _confidence(self) -> "SpaceFile":
        if self.slo_confidence is not None and self.capacity is not None:
            raise ValueError("slo_confidence: not with capacity mode (the load would be searched per sample)")
        return self

    @field_validator("params")
    @classmethod
    def _nonempty(cls, v: dict[str, Param]) -> dict[str, Param]:
        if not v:
            raise ValueError("at least one parameter to search is needed")
        return v


class SearchSpace:
    """A validated space: the resolved base scenario dict plus choices and rules."""

    def __init__(self, raw: SpaceFile, base: dict, source: str) -> None:
        self.name = raw.name
        self.raw = raw
        self.source = source
        self.doc: dict = {}
        self.params: dict[str, Param] = raw.params
        self.objective = raw.objective
        self.pareto_latency = raw.pareto_latency
        self.capacity = raw.capacity
        self.prune = raw.prune
        self.slo_confidence = raw.slo_confidence
        self.confidence_samples = raw.confidence_samples
        base = deep_merge(base, {"workload": raw.workload}) if raw.workload else base
        slo_raw = raw.slo if raw.slo is not None else base.get("slo") or {}
        self.slos: tuple[SLO, ...] = parse_slos(slo_raw)
        if raw.slo_confidence is not None and not self.slos:
            raise ValueError("slo_confidence: the space has no SLO to be confident about")
        base = dict(base)
        base["slo"] = slo_dict(self.slos)
        self.base: dict = base
        self.requirements = [compile_requirement(r) for r in raw.require]
        self.baseline_overrides: dict[str, Any] = dict(raw.baseline)
        self.baseline_name = raw.baseline_name or (
            "base scenario" if not raw.baseline else
            ", ".join(f"{k}={v}" for k, v in raw.baseline.items()))

    # ---- building scenarios --------------------------------------------
    def scenario(self, values: dict[str, Any]) -> dict:
        """The base scenario with the chosen values applied (a fresh dict)."""
        return with_values(self.base, values)

    def baseline(self) -> dict:
        return with_values(self.base, self.baseline_overrides)

    def enumerate(self) -> list[dict[str, Any]]:
        """Every distinct active assignment (conditions respected), in a stable order."""
        out: list[dict[str, Any]] = [{}]
        for path, p in self.params.items():
            nxt = []
            for vals in out:
                if p.active(vals, self.base):
                    nxt.extend({**vals, path: g} for g in p.grid())
                else:
                    nxt.append(vals)
            out = nxt
        return out


def _one_line(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith("function-after"))
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def _check_hardware(space: SpaceFile, file: str) -> None:
    catalog = hardware_catalog()
    for path, p in space.params.items():
        if path.rsplit(".", 1)[-1] in HARDWARE_KEYS and p.choices is not None:
            for i, c in enumerate(p.choices):
                if str(c) not in catalog:
                    raise InputError(f"params.{path}.choices[{i}]: unknown hardware '{c}' "
                                     f"(known: {', '.join(sorted(catalog.names()))})", file=file)
                spec = catalog.get(str(c))
                if spec.price_per_hour <= 0:  # tokens per dollar needs a price
                    raise InputError(f"params.{path}.choices[{i}]: hardware '{c}' has no price (price_per_hour 0: "
                                     f"{spec.price_source or 'not given'}); set one in a --catalog file", file=file)


def _check_size(doc: dict, source: str | Path) -> None:
    """Refuse a document whose aliases expand past what a search space needs."""
    for key, value in doc.items():
        if exceeds(value, MAX_VALUES):
            raise InputError(f"{key}: expands to more than {MAX_VALUES:,} values (YAML "
                             "anchors and aliases?); a search space is refused above that", file=source)


def parse_space(doc: Any, *, source: str = "<space>", root: Path | None = None) -> SearchSpace:
    """Validate a space mapping; every mistake is one InputError line naming the field."""
    if not isinstance(doc, dict):
        raise InputError("a search space must be a YAML mapping", file=source)
    _check_size(doc, source)
    try:
        raw = SpaceFile.model_validate(doc)
    except ValidationError as e:
        raise InputError(_one_line(e), file=source) from None
    _check_hardware(raw, source)
    if isinstance(raw.base, str):
        path = Path(raw.base)
        if not path.is_absolute() and root is not None:
            path = root / path
        if not path.is_file():
            raise InputError(f"base: scenario file not found: {path}", file=source)
        base = read_yaml(path, "base scenario file")
        if not isinstance(base, dict):
            raise InputError("a scenario must be a YAML mapping", file=path)
        _check_size(base, path)
        from simulator.scenario import _resolve_paths
        base = _resolve_paths(base, path.parent)    # its relative trace and model paths are the base file's
    else:
        base = raw.base
    for path in list(raw.params) + [k for p in raw.params.values() for k in p.when]:
        head = path.split(".")[0]
        if head not in ("deployments", "workload", "slo", "stages", "pipelines", "surrogate",
                        "seed", "network", "kv_tiers", "name") and head not in base:
            raise InputError(f"params.{path}: '{head}' is not a part of the scenario", file=source)
    try:
        space = SearchSpace(raw, base, source)
    except ValueError as e:
        raise InputError(str(e), file=source) from None
    space.doc = {**doc, "base": base}  # self-contained: workers rebuild the space from it
    check_space(space, source)  # before any trial: a bad path or value fails every trial
    return space


def load_space(path: str | Path | None = None) -> SearchSpace:
    """Read a space file; ``None`` loads the built-in example ``search/spaces/default.yaml``."""
    if path is None:
        text = resources.files("search").joinpath("spaces/default.yaml").read_text()
        return parse_space(yaml.safe_load(text), source="builtin default.yaml",
                           root=Path(str(resources.files("search").joinpath("spaces"))))
    p = Path(path)
    doc = read_yaml(p, "search space file")
    return parse_space(doc, source=str(p), root=p.parent)
