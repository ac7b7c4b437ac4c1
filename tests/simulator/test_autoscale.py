"""Time-varying load and autoscaled deployments (issue 28, item 3): the rate follows its
schedule, the autoscaler keeps its bounds and lead time, bills per replica-second, loses
nothing when it drains, and bad values are one line (exit 2) through the real CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hermes_sim.cli import main
from simkit import BASE, make
from simulator import simulate
from simulator.engine.autoscale import lead_ok
from simulator.engine.config import Workload
from simulator.engine.deployment import build_deployment
from simulator.engine.workload import build_requests, rate_at

PRICE_H100 = 4.25
# a burst well above one replica's capacity, between two quiet spells
BURST = {"arrival": "poisson", "num_requests": 900, "duration_s": 90,
         "rate_schedule": [{"until_s": 20, "rate_rps": 3}, {"until_s": 50, "rate_rps": 25},
                           {"until_s": 90, "rate_rps": 2}],
         "prompt_tokens": {"dist": "lognormal", "mean": 600, "max": 3000},
         "output_tokens": {"dist": "lognormal", "mean": 150, "max": 1000}}
SCALER = {"min_replicas": 1, "max_replicas": 4, "signal": "in_flight", "scale_up_at": 12,
          "scale_down_at": 4, "interval_s": 2, "lead_time_s": 6, "cooldown_s": 4}


def scaled(scaler: dict | None = None, workload: dict | None = None, **dep):
    return make({"autoscaling": {**SCALER, **(scaler or {})}, "router": "jsq", **dep},
                workload=workload or BURST, debug=False)


def billed_integral(rows: np.ndarray) -> float:
    """Replica-seconds from the (time, active, starting, draining) rows: a step function."""
    t, billed = rows[:, 0], rows[:, 1:].sum(axis=1)
    return float(np.sum(np.diff(t) * billed[:-1]))


@pytest.fixture(scope="module")
def burst():
    return simulate(scaled())


def test_burst_scales_up_and_back_down(burst):
    """The burst makes the fleet grow and the quiet spell after it shrink it again."""
    ev = burst.scaling.events
    assert (ev.action == "scale_up").any() and (ev.action == "scale_down").any()
    assert burst.summary["autoscaling"]["llm"]["peak_replicas"] > 1


def test_replicas_stay_within_min_and_max(burst):
    """Billed replicas (starting + active + draining) never exceed max_replicas, and the
    serving ones (starting + active) never drop below min_replicas."""
    rows = burst.scaling.replicas["llm"]
    assert (rows[:, 1:].sum(axis=1) <= SCALER["max_replicas"]).all()
    assert (rows[:, 1] + rows[:, 2] >= SCALER["min_replicas"]).all()


def test_scale_up_takes_its_lead_time(burst):
    """Each new replica becomes ready exactly lead_time_s after its scale-up, and no request
    starts on it before then."""
    ev = burst.scaling.events
    ups = ev[ev.action == "scale_up"]
    ready = ev[ev.action == "ready"]
    added = int((ups.to_replicas - ups.from_replicas).sum())
    assert len(ready) <= added and len(ready) >= 1
    up_times = sorted(np.repeat(ups.time_s.to_numpy(), (ups.to_replicas - ups.from_replicas).to_numpy()))
    for t_ready, t_up in zip(sorted(ready.time_s), up_times):
        assert t_ready == pytest.approx(t_up + SCALER["lead_time_s"])
    df = burst.requests
    first_ready = min(ready.time_s)
    # replicas past the first one were added by the scaler: nothing starts on them before they are ready
    late = df[df.replica >= 1]
    assert len(late) and (late.start_s >= first_ready - 1e-9).all()


def test_no_request_starts_on_a_starting_replica():
    """The same check on the deployment object itself (its billing record per replica)."""
    from simulator.engine.core import Environment
    from simulator.engine.store import Store
    sc = scaled()
    env, store = Environment(), Store(build_requests(sc.workload, sc.seed))
    dep = build_deployment(env, store, sc.deployments[0], sc.surrogate)
    from simulator.simulate import OpenLoop
    OpenLoop(env, store, dep)
    env.run()
    assert len(dep.replicas) > 1 and lead_ok(dep)
    assert store.completed == store.n


def test_cost_is_replica_seconds_times_price(burst):
    """cost_usd = (integral of billed replicas over time) x devices x $/h / 3600, and the
    report's replica_seconds is that integral."""
    rows = burst.scaling.replicas["llm"]
    secs = billed_integral(rows)
    rep = burst.summary["autoscaling"]["llm"]
    assert rep["replica_seconds"] == pytest.approx(secs, rel=1e-9)
    assert burst.summary["cost_usd"] == pytest.approx(secs * PRICE_H100 / 3600, rel=1e-9)
    assert secs < SCALER["max_replicas"] * burst.summary["makespan_s"]
    tokens = burst.requests.output_tokens[burst.requests.finish_s.notna()].sum()
    assert burst.summary["output_tokens_per_dollar"] == pytest.approx(tokens / burst.summary["cost_usd"])


