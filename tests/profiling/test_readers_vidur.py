"""Vidur reader against the real profiling CSVs: TP-sharded GEMM shapes, bytes, units."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from profiling.errors import InputError
from profiling.ingest import read_traces


@pytest.fixture(scope="module")
def vidur(traces_dir):
    return traces_dir / "vidur" / "data" / "profiling", read_traces(traces_dir / "vidur", "vidur")


def _rows(res, path, name):
    t = res.table
    return t[(t["source"] == f"vidur:{path}") & (t["name"] == name)].set_index("source_row")


def test_files_and_devices(vidur):
    """All 23 CSVs are read; devices map onto the catalog; every row keeps its model and tp."""
    root, res = vidur
    assert res.files == 23
    assert set(res.table["hardware"]) == {"H100-SXM", "A100-80GB", "A30"}
    compute = res.table[res.table["op"] != "collective"]
    assert compute["model"].notna().all() and compute["tp"].notna().all()


def test_llama2_70b_tp_sharded_gemm_shapes(vidur):
    """Llama-2-70B (64 heads, 8 KV heads, d=128, I=28672) at TP 4: QKV n=(64+16)*128/4 etc."""
    root, res = vidur
    f = root / "compute" / "h100" / "meta-llama" / "Llama-2-70b-hf" / "mlp.csv"
    src = pd.read_csv(f)
    i = int(src.index[(src["num_tensor_parallel_workers"] == 4) & (src["num_tokens"] == 512)][0])
    want = {"attn_pre_proj": (512, 2560, 8192), "attn_post_proj": (512, 8192, 2048),
            "mlp_up_proj": (512, 2 * 28672 // 4, 8192), "mlp_down_proj": (512, 8192, 28672 // 4)}
    for name, (m, n, k) in want.items():
        r = _rows(res, f, name).loc[float(i)]
        assert (r["op"], r["m"], r["n"], r["k"], r["tp"]) == ("gemm", m, n, k, 4)
        assert r["latency_ms"] == pytest.approx(src.loc[i, f"time_stats.{name}.median"])
        assert r["latency_std_ms"] == pytest.approx(src.loc[i, f"time_stats.{name}.std"])
        assert r["model"] == "meta-llama/Llama-2-70b-hf" and r["dtype"] == "fp16"


def test_elementwise_bytes(vidur):
    """Norm reads+writes T*h fp16; gated act reads 2 and writes 1 of T*I/tp; phi-2's add has 3 inputs."""
    root, res = vidur
    f = root / "compute" / "a100" / "meta-llama" / "Llama-2-7b-hf" / "mlp.csv"
    src = pd.read_csv(f)
    i = int(src.index[(src["num_tensor_parallel_workers"] == 2) & (src["num_tokens"] == 1024)][0])
    norm = _rows(res, f, "input_layernorm").loc[float(i)]
    assert (norm["elements"], norm["io_bytes"]) == (1024 * 4096, 2 * 1024 * 4096 * 2)
    act = _rows(res, f, "mlp_act").loc[float(i)]
    assert (act["elements"], act["io_bytes"]) == (1024 * 11008 / 2, 3 * 1024 * 11008 / 2 * 2)
    rope = _rows(res, f, "attn_rope").loc[float(i)]
    assert rope["elements"] == 1024 * (32 + 32) * 128 / 2
    phi = root / "compute" / "a100" / "microsoft" / "phi-2" / "mlp.csv"
    add = _rows(res, phi, "add").iloc[0]
    assert add["io_bytes"] == 4 * add["elements"] * 2  # attn + mlp + residual in, one out
    assert _rows(res, phi, "post_attention_layernorm").empty


def test_network_sizes_are_bytes_and_nodes(vidur):
    """all_reduce size is bytes; nodes = ceil(world / devices_per_node); topology kept in stack."""
    root, res = vidur
    f = root / "network" / "a100_dgx" / "all_reduce.csv"
    src = pd.read_csv(f)
    part = _rows(res, f, "all_reduce")
    s = src.loc[part.index.astype(int)]
    assert np.array_equal(part["msg_bytes"].to_numpy(), s["size"].to_numpy())
    want_nodes = [math.ceil(w / d) for w, d in zip(s["num_workers"], s["devices_per_node"])]
    assert part["nodes"].tolist() == want_nodes and max(want_nodes) == 2
    assert (part["stack"] == "vidur a100_dgx").all() and (part["hardware"] == "A100-80GB").all()
    assert np.allclose(part["latency_ms"], s["time_stats.all_reduce.median"])


