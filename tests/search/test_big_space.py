"""The large search space of benchmarks/search_scale.py: it parses, is big, and every
configuration either builds a valid scenario or is refused before simulating, with a reason."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from search import load_space, parse_space
from search.objective import evaluate, prepare

SPACE = Path(__file__).resolve().parents[2] / "search" / "spaces" / "big_pipeline.yaml"
REFUSALS = ("require ", "does not fit", "deployment ")  # require rules, memory check, parallelism


@pytest.fixture(scope="module")
def big():
    space = load_space(SPACE)
    return space, space.enumerate()


def test_space_has_more_than_1e5_configurations(big):
    space, combos = big
    assert len(combos) >= 100_000
    assert len({tuple(sorted(v.items())) for v in combos[:5000]}) == 5000  # distinct assignments
    assert "deployments.1.scheduler.prefill_replicas" in space.params


def test_sampled_configurations_build_or_are_refused_with_a_reason(big):
    space, combos = big
    built = refused = 0
    for values in random.Random(0).sample(combos, 300):
        scen, reason = prepare(space, values)
        if scen is not None:
            built += 1
        else:
            assert reason and reason.startswith(REFUSALS), reason  # never "invalid scenario"
            refused += 1
    assert built > 100 and refused > 0


def test_one_trial_on_a_small_workload_runs(big):
    space, _ = big
    small = parse_space({**space.doc, "workload": {"num_requests": 30}}, source="small")
    out = evaluate(small, dict(space.baseline_overrides))
    assert out.simulated and out.values[0] > 0
    assert out.metrics["completed"] == 30
