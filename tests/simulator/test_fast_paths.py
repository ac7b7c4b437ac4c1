"""The replica's inlined step loops against the general step path that debug mode takes:
``_chunk_burst`` (the chunked policy's steps with the decoders and one prefill chunk, a
prompt going on or the one waiting request admitted) and ``_decode_burst`` (decoders only)
must give the same requests and the same step log, to the bit."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator import Scenario, simulate
from simulator.engine.replica import Replica

from simkit import BASE, make

PRESSURE = {"gpu_memory_utilization": 0.215}     # preemptions happen
SARATHI = {"policy": "chunked", "max_tokens_per_step": 256, "chunk_size": 256, "max_batch_size": 32}

CASES = {
    "budget = chunk": {"scheduler": SARATHI},
    "chunk < budget": {"scheduler": {"policy": "chunked", "max_tokens_per_step": 512, "chunk_size": 128}},
    "recompute": {**PRESSURE, "scheduler": SARATHI},
    "swap": {**PRESSURE, "scheduler": {**SARATHI, "preemption": "swap"}},
    "full reservation": {**PRESSURE, "scheduler": {**SARATHI, "kv_reservation": "full"}},
    "two replicas": {"replicas": 2, "router": "jsq", "scheduler": SARATHI},
}
# short prompts arriving faster than served: steps that admit several at once
QUEUE = {"rate_rps": 80, "num_requests": 600, "prompt_tokens": {"dist": "uniform", "min": 1, "max": 300},
         "output_tokens": {"dist": "uniform", "min": 1, "max": 60}}


def _engine(debug: bool) -> Scenario:
    """vLLM 0.19 (async scheduling, CUDA-graph padding) with a 256-token budget and host work
    that outlasts some steps' kernels (so it shows)."""
    doc = copy.deepcopy(BASE)
    doc["debug"] = debug
    dep = doc["deployments"][0]
    del dep["scheduler"]
    dep["engine"] = {"name": "vllm", "version": "0.19.0", "max_num_batched_tokens": 256}
    dep["overhead"] = {"step_s": 0.012, "per_seq_s": 1e-4}
    return Scenario.model_validate(doc)


def _same(fast, slow) -> None:
    cols = ["start_s", "first_token_s", "finish_s", "preemptions"]
    assert fast.requests[cols].equals(slow.requests[cols])
    assert fast.steps.keys() == slow.steps.keys()
    for name, a in fast.steps.items():
        assert np.array_equal(a, slow.steps[name])


@pytest.mark.parametrize("case", list(CASES))
def test_inlined_chunk_and_decode_loops_equal_the_general_path(case):
    _same(simulate(make(CASES[case], debug=False)), simulate(make(CASES[case], debug=True)))


def test_inlined_loops_equal_the_general_path_with_a_queue_of_short_prompts():
    sc = {"scheduler": SARATHI}
    _same(simulate(make(sc, debug=False, workload=QUEUE)), simulate(make(sc, debug=True, workload=QUEUE)))


def test_inlined_loops_equal_the_general_path_with_async_scheduling():
    _same(simulate(_engine(False)), simulate(_engine(True)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(budget=st.integers(32, 1024), chunk=st.integers(16, 1024), batch=st.integers(1, 32),
       util=st.sampled_from([0.215, 0.25, 0.9]), rate=st.floats(5, 80), n=st.integers(1, 80),
       prompt=st.integers(1, 1500), output=st.integers(1, 300), replicas=st.integers(1, 2),
       preemption=st.sampled_from(["recompute", "swap"]), reservation=st.sampled_from(["on_demand", "full"]),
       seed=st.integers(0, 10_000))
def test_random_chunked_scenarios_take_the_same_steps_either_way(budget, chunk, batch, util, rate, n, prompt,
                                                                 output, replicas, preemption, reservation, seed):
    dep = {"gpu_memory_utilization": util, "replicas": replicas, "router": "jsq",
           "scheduler": {"policy": "chunked", "max_tokens_per_step": budget, "chunk_size": chunk,
                         "max_batch_size": batch, "preemption": preemption, "kv_reservation": reservation}}
    load = {"rate_rps": rate, "num_requests": n,
            "prompt_tokens": {"dist": "uniform", "min": 1, "max": prompt},
            "output_tokens": {"dist": "uniform", "min": 1, "max": output}}
    _same(simulate(make(dep, seed=seed, debug=False, workload=load)),
          simulate(make(dep, seed=seed, debug=True, workload=load)))


def test_inlined_loops_take_most_steps(monkeypatch):
    """Without debug, the general path plans only the steps the loops leave to it (two
    prefills at once, several admissions, preemptions): here under a tenth of them."""
    planned = []
    begin = Replica._begin
    monkeypatch.setattr(Replica, "_begin", lambda self: planned.append(1) or begin(self))
    res = simulate(make({"scheduler": SARATHI}, debug=False))
    assert res.summary["steps"] > 2000 and len(planned) < res.summary["steps"] / 10
