"""AIConfigurator reader against the real perf tables (one system dir: a100_sxm)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from profiling.errors import InputError
from profiling.ingest import read_traces
from profiling.readers import aiconfigurator
from profiling.readers.base import ReadOptions


@pytest.fixture(scope="module")
def a100(traces_dir):
    root = traces_dir / "aiconfigurator" / "data" / "a100_sxm"
    return root, read_traces(root, "aiconfigurator")


def test_every_source_row_is_accounted_for(a100):
    """Rows in the table plus quarantined rows equal the rows of the 9 source tables."""
    root, res = a100
    files = sorted(root.rglob("*.parquet"))
    assert res.files == len(files) == 9
    total = sum(len(pd.read_parquet(f)) for f in files)
    assert len(res.table) + len(res.quarantine) == total
    assert set(res.table["hardware"]) == {"A100-80GB"}
    assert set(res.table["op"]) == {"gemm", "attn_prefill", "attn_decode", "collective"}


def test_gemm_values_match_source(a100):
    """A gemm row keeps m, n, k and the latency in ms of its source row; stack from collection_meta."""
    root, res = a100
    src_file = root / "gemm" / "vllm" / "0.14.0" / "gemm_perf.parquet"
    src = pd.read_parquet(src_file)
    t = res.table[res.table["source"] == f"aiconfigurator:{src_file}"]
    assert len(t) == len(src)
    row = t.iloc[123]
    s = src.iloc[int(row["source_row"])]
    assert (row["m"], row["n"], row["k"]) == (s["m"], s["n"], s["k"])
    assert row["latency_ms"] == pytest.approx(s["latency"])
    assert row["dtype"] == "bf16" and row["stack"] == "vllm 0.14.0" and row["op"] == "gemm"


def test_attention_shapes(a100):
    """Context attention: q_len = kv_len = isl; generation attention: kv_len = step, heads per GPU."""
    root, res = a100
    t = res.table
    ctx_file = root / "attention" / "trtllm" / "1.0.0" / "context_attention_perf.parquet"
    gen_file = root / "attention" / "trtllm" / "1.0.0" / "generation_attention_perf.parquet"
    for f, op in ((ctx_file, "attn_prefill"), (gen_file, "attn_decode")):
        src = pd.read_parquet(f)
        part = t[t["source"] == f"aiconfigurator:{f}"].set_index("source_row")
        assert (part["op"] == op).all()
        s = src.loc[part.index.astype(int)]
        assert np.array_equal(part["heads"].to_numpy(), s["num_heads"].to_numpy())
        assert np.array_equal(part["kv_heads"].to_numpy(), s["num_key_value_heads"].to_numpy())
        want_kv = s["isl"] if op == "attn_prefill" else s["step"]
        assert np.array_equal(part["kv_len"].to_numpy(), want_kv.to_numpy())
        assert np.allclose(part["latency_ms"].to_numpy(), s["latency"].to_numpy())
        assert (part["stack"] == "trtllm 1.0.0").all()


def test_collective_bytes_are_elements_times_dtype(a100):
    """nccl message_size is in elements: msg_bytes = elements x 2 for half, x 1 for int8."""
    root, res = a100
    f = next((root / "comm" / "nccl").rglob("nccl_perf.parquet"))
    src = pd.read_parquet(f)
    part = res.table[res.table["source"] == f"aiconfigurator:{f}"]
    s = src.loc[part["source_row"].astype(int)]
    width = s["nccl_dtype"].map({"half": 2, "int8": 1}).to_numpy()
    assert np.array_equal(part["msg_bytes"].to_numpy(), s["message_size"].to_numpy() * width)
    assert set(part["collective"]) == {"all_reduce", "all_gather", "alltoall", "reduce_scatter"}
    assert (part["nodes"] == 1).all() and set(part["world"]) == {2, 4, 8}


def test_custom_allreduce_eager_and_graph_kept_apart(a100):
    """vLLM's eager and CUDA-graph all-reduce rows of the same shape both stay (not conflicts)."""
    root, res = a100
    f = root / "comm" / "vllm" / "0.14.0" / "custom_allreduce_perf.parquet"
    part = res.table[res.table["source"] == f"aiconfigurator:{f}"]
    assert len(part) == len(pd.read_parquet(f)) == 138
    assert set(part["kernel"]) == {"vLLM_custom_eager", "vLLM_custom_graph"}
    eager = part[part["kernel"] == "vLLM_custom_eager"]["latency_ms"].median()
    graph = part[part["kernel"] == "vLLM_custom_graph"]["latency_ms"].median()
    assert eager > 2 * graph  # they differ by far more than the conflict ratio


def test_quantized_gemm_recipes_are_distinct_kernels(a100):
    """sq (W8A8) and int8 weight-only both file as int8 but keep their recipe in `kernel`."""
    root, res = a100
    f = root / "gemm" / "trtllm" / "1.0.0" / "gemm_perf.parquet"
    part = res.table[res.table["source"] == f"aiconfigurator:{f}"]
    int8 = part[part["dtype"] == "int8"]
    assert {k.rsplit("/", 1)[-1] for k in int8["kernel"]} == {"sq", "int8_wo"}
    assert set(part["dtype"]) == {"bf16", "int8", "int4"}
    assert len(part) == 27384  # no recipe collided with another as a "duplicate"


