"""Branch and bound with the real simulator: the bound holds, skips are recorded, the proof is right."""
from __future__ import annotations

import dataclasses

import optuna
import pytest

from search import evaluate, load_space, parse_space
from search.bounds import Bounder, check, unsupported
from search.capacity import LoadEstimator
from search.guide import Guide, queued
from search.objective import params_hash
from search.storage import counts, make_storage
from search.study import PROVEN_ATTR, open_study, run_worker

from search_helpers import small_space

GRID = {  # 3 GPU types x 2 replica counts x 2 batching policies = 12 configurations
    "deployments.0.hardware": {"choices": ["H100-SXM", "A100-80GB", "L40S"]},
    "deployments.0.replicas": {"low": 1, "high": 2},
    "deployments.0.scheduler.policy": {"choices": ["continuous", "chunked"]},
}


@pytest.fixture(scope="module")
def grid_table():
    """Every configuration of a small real space simulated once (real outcomes to replay); the
    tight TPOT target makes the cheapest fleets (one L40S, one A100) miss it."""
    sp = parse_space(small_space(requests=80, rate=20.0, params=GRID,
                                 slo={"ttft_p90_s": 0.5, "tpot_p90_s": 0.02}))
    return sp, {params_hash(v): evaluate(sp, v) for v in sp.enumerate()}


def test_bound_holds_and_agrees_with_every_simulation(grid_table):
    """For every simulated configuration of the grid, the bound is >= its tokens/$ when it is
    feasible, and the simulation's fleet $/h, output tokens and makespan agree with the bound's."""
    sp, table = grid_table
    bounder = Bounder(sp)
    feasible = 0
    for v in sp.enumerate():
        out, b = table[params_hash(v)], bounder.bound(v)
        assert b is not None and b.value > 0
        if out.feasible:
            feasible += 1
            assert b.value >= out.values[0], v
            assert check(b, out.metrics) is None, v
    assert feasible >= 3  # the check above really ran


def test_bound_covers_a_rag_pipeline_with_services():
    """On the built-in RAG space (CPU/GPU services in a pipeline) the bound is above the simulated
    tokens/$ and prices the services too: the self-check finds no mismatch."""
    doc = load_space(None).doc
    base = {**doc["base"], "surrogate": "roofline"}  # no trained bundle to load: a fast test
    sp = parse_space({**doc, "base": base, "workload": {"num_requests": 60}}, source="rag-small")
    values = {"deployments.0.hardware": "H100-SXM", "deployments.0.replicas": 1,
              "deployments.0.scheduler.policy": "chunked", "deployments.0.scheduler.max_batch_size": 128,
              "deployments.0.scheduler.chunk_size": 512, "services.1.hardware": "L40S",
              "services.3.hardware": "L40S"}
    out = evaluate(sp, values)
    b = Bounder(sp).bound(values)
    assert out.simulated and out.metrics["completed"] == 60, out.reason
    assert b is not None and b.value >= out.values[0]
    assert check(b, out.metrics) is None


def test_check_reports_a_wrong_ingredient(grid_table):
    """A bound whose fleet price disagrees with the simulation is reported (bounding then stops)."""
    sp, table = grid_table
    v = next(v for v in sp.enumerate() if table[params_hash(v)].feasible)
    b = Bounder(sp).bound(v)
    msg = check(dataclasses.replace(b, price_per_hour=b.price_per_hour * 2), table[params_hash(v)].metrics)
    assert msg is not None and "$/h" in msg