def test_drain_loses_nothing(burst):
    """Across scale-downs every request finishes once, with all its tokens; a drained
    replica is released only after the last request it held finished."""
    df = burst.requests
    assert burst.summary["completed"] == burst.summary["requests"] == len(df)
    assert (df.rejected == "").all()
    assert df.finish_s.notna().all()
    ev = burst.scaling.events
    released = ev[ev.action == "released"]
    drains = ev[ev.action == "scale_down"]
    assert len(released) == len(drains) >= 1
    for t_drain, why in zip(drains.time_s, drains.reason):
        i = int(why.split("llm/")[1].split()[0])
        mine = df[df.replica == i]
        assert (mine.arrival_s <= t_drain).all()            # nothing routed to it after the drain began
        t_rel = float(released[released.reason == f"llm/{i} empty"].time_s.iloc[0])
        assert t_rel >= t_drain and (mine.finish_s <= t_rel + 1e-9).all()


def test_constant_rate_under_threshold_never_scales():
    """A steady light load keeps the signal under scale_up_at: no scaling event at all, and
    the fleet is billed like a static one."""
    wl = {**{k: v for k, v in BURST.items() if k not in ("rate_schedule", "duration_s")},
          "rate_rps": 2, "num_requests": 150}
    r = simulate(scaled({"scale_down_at": 0, "max_replicas": 3}, workload=wl))
    assert len(r.scaling.events) == 0
    static = simulate(make({"router": "jsq"}, workload=wl, debug=False))
    assert r.summary["cost_usd"] == pytest.approx(static.summary["cost_usd"], rel=1e-12)


def test_a_scaler_that_cannot_act_serves_like_the_static_fleet():
    """min = max = replicas: the controller's ticks change nothing, request for request."""
    wl = {**BURST, "num_requests": 400}
    r = simulate(scaled({"min_replicas": 2, "max_replicas": 2}, workload=wl, replicas=2))
    s = simulate(make({"router": "jsq", "replicas": 2}, workload=wl, debug=False))
    cols = ["arrival_s", "start_s", "first_token_s", "finish_s", "replica"]
    assert r.requests[cols].equals(s.requests[cols])
    assert r.summary["cost_usd"] == pytest.approx(s.summary["cost_usd"], rel=1e-12)


def test_same_seed_same_scaling(burst):
    """Determinism: the same scenario and seed give the same events and the same summary."""
    again = simulate(scaled())
    assert again.scaling.events.equals(burst.scaling.events)
    a = {k: v for k, v in json.loads(burst.summary_json()).items() if k != "sim_wall_s"}
    b = {k: v for k, v in json.loads(again.summary_json()).items() if k != "sim_wall_s"}
    assert a == b


