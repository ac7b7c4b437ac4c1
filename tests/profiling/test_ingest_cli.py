"""`hermes-sim profile ingest` end to end: real traces, JSON contract, malformed inputs exit 2."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from hermes_sim.cli import main


def _run(*args):
    return subprocess.run([sys.executable, "-m", "hermes_sim.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_vidur_tree_json(traces_dir, tmp_path):
    """The whole Vidur tree ingests; stdout is one JSON object; Parquet and quarantine written."""
    out = tmp_path / "t.parquet"
    p = _run("profile", "ingest", traces_dir / "vidur", "--format", "vidur", "-o", out, "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    table = pd.read_parquet(out)
    assert doc["rows"] == len(table) > 100_000 and doc["files"] == 23
    assert doc["seconds"] < 60
    assert sum(r["rows"] for r in doc["by_op_hardware"]) == len(table)
    q = pd.read_csv(out.with_name("t.parquet.quarantine.csv"))
    assert doc["quarantined"] == len(q) > 0 and list(q.columns) == ["source", "source_row", "column", "reason"]
    assert {"t_roofline_ms", "flops", "bytes", "latency_ms"} <= set(table.columns)


def test_aiconfigurator_system_human_output(traces_dir, tmp_path):
    """A system directory ingests with a rich table of rows per op kind and hardware on stdout."""
    out = tmp_path / "a100.parquet"
    p = _run("profile", "ingest", traces_dir / "aiconfigurator" / "data" / "a100_sxm", "--format",
             "aiconfigurator", "-o", out)
    assert p.returncode == 0, p.stderr
    for word in ("gemm", "attn_decode", "collective", "A100-80GB", "done in"):
        assert word in p.stdout
    q = pd.read_csv(out.with_name("a100.parquet.quarantine.csv"))
    assert len(pd.read_parquet(out)) + len(q) == 58113  # rows of the 9 source tables
    # TRT-LLM 1.0 decode rows that read KV faster than A100 HBM can deliver
    assert q["reason"].str.contains("below the roofline bound").all()
    assert "quarantined" in p.stdout


def _fails(capsys, *args) -> str:
    code = main(["profile", "ingest", *map(str, args)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("hermes-sim: error:"), err
    return err


def test_json_given_as_vidur(tmp_path, capsys):
    """A JSON file declared as Vidur: names the file and the missing columns."""
    f = tmp_path / "trace.json"
    f.write_text('{"traceEvents": [{"ph": "X"}]}')
    err = _fails(capsys, f, "--format", "vidur", "-o", tmp_path / "o.parquet")
    assert "trace.json" in err and "time_stats" in err


def test_vidur_csv_missing_shape_columns(tmp_path, capsys):
    """A Vidur mlp.csv without its shape columns lists what is missing."""
    f = tmp_path / "mlp.csv"
    f.write_text("time_stats.mlp_up_proj.median,time_stats.mlp_up_proj.std\n0.1,0.01\n")
    err = _fails(capsys, f, "--format", "vidur", "-o", tmp_path / "o.parquet")
    assert "mlp.csv" in err and "n_embd" in err and "num_tokens" in err


def test_parquet_of_another_kind(tmp_path, capsys):
    """A parquet that is not an AIConfigurator table, and a corrupt one, fail in one line."""
    f = tmp_path / "other.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(f)
    assert "not an AIConfigurator perf table" in _fails(capsys, f, "--format", "aiconfigurator", "-o", tmp_path / "o.pq")
    g = tmp_path / "gemm_perf.parquet"
    g.write_text("m,n,k\n1,2,3\n")
    assert "not a readable Parquet file" in _fails(capsys, g, "--format", "aiconfigurator", "-o", tmp_path / "o.pq")
    h = tmp_path / "x" / "gemm_perf.parquet"
    h.parent.mkdir()
    pd.DataFrame({"m": [1], "n": [2]}).to_parquet(h)
    assert "missing column(s) gemm_dtype, k, latency" in _fails(capsys, h, "--format", "aiconfigurator",
                                                                  "--hardware", "H100-SXM", "-o", tmp_path / "o.pq")


def test_nothing_usable_left(tmp_path, capsys):
    """Every row bad (NaN and negative latency): non-zero exit and the reasons, quarantine not silent."""
    f = tmp_path / "mine.csv"
    pd.DataFrame({"op": ["gemm", "gemm"], "m": [1, 2], "n": [8, 8], "k": [8, 8],
                  "latency_ms": [float("nan"), -1.0]}).to_csv(f, index=False)
    err = _fails(capsys, f, "--format", "csv", "--hardware", "H100-SXM", "-o", tmp_path / "o.parquet")
    assert "no usable csv rows" in err and "not a number" in err


def test_missing_path_and_empty_dir(tmp_path, capsys):
    """A path that does not exist, or a directory without files of the format, is one line each."""
    assert "no such file or directory" in _fails(capsys, tmp_path / "nope", "--format", "vidur", "-o", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    assert "no vidur trace files" in _fails(capsys, tmp_path / "empty", "--format", "vidur", "-o", tmp_path / "o")


def test_unknown_format_and_bad_map(tmp_path, capsys):
    """An unknown --format and a --map unit that cannot apply both exit 2 in one line."""
    f = tmp_path / "mine.csv"
    pd.DataFrame({"lat": [1.0]}).to_csv(f, index=False)
    assert "Invalid value" in _fails(capsys, f, "--format", "nvprof", "-o", tmp_path / "o")
    assert "not a time unit" in _fails(capsys, f, "--format", "csv", "--op", "gemm", "--map", "latency=lat:GB",
                                       "-o", tmp_path / "o")


def test_unknown_hardware_is_quarantined_not_guessed(tmp_path, capsys, monkeypatch):
    """Rows on a device the catalog lacks cannot get a roofline: the error says to add it;
    with its spec sheet given by --catalog the same rows ingest."""
    f = tmp_path / "mine.csv"
    pd.DataFrame({"op": ["gemm"], "m": [1], "n": [8], "k": [8], "latency_ms": [0.01]}).to_csv(f, index=False)
    err = _fails(capsys, f, "--format", "csv", "--hardware", "TPU-v9000", "-o", tmp_path / "o.parquet")
    assert "TPU-v9000" in err and "--catalog" in err
    monkeypatch.setenv("HERMES_CATALOG", "")  # --catalog appends to it; the old value is restored after the test
    spec = tmp_path / "tpu.yaml"
    spec.write_text("devices:\n  - name: TPU-v9000\n    kind: asic\n    peak_tflops: {bf16: 900}\n"
                    "    mem_capacity_gb: 96\n    mem_bw_gb_s: 3000\n    tdp_w: 500\n    price_per_hour: 3.0\n")
    code = main(["profile", "ingest", str(f), "--format", "csv", "--hardware", "TPU-v9000", "--catalog", str(spec),
                 "-o", str(tmp_path / "o.parquet"), "--json"])
    assert code == 0 and set(pd.read_parquet(tmp_path / "o.parquet")["hardware"]) == {"TPU-v9000"}


def test_data_files_the_format_does_not_read_are_reported(tmp_path, capsys):
    """A system folder with a table of a kind no reader knows (MoE) and an end-to-end CSV:
    the kernel table ingests, and both other files are named in the human output and listed
    under skipped_files in JSON, not dropped unseen (collection_meta.yaml is no data file)."""
    d = tmp_path / "data" / "h100_sxm" / "gemm" / "vllm" / "1.0"
    d.mkdir(parents=True)
    pd.DataFrame({"gemm_dtype": ["bfloat16"] * 2, "m": [64, 128], "n": [4096] * 2, "k": [4096] * 2,
                  "latency": [0.02, 0.03]}).to_parquet(d / "gemm_perf.parquet")
    pd.DataFrame({"num_tokens": [1], "latency": [0.01]}).to_parquet(d / "moe_perf.parquet")
    (d / "collection_meta.yaml").write_text("runtime: {framework: vllm, version: 1.0}\n")
    (tmp_path / "data" / "silicon_sample.csv").write_text("isl,osl\n1,1\n")
    out = tmp_path / "o.parquet"
    assert main(["profile", "ingest", str(tmp_path / "data"), "--format", "aiconfigurator", "-o", str(out),
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rows"] == 2 and doc["files"] == 1
    assert sorted(p.rsplit("/", 1)[-1] for p in doc["skipped_files"]) == ["moe_perf.parquet", "silicon_sample.csv"]
    assert main(["profile", "ingest", str(tmp_path / "data"), "--format", "aiconfigurator", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 data file(s) not of this format, not read: moe_perf.parquet, silicon_sample.csv" in text


def test_unknown_gpu_names_the_spec_sheet_that_came_with_the_traces(traces_dir, tmp_path, capsys, monkeypatch):
    """AIConfigurator tables of a GPU the catalog lacks (real L40S GEMMs filed as Intel B60,
    beside the real b60.yaml): the error names that YAML as the --catalog to pass; passed, the
    rows ingest on B60 (and those faster than B60's roofline are quarantined as such)."""
    src = next((traces_dir / "aiconfigurator" / "data" / "l40s" / "gemm" / "vllm").rglob("gemm_perf.parquet"))
    d = tmp_path / "data" / "b60" / "gemm" / "vllm" / "1.0"
    d.mkdir(parents=True)
    (d / "gemm_perf.parquet").symlink_to(src)
    sheet = tmp_path / "b60.yaml"
    sheet.write_text((traces_dir / "aiconfigurator" / "b60.yaml").read_text())
    err = _fails(capsys, tmp_path / "data", "--format", "aiconfigurator", "-o", tmp_path / "o.parquet")
    assert f"hardware 'B60' is not in the catalog (add it with --catalog {sheet}" in err
    monkeypatch.setenv("HERMES_CATALOG", "")  # --catalog appends to it; the old value is restored after the test
    assert main(["profile", "ingest", str(tmp_path / "data"), "--format", "aiconfigurator", "--catalog", str(sheet),
                 "-o", str(tmp_path / "o.parquet"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(r["op"], r["hardware"]) for r in doc["by_op_hardware"]] == [("gemm", "B60")] and doc["rows"] > 1000
    assert set(doc["quarantine_reasons"]) == {"latency more than 1.25x below the roofline bound: "
                                              "wrong unit or wrong hardware?"}
