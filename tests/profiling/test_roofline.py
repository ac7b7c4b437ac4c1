"""Roofline features: physics of the bound, and the bound holds on every real GEMM row."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from profiling.hardware import load_catalog
from profiling.ingest import read_traces
from profiling.roofline import FEATURE_COLUMNS, L2_BW_FACTOR, add_roofline_features, roofline_ms

# Kernel timings repeat within a few percent; AIConfigurator gives no spread, so 10%.
NOISE = 1.10


@pytest.fixture(scope="module")
def gemm_rows(traces_dir):
    """Every GEMM row of the shared traces (AIConfigurator tree + Vidur), with roofline."""
    parts = [read_traces(traces_dir / "aiconfigurator", "aiconfigurator").table,
             read_traces(traces_dir / "vidur", "vidur").table]
    t = pd.concat(parts, ignore_index=True)
    return t[t["op"] == "gemm"]


def test_no_gemm_beats_the_roofline(gemm_rows):
    """Measured latency (plus 3 std where known) is never below t_roofline / NOISE, on any GPU."""
    t = gemm_rows
    assert set(t["hardware"]) >= {"H100-SXM", "B200", "A100-80GB", "L40S", "A30"}
    assert len(t) > 700_000
    slack = t["latency_ms"] + 3 * t["latency_std_ms"].fillna(0)
    bad = t[slack * NOISE < t["t_roofline_ms"]]
    worst = (bad["t_roofline_ms"] / bad["latency_ms"]).max() if len(bad) else 0
    assert bad.empty, f"{len(bad)} GEMM rows beat the roofline (worst {worst:.2f}x): {bad.head(3).to_dict('records')}"


def test_l2_resident_gemms_are_the_ones_near_the_dram_bound(gemm_rows):
    """The L40S small-GEMM rows that beat the DRAM-only bound are exactly L2-assisted ones."""
    t = gemm_rows[gemm_rows["hardware"] == "L40S"]
    dram = np.maximum(t["t_compute_ms"], t["bytes"] / (t["hw_mem_bw_gb_s"] * 1e9) * 1e3)
    beats_dram = t[dram > NOISE * t["latency_ms"]]
    assert len(beats_dram) > 100  # the effect the traces README warns about is real
    assert (beats_dram["l2_resident"] > 0.4).all()


def test_every_row_has_all_features(gemm_rows):
    """No GEMM row lacks a roofline feature; intensity = flops / bytes."""
    t = gemm_rows
    assert t[list(FEATURE_COLUMNS)].notna().all().all()
    assert np.allclose(t["arith_intensity"], t["flops"] / t["bytes"])


def _hw(name="H100-SXM"):
    return load_catalog().get(name)


def test_gemm_roofline_numbers():
    """A big bf16 GEMM is compute-bound at 2mnk / peak; a GEMV is bound by its bytes / bandwidth."""
    hw = _hw()
    big = roofline_ms("gemm", {"m": 8192, "n": 8192, "k": 8192}, "bf16", None, hw, warm_l2=False)
    assert float(big["t_roofline_ms"]) == pytest.approx(2 * 8192**3 / (hw.peak_flops("bf16")) * 1e3)
    gemv = roofline_ms("gemm", {"m": 1, "n": 16384, "k": 16384}, "bf16", None, hw, warm_l2=False)
    want = (16384 + 16384 * 16384 + 16384) * 2 / hw.mem_bw * 1e3
    assert float(gemv["t_memory_ms"]) == pytest.approx(want) and float(gemv["t_roofline_ms"]) == pytest.approx(want)


def test_l2_bound_is_partial_residency():
    """Warm L2: bytes beyond the L2 size come from DRAM, the rest at L2_BW_FACTOR x DRAM bandwidth."""
    hw = _hw()
    cap = hw.l2_cache_mb * 1e6
    small = roofline_ms("elementwise", {"elements": 1e6, "io_bytes": cap / 2}, "bf16", None, hw)
    assert float(small["t_memory_ms"]) == pytest.approx(cap / 2 / (L2_BW_FACTOR * hw.mem_bw) * 1e3)
    assert float(small["l2_resident"]) == 1.0
    big = roofline_ms("elementwise", {"elements": 1e6, "io_bytes": 10 * cap}, "bf16", None, hw)
    assert float(big["t_memory_ms"]) == pytest.approx(9 * cap / hw.mem_bw * 1e3)
    assert float(big["l2_resident"]) == pytest.approx(0.1)


def test_sliding_window_attention_counts_only_window_keys():
    """Prefill with window w < q does w(w+1)/2 + (q-w)w key visits; decode reads only w keys."""
    hw = _hw()
    base = {"batch": 1, "q_len": 4096, "kv_len": 4096, "heads": 8, "kv_heads": 8, "head_dim": 128}
    full = roofline_ms("attn_prefill", base, "bf16", None, hw)
    win = roofline_ms("attn_prefill", {**base, "window": 128}, "bf16", None, hw)
    ratio = (128 * 129 / 2 + (4096 - 128) * 128) / (4096 * 4097 / 2)
    assert float(win["flops"]) == pytest.approx(float(full["flops"]) * ratio)
    dec = {"batch": 4, "kv_len": 8192, "heads": 8, "kv_heads": 8, "head_dim": 128}
    d_full = roofline_ms("attn_decode", dec, "bf16", None, hw, warm_l2=False)
    d_win = roofline_ms("attn_decode", {**dec, "window": 1024}, "bf16", None, hw, warm_l2=False)
    assert float(d_win["flops"]) == pytest.approx(float(d_full["flops"]) / 8)
    assert float(d_win["bytes"]) < float(d_full["bytes"]) / 7


def test_collective_bound_is_bandwidth_only():
    """An 8-GPU all-reduce of B bytes moves 2(7/8)B per rank over the intra-node link."""
    hw = _hw()
    r = roofline_ms("collective", {"collective": np.array(["all_reduce"]), "msg_bytes": np.array([1e9]),
                                   "world": np.array([8]), "nodes": np.array([1])}, "bf16", None, hw)
    assert float(r["t_roofline_ms"][0]) == pytest.approx(2 * 7 / 8 * 1e9 / (hw.intra_node_bw_gb_s * 1e9) * 1e3)


def test_step_rows_expand_the_model():
    """A step_decode row gets the serial roofline of its expanded model step (cold L2), > 0."""
    df = pd.DataFrame([{"op": "step_decode", "model": "llama2-70b", "tp": 8, "batch": 1, "kv_len": 512,
                        "hardware": "A100-80GB", "dtype": "fp16"},
                       {"op": "step_decode", "model": "llama2-70b", "tp": 8, "batch": 64, "kv_len": 512,
                        "hardware": "A100-80GB", "dtype": "fp16"}])
    out = add_roofline_features(df, load_catalog())
    t = out["t_roofline_ms"].to_numpy()
    # batch 1 decode of 70B over 8 GPUs reads ~17.5 GB of fp16 weights per GPU
    assert t[0] == pytest.approx(70e9 * 2 / 8 / (2039e9) * 1e3, rel=0.1)
    assert t[1] > t[0] and (out["l2_resident"] == 0).all()


def test_physically_impossible_rows_are_quarantined(traces_dir):
    """Splitwise's Llama-2-70B TP2 batch-64 prompts (~10x faster than the A100 can compute) are
    quarantined with a reason; the rest of the file's rows stay."""
    res = read_traces(traces_dir / "splitwise", "splitwise")
    q = res.quarantine[res.quarantine["reason"].str.contains("below the roofline bound")]
    assert 10 <= len(q) <= 20
    src = pd.read_csv(traces_dir / "splitwise" / "perf_model.csv")
    rows = src.loc[q["source_row"].astype(int)]
    assert (rows["tensor_parallel"] == 2).all() and (rows["batch_size"] == 64).all()
    assert len(res.table) + len(res.quarantine) == 2 * len(src)