@pytest.mark.parametrize("signal,up,down,extra,dep", [
    ("queue", 4, 0.5, {}, {"scheduler": {"max_batch_size": 16}}),     # a batch cap makes the burst queue
    ("kv", 0.5, 0.05, {}, {"kv_blocks": 1200}),                       # a small KV makes it fill
    ("ttft", 1.0, 0.2, {"ttft_target_s": 0.5}, {"scheduler": {"max_batch_size": 16}}),
])
def test_every_signal_scales_on_the_burst(signal, up, down, extra, dep):
    """Each signal (queue, KV use, TTFT margin) sees the burst and adds replicas, within max."""
    r = simulate(scaled({"signal": signal, "scale_up_at": up, "scale_down_at": down, **extra}, **dep))
    rows = r.scaling.replicas["llm"]
    assert rows[:, 1].max() > 1 and rows[:, 1:].sum(axis=1).max() <= SCALER["max_replicas"]
    assert r.summary["completed"] == r.summary["requests"]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(max_r=st.integers(1, 4), min_r=st.integers(1, 3), lead=st.sampled_from([0.0, 3.0, 10.0]),
       interval=st.sampled_from([1.0, 3.0]), step=st.integers(1, 2), seed=st.integers(0, 50),
       router=st.sampled_from(["round_robin", "jsq", "heavy_light", "least_kv"]))
def test_property_bounds_cost_and_conservation(max_r, min_r, lead, interval, step, seed, router):
    """Any knobs and router: bounds hold, every request finishes, cost is the integral."""
    min_r = min(min_r, max_r)
    wl = {**BURST, "num_requests": 250, "duration_s": 40,
          "rate_schedule": [{"until_s": 10, "rate_rps": 2}, {"until_s": 25, "rate_rps": 20},
                            {"until_s": 40, "rate_rps": 1}]}
    sc = make({"autoscaling": {**SCALER, "min_replicas": min_r, "max_replicas": max_r, "lead_time_s": lead,
                               "interval_s": interval, "step": step, "cooldown_s": 2},
               "replicas": min_r, "router": router}, workload=wl, seed=seed, debug=False)
    r = simulate(sc)
    rows = r.scaling.replicas["llm"]
    assert (rows[:, 1:].sum(axis=1) <= max_r).all() and (rows[:, 1] + rows[:, 2] >= min_r).all()
    assert r.summary["completed"] == r.summary["requests"]
    assert r.summary["cost_usd"] == pytest.approx(billed_integral(rows) * PRICE_H100 / 3600, rel=1e-9)


# ---- time-varying load -------------------------------------------------------------------
def test_piecewise_rate_is_followed():
    """Poisson counts per piece of the schedule match rate x length (within 4 sigma), a piece
    of rate 0 gets none, and the last rate holds past the last breakpoint."""
    w = Workload(num_requests=100_000, duration_s=400,
                 rate_schedule=[{"until_s": 100, "rate_rps": 5}, {"until_s": 200, "rate_rps": 0},
                                {"until_s": 300, "rate_rps": 20}])
    a = build_requests(w, 1).arrival
    counts = np.histogram(a, bins=[0, 100, 200, 300, 400])[0]
    for got, want in zip(counts, [500, 0, 2000, 2000]):
        assert abs(got - want) <= 4 * np.sqrt(max(want, 1))
    assert np.all(np.diff(a) >= 0)


def test_daily_profile_repeats_and_compresses():
    """A daily profile of 4 multipliers in a 400 s day: each quarter at rate x multiplier,
    every day alike; start_hour shifts where time 0 falls."""
    w = Workload(rate_rps=10, num_requests=100_000,
                 daily_profile={"multipliers": [1, 2, 0, 4], "day_s": 400, "start_hour": 6})
    a = build_requests(w, 2).arrival
    days = a[-1] // 400
    counts = np.histogram(a[a < days * 400] % 400, bins=[0, 100, 200, 300, 400])[0] / days
    assert counts == pytest.approx([2000, 0, 4000, 1000], abs=60)
    assert rate_at(w, np.array([50.0, 150.0, 250.0, 350.0, 450.0])).tolist() == [20, 0, 40, 10, 20]


