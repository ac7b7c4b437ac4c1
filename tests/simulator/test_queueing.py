"""Queueing theory through the real event loop and scheduler: M/D/1 and Little's law."""
from __future__ import annotations

import numpy as np
import pytest

from simulator import simulate
from simulator.engine.metrics import time_average_in_system

from simkit import make


def test_md1_mean_wait_matches_pollaczek_khinchine():
    """Static batching with max batch 1 and one output token is a single server with a
    constant service time (one prefill step); Poisson arrivals at rho=0.5 must give the
    P-K mean wait rho*S / (2(1-rho)) within 2% over 200,000 requests."""
    probe = simulate(make({"scheduler": {"policy": "static", "max_batch_size": 1}},
                          debug=False, workload={"num_requests": 1, "prompt_tokens": {"dist": "fixed", "mean": 1024},
                                                 "output_tokens": {"dist": "fixed", "mean": 1}}))
    service = float(probe.requests.e2e_s.iloc[0])
    rho = 0.5
    sc = make({"scheduler": {"policy": "static", "max_batch_size": 1}}, debug=False, seed=11,
              workload={"num_requests": 200_000, "rate_rps": rho / service,
                        "prompt_tokens": {"dist": "fixed", "mean": 1024},
                        "output_tokens": {"dist": "fixed", "mean": 1}})
    res = simulate(sc)
    df = res.requests
    assert np.allclose(df.e2e_s - df.queue_s, service, rtol=1e-9)   # constant service
    expected = rho * service / (2 * (1 - rho))
    assert df.queue_s.mean() == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("policy", ["static", "continuous", "chunked", "mixed", "disaggregated"])
def test_littles_law_holds(policy):
    """L (time-average number in system) equals lambda * W for every batching policy."""
    res = simulate(make({"scheduler": {"policy": policy}, "replicas": 2}))
    df = res.requests[res.requests.finish_s.notna()]
    t1 = float(df.finish_s.max())
    L = time_average_in_system(df.arrival_s, df.finish_s, 0.0, t1)
    lam = len(df) / t1
    assert L == pytest.approx(lam * df.e2e_s.mean(), rel=1e-9)
    assert res.summary["mean_in_system"] == pytest.approx(L, rel=1e-12)