def test_elementwise_issue_time_is_one_cycle_per_element_over_sms_times_clock():
    """An elementwise op's t_issue_ms is its elements over SMs x clock (A100: 108 x 1.41 GHz);
    other kinds get 0; a device without those numbers is taken as balanced like the A100
    (its DRAM bandwidth / 13.4 bytes per cycle), so a stripped A100 issues at ~the same rate."""
    a100 = _hw("A100-80GB")
    r = roofline_ms("elementwise", {"elements": np.array([1e6, 4e7]), "io_bytes": np.array([4e6, 1.6e8])},
                    "fp16", None, a100, warm_l2=False)
    np.testing.assert_allclose(r["t_issue_ms"], np.array([1e6, 4e7]) / (108 * 1.41e9) * 1e3)
    assert r["t_roofline_ms"][1] == pytest.approx(1.6e8 / a100.mem_bw * 1e3)  # not part of the bound
    gemm = roofline_ms("gemm", {"m": 64, "n": 4096, "k": 4096}, "bf16", None, a100)
    assert float(gemm["t_issue_ms"]) == 0.0
    stripped = a100.model_copy(update={"compute_units": 0})
    assert stripped.issue_rate == pytest.approx(a100.issue_rate, rel=0.01)
    a40 = _hw("A40")  # GDDR6: a third of the A100's bandwidth, about its issue rate
    assert a40.issue_rate / a100.issue_rate == pytest.approx(84 * 1.74 / (108 * 1.41))
