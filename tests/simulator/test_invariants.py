"""Conservation, memory bounds, determinism, and the fast path against the checked path."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator import simulate
from simulator.engine.metrics import time_average_in_system

from simkit import make

PRESSURE = {"gpu_memory_utilization": 0.215}     # a few thousand KV tokens: forces preemption


def assert_accounted(res) -> None:
    """Every request finishes or is rejected; every token is produced exactly once; KV
    blocks in use never exceed the pool; timestamps are ordered."""
    df, s = res.requests, res.summary
    done = df[df.finish_s.notna()]
    assert len(done) + s["rejected"]["count"] == s["requests"] == len(df)
    assert (df.rejected != "").sum() == s["rejected"]["count"]
    assert df.loc[df.rejected != "", "finish_s"].isna().all()
    steps = np.concatenate(list(res.steps.values()))
    recomputes = int(done.preemptions.sum()) if res.scenario.deployments[0].scheduler.preemption == "recompute" else 0
    # a token per decoding sequence per step, plus one from every (re)prefill
    assert steps[:, 2].sum() + len(done) + recomputes == done.output_tokens.sum()
    assert steps[:, 3].sum() == s["prefill_tokens_computed"]
    if not recomputes:
        assert s["prefill_tokens_computed"] == done.prompt_tokens.sum()
    for name, a in res.steps.items():
        assert (a[:, 4] <= res.kv_blocks[name]).all() and (a[:, 4] >= 0).all()
        assert (np.diff(a[:, 0]) >= 0).all() and (a[:, 1] >= a[:, 0]).all()
    assert (done.first_token_s >= done.start_s).all() and (done.start_s >= done.arrival_s).all()
    assert (done.finish_s >= done.first_token_s).all()


@pytest.mark.parametrize("policy", ["static", "continuous", "chunked", "prefill_first", "mixed", "disaggregated"])
@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_conservation_and_kv_bound_under_memory_pressure(policy, preemption):
    """With a tiny KV pool (preemptions happen) the invariants hold; debug mode also
    re-counts the aggregate batch state against the requests every step."""
    res = simulate(make({**PRESSURE, "replicas": 2, "router": "least_kv",
                         "scheduler": {"policy": policy, "preemption": preemption}}))
    assert_accounted(res)
    if policy in ("chunked", "continuous", "prefill_first", "mixed"):
        assert res.summary["preemptions"] > 0


def test_prefill_first_never_mixes_prefill_and_decode_in_a_step():
    """SGLang's default scheduling (prefill_first): a step prefills (new prompts, chunks of
    long ones within the budget) or decodes, never both; prompts longer than the chunk are
    split over several steps; the chunked policy on the same load does mix them."""
    load = {"scheduler": {"policy": "prefill_first", "max_tokens_per_step": 512, "chunk_size": 512}}
    res = simulate(make(load))
    assert_accounted(res)
    steps = np.concatenate(list(res.steps.values()))
    assert not ((steps[:, 2] > 0) & (steps[:, 3] > 0)).any()
    assert steps[:, 3].max() <= 512 and res.requests.prompt_tokens.max() > 512
    mixed = np.concatenate(list(simulate(make({"scheduler": {**load["scheduler"], "policy": "chunked"}})).steps.values()))
    assert ((mixed[:, 2] > 0) & (mixed[:, 3] > 0)).any()


@pytest.mark.parametrize("policy", ["continuous", "chunked", "mixed", "disaggregated"])
def test_full_kv_reservation_never_preempts_and_runs_fewer_at_once(policy):
    """TensorRT-LLM's GUARANTEED_NO_EVICT: under the memory pressure that makes on-demand
    KV preempt, a request starts only when KV for all its tokens is free, so nothing is
    preempted, every invariant holds (debug re-counts the reservations every step) and
    fewer sequences decode at once."""
    on = simulate(make({**PRESSURE, "scheduler": {"policy": policy}}))
    full = simulate(make({**PRESSURE, "scheduler": {"policy": policy, "kv_reservation": "full"}}))
    assert_accounted(full)
    assert full.summary["preemptions"] == 0
    peak = lambda res: max(a[:, 2].max() for a in res.steps.values())  # noqa: E731
    if policy != "disaggregated":   # its decode pool has room: no pressure to compare
        assert on.summary["preemptions"] > 0
        assert peak(full) < peak(on)


def test_full_kv_reservation_admits_exactly_what_fits():
    """With fixed lengths and full reservation, the most sequences decoding at once is the
    usable blocks divided by the blocks of prompt + output (not of the prompt alone)."""
    p, o = 700, 300
    res = simulate(make({**PRESSURE, "scheduler": {"policy": "chunked", "kv_reservation": "full",
                                                   "max_batch_size": 256}},
                        workload={"arrival": "closed_loop", "concurrency": 200, "num_requests": 400,
                                  "prompt_tokens": {"dist": "fixed", "mean": p},
                                  "output_tokens": {"dist": "fixed", "mean": o}}))
    (name, steps), = res.steps.items()
    total = res.kv_blocks[name]
    usable = total - max(1, total // 100)
    per_request = -(-(p + o) // 16)
    assert usable // per_request < 200 // 2          # memory, not concurrency, is the limit
    assert steps[:, 2].max() == usable // per_request
    assert_accounted(res)


def test_requests_that_can_never_fit_are_reported():
    """Requests larger than the KV pool or the context are rejected with the reason."""
    res = simulate(make({**PRESSURE, "max_model_len": 3000},
                        workload={"prompt_tokens": {"dist": "uniform", "min": 100, "max": 12000}}))
    reasons = res.summary["rejected"]["reasons"]
    assert res.summary["rejected"]["count"] > 0
    assert any("KV blocks" in r or "context" in r for r in reasons)
    assert_accounted(res)


def test_same_seed_gives_byte_identical_summary():
    """Two runs with one seed give the same summary JSON (wall time aside); seeds differ."""
    def js(seed):
        s = json.loads(simulate(make({"replicas": 2, "router": "jsq"}, seed=seed, debug=False)).summary_json())
        s.pop("sim_wall_s")
        return json.dumps(s, sort_keys=True)
    assert js(5) == js(5)
    assert js(5) != js(6)


@pytest.mark.parametrize("policy", ["chunked", "continuous", "prefill_first", "disaggregated", "mixed"])
@pytest.mark.parametrize("kv_reservation", ["on_demand", "full"])
def test_inlined_decode_loop_equals_checked_path(policy, kv_reservation):
    """The hot inlined decode loop (debug off) gives exactly the per-request results of the
    general step path that debug mode takes (mixed: with TensorRT-LLM batch waiting)."""
    sched = {"policy": policy, "kv_reservation": kv_reservation}
    if policy == "mixed":
        sched.update(max_tokens_per_step=4096, batch_wait_iters=8, batch_wait_tokens_ratio=0.9)
    fast = simulate(make({**PRESSURE, "scheduler": sched}, debug=False))
    slow = simulate(make({**PRESSURE, "scheduler": sched}, debug=True))
    cols = ["first_token_s", "finish_s", "preemptions"]
    assert fast.requests[cols].equals(slow.requests[cols])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=st.sampled_from(["static", "continuous", "chunked", "prefill_first", "mixed", "disaggregated"]),
       replicas=st.integers(1, 3), router=st.sampled_from(["round_robin", "jsq", "least_tokens", "least_kv", "heavy_light"]),
       util=st.sampled_from([0.215, 0.25, 0.9]), rate=st.floats(1, 60), n=st.integers(1, 60),
       arrival=st.sampled_from(["poisson", "gamma", "bursty", "closed_loop"]),
       prompt=st.integers(1, 3000), output=st.integers(1, 600), batch=st.integers(1, 32),
       budget=st.integers(64, 4096), chunk=st.integers(16, 1024), seed=st.integers(0, 10_000),
       preemption=st.sampled_from(["recompute", "swap"]), reservation=st.sampled_from(["on_demand", "full"]),
       wait=st.integers(0, 30), wait_ratio=st.sampled_from([0.0, 0.5, 0.9, 1.0]))
def test_random_scenarios_keep_every_invariant(policy, replicas, router, util, rate, n, arrival, prompt,
                                               output, batch, budget, chunk, seed, preemption, reservation,
                                               wait, wait_ratio):
    """Property: any small scenario (TensorRT-LLM batch waiting included) accounts for
    every request and token, keeps KV within the pool, satisfies Little's law, and never
    has negative latencies."""
    sc = make({"replicas": replicas, "router": router, "gpu_memory_utilization": util,
               "scheduler": {"policy": policy, "max_batch_size": batch, "max_tokens_per_step": budget,
                             "chunk_size": chunk, "preemption": preemption, "kv_reservation": reservation,
                             "batch_wait_iters": wait, "batch_wait_tokens_ratio": wait_ratio,
                             "prefill_replicas": max(1, replicas - 1), "decode_replicas": replicas}},
              seed=seed, workload={"arrival": arrival, "rate_rps": rate, "num_requests": n, "concurrency": 4,
                                   "prompt_tokens": {"dist": "lognormal", "mean": prompt, "max": 6000},
                                   "output_tokens": {"dist": "uniform", "min": 1, "max": output}})
    res = simulate(sc)
    assert_accounted(res)
    done = res.requests[res.requests.finish_s.notna()]
    if len(done):
        t1 = float(done.finish_s.max())
        L = time_average_in_system(done.arrival_s, done.finish_s, 0.0, t1)
        if t1 > 0:
            assert L == pytest.approx(len(done) / t1 * done.e2e_s.mean(), rel=1e-9)
        assert (done.ttft_s >= 0).all() and (done.e2e_s >= done.ttft_s).all()