def test_time_varying_stream_is_seeded():
    """Same seed, same arrivals; another seed, others."""
    w = Workload(num_requests=500, daily_profile={"multipliers": [1, 3], "day_s": 60})
    assert np.array_equal(build_requests(w, 5).arrival, build_requests(w, 5).arrival)
    assert not np.array_equal(build_requests(w, 5).arrival, build_requests(w, 6).arrival)


TRACE = Path(__file__).resolve().parents[3] / "shared" / "traces" / "workloads" / "splitwise_conv.csv"


@pytest.mark.skipif(not TRACE.exists(), reason="../shared/traces absent")
def test_trace_window_and_compression():
    """trace_start_s skips the recording before it; time_scale compresses the gaps;
    duration_s ends the stream."""
    w = Workload(arrival="trace", trace=str(TRACE), num_requests=100_000, trace_start_s=1800,
                 time_scale=0.5, duration_s=600)
    a = build_requests(w, 0).arrival
    import pandas as pd
    rec = pd.read_csv(TRACE).arrived_at.to_numpy()
    rec = rec[rec >= 1800]
    want = int(np.sum((rec - rec[0]) * 0.5 < 600))
    assert len(a) == want and a[0] == 0 and a[-1] < 600


# ---- one-line errors ----------------------------------------------------------------------
HOSTILE = {"name": "hostile", "surrogate": "roofline",
           "deployments": [{"name": "llm", "model": "Llama-3.1-8B", "hardware": "H100-SXM"}],
           "workload": {"num_requests": 20, "rate_rps": 5, "prompt_tokens": {"mean": 100},
                        "output_tokens": {"mean": 20}}}


