"""Check a search space against the scenario schema before the first trial.

A parameter path the scenario does not have, a choice of the wrong type or an index past
the end of a list would otherwise make every trial invalid and the search would end with
"no configuration met the SLOs". Each parameter's extreme values (every choice, or
low and high) are applied to the base scenario, with the other parameters at their first
value and the parameter's own ``when`` conditions met, and validated with the simulator's
own schema; the first failure is one ``InputError`` naming the space file and the parameter.
"""
from __future__ import annotations

from typing import Any

from profiling.errors import HermesError, InputError

from .expr import catalog
from .paths import with_values
from .simapi import to_scenario

# ``space`` below is a ``search.space.SearchSpace`` and ``p`` its ``Param``: space.py calls
# this module, so it is not imported here (not even for typing: no import circle).
SearchSpace = Param = Any

HARDWARE_KEYS = ("hardware", "decode_hardware", "prefill_hardware")


def probes(p: Param) -> list[Any]:
    """The values of ``p`` worth validating: every choice, or both ends of the range."""
    if p.choices is not None:
        return list(p.choices)
    if p.kind == "int":
        return [int(p.low), int(p.high)]
    return [p.low, p.high]


def _assignment(space: SearchSpace, path: str | None = None, value: Any = None) -> dict[str, Any]:
    """First values of every active parameter, with ``path`` set to ``value`` and its
    ``when`` conditions met (so a conditional parameter is checked where it applies)."""
    values: dict[str, Any] = {}
    if path is not None:
        for cond, want in space.params[path].when.items():
            values[cond] = want[0] if isinstance(want, tuple) else want
    for q_path, q in space.params.items():
        if q_path == path:
            values[q_path] = value
        elif q_path not in values and q.active(values, space.base):
            values[q_path] = probes(q)[0]
    return values


def _problem(space: SearchSpace, values: dict[str, Any]) -> str | None:
    """Why the scenario with ``values`` cannot be built or fails the schema, or None."""
    try:
        doc = with_values(space.base, values)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        why = e.args[0] if isinstance(e, KeyError) and e.args else e
        return f"the path does not exist in the base scenario ({why})"
    try:
        to_scenario(doc)
    except HermesError as e:
        return f"invalid scenario: {str(getattr(e, 'message', e))}"
    return None


def _names(space: SearchSpace, path: str, value: Any, source: str, field: str) -> None:
    """Hardware and LLM names must exist: an unknown one would fail every trial it is in."""
    leaf = path.rsplit(".", 1)[-1]
    if leaf in HARDWARE_KEYS and isinstance(value, str) and value not in catalog():
        raise InputError(f"{field}: unknown hardware '{value}'", file=source)
    parts = path.split(".")
    if len(parts) == 3 and parts[0] == "deployments" and leaf == "model" and isinstance(value, str):
        from profiling.models import resolve_model
        try:
            resolve_model(value)
        except HermesError as e:
            raise InputError(f"{field}: {getattr(e, 'message', e)}", file=source) from None


def check_space(space: SearchSpace, source: str) -> None:
    """Raise one ``InputError`` naming ``source`` and the field when some value of the space
    or its baseline cannot make a valid scenario; return quietly otherwise."""
    first = _problem(space, _assignment(space))
    if first is not None and _problem(space, {}) == first:
        raise InputError(f"base: {first}", file=source)
    for path, p in space.params.items():
        for value in probes(p):
            field = f"params.{path}"
            _names(space, path, value, source, field)
            why = _problem(space, _assignment(space, path, value))
            if why is not None and first is not None:  # blame it only if it fails on its own
                seeds = {c: (w[0] if isinstance(w, tuple) else w) for c, w in p.when.items()}
                why = _problem(space, {**seeds, path: value})
            if why is not None:
                raise InputError(f"{field}: value {value!r}: {why}", file=source)
    if first is not None:
        raise InputError(f"params: the first value of every parameter together: {first}", file=source)
    for path, value in space.baseline_overrides.items():
        _names(space, path, value, source, f"baseline.{path}")
        why = _problem(space, {path: value})
        if why is not None:
            raise InputError(f"baseline.{path}: value {value!r}: {why}", file=source)
    why = _problem(space, dict(space.baseline_overrides))
    if why is not None:
        raise InputError(f"baseline: {why}", file=source)