def _write_system(tmp_path: Path, rows: dict) -> Path:
    d = tmp_path / "data" / "h100_sxm" / "gemm" / "vllm" / "9.9"
    d.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(d / "gemm_perf.parquet")
    return tmp_path / "data"


def test_unknown_dtype_and_bad_latency_are_quarantined(tmp_path):
    """An exotic dtype nobody knows and a NaN latency go to quarantine with the file and row."""
    root = _write_system(tmp_path, {"gemm_dtype": ["bfloat16", "w3a5", "bfloat16"], "m": [64, 64, 128],
                                    "n": [4096] * 3, "k": [4096] * 3, "latency": [0.05, 0.05, np.nan]})
    res = read_traces(root, "aiconfigurator")
    assert len(res.table) == 1 and res.table["hardware"].iloc[0] == "H100-SXM"
    q = res.quarantine.sort_values("source_row")
    assert q["source_row"].tolist() == [1.0, 2.0]
    assert q["column"].tolist() == ["dtype", "latency_ms"]
    assert "unknown dtype" in q["reason"].iloc[0] and "not a number" in q["reason"].iloc[1]
    assert q["source"].str.endswith("gemm_perf.parquet").all()


def test_hardware_override_and_reader_without_system_dir(tmp_path):
    """--hardware wins over the device the system directory names."""
    root = _write_system(tmp_path, {"gemm_dtype": ["fp8"], "m": [8], "n": [1024], "k": [1024], "latency": [0.01]})
    f = next(root.rglob("gemm_perf.parquet"))
    out = aiconfigurator.read(f, ReadOptions(hardware="H200"))
    assert out.table["hardware"].tolist() == ["H200"] and out.table["dtype"].tolist() == ["fp8"]


def test_txt_tables_of_the_upstream_layout_read_like_parquet(traces_dir, tmp_path):
    """AIConfigurator's own repository keeps its tables as CSV ``*.txt`` under
    ``systems/data/<system>/<backend>/<ver>/`` with framework/version columns: the real H100
    GEMM and decode tables written that way give the same rows, hardware and stack."""
    src = traces_dir / "aiconfigurator" / "data" / "h100_sxm"
    dest = tmp_path / "systems" / "data" / "h100_sxm" / "vllm" / "0.24.0"
    dest.mkdir(parents=True)
    parquet = [next((src / "gemm" / "vllm").rglob("gemm_perf.parquet")),
               next((src / "attention" / "vllm").rglob("generation_attention_perf.parquet"))]
    for f in parquet:
        df = pd.read_parquet(f)
        if "framework" not in df:  # the upstream .txt tables always carry them
            df.insert(0, "framework", "VLLM")
            df.insert(1, "version", "0.24.0")
        df.to_csv(dest / f"{f.stem}.txt", index=False)
    (dest / "moe_perf.txt").write_text("framework,version,num_tokens,latency\nVLLM,0.24.0,1,0.01\n")
    got = read_traces(tmp_path / "systems", "aiconfigurator")
    want = pd.concat([read_traces(f, "aiconfigurator").table for f in parquet], ignore_index=True)
    assert got.files == 2 and len(got.table) == len(want) > 10_000
    assert set(got.table["hardware"]) == {"H100-SXM"} and set(got.table["stack"]) == {"vllm 0.24.0"}
    key = ["op", "m", "n", "k", "batch", "kv_len", "heads", "kv_heads", "dtype", "kernel"]
    a = got.table.sort_values(key + ["latency_ms"])["latency_ms"].to_numpy()
    b = want.sort_values(key + ["latency_ms"])["latency_ms"].to_numpy()
    assert np.allclose(a, b, rtol=1e-9)
    # The table of a kind no reader knows is named, not dropped unseen.
    assert [p.name for p in got.skipped] == ["moe_perf.txt"] and "moe_perf.txt" in got.skipped_note()


def test_git_lfs_pointer_is_one_clear_error(tmp_path):
    """A clone without git-lfs holds pointers in place of the tables: one line naming the file
    and the fix, not a Parquet or CSV parser error."""
    d = tmp_path / "data" / "h200_sxm" / "gemm" / "trtllm" / "1.0"
    d.mkdir(parents=True)
    pointer = ("version https://git-lfs.github.com/spec/v1\n"
               "oid sha256:a9fc5f9628d521008d438540acf27eb3850c052d18efac44bf52cbdcd6bdc98b\nsize 376333\n")
    (d / "gemm_perf.txt").write_text(pointer)
    with pytest.raises(InputError) as e:
        read_traces(tmp_path / "data", "aiconfigurator")
    msg = str(e.value)
    assert "gemm_perf.txt" in msg and "Git LFS pointer" in msg and "git lfs pull" in msg
    assert len(msg.splitlines()) == 1
