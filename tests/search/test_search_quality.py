"""The old search-quality benchmark (benchmarks/search_quality.py) as a regression test: on a
reduced copy of its space, simulated exhaustively, the search (``run_worker`` with a real SQLite
storage, replaying the table) reaches the exhaustive optimum within the benchmark's budget."""
from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path

import pytest

from search.space import parse_space
from search.storage import quiet_optuna

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "search_quality.py"
# Every seed of the benchmark reached the optimum by 20 distinct configurations. Here 20 of 72:
# random search would find the optimum in a seed with probability 20/72.
BUDGET = 20
SEEDS = (0, 1)
# The study's SQLite file on a RAM disk where there is one: each trial commits a dozen times,
# and a disk flush per commit would be most of the test's time.
RAM = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _bench():
    spec = importlib.util.spec_from_file_location("search_quality_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def reduced():
    """The benchmark's space with fewer GPU types, replicas and chunk sizes (72 configurations
    instead of 320), priced by the roofline, simulated exhaustively."""
    bench = _bench()
    doc = copy.deepcopy(bench.SPACE)
    doc["base"]["surrogate"] = "roofline"
    doc["base"]["workload"]["num_requests"] = 120
    p = doc["params"]
    p["deployments.0.hardware"]["choices"] = ["H100-SXM", "A100-80GB", "L40S"]
    p["deployments.0.replicas"] = {"low": 1, "high": 2}
    p["deployments.0.scheduler.chunk_size"]["choices"] = [256, 1024]
    space = parse_space(doc, source="test_search_quality")
    table, optimum, _ = bench.exhaustive(space)
    return bench, space, table, optimum


def test_the_space_has_a_feasible_optimum_to_find(reduced):
    _, space, table, optimum = reduced
    assert len(table) == len(space.enumerate()) == 72
    feasible = [o.values[0] for o in table.values() if o.feasible]
    assert optimum > 0 and 0 < len(feasible) < len(table)      # the SLOs bind: not every configuration


@pytest.mark.parametrize("seed", SEEDS)
def test_search_reaches_the_exhaustive_optimum_within_the_budget(reduced, seed):
    bench, space, table, optimum = reduced
    quiet_optuna()
    curve, _ = bench.replay(space, table, seed, BUDGET, RAM)
    assert curve[BUDGET - 1] == pytest.approx(optimum, rel=1e-12), \
        f"seed {seed}: {curve[BUDGET - 1] / optimum:.3f} of the optimum after {BUDGET} trials"
