"""What the run readers share: user overrides, engine-argument and GPU-name checks, and
strict conversions of a file's per-request lists (one ``InputError`` line naming the file,
field and row on a bad value)."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ...errors import HermesError, InputError
from ...jsonfile import data_file_limit, read_user_bytes
from ...hardware import CATALOG_ENV, canonical_name, load_catalog
from .schema import ENGINES

# Keyword overrides every reader accepts: they supply (or replace) what the file lacks.
OVERRIDES = ("engine", "version", "model", "gpu", "tp", "pp", "dp", "ep", "engine_args")


@lru_cache(maxsize=1)
def known_engine_args() -> dict[str, frozenset[str]]:
    """Engine -> the argument names it accepts (``engine_args.yaml``)."""
    text = resources.files(__package__).joinpath("engine_args.yaml").read_text()
    return {k: frozenset(v) for k, v in yaml.safe_load(text).items()}


def normalize_args(args: dict[str, Any] | None) -> dict[str, Any]:
    """Command-line spelling ('--max-num-seqs') to the engine's field name ('max_num_seqs')."""
    return {str(k).lstrip("-").replace("-", "_"): v for k, v in (args or {}).items()}


def check_engine_args(engine: str, args: dict[str, Any], file: Path, field: str = "engine_args") -> None:
    """Refuse an argument name the engine does not have (a typo would silently change nothing)."""
    known = known_engine_args().get(engine)
    if known is None:
        return
    for name in args:
        if name not in known:
            raise InputError(f"unknown {engine} engine argument '{name}'", file=file,
                             column=f"{field}.{name}")


def gpu_name(recorded: str) -> str:
    """The catalog's name for a recorded device ('NVIDIA GeForce RTX 4090' -> 'RTX-4090');
    the recorded text when the catalog does not know it."""
    return _gpu_name(recorded, os.environ.get(CATALOG_ENV, "")) if recorded else ""


@lru_cache(maxsize=256)
def _gpu_name(recorded: str, catalog_env: str) -> str:
    # Keyed on the user catalog path too: another $HERMES_CATALOG may name other devices.
    cat = load_catalog()
    if recorded in cat:
        return cat.get(recorded).name
    # Longest catalog name or alias (8+ characters, so 'a10' cannot match 'a100') inside the text.
    key, best, best_len = canonical_name(recorded), recorded, 0
    for spec in cat:
        if spec.kind != "gpu":
            continue
        for a in (spec.name, *spec.aliases):
            c = canonical_name(a)
            if len(c) >= 8 and c in key and len(c) > best_len:
                best, best_len = spec.name, len(c)
    return best


def engine_of(text: str) -> str:
    """Which engine a client backend or server name points at ('sglang-oai' -> sglang)."""
    t = (text or "").lower()
    for engine, marks in (("sglang", ("sglang",)), ("vllm", ("vllm",)),
                          ("trtllm", ("trtllm", "tensorrt", "trt"))):
        if any(m in t for m in marks):
            return engine
    return "unknown"


def apply_overrides(info: dict[str, Any], overrides: dict[str, Any], file: Path) -> dict[str, Any]:
    """The file's run info with the user's overrides on top, engine arguments checked."""
    unknown = [k for k in overrides if k not in OVERRIDES]
    if unknown:
        raise TypeError(f"unknown run override(s) {unknown}; known: {', '.join(OVERRIDES)}")
    out = dict(info)
    if overrides.get("engine") is not None:
        engine = str(overrides["engine"]).lower()
        if engine not in ENGINES:
            raise HermesError(f"unknown engine '{overrides['engine']}' (known: {', '.join(ENGINES)})")
        out["engine"] = engine
    if overrides.get("version") is not None:
        out["engine_version"] = str(overrides["version"])
    if overrides.get("model") is not None:
        out["model"] = str(overrides["model"])
    if overrides.get("gpu") is not None:
        out["gpu"] = gpu_name(str(overrides["gpu"]))
    for k in ("tp", "pp", "dp", "ep"):
        if overrides.get(k) is not None:
            v = overrides[k]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise HermesError(f"{k} must be a positive integer, got {v!r}")
            out[k] = v
    args = normalize_args(out.get("engine_args"))
    given = normalize_args(overrides.get("engine_args"))
    check_engine_args(out.get("engine", "unknown"), args, file)
    check_engine_args(out.get("engine", "unknown"), given, file, field="--engine-arg")
    out["engine_args"] = {**args, **given}
    derived = parallelism(out.get("engine", "unknown"), out["engine_args"])
    for k, v in derived.items():
        if overrides.get(k) is None:
            out[k] = v
    return out


# Engine argument -> parallel degree, per engine (expert parallel spans the attention ranks).
_PARALLEL_ARGS = {
    "vllm": {"tp": "tensor_parallel_size", "pp": "pipeline_parallel_size", "dp": "data_parallel_size"},
    "sglang": {"tp": "tp_size", "pp": "pp_size", "dp": "dp_size", "ep": "ep_size"},
    "trtllm": {"tp": "tensor_parallel_size", "pp": "pipeline_parallel_size", "ep": "moe_expert_parallel_size"},
}