@pytest.mark.parametrize("section,fields,expected", [
    ("workload", {"rate_schedule": [{"until_s": 10, "rate_rps": -1}]}, "workload.rate_schedule.0.rate_rps: must be >= 0"),
    ("workload", {"rate_schedule": [{"until_s": 10, "rate_rps": 1}, {"until_s": 5, "rate_rps": 2}]},
     "workload: rate_schedule.1.until_s 5.0 must be after the previous breakpoint 10.0"),
    ("workload", {"rate_schedule": []}, "rate_schedule: empty"),
    ("workload", {"daily_profile": {"multipliers": []}}, "workload.daily_profile.multipliers"),
    ("workload", {"daily_profile": {"multipliers": [1, -2]}}, "multipliers.1: -2.0 must be >= 0"),
    ("workload", {"daily_profile": {"multipliers": [0, 0]}}, "multipliers: all zero"),
    ("workload", {"arrival": "gamma", "daily_profile": {"multipliers": [1]}}, "needs arrival 'poisson'"),
    ("workload", {"rate_schedule": [{"until_s": 10, "rate_rps": 0}]}, "workload: rate_schedule: every rate_rps is 0"),
    ("deployment", {"autoscaling": {"max_replicas": 2, "min_replicas": 3, "scale_up_at": 4, "scale_down_at": 1}},
     "deployments.0.autoscaling: max_replicas 2 < min_replicas 3"),
    ("deployment", {"autoscaling": {"max_replicas": 2, "scale_up_at": 4, "scale_down_at": 5}},
     "scale_down_at 5.0 must be below scale_up_at 4.0"),
    ("deployment", {"replicas": 3, "autoscaling": {"max_replicas": 2, "scale_up_at": 4, "scale_down_at": 1}},
     "replicas 3 (the starting fleet) must lie within"),
    ("deployment", {"autoscaling": {"max_replicas": 2, "signal": "ttft", "scale_up_at": 1, "scale_down_at": 0.2}},
     "signal 'ttft' needs ttft_target_s"),
    ("deployment", {"autoscaling": {"max_replicas": 2, "scale_up_at": 4, "scale_down_at": 1, "lead_time_s": -5}},
     "deployments.0.autoscaling.lead_time_s: must be >= 0"),
    ("deployment", {"scheduler": {"policy": "disaggregated"},
                    "autoscaling": {"max_replicas": 2, "scale_up_at": 4, "scale_down_at": 1}},
     "autoscaling: not supported for a disaggregated deployment"),
])
def test_bad_values_are_one_line_exit_2(tmp_path, capsys, section, fields, expected):
    """Negative rates, unsorted breakpoints, empty profiles and inconsistent scaler knobs end
    with exit 2 and one stderr line naming the file and the field."""
    doc = json.loads(json.dumps(HOSTILE))
    (doc["workload"] if section == "workload" else doc["deployments"][0]).update(fields)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    rc = main(["simulate", str(path), "--json"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and str(path) in err and expected in err, err


# ---- outputs and search ------------------------------------------------------------------
def test_outputs_have_events_csv_and_plot(burst, tmp_path):
    """A run with an autoscaler writes scaling_events.csv and replicas.png next to its summary."""
    out = burst.write(tmp_path / "out")
    import pandas as pd
    ev = pd.read_csv(out / "scaling_events.csv")
    assert list(ev.columns)[:5] == ["time_s", "deployment", "action", "from_replicas", "to_replicas"]
    assert len(ev) == len(burst.scaling.events)
    assert (out / "replicas.png").stat().st_size > 1000
    assert "autoscaling" in json.loads((out / "summary.json").read_text())


def test_static_summary_has_no_autoscaling_keys():
    """A deployment without autoscaling: no autoscaling section, no events (outputs as before)."""
    r = simulate(make(workload={"num_requests": 50}, debug=False))
    assert "autoscaling" not in r.summary and r.scaling is None


def test_search_space_sets_scaler_knobs(tmp_path):
    """A search space addresses deployments.0.autoscaling.<knob> like any scenario path."""
    from search.space import load_space
    base = dict(BASE, deployments=[{**BASE["deployments"][0],
                                    "autoscaling": {"max_replicas": 3, "scale_up_at": 8, "scale_down_at": 2}}])
    space = {"name": "as", "base": base,
             "params": {"deployments.0.autoscaling.max_replicas": {"low": 2, "high": 6},
                        "deployments.0.autoscaling.scale_up_at": {"choices": [8, 16]},
                        "deployments.0.autoscaling.lead_time_s": {"choices": [30, 120]}}}
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(space))
    sp = load_space(p)
    from search.paths import with_values
    from search.simapi import to_scenario
    sc = to_scenario(with_values(sp.base, {"deployments.0.autoscaling.max_replicas": 5,
                                           "deployments.0.autoscaling.lead_time_s": 30}))
    assert sc.deployments[0].autoscaling.max_replicas == 5 and sc.deployments[0].autoscaling.lead_time_s == 30
    # branch and bound assumes the whole fleet is paid for the whole run: off for autoscaled fleets
    from search.bounds import unsupported
    assert "autoscaled" in unsupported(sp)


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "autoscaling").glob("*.yaml"))


@pytest.mark.skipif(not TRACE.exists(), reason="../shared/traces absent")
@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.stem != "space"], ids=lambda p: p.stem)
def test_autoscaling_examples_run(path):
    """Each example scenario loads as written (its trace found next to the repository) and runs
    shortened (600 requests, 300 s) with an autoscaling section in its summary."""
    from simulator import load_scenario
    sc = load_scenario(path)
    wl = sc.workload.model_copy(update={"num_requests": 600, "duration_s": 300.0})
    r = simulate(sc.model_copy(update={"workload": wl}))
    assert r.summary["completed"] == r.summary["requests"] > 0
    assert r.summary["autoscaling"]["llm"]["replica_seconds"] > 0


def test_autoscaling_example_space_loads():
    """examples/autoscaling/space.yaml loads and every knob it searches passes the schema."""
    from search.space import load_space
    sp = load_space(EXAMPLES[[p.stem for p in EXAMPLES].index("space")])
    assert all(k.startswith("deployments.0.autoscaling.") for k in sp.params)
