"""The event core: ordering, determinism, early stop."""
from __future__ import annotations

import pytest

from simulator.engine.core import LATE, NORMAL, URGENT, Environment, StopSimulation


def test_events_fire_in_time_priority_then_insertion_order():
    """Ties at equal time resolve by priority, then by insertion order; clock advances."""
    env, seen = Environment(), []
    env.schedule(2.0, seen.append, "late-t2")
    env.schedule(1.0, seen.append, "b", priority=LATE)
    env.schedule(1.0, seen.append, "a1", priority=NORMAL)
    env.schedule(1.0, seen.append, "a2", priority=NORMAL)
    env.schedule(1.0, seen.append, "first", priority=URGENT)
    assert env.run() is True
    assert seen == ["first", "a1", "a2", "b", "late-t2"]
    assert env.now == 2.0 and env.events == 5


def test_cannot_schedule_in_the_past_and_stop_simulation_ends_run():
    """Scheduling before `now` is an error; StopSimulation from a callback stops the run."""
    env = Environment()

    def stop():
        raise StopSimulation

    env.schedule(1.0, stop)
    env.schedule(5.0, lambda: None)
    assert env.run() is False
    assert env.now == 1.0 and len(env) == 1
    with pytest.raises(ValueError):
        env.schedule(0.5, lambda: None)