def parallelism(engine: str, args: dict[str, Any]) -> dict[str, int]:
    """TP/PP/DP/EP that the engine arguments set (only those they set)."""
    out: dict[str, int] = {}
    for k, name in _PARALLEL_ARGS.get(engine, {}).items():
        v = args.get(name)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
            out[k] = v
    if engine == "vllm" and args.get("enable_expert_parallel") is True:
        # vLLM shards experts over every attention rank: EP = TP x DP.
        out["ep"] = out.get("tp", 1) * out.get("dp", 1)
    return out


def tpot(e2e: np.ndarray, ttft: np.ndarray, output_tokens: np.ndarray) -> np.ndarray:
    """Mean time per output token after the first, (E2E - TTFT) / (output - 1), as vLLM's and
    SGLang's benchmarks define it; NaN for requests of one token or less."""
    out = np.asarray(output_tokens, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = (np.asarray(e2e, dtype=float) - np.asarray(ttft, dtype=float)) / (out - 1)
    return np.where(out > 1, v, np.nan)


# ---- strict per-request conversions -----------------------------------------------------

def require(doc: dict, key: str, file: Path, kind: type | tuple[type, ...] = list) -> Any:
    """``doc[key]``, which must exist and be of ``kind``."""
    if key not in doc or doc[key] is None:
        raise InputError("missing field", file=file, column=key)
    if not isinstance(doc[key], kind):
        raise InputError(f"must be a {getattr(kind, '__name__', 'list')}", file=file, column=key)
    return doc[key]


def same_length(lists: dict[str, list], file: Path) -> int:
    """The common length of per-request lists; a list of another length is named."""
    lengths = {k: len(v) for k, v in lists.items()}
    n = max(lengths.values(), key=list(lengths.values()).count)  # the majority length
    for k, m in lengths.items():
        if m != n:
            raise InputError(f"has {m} entries where the other per-request lists have {n}",
                             file=file, column=k)
    return n


def numbers(values: Iterable[Any], file: Path, field: str, *, scale: float = 1.0,
            first_row: int = 1, allow_null: bool = True) -> np.ndarray:
    """Floats (times ``scale``); null -> NaN when allowed; any other non-number, a non-finite
    or a negative value names the row."""
    out = []
    for i, v in enumerate(values):
        if v is None:
            if not allow_null:
                raise InputError("missing value", file=file, row=i + first_row, column=field)
            out.append(math.nan)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"not a number ({json.dumps(v)[:40]})", file=file, row=i + first_row,
                             column=field)
        x = float(v)
        if not math.isfinite(x):
            raise InputError("must be finite", file=file, row=i + first_row, column=field)
        if x < 0:
            raise InputError("must not be negative", file=file, row=i + first_row, column=field)
        out.append(x * scale)
    return np.asarray(out, dtype=float)


def gaps(values: Any, file: Path, field: str, row: int, scale: float = 1.0) -> list[float] | None:
    """One request's inter-token gaps (a list of numbers, or None when not recorded)."""
    if values is None:
        return None
    if not isinstance(values, list):
        raise InputError("must be a list of inter-token latencies", file=file, row=row, column=field)
    out = []
    for x in values:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise InputError(f"not a number ({json.dumps(x)[:40]})", file=file, row=row, column=field)
        if not math.isfinite(x):
            raise InputError("must be finite", file=file, row=row, column=field)
        if x < 0:
            raise InputError("must not be negative", file=file, row=row, column=field)
        out.append(float(x) * scale)
    return out


def first_line(path: Path, suffix: str) -> str:
    """The first line of a file with ``suffix`` (for format detection); '' when it is not one."""
    return head_text(path, suffix, lines=1)


def head_text(path: Path, suffix: str, chars: int = 0, lines: int = 0) -> str:
    """The first ``chars`` characters (or ``lines`` lines) of a file with ``suffix``, for format
    detection; '' when it is not such a file or cannot be read."""
    if path.suffix != suffix or not path.is_file():
        return ""
    try:
        with open(path, errors="replace") as f:
            return f.readline() if lines else f.read(chars)
    except OSError:
        return ""


def read_jsonl(path: Path, what: str) -> list[dict]:
    """A JSON-lines file's objects; a line that is not a JSON object is named."""
    try:
        text = read_user_bytes(path, what, data_file_limit()).decode()
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", file=path) from None
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"not a JSON line ({e.msg})", file=path, row=i) from None
        if not isinstance(obj, dict):
            raise InputError("not a JSON object", file=path, row=i)
        rows.append(obj)
    if not rows:
        raise InputError(f"empty {what}", file=path)
    return rows


def pick(items: list, index: int | None, file: Path, what: str) -> Any:
    """One of several runs a file holds: the only one, or the one ``index`` names."""
    if index is None:
        if len(items) != 1:
            raise InputError(f"holds {len(items)} {what}s: say which one (index 0..{len(items) - 1})",
                             file=file)
        return items[0]
    if not 0 <= index < len(items):
        raise InputError(f"has no {what} {index} (it holds {len(items)})", file=file)
    return items[index]
