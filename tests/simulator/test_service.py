"""Service deployments: a multi-server FIFO queue with batching, costed by a model."""
from __future__ import annotations

import numpy as np
import pytest

from profiling.hardware import load_catalog
from profiling.models import resolve_model
from simulator.engine.core import Environment
from simulator.pipelines.retrieval_cost import EncoderCost
from simulator.pipelines.service import FixedCost, ServiceDeployment, TokenCost
from surrogates.compiled import RooflinePredictor


def _run(arrivals, **kw):
    env = Environment()
    svc = ServiceDeployment(env, "s", load_catalog().get("Xeon-8480+"), FixedCost(1.0), **kw)
    out = {}
    for i, t in enumerate(arrivals):
        env.schedule(t, svc.submit_job, i, t, 1, 10, lambda rid, t1: out.__setitem__(rid, t1))
    env.run()
    return [out[i] for i in range(len(arrivals))], svc


def test_two_servers_fifo():
    """Four jobs at t=0 on two 1 s servers finish at 1, 1, 2, 2 in arrival order."""
    fin, svc = _run([0, 0, 0, 0], servers=2, devices=2)
    assert fin == [1.0, 1.0, 2.0, 2.0]
    assert sum(w.busy for w in svc.replicas) == pytest.approx(4.0)


def test_batching_takes_waiting_jobs_together():
    """One server batching up to 4: five simultaneous jobs run as a batch of 4 then 1."""
    fin, svc = _run([0] * 5, max_batch=4)
    assert fin == [1.0] * 4 + [2.0]
    assert svc.batches == 2


def test_more_servers_than_devices_share_them():
    """Two workers on one device each run at half speed."""
    fin, _ = _run([0, 0], servers=2, devices=1)
    assert fin == [2.0, 2.0]


def test_mm1_like_queue_mean_wait():
    """Poisson arrivals, one server with constant 1 s service at load 0.5: mean wait tends to
    the M/D/1 value rho / (2 mu (1 - rho)) = 0.5 s."""
    rng = np.random.default_rng(0)
    arr = np.cumsum(rng.exponential(2.0, 20000))
    fin, _ = _run(arr.tolist())
    wait = np.asarray(fin) - arr - 1.0
    assert wait.mean() == pytest.approx(0.5, rel=0.06)


def test_token_cost_and_encoder_cost_scale():
    """Token cost is fixed + per token; an encoder forward grows with tokens and is much
    slower on a CPU than on an H100."""
    assert TokenCost(1e-3, 1e-6).batch_s([(2, 100), (1, 50)]) == pytest.approx(1e-3 + 250e-6)
    cat = load_catalog()
    m = resolve_model("e5-large-v2")
    cpu = EncoderCost(m, cat.get("Xeon-8480+"), RooflinePredictor(), dtype="fp32")
    gpu = EncoderCost(m, cat.get("H100-SXM"), RooflinePredictor(), dtype="bf16")
    assert cpu.forward_s(1, 64) < cpu.forward_s(1, 256) < cpu.forward_s(8, 256)
    assert cpu.forward_s(1, 10_000) == cpu.forward_s(1, m.max_context)   # truncated to the context
    assert gpu.forward_s(1, 256) * 5 < cpu.forward_s(1, 256)
    assert cpu.batch_s([(1, 100), (1, 300)]) == pytest.approx(cpu.forward_s(2, 300))
