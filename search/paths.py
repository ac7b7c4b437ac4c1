"""Dotted paths into a scenario dict: ``deployments.0.scheduler.policy``.

A search choice sets any leaf of the scenario by its dotted path; integer parts index
lists. Reading a missing path returns a sentinel so conditions can test it.
"""
from __future__ import annotations

import copy
from typing import Any

MISSING = object()


def _key(part: str, container: Any) -> Any:
    if isinstance(container, list):
        if not part.lstrip("-").isdigit():
            raise KeyError(part)
        return int(part)
    return part


def get_path(doc: Any, path: str, default: Any = MISSING) -> Any:
    """Value at ``path`` in ``doc`` or ``default`` when any part is missing."""
    cur = doc
    for part in path.split("."):
        try:
            cur = cur[_key(part, cur)]
        except (KeyError, IndexError, TypeError):
            return default
    return cur


def set_path(doc: dict, path: str, value: Any) -> None:
    """Set ``path`` in ``doc`` in place, creating intermediate mappings as needed."""
    parts = path.split(".")
    cur: Any = doc
    for i, part in enumerate(parts[:-1]):
        k = _key(part, cur)
        try:
            nxt = cur[k]
        except (KeyError, IndexError):
            if isinstance(cur, list):
                raise KeyError(f"'{'.'.join(parts[:i + 1])}' indexes past the end of a list") from None
            nxt = cur[k] = {}
        if nxt is None:
            nxt = cur[k] = {}
        cur = nxt
    cur[_key(parts[-1], cur)] = value


def with_values(doc: dict, values: dict[str, Any]) -> dict:
    """A deep copy of ``doc`` with every ``path: value`` of ``values`` applied in order."""
    out = copy.deepcopy(doc)
    for path, value in values.items():
        set_path(out, path, value)
    return out


def deep_merge(base: dict, over: dict) -> dict:
    """``base`` updated recursively by ``over`` (mappings merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def exceeds(doc: Any, limit: int) -> bool:
    """True when ``doc`` holds more than ``limit`` values counting each use of a shared
    value (a YAML alias) again, as copying or serializing it would, without expanding it."""
    n, stack = 0, [doc]
    while stack:
        x = stack.pop()
        n += 1
        if n > limit:
            return True
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
    return False
