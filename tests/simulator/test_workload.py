"""Workloads: real trace replay and extension, parametric arrivals, bad trace rows."""
from __future__ import annotations

import numpy as np
import pytest

from profiling.errors import InputError
from simulator import build_requests, read_trace
from simulator.scenario import Workload


def test_splitwise_trace_replay_truncates_like_vidur(traces_dir):
    """The first N rows at their recorded times; prompts shortened so prompt+output <= 4096."""
    path = traces_dir / "workloads" / "splitwise_conv.csv"
    raw = read_trace(path)
    r = build_requests(Workload(arrival="trace", trace=str(path), num_requests=500, max_total_tokens=4096), 0)
    assert np.allclose(r.arrival, raw.arrival.to_numpy()[:500] - raw.arrival.iloc[0])
    assert ((r.prompt + r.output) <= 4096).all()
    assert (r.output == raw.output.to_numpy()[:500]).all()


def test_trace_is_continued_with_poisson_at_its_rate(traces_dir):
    """Past the end of a trace, arrivals continue as Poisson at the trace's mean rate with
    lengths drawn from it."""
    path = traces_dir / "workloads" / "sharegpt_replica_5qps_tpu_h100.csv"
    raw = read_trace(path)
    r = build_requests(Workload(arrival="trace", trace=str(path), num_requests=20_100), 1)
    assert len(r) == 20_100 and (np.diff(r.arrival) >= 0).all()
    rate_trace = (len(raw) - 1) / (raw.arrival.iloc[-1] - raw.arrival.iloc[0])
    rate_ext = 20_000 / (r.arrival[-1] - r.arrival[99])
    assert rate_ext == pytest.approx(rate_trace, rel=0.03)
    assert set(r.prompt[100:]) <= set(raw.prompt)


@pytest.mark.parametrize("arrival", ["poisson", "gamma", "bursty"])
def test_open_loop_arrivals_have_the_requested_rate(arrival):
    """Poisson, gamma (cv 2) and bursty arrivals all average the configured rate; gamma is
    burstier than Poisson."""
    w = Workload(arrival=arrival, rate_rps=20, num_requests=40_000, cv=2.0)
    gaps = np.diff(build_requests(w, 7).arrival)
    assert 1 / gaps.mean() == pytest.approx(20, rel=0.05)
    if arrival == "gamma":
        assert gaps.std() / gaps.mean() == pytest.approx(2.0, rel=0.1)


def test_length_distributions_respect_mean_and_bounds():
    """Lognormal lengths keep their mean and stay within [min, max]."""
    w = Workload(num_requests=50_000, prompt_tokens={"dist": "lognormal", "mean": 800, "std": 400, "max": 10_000},
                 output_tokens={"dist": "uniform", "min": 5, "max": 50})
    r = build_requests(w, 0)
    assert r.prompt.mean() == pytest.approx(800, rel=0.03)
    assert r.output.min() >= 5 and r.output.max() <= 50 and r.prompt.max() <= 10_000


def test_bad_trace_rows_name_file_row_and_column(tmp_path):
    """A negative token count is reported with file, row and column; unknown layouts too."""
    p = tmp_path / "t.csv"
    p.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n1,-3,5\n")
    with pytest.raises(InputError, match=r"t.csv, row 3, column 'num_prefill_tokens'"):
        read_trace(p)
    p.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="unknown trace columns"):
        read_trace(p)
