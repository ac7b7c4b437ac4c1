"""The serving front end that streams every emitted token (``overhead.stream_token_s``):
a new request reaches the scheduler only after the token work queued before it."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from simkit import make
from simulator.engine.replica import Replica
from simulator.simulate import simulate

# lengths spread (lognormal, as in simkit.BASE): with identical lengths the loop runs in
# lock-step waves and any delay moves arrivals off the step grid, which is another effect
CLOSED = {"arrival": "closed_loop", "concurrency": 32, "num_requests": 320}


def _run(stream_s: float, debug: bool = True):
    sc = make({"overhead": {"stream_token_s": stream_s}, "scheduler": {"policy": "mixed"}},
              debug=debug, workload=CLOSED)
    return simulate(sc)


def _rate(res) -> float:
    """Decode tokens per second the replica emitted over the run."""
    steps = np.concatenate(list(res.steps.values()))
    return float(steps[:, 2].sum() / (steps[:, 1].max() - steps[:, 0].min()))


def test_backlog_is_the_token_work_queued_before_the_request():
    """Steps (flat: t0, t1, decoders, prefill tokens, blocks, gap) ending at 1.0 s and 1.5 s
    with 10 decoders each, 0.1 s per token: the front end is busy until 2.0 s after the
    first and 3.0 s after the second (it was still busy at 1.5 s). A request at 1.2 s sees
    only the first step's work; one at 2.5 s both; one at 4.0 s none left."""
    fe = SimpleNamespace(steps=[0.5, 1.0, 10, 0, 0, 0.0, 1.0, 1.5, 10, 0, 0, 0.5],
                         _fe_seen=0, _fe_busy=0.0, stream_s=0.1)
    assert Replica._frontend_free(fe, 1.2) == pytest.approx(2.0)
    assert Replica._frontend_free(fe, 2.5) == pytest.approx(3.0)
    assert fe._fe_seen == 12                  # each step is streamed once
    assert Replica._frontend_free(fe, 4.0) == 4.0


def test_ttft_grows_only_near_the_front_end_capacity():
    """Far below capacity (rate x stream_s = 2%) TTFT moves by less than a few decode
    steps; past it (rate x stream_s = 2) new requests queue at the front end, so TTFT
    grows several-fold, and TPOT does not rise (fewer requests reach the engine at once, so
    its batches shrink); 0 is the old model."""
    base = _run(0.0)
    rate = _rate(base)
    low, high = _run(0.02 / rate), _run(2.0 / rate)
    t0 = base.requests.ttft_s.mean()
    step = base.requests.tpot_s.mean()
    assert abs(low.requests.ttft_s.mean() - t0) < 3 * step
    assert high.requests.ttft_s.mean() > 3 * t0
    assert high.requests.tpot_s.mean() <= base.requests.tpot_s.mean()


def test_fast_path_matches_the_debug_path():
    """The decode burst (no debug) and the general step path give the same timings."""
    a, b = _run(5e-5, debug=True), _run(5e-5, debug=False)
    assert np.allclose(a.requests.ttft_s.to_numpy(), b.requests.ttft_s.to_numpy(), equal_nan=True)


def test_negative_stream_time_is_rejected():
    with pytest.raises(ValidationError, match="stream_token_s"):
        make({"overhead": {"stream_token_s": -1e-6}})
