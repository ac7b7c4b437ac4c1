"""Hostile input to `hermes-sim validate`, its measurement readers, the rejection summary,
`profile ingest` over a symlinked AIConfigurator folder and `hermes-sim ui` (issue 23).

Each case drives the real CLI (``hermes_sim.cli.main``) and asserts either exit 2 with
exactly one non-empty stderr line naming the file and the field or row (no traceback), or
exit 0 with a sane output."""
from __future__ import annotations

import json
import re
import socket
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hermes_sim.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent / "simulator"))
from simkit import BASE

SCENARIO = {**BASE, "debug": False}


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error(capsys, *args) -> str:
    """Run the CLI expecting a user error: exit 2 and one non-empty stderr line, returned."""
    code, _, err = _run(capsys, *args)
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("hermes-sim: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def scenario(tmp_path) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(SCENARIO))
    return p


def _trace(path: Path, n: int) -> Path:
    path.write_text("arrival_timestamp,prompt_size,token_size\n"
                    + "".join(f"{i * 0.2:.1f},{100 + i},{20 + i}\n" for i in range(n)))
    return path


def _bench(path: Path, n: int, **override) -> Path:
    doc = {"input_lens": [100 + i for i in range(n)], "output_lens": [20 + i for i in range(n)],
           "ttfts": [0.05] * n, "e2els": [0.6] * n, **override}
    path.write_text(json.dumps(doc))
    return path


# ---- vLLM benchmark_serving JSON and its trace --------------------------------------------

def test_vllm_bench_result_longer_than_its_trace_is_refused_naming_both(tmp_path, capsys, scenario):
    """A 20-request result with a 5-row trace is not truncated to 5: one line names both
    files and both lengths."""
    res, tr = _bench(tmp_path / "bench.json", 20), _trace(tmp_path / "t5.csv", 5)
    line = _one_error(capsys, "validate", res, "--format", "vllm-bench", "--scenario", scenario, "--trace", tr)
    assert "bench.json" in line and "t5.csv" in line
    assert "5 requests" in line and "has 20" in line


def test_vllm_bench_trace_longer_than_result_replays_its_first_rows(tmp_path, capsys, scenario):
    """A trace longer than the result is what benchmark_serving replays (its first
    num_prompts rows): exit 0 with one compared row per result entry."""
    res, tr = _bench(tmp_path / "bench.json", 5), _trace(tmp_path / "t20.csv", 20)
    code, out, err = _run(capsys, "validate", res, "--format", "vllm-bench", "--scenario", scenario,
                          "--trace", tr, "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert [r["id"] for r in rep["rows"]] == [0, 1, 2, 3, 4]
    assert all(r["ttft_meas"] == 0.05 and r["ttft_pred"] > 0 for r in rep["rows"])
    assert rep["ttft_mape"] >= 0 and rep["unsupported"] == []


@pytest.mark.parametrize("doc, words", [
    ({"input_lens": [100] * 5, "output_lens": [20] * 4, "ttfts": [0.05] * 5}, ("output_lens", "4 entries", "5")),
    ({"input_lens": ["12"] * 5, "output_lens": [20] * 5, "ttfts": [0.05] * 5}, ("input_lens", "entry 0", "'12'")),
    ({"input_lens": [100] * 5, "output_lens": [20] * 5, "ttfts": [0.05, -1, 0, 0, 0]}, ("ttfts", "entry 1")),
    ({"input_lens": [100] * 5, "output_lens": [20.5] * 5, "ttfts": [0.05] * 5}, ("output_lens", "whole number")),
    ({"input_lens": [100] * 5, "output_lens": [20] * 5, "ttfts": "fast"}, ("ttfts", "must be a list")),
    ({"input_lens": [100] * 5, "ttfts": [0.05] * 5}, ("output_lens", "missing")),
    ({"input_lens": [100] * 5, "output_lens": [20] * 5, "ttfts": [0.05] * 5, "e2els": [1.0] * 3},
     ("e2els", "3 entries")),
    ([1, 2, 3], ("JSON object", "list")),
], ids=["unequal-lengths", "string-lengths", "negative-ttft", "fractional-tokens", "not-a-list",
        "missing-list", "short-e2els", "top-level-list"])
def test_malformed_vllm_bench_json_is_one_line_naming_the_field(tmp_path, capsys, scenario, doc, words):
    """Lists of different lengths, string or fractional lengths, negative times, a missing
    list or a top-level list: exit 2, one line naming the file and the field."""
    res = tmp_path / "bench.json"
    res.write_text(json.dumps(doc))
    line = _one_error(capsys, "validate", res, "--format", "vllm-bench", "--scenario", scenario,
                      "--trace", _trace(tmp_path / "t.csv", 10))
    assert "bench.json" in line
    for w in words:
        assert w in line, line


def test_vllm_bench_failed_requests_are_listed_not_compared(tmp_path, capsys, scenario):
    """Requests benchmark_serving recorded as failed (an error text, no output tokens) are
    still replayed, left out of the MAPE and listed with the error."""
    res = _bench(tmp_path / "bench.json", 4, output_lens=[20, 0, 22, 23], ttfts=[0.05, 0.0, 0.05, 0.05],
                 e2els=[0.6, 0.0, 0.6, 0.6], errors=["", "Bad Gateway", "", ""])
    code, out, err = _run(capsys, "validate", res, "--format", "vllm-bench", "--scenario", scenario,
                          "--trace", _trace(tmp_path / "t.csv", 4), "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["unsupported"] == [{"id": 1, "reason": "failed in the measured run (Bad Gateway)"}]
    assert rep["rows"][1]["ttft_meas"] is None and rep["rows"][0]["ttft_meas"] == 0.05


# ---- per-request CSVs and silicon rows ---------------------------------------------------

@pytest.mark.parametrize("content, words", [
    (b"", ("empty file",)),
    (bytes(range(256)) * 4, ("not a readable",)),
    (b'arrival_s,prompt_tokens\n1,2,3,4\n"x\n', ("not a readable",)),
], ids=["empty", "binary", "unparseable"])
@pytest.mark.parametrize("fmt", ["csv", "silicon"])
def test_empty_binary_or_broken_csv_is_one_line(tmp_path, capsys, scenario, content, words, fmt):
    """An empty, binary or unparseable measurements CSV: one line naming the file, for the
    per-request and the silicon formats alike (not a pandas traceback)."""
    m = tmp_path / "m.csv"
    m.write_bytes(content)
    args = ("validate", m, scenario) if fmt == "csv" else ("validate", m, "--format", "silicon")
    line = _one_error(capsys, *args)
    assert "m.csv" in line and all(w in line for w in words), line


@pytest.mark.parametrize("body, words", [
    ("0,100,20,0.05\n0.1,-3,20,0.05\n", ("row 3", "'prompt_tokens'", ">= 1")),
    ("0,100,20.5,0.05\n", ("row 2", "'output_tokens'", "whole number")),
    ("0,100,20,inf\n", ("row 2", "'ttft_s'", "finite")),
    ("zero,100,20,0.05\n", ("row 2", "'arrival_s'", "'zero'")),
    ("", ("no rows",)),
], ids=["negative-tokens", "fractional-tokens", "inf-ttft", "text-arrival", "header-only"])
def test_bad_per_request_csv_values_name_row_and_column(tmp_path, capsys, scenario, body, words):
    """Per-request CSV values that cannot be a measurement: one line with row and column
    (or 'no rows' for a header-only file)."""
    m = tmp_path / "m.csv"
    m.write_text("arrival_s,prompt_tokens,output_tokens,ttft_s\n" + body)
    line = _one_error(capsys, "validate", m, scenario)
    assert "m.csv" in line and all(w in line for w in words), line


@pytest.fixture
def silicon_rows(traces_dir) -> pd.DataFrame:
    src = pd.read_csv(traces_dir / "aiconfigurator" / "silicon_sample.csv")
    return src[src.model_path.str.contains("Llama-3.1-8B")].head(2).reset_index(drop=True)


@pytest.mark.parametrize("column, value, words", [
    ("silicon_ttft_ms", -5.0, ("row 3", "'silicon_ttft_ms'", "positive", "-5")),
    ("silicon_tpot_ms", "fast", ("row 3", "'silicon_tpot_ms'", "'fast'")),
    ("batch_size", 0, ("row 3", "'batch_size'", ">= 1", "got 0")),
    ("tp_size", 1.5, ("row 3", "'tp_size'", "whole number")),
], ids=["negative-ttft", "text-tpot", "batch-size-0", "fractional-tp"])
def test_bad_silicon_values_name_row_and_column(tmp_path, capsys, silicon_rows, column, value, words):
    """`validate --format silicon` refuses a negative or non-numeric time and a zero or
    fractional count, naming the row (file line) and the column."""
    df = silicon_rows.astype({column: object})
    df.loc[1, column] = value
    m = tmp_path / "sil.csv"
    df.to_csv(m, index=False)
    line = _one_error(capsys, "validate", m, "--format", "silicon", "--surrogate", "roofline")
    assert "sil.csv" in line and all(w in line for w in words), line


def test_header_only_silicon_file_says_no_rows(tmp_path, capsys, silicon_rows):
    """A silicon CSV with only its header is refused with 'no rows', not an empty report."""
    m = tmp_path / "sil.csv"
    silicon_rows.head(0).to_csv(m, index=False)
    line = _one_error(capsys, "validate", m, "--format", "silicon")
    assert "sil.csv" in line and "no rows" in line


def test_real_silicon_rows_still_validate(tmp_path, capsys, silicon_rows):
    """The real rows pass the stricter reader: exit 0, two compared rows with finite errors."""
    m = tmp_path / "sil.csv"
    silicon_rows.to_csv(m, index=False)
    code, out, err = _run(capsys, "validate", m, "--format", "silicon", "--surrogate", "roofline", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert len(rep["rows"]) == 2 and rep["ttft_mape"] > 0 and rep["tpot_mape"] > 0 and rep["unsupported"] == []


def test_no_comparable_rows_names_the_file_and_metric(tmp_path, capsys, scenario):
    """When no request has a measured TTFT > 0, the error names the measurements file and
    what was compared."""
    m = tmp_path / "m.csv"
    m.write_text("arrival_s,prompt_tokens,output_tokens,ttft_s\n0,100,20,0\n0.1,100,20,0\n")
    line = _one_error(capsys, "validate", m, scenario)
    assert "m.csv" in line and "ttft_s" in line and "no comparable rows" in line


# ---- what validate replays, and what it could not ----------------------------------------

@pytest.mark.parametrize("workload", [
    {"arrival": "trace"},                                     # no trace named at all
    {"arrival": "trace", "trace": "nowhere/missing.csv"},     # a trace that does not exist
    {"arrival": "poisson", "rate_rps": -1},                   # nonsense validate never uses
], ids=["no-trace", "missing-trace", "bad-rate"])
def test_validate_ignores_the_scenario_workload(tmp_path, capsys, workload):
    """validate replays the measured requests, so the scenario's workload is neither read
    nor required: exit 0 with every measured request compared."""
    sp = tmp_path / "s.yaml"
    sp.write_text(yaml.safe_dump({**SCENARIO, "workload": workload}))
    m = tmp_path / "m.csv"
    m.write_text("arrival_s,prompt_tokens,output_tokens,ttft_s\n0,100,20,0.05\n0.1,200,30,0.06\n")
    code, out, err = _run(capsys, "validate", m, sp, "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert len(rep["rows"]) == 2 and all(r["ttft_pred"] > 0 for r in rep["rows"])


def test_requests_the_replay_cannot_simulate_are_listed_with_the_reason(tmp_path, capsys, scenario):
    """A measured request longer than the model's context is rejected by the simulation:
    the JSON lists it under 'unsupported' with the reason, the table output prints it, and
    the other requests are compared."""
    m = tmp_path / "m.csv"
    m.write_text("arrival_s,prompt_tokens,output_tokens,ttft_s\n0,100,20,0.05\n0.1,500000,20,0.5\n"
                 "0.2,120,20,0.05\n")
    code, out, err = _run(capsys, "validate", m, scenario, "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert [u["id"] for u in rep["unsupported"]] == [1]
    assert "not simulated: prompt 500000 + output 20 tokens exceed the model context" in rep["unsupported"][0]["reason"]
    assert rep["rows"][1]["ttft_pred"] is None and rep["rows"][0]["ttft_pred"] > 0
    code, _, err = _run(capsys, "validate", m, scenario)
    assert code == 0
    assert re.search(r"not compared 1: not simulated: prompt 500000", " ".join(err.split()))


def test_rejection_summary_prints_the_real_numbers(tmp_path, capsys):
    """Requests larger than the KV pool are summarized with their real block counts (a range
    across the group), never the literal 'needs N KV blocks ... has N usable'."""
    sp = tmp_path / "s.yaml"
    doc = {**SCENARIO, "deployments": [{**BASE["deployments"][0], "gpu_memory_utilization": 0.215}],
           "workload": {**BASE["workload"], "num_requests": 60,
                        "prompt_tokens": {"dist": "uniform", "min": 100, "max": 30000}}}
    sp.write_text(yaml.safe_dump(doc))
    code, out, err = _run(capsys, "simulate", sp, "--json")
    assert code == 0, err
    reasons = json.loads(out)["rejected"]["reasons"]
    assert reasons and not any(re.search(r"\bN\b", k) for k in reasons), reasons
    assert all(re.fullmatch(r"needs \d+(-\d+)? KV blocks but a replica has \d+ usable", k) for k in reasons)
    code, _, err = _run(capsys, "simulate", sp)
    assert code == 0
    assert re.search(r"rejected \d+: needs \d+-\d+ KV blocks but a replica has \d+ usable", err), err
    assert "needs N" not in err


# ---- profile ingest over a symlinked system folder ---------------------------------------

def test_symlinked_aiconfigurator_system_folder_is_read(tmp_path, capsys, traces_dir):
    """A data/<system> folder that is a symlink to a real AIConfigurator system is read like
    a copy (all 9 tables, hardware from the link's name); a link back up the tree does not
    make the walk loop."""
    data = tmp_path / "aic" / "data"
    data.mkdir(parents=True)
    (data / "a100_sxm").symlink_to(traces_dir / "aiconfigurator" / "data" / "a100_sxm", target_is_directory=True)
    (data / "loop").symlink_to(tmp_path / "aic", target_is_directory=True)
    out = tmp_path / "out.parquet"
    code, stdout, err = _run(capsys, "profile", "ingest", "-f", "aiconfigurator", tmp_path / "aic",
                             "-o", out, "--json")
    assert code == 0, err
    rep = json.loads(stdout)
    assert rep["files"] == 9 and rep["rows"] > 50000
    assert {r["hardware"] for r in rep["by_op_hardware"]} == {"A100-80GB"}
    assert out.is_file()


# ---- hermes-sim ui on a taken port -------------------------------------------------------

def test_ui_on_a_taken_port_is_refused_naming_the_port(capsys):
    """With another server listening on the port, `ui --port P` refuses in one line naming
    the port instead of printing an 'open http://' that points at that server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        code, out, err = _run(capsys, "ui", "--port", port)
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1, err
    assert f"--port {port}" in lines[0] and f"127.0.0.1:{port}" in lines[0]
    assert "open http" not in out + err