def test_attention_csv_prefill_and_decode(vidur):
    """A30 attention: prefill q_len = chunk, kv_len = cache + chunk; decode kv_len = cache."""
    root, res = vidur
    f = root / "compute" / "a30" / "Qwen" / "Qwen-2-7B" / "attention.csv"
    src = pd.read_csv(f)
    pre = _rows(res, f, "attn_prefill")
    s = src.loc[pre.index.astype(int)]
    assert s["is_prefill"].all() and (pre["q_len"] == s["prefill_chunk_size"].to_numpy()).all()
    assert (pre["kv_len"] == (s["kv_cache_size"] + s["prefill_chunk_size"]).to_numpy()).all()
    dec = _rows(res, f, "attn_decode")
    d = src.loc[dec.index.astype(int)]
    assert (~d["is_prefill"]).all() and (dec["kv_len"] == d["kv_cache_size"].to_numpy()).all()
    assert (dec["heads"] == 28).all() and (dec["kv_heads"] == 4).all() and (dec["head_dim"] == 128).all()
    assert len(pre) + len(dec) == len(src)


def test_bad_rows_of_the_real_files_are_quarantined(vidur):
    """The A30 Qwen file's missing and impossible attn_pre_proj times are quarantined, named."""
    root, res = vidur
    f = root / "compute" / "a30" / "Qwen" / "Qwen-2-7B" / "mlp.csv"
    q = res.quarantine[res.quarantine["source"] == f"vidur:{f}"]
    assert q["reason"].str.contains("missing or not a number").any()
    assert q["reason"].str.contains("below the roofline bound").any()
    kept = res.table[(res.table["source"] == f"vidur:{f}") & (res.table["name"] == "attn_pre_proj")]
    assert (kept["t_roofline_ms"] <= 10 * kept["latency_ms"]).all()


def test_json_given_as_vidur_is_one_clear_error(tmp_path):
    """A file of another format names the file and what is missing."""
    f = tmp_path / "mlp.csv"
    f.write_text('{"traceEvents": []}\n')
    with pytest.raises(InputError, match=r"mlp\.csv.*no time_stats"):
        read_traces(f, "vidur")


def test_elementwise_rows_carry_token_count(vidur):
    """Every elementwise row says how many token rows it works on (batch x q_len): T for the
    mlp.csv ops, and for the A30 KV-cache write the new tokens (batch x chunk in prefill,
    batch in decode)."""
    root, res = vidur
    t = res.table
    ew = t[t["op"] == "elementwise"]
    assert ew["q_len"].notna().all() and ew["batch"].notna().all() and ew["tp"].notna().all()
    f = root / "compute" / "a100" / "meta-llama" / "Llama-2-7b-hf" / "mlp.csv"
    src = pd.read_csv(f)
    norm = _rows(res, f, "input_layernorm")
    assert (norm["batch"] == 1).all()
    np.testing.assert_array_equal(norm["q_len"].to_numpy(), src.loc[norm.index.astype(int), "num_tokens"].to_numpy())
    kv = t[t["name"] == "attn_kv_cache_save"]
    att = pd.read_csv(root / "compute" / "a30" / "Qwen" / "Qwen-2-7B" / "attention.csv")
    assert len(kv) == len(att)
    new = np.where(att["is_prefill"].astype(str).str.lower() == "true", att["batch_size"] * att["prefill_chunk_size"],
                   att["batch_size"])
    src_rows = kv["source_row"].astype(int).to_numpy()
    np.testing.assert_array_equal((kv["batch"] * kv["q_len"]).to_numpy(), new[src_rows])


def test_every_vidur_device_folder_maps_onto_the_catalog():
    """Each GPU folder name the reader knows (Vidur's device SKUs: a100, h100, a40, l40...)
    resolves to a device of the built-in catalog, so its traces can be trained on."""
    from profiling.hardware import load_catalog
    from profiling.readers.vidur import DEVICES
    cat = load_catalog()
    missing = [f"{k} -> {v}" for k, v in DEVICES.items() if v not in cat]
    assert not missing, missing
    assert {"A40", "L40"} <= set(DEVICES.values())
