"""The simulator as the search sees it: its public API and its scenario validation.

``feasibility`` (memory fit) and ``objective`` (simulate, score) both call the simulator;
this module is their one shared entry, so neither has to import the other for it.
"""
from __future__ import annotations

from typing import Any

from profiling.errors import HermesError


def sim_api() -> Any:
    """The simulator's public API (``simulate``, ``check_fit``, ``Scenario``, ``parse_scenario``)."""
    import simulator
    return simulator


def to_scenario(doc: dict) -> Any:
    """Validate a scenario dict with the simulator's own rules (one-line HermesError)."""
    simulator = sim_api()
    parse = getattr(simulator, "parse_scenario", None)
    if parse is not None:
        return parse(doc, "candidate")
    from pydantic import ValidationError
    try:
        return simulator.Scenario.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        raise HermesError(".".join(map(str, err["loc"])) + ": " + err["msg"]) from None