def test_search_bounds_out_and_proves_the_optimum(grid_table, tmp_path):
    """With a budget above the space size, the search stops once every configuration is simulated
    or bounded out; bounded trials are PRUNED with their reason and cost no budget; the best
    trial is the exhaustive optimum."""
    sp, table = grid_table
    optimum = max(o.values[0] for o in table.values() if o.feasible)
    url = f"sqlite:///{tmp_path / 'bb.db'}"
    study = open_study(sp, make_storage(url, heartbeat_s=2), "bb", 0)
    calls = []

    def replay(_space, values):
        calls.append(params_hash(values))
        return table[params_hash(values)]

    run_worker(url, "bb", n_trials=40, seed=0, heartbeat_s=2, evaluator=replay)
    trials = study.get_trials()
    assert study.user_attrs.get(PROVEN_ATTR) is True
    simulated = {t.user_attrs["params_hash"] for t in trials if counts(t)}
    assert len(simulated) == sum(counts(t) for t in trials) == len(calls) < len(table)
    best = max(t.values[0] for t in trials if counts(t) and t.user_attrs.get("feasible"))
    assert best == optimum
    assert any(not table[h].feasible for h in simulated)  # it had to get past infeasible ones
    bounded = [t for t in trials if t.user_attrs.get("bounded")]
    for t in bounded:
        assert t.state == optuna.trial.TrialState.PRUNED and not counts(t)
        assert t.user_attrs["reason"].startswith("bounded out: at most")
    never = set(table) - simulated  # not simulated: each provably cannot beat the optimum
    bounder = Bounder(sp)
    for v in sp.enumerate():
        if params_hash(v) in never:
            assert bounder.bound(v).value <= optimum


def test_guide_is_off_where_the_bound_does_not_hold():
    """Pareto fronts and capacity mode get no bound (a dearer candidate can still win there)."""
    pareto = parse_space(small_space(objective="pareto"))
    cap = parse_space({**small_space(), "capacity": {"min_rps": 1.0, "max_rps": 50.0}})
    assert "Pareto" in unsupported(pareto) and not Guide(pareto).enabled
    assert "capacity" in unsupported(cap) and Bounder(cap).bound({}) is None
    assert unsupported(parse_space(small_space())) is None


def test_load_estimate_separates_hopeless_from_easy():
    """The roofline load estimate calls one L40S at 200 req/s overloaded, two H100s at 2 req/s not
    (with a time per token under the TPOT target)."""
    sp = parse_space(small_space(params={"deployments.0.hardware": {"choices": ["H100-SXM", "L40S"]},
                                         "deployments.0.replicas": {"low": 1, "high": 2},
                                         "workload.rate_rps": {"choices": [2.0, 200.0]}}))
    est = LoadEstimator(sp)
    hopeless = {"deployments.0.hardware": "L40S", "deployments.0.replicas": 1, "workload.rate_rps": 200.0}
    easy = {"deployments.0.hardware": "H100-SXM", "deployments.0.replicas": 2, "workload.rate_rps": 2.0}
    assert est.overloaded(hopeless) and est.load(hopeless).rho >= 1
    load = est.load(easy)
    assert not est.overloaded(easy) and load.rho < 0.5 and load.tpot_s < 0.05


def test_best_first_move_is_the_cheapest_plausible(tmp_path):
    """On an empty study the guided move is the configuration with the highest bound among those
    the load estimate does not call overloaded."""
    sp = parse_space(small_space(requests=200, rate=40.0, params=GRID))
    study = open_study(sp, make_storage(f"sqlite:///{tmp_path / 'g.db'}"), "g", 0)
    guide = Guide(sp)
    assert guide.plan(study, seed=0)
    move = queued(study.get_trials(states=(optuna.trial.TrialState.WAITING,))[0])
    plausible = [v for v in sp.enumerate() if not guide.loads.overloaded(v)]
    assert move in plausible
    assert guide.bounder.bound(move).value == max(guide.bounder.bound(v).value for v in plausible)
    assert any(guide.loads.overloaded(v) for v in sp.enumerate())  # something was moved back


def test_replica_dominance_only_looks_down():
    """A miss with more replicas marks the same configuration with fewer replicas (ordering only);
    a miss with fewer replicas, or differing elsewhere, marks nothing."""
    guide = Guide(parse_space(small_space(params=GRID)))
    base = {"deployments.0.hardware": "L40S", "deployments.0.scheduler.policy": "continuous"}
    missed = [{**base, "deployments.0.replicas": 2}]
    assert guide._dominated({**base, "deployments.0.replicas": 1}, missed)
    assert not guide._dominated({**base, "deployments.0.replicas": 3}, missed)
    other = {**base, "deployments.0.replicas": 1, "deployments.0.hardware": "H100-SXM"}
    assert not guide._dominated(other, missed)
