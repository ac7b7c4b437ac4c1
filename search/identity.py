"""A study's identity: everything a trial's objective depends on, as short content hashes.

A trial's tokens/$ is a function of the space (base scenario included), the hardware and
model catalogs, the surrogate, every file the scenario names (traces, model configs,
profiles) and the code itself. A study stores this identity when it is created; a run
whose identity differs must not reuse its trials (stale prices would steer the bound and
the answer), so ``search.study.open_study`` refuses it and the runner starts a study of
its own (``derived_name``).
"""
from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Iterator

from profiling.atomicfile import TMP_SUFFIX
from profiling.hardware import CATALOG_ENV

from .space import SearchSpace

IDENTITY_ATTR = "identity"  # study user attr: {component: hash}
SPACE, HARDWARE, MODELS, SURROGATE, VERSION = (
    "search space", "hardware catalog", "model catalog", "surrogate", "hermes-sim version")
FILE_PREFIX = "file "  # one component per file the scenario names
UNRECORDED = "unrecorded"  # a study made before identities were stored
# what a user changes to change each component (the refusal names it)
WHERE = {SPACE: "the space file or its base scenario",
         HARDWARE: f"--catalog / ${CATALOG_ENV}", MODELS: "the built-in model list",
         SURROGATE: "the surrogate the scenario names", VERSION: "the installed hermes-sim"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _jsonable(doc: Any) -> Any:
    return json.loads(json.dumps(doc, default=str))


def doc_hash(doc: Any) -> str:
    return _sha(json.dumps(_jsonable(doc), sort_keys=True).encode())


def _strings(doc: Any) -> Iterator[tuple[str, str]]:
    """Every (key, string value) in a nested document (lists keep their parent's key)."""
    stack: list[tuple[str, Any]] = [("", doc)]
    while stack:
        key, x = stack.pop()
        if isinstance(x, dict):
            stack.extend((str(k), v) for k, v in x.items())
        elif isinstance(x, (list, tuple)):
            stack.extend((key, v) for v in x)
        elif isinstance(x, str):
            yield key, x


def _values(space: SearchSpace) -> Iterator[tuple[str, str]]:
    """Strings of the base scenario, the baseline and every choice (keyed by their leaf)."""
    yield from _strings(space.base)
    for path, v in space.baseline_overrides.items():
        for _, s in _strings(v):
            yield path.rsplit(".", 1)[-1], s
    for path, p in space.params.items():
        for c in p.choices or ():
            if isinstance(c, str):
                yield path.rsplit(".", 1)[-1], c


def hardware_hash() -> str:
    """The effective hardware catalog: the built-in table and each $HERMES_CATALOG file."""
    from profiling.hardware import builtin_catalog_text
    parts = [builtin_catalog_text().encode()]
    for p in (x for x in os.environ.get(CATALOG_ENV, "").split(os.pathsep) if x):
        path = Path(p)  # by content and order (later files win), not by where it lives
        parts.append(_file_sha(path).encode() if path.is_file() else b"missing " + p.encode())
    return _sha(b"\0\0".join(parts))


def models_hash() -> str:
    return _sha(resources.files("profiling").joinpath("data/models.yaml").read_bytes())


def surrogate_hash(ref: str | None) -> str:
    """A surrogate by content: the shipped bundle or a trained folder by its files, an MLflow
    run by its id (its artifacts never change), the roofline by name."""
    from surrogates.tracking import BUNDLE_DIR
    ref = str(ref) if ref not in (None, "") else "builtin"
    folder = BUNDLE_DIR if ref == "builtin" else Path(ref)
    if not folder.is_dir():
        return ref
    # a hidden *.tmp is a write cut short by a kill (profiling.atomicfile), never the model
    files = sorted(f for f in folder.rglob("*")
                   if f.is_file() and not (f.name.startswith(".") and f.name.endswith(TMP_SUFFIX)))
    return _sha(json.dumps([(str(f.relative_to(folder)), _file_sha(f)) for f in files]).encode())


def version() -> str:
    """The installed hermes-sim's version (the code that computes every objective)."""
    try:
        return metadata.version("hermes-sim")
    except metadata.PackageNotFoundError:
        return "unknown"


def study_identity(space: SearchSpace) -> dict[str, str]:
    """Component -> hash for everything the objective of ``space`` depends on here."""
    values = list(_values(space))
    named = {s for k, s in values if k == "surrogate"}
    # a scenario without a surrogate string simulates with the shipped bundle
    surrogates = sorted(named | (set() if isinstance(space.base.get("surrogate"), str) else {"builtin"}))
    ident = {SPACE: doc_hash(space.doc), HARDWARE: hardware_hash(), MODELS: models_hash(),
             SURROGATE: _sha(json.dumps([(s, surrogate_hash(s)) for s in surrogates]).encode()),
             VERSION: version()}
    for _, s in values:
        if s not in surrogates and _is_file(s):
            ident[FILE_PREFIX + s] = _file_sha(Path(s))
    return ident


def _is_file(s: str) -> bool:
    try:
        return len(s) < 4096 and Path(s).is_file()
    except (OSError, ValueError):  # not a usable path (NUL byte, too long): not a file
        return False


def identity_hash(ident: dict[str, str]) -> str:
    return _sha(json.dumps(ident, sort_keys=True).encode())


def changed(stored: dict[str, str] | None, now: dict[str, str]) -> list[str]:
    """Names of the components that differ (all of them when nothing was stored)."""
    if not isinstance(stored, dict):
        return [UNRECORDED]
    keys = list(now) + [k for k in stored if k not in now]
    return [k for k in keys if stored.get(k) != now.get(k)]


def describe(components: list[str]) -> str:
    """``hardware catalog (--catalog / $HERMES_CATALOG), file x.csv`` for a message."""
    if components == [UNRECORDED]:
        return "set of inputs (the study predates recorded inputs)"
    out = []
    for c in components:
        out.append(f"{c} ({WHERE[c]})" if c in WHERE else c)
    return ", ".join(out)


def derived_name(base: str, ident: dict[str, str]) -> str:
    """The study name a run with these inputs uses when ``base`` belongs to other inputs."""
    return f"{base}-{identity_hash(ident)[:8]}"
