"""Local moves (search/local.py): a neighbour is a valid assignment whose hash is that of the
trial it becomes, so the search never re-enqueues a configuration it has already tried."""
from __future__ import annotations

import random

from search.local import neighbours
from search.objective import params_hash
from search.space import parse_space
from search_helpers import small_space


def test_a_newly_active_int_range_gets_an_int():
    """Switching the policy makes an int range active: its value is an int (a range's bounds are
    stored as floats, and 2.0 hashes differently from the 2 the trial records)."""
    params = {"deployments.0.scheduler.policy": {"choices": ["continuous", "chunked"]},
              "deployments.0.replicas": {"low": 1, "high": 2,
                                         "when": {"deployments.0.scheduler.policy": "chunked"}}}
    space = parse_space(small_space(params=params), source="test")
    for seed in range(8):
        for nb in neighbours(space, {"deployments.0.scheduler.policy": "continuous"}, random.Random(seed)):
            reps = nb.get("deployments.0.replicas")
            assert reps is None or type(reps) is int, nb
    moved = {"deployments.0.scheduler.policy": "chunked", "deployments.0.replicas": 2}
    assert params_hash(moved) != params_hash({**moved, "deployments.0.replicas": 2.0})   # why it matters
