"""Splitwise perf_model.csv -> whole-step prefill and decode rows."""
from __future__ import annotations

import pandas as pd
import pytest

from profiling.ingest import read_traces


def test_prompt_and_token_rows_match_source(traces_dir):
    """Each source row gives a step_prefill (prompt_time) and a step_decode (token_time per token)."""
    f = traces_dir / "splitwise" / "perf_model.csv"
    src = pd.read_csv(f)
    res = read_traces(f, "splitwise")
    t = res.table
    assert set(t["hardware"]) == {"A100-80GB", "H100-SXM", "H100-SXM-pcap"}
    pre = t[t["op"] == "step_prefill"].set_index("source_row")
    i = float(pre.index[0])
    s = src.loc[int(i)]
    r = pre.loc[i]
    assert (r["batch"], r["q_len"], r["tp"], r["model"]) == (s["batch_size"], s["prompt_size"],
                                                             s["tensor_parallel"], s["model"])
    assert r["latency_ms"] == pytest.approx(s["prompt_time"])
    dec = t[t["op"] == "step_decode"].set_index("source_row").loc[i]
    assert dec["kv_len"] == s["prompt_size"] + s["token_size"] / 2
    assert dec["latency_ms"] == pytest.approx(s["token_time"])
    assert (t["t_roofline_ms"] > 0).all()  # expanded from the model catalog
