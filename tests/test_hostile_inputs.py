"""Hostile but realistic inputs through the real CLI (issue 23, classes 8-11): every one ends
with exit 2 and ONE stderr line naming the file and the field or row, or with exit 0 and a
sane result; never a traceback, a blank line before the error, or work done before refusing."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hermes_sim.cli import main

REQUESTS = 20
BASE = {"name": "hostile", "surrogate": "roofline",
        "deployments": [{"name": "llm", "model": "Llama-3.1-8B", "hardware": "H100-SXM"}],
        "workload": {"num_requests": REQUESTS, "rate_rps": 5,
                     "prompt_tokens": {"mean": 100}, "output_tokens": {"mean": 20}}}
TRACE_HEAD = "arrived_at,num_prefill_tokens,num_decode_tokens\n"


def write_scenario(path: Path, doc: dict | None = None, text: str | None = None) -> Path:
    path.write_text(text if text is not None else yaml.safe_dump(doc if doc is not None else BASE))
    return path


def with_field(section: str, **fields) -> dict:
    """BASE with ``fields`` set in ``section`` ('workload', 'deployment' or '' for the top)."""
    doc = json.loads(json.dumps(BASE))
    target = {"workload": doc["workload"], "deployment": doc["deployments"][0], "": doc}[section]
    target.update(fields)
    return doc


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_one_line(rc: int, err: str, *names: str) -> None:
    """Exit 2, exactly one non-empty stderr line (no leading blank line), naming each of ``names``."""
    assert rc == 2, err
    assert err.endswith("\n") and err.count("\n") == 1 and err.startswith("hermes-sim: error: "), repr(err)
    assert "Traceback" not in err
    for n in names:
        assert n in err, (n, err)


def simulate_json(capsys, scenario: Path, *extra: str) -> tuple[dict, str]:
    rc, out, err = run(capsys, "simulate", str(scenario), "--json", "--no-plots", *extra)
    assert rc == 0, err
    return json.loads(out), err


# ---- one reader for YAML / JSON / CSV ---------------------------------------------------

@pytest.mark.parametrize("content, expected", [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01garbage\x00", "not a YAML text file"),
    (b"\xd0\xcf\x11\xe0 binary \x93\x94", "not UTF-8"),
    ("name: t\n".encode("utf-16-le"), "NUL bytes"),
    (b"name: a\nseed: 1\nname: b\n", "duplicate key 'name' at line 3 (first at line 1)"),
    (b"deployments:\n  - model: Llama-3.1-8B\n    hardware: H100-SXM\n    tp: 1\n    tp: 2\n",
     "duplicate key 'tp' at line 5"),
    (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested more than 100 levels deep"),
    (b"".join(b"  " * i + b"k%d:\n" % i for i in range(300)), "nested more than 100 levels deep"),
    (b"a: &x [1, *x]\n", "contains itself"),
    (b"a: &a [x,x,x,x,x,x,x,x,x,x]\n" + b"".join(
        b"%c: &%c [%s]\n" % (c, c, b",".join([b"*%c" % (c - 1)] * 10)) for c in b"bcdefghi"),
     "more than 1,000,000 values"),
    (b"# padding\n" * 500_000, "larger than the 4.2 MB"),
])
def test_scenario_file_that_is_not_sane_yaml_is_one_line(tmp_path, capsys, content, expected):
    """Binary, BOM-less UTF-16, duplicate keys, 5,000-deep nesting, a self-containing alias, an
    alias bomb and a 5 MB file: each is refused in one line naming the scenario file."""
    p = tmp_path / "bad.yaml"
    p.write_bytes(content)
    rc, _, err = run(capsys, "simulate", str(p))
    assert_one_line(rc, err, str(p), expected)


def test_utf16_scenario_with_byte_order_mark_runs(tmp_path, capsys):
    """A UTF-16 file with a BOM (what Windows editors save) is valid YAML and simulates."""
    p = tmp_path / "utf16.yaml"
    p.write_text(yaml.safe_dump(BASE), encoding="utf-16")
    summary, _ = simulate_json(capsys, p)
    assert summary["requests"] == summary["completed"] == REQUESTS


def test_yaml_merge_keys_may_override_without_being_duplicates(tmp_path, capsys):
    """`<<: *base` then a key of its own is YAML's override idiom, not a duplicate key."""
    text = yaml.safe_dump({k: v for k, v in BASE.items() if k != "workload"}) + (
        "workload:\n  <<: {num_requests: 50, rate_rps: 5}\n  num_requests: 7\n")
    summary, _ = simulate_json(capsys, write_scenario(tmp_path / "merge.yaml", text=text))
    assert summary["requests"] == 7


@pytest.mark.parametrize("content, expected", [
    (b"", "empty file, not a trace file"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a readable trace file (it holds NUL bytes"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1 not text", "is not UTF-8"),
    (b"\n\n\n", "empty file, not a trace file (blank lines only)"),
])
def test_empty_or_binary_trace_csv_is_one_line(tmp_path, capsys, content, expected):
    """An empty, blank, binary or non-UTF-8 trace CSV names the trace file, not a pandas error."""
    trace = tmp_path / "trace.csv"
    trace.write_bytes(content)
    sc = write_scenario(tmp_path / "s.yaml", with_field("workload", arrival="trace", trace=str(trace)))
    rc, _, err = run(capsys, "simulate", str(sc))
    assert_one_line(rc, err, str(trace), expected)


def test_binary_config_json_model_is_one_line(tmp_path, capsys):
    """A deployment model that is a binary config.json names that file."""
    cfg = tmp_path / "config.json"
    cfg.write_bytes(b"\xff\xfe\x00\xd8garbage\x00\x01")
    sc = write_scenario(tmp_path / "s.yaml", with_field("deployment", model=str(cfg)))
    rc, _, err = run(capsys, "simulate", str(sc))
    assert_one_line(rc, err, str(cfg), "not valid JSON")


def test_binary_search_space_is_one_line(tmp_path, capsys):
    """A binary search-space file is refused before any trial, naming the file."""
    space = tmp_path / "space.yaml"
    space.write_bytes(b"\x00\x01\x02\xff binary space")
    rc, _, err = run(capsys, "search", str(space), "--trials", "1", "--storage",
                     f"sqlite:///{tmp_path / 's.db'}", "-o", str(tmp_path / "out"))
    assert_one_line(rc, err, str(space), "NUL bytes")


# ---- scenario values ----------------------------------------------------------------------

@pytest.mark.parametrize("section, fields, expected", [
    ("workload", {"prompt_tokens": {"dist": "uniform", "mean": 100, "min": 1.5, "max": 200}},
     "workload.prompt_tokens.min"),
    ("workload", {"output_tokens": {"dist": "uniform", "mean": 20, "min": 1, "max": 30.5}},
     "workload.output_tokens.max"),
    ("workload", {"prompt_tokens": {"mean": 100.5}}, "workload.prompt_tokens.mean: a fixed length is a whole"),
    ("deployment", {"replicas": True}, "deployments.0.replicas: expected a number, not true/false"),
    ("deployment", {"tp": True}, "deployments.0.tp: expected a number"),
    ("workload", {"num_requests": False}, "workload.num_requests: expected a number"),
    ("", {"slo": {"ttft_p90_s": True}}, "slo: expected a number"),
    ("workload", {"rate_rps": float("inf")}, "workload.rate_rps: Input should be a finite number"),
    ("workload", {"rate_rps": float("nan")}, "workload.rate_rps: Input should be a finite number"),
    ("", {"slo": {"ttft_p90_s": float("inf")}}, "slo.ttft_p90_s: Input should be a finite number"),
    ("", {"seed": -1}, "seed: must be >= 0"),
    ("", {"pipelines": [{"name": "r", "stages": [{"kind": "reasoning", "deployment": "llm", "reward": "llm",
                                                   "steps": {"mean": 2.5}}]}]},
     "pipelines.0.stages.0.steps.mean: a fixed count is a whole number"),
])
def test_scenario_value_a_user_cannot_mean_is_refused(tmp_path, capsys, section, fields, expected):
    """Fractional token counts, booleans for numbers, infinities, NaN and a negative seed are
    refused naming the dotted field, instead of truncating or reading true as 1."""
    sc = write_scenario(tmp_path / "s.yaml", with_field(section, **fields))
    rc, _, err = run(capsys, "simulate", str(sc))
    assert_one_line(rc, err, str(sc), expected)


def test_tp_that_does_not_split_the_heads_is_refused(tmp_path, capsys):
    """tp 64 for a 32-head model used to run on 128 devices; tp 3 splits no head count."""
    for tp in (64, 3):
        sc = write_scenario(tmp_path / f"tp{tp}.yaml", with_field("deployment", tp=tp))
        rc, _, err = run(capsys, "simulate", str(sc))
        assert_one_line(rc, err, str(sc), "deployment 'llm' tp", f"{tp} does not split the 32 attention heads")


def test_tp_that_replicates_kv_heads_still_runs(tmp_path, capsys):
    """tp 16 on Llama-3.1-8B (32 heads, 8 KV heads): KV heads are replicated, as vLLM allows."""
    summary, _ = simulate_json(capsys, write_scenario(tmp_path / "tp16.yaml", with_field("deployment", tp=16)))
    assert summary["devices"] == 16 and summary["completed"] == REQUESTS


def test_decode_tp_is_checked_by_its_own_field(tmp_path, capsys):
    """A disaggregated decode pool's tp is named as scheduler.decode_tp."""
    doc = with_field("deployment", scheduler={"policy": "disaggregated", "decode_tp": 5})
    rc, _, err = run(capsys, "simulate", str(write_scenario(tmp_path / "d.yaml", doc)))
    assert_one_line(rc, err, "scheduler.decode_tp: 5 does not split")


@pytest.mark.parametrize("field, value", [("num_attention_heads", 0), ("num_hidden_layers", -2),
                                          ("hidden_size", 4096.5), ("num_key_value_heads", "eight")])
def test_config_json_count_that_is_not_a_count_names_the_key(tmp_path, capsys, field, value):
    """num_attention_heads: 0 divided by zero; now the config.json key is named in one line."""
    cfg = {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
           "num_hidden_layers": 32, "intermediate_size": 14336, "vocab_size": 128256, field: value}
    path = tmp_path / "m" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(cfg))
    sc = write_scenario(tmp_path / "s.yaml", with_field("deployment", model=str(path)))
    rc, _, err = run(capsys, "simulate", str(sc))
    assert_one_line(rc, err, str(path), f"field '{field}' must be a positive whole number")


def test_missing_workload_is_said_and_simulates_the_default(tmp_path, capsys):
    """A scenario without a workload runs the documented default, and stderr says so in one line."""
    doc = {k: v for k, v in BASE.items() if k != "workload"}
    summary, err = simulate_json(capsys, write_scenario(tmp_path / "nowl.yaml", doc))
    assert summary["requests"] == 1000
    assert err.count("\n") == 1 and "has no 'workload'" in err and "1000 poisson requests" in err, err


# ---- size bounds (subprocess: a failed bound would be a MemoryError, capped at 3 GB) --------

def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))


@pytest.mark.parametrize("section, fields, expected", [
    ("deployment", {"replicas": 10**9}, "deployments.0.replicas: 1,000,000,000 needs about"),
    ("workload", {"num_requests": 10**9}, "workload.num_requests: 1,000,000,000 needs about"),
    ("deployment", {"scheduler": {"max_tokens_per_step": 10**10}}, "deployments.0.scheduler.max_tokens_per_step"),
])
def test_scenario_larger_than_the_machine_is_refused_with_the_limit(tmp_path, section, fields, expected):
    """replicas or num_requests of 1e9 ended in MemoryError tracebacks; the error now says what
    the machine holds and how many would fit."""
    sc = write_scenario(tmp_path / "big.yaml", with_field(section, **fields))
    r = subprocess.run([sys.executable, "-m", "hermes_sim.cli", "simulate", str(sc)], capture_output=True,
                       text=True, timeout=300, preexec_fn=_limited)
    assert_one_line(r.returncode, r.stderr, str(sc), expected, "more than this machine's", "fits here")


# ---- traces -------------------------------------------------------------------------------

@pytest.mark.parametrize("rows, expected", [
    ("0,10,10\n1,10,10\ninf,10,10\n", "row 4, column 'arrived_at': arrival time must be a finite number (got inf)"),
    ("0,10,10\nsoon,10,10\n", "row 3, column 'arrived_at': arrival time must be a finite number (got 'soon')"),
    ("0,10,10\n,10,10\n", "row 3, column 'arrived_at'"),
    ("0,10,10\n2,10,10\n1,10,10\n", "row 4, column 'arrived_at': arrival times must not decrease"),
    ("0,10,10\n1,12.7,10\n", "row 3, column 'num_prefill_tokens': token count must be a positive whole number "
                             "(got 12.7)"),
    ("0,10,0\n", "row 2, column 'num_decode_tokens'"),
    ("0,10,many\n", "row 2, column 'num_decode_tokens'"),
    ("", "no requests (a header only)"),
    ("0,10,10\n", "one request cannot be continued to workload.num_requests 20"),
])
def test_broken_trace_names_row_and_column(tmp_path, capsys, rows, expected):
    """Non-finite, non-numeric, missing or decreasing arrivals, fractional or zero token counts,
    a header-only or one-row trace: one line naming the trace file, row and column."""
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE_HEAD + rows)
    sc = write_scenario(tmp_path / "s.yaml", with_field("workload", arrival="trace", trace=str(trace)))
    rc, _, err = run(capsys, "simulate", str(sc))
    assert_one_line(rc, err, str(trace), expected)


def test_one_row_trace_replays_when_it_is_all_that_is_asked(tmp_path, capsys):
    """A one-request trace with num_requests: 1 is a valid (if small) replay."""
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE_HEAD + "3.5,10,10\n")
    sc = write_scenario(tmp_path / "s.yaml",
                        with_field("workload", arrival="trace", trace=str(trace), num_requests=1))
    summary, _ = simulate_json(capsys, sc)
    assert summary["completed"] == 1 and summary["ttft_s"]["mean"] > 0


def test_lengths_only_trace_cannot_give_arrivals(tmp_path, capsys):
    """arrival: trace on a trace without arrival times is refused (it gave NaN arrivals)."""
    trace = tmp_path / "lengths.csv"
    trace.write_text("num_prefill_tokens,num_decode_tokens\n10,10\n20,5\n")
    sc = write_scenario(tmp_path / "s.yaml", with_field("workload", arrival="trace", trace=str(trace)))
    rc, _, err = run(capsys, "simulate", str(sc))
    assert_one_line(rc, err, str(trace), "needs arrival times")


# ---- output folder and estimator parameters --------------------------------------------------

def test_out_path_under_a_file_is_refused_before_simulating(tmp_path, capsys):
    """`-o` below an existing file is refused first: the scenario's trace (only read when the
    simulation starts) is broken too, and the error is about the output folder."""
    blocker = tmp_path / "results"
    blocker.write_text("keep me")
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE_HEAD + "0,10,10\nsoon,10,10\n")
    sc = write_scenario(tmp_path / "s.yaml", with_field("workload", arrival="trace", trace=str(trace)))
    rc, _, err = run(capsys, "simulate", str(sc), "-o", str(blocker / "run1"))
    assert_one_line(rc, err, str(blocker / "run1"), "is a file, not a folder")
    assert blocker.read_text() == "keep me"
    rc, _, err = run(capsys, "simulate", str(sc), "-o", str(blocker))
    assert_one_line(rc, err, "is a file")


def test_out_folder_that_cannot_be_written_is_refused_before_simulating(tmp_path, capsys):
    """A read-only output parent is refused before the simulation (skipped as root)."""
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc, _, err = run(capsys, "simulate", str(write_scenario(tmp_path / "s.yaml")), "-o", str(ro / "x"))
        assert_one_line(rc, err, "is not writable")
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("param, expected", [("max_depth=-3", "max_depth must be >= 1"),
                                             ("subsample=1.5", "subsample must be > 0 and <= 1"),
                                             ("learning_rate=0", "learning_rate must be > 0"),
                                             ("reg_lambda=nan", "reg_lambda must be a finite number")])
def test_surrogate_param_out_of_range_names_the_parameter(tmp_path, capsys, param, expected):
    """`--param max_depth=-3` is refused before the traces are read or a model is fitted."""
    rc, _, err = run(capsys, "surrogate", "train", str(tmp_path / "no-traces-needed.parquet"),
                     "-o", str(tmp_path / "sur"), "--no-mlflow", "--param", param)
    assert_one_line(rc, err, f"--param '{param}'", expected)
    assert not (tmp_path / "sur").exists()


def test_error_during_simulation_has_no_blank_line_before_it(tmp_path):
    """The progress bar is off when stderr is not a terminal, so an error raised while
    simulating (a bad trace row, read only then) is the first and only stderr line."""
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE_HEAD + "0,10,10\n1,0,10\n")
    sc = write_scenario(tmp_path / "s.yaml", with_field("workload", arrival="trace", trace=str(trace)))
    r = subprocess.run([sys.executable, "-m", "hermes_sim.cli", "simulate", str(sc)], capture_output=True,
                       text=True, timeout=300)
    assert_one_line(r.returncode, r.stderr, "row 3, column 'num_prefill_tokens'")


# ---- property tests: whatever the bytes or the tree, one line or a sane run ------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_random_bytes_as_scenario_never_give_a_traceback(tmp_path, capsys, data):
    """Random bytes as a scenario file: exit 2 with one line naming the file, every time."""
    p = tmp_path / "random.yaml"
    p.write_bytes(data)
    rc, _, err = run(capsys, "simulate", str(p))
    assert_one_line(rc, err, str(p))


_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
            | st.text(max_size=8))
_trees = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=3)
                      | st.dictionaries(st.sampled_from(["name", "mean", "min", "max", "dist", "policy",
                                                         "replicas", "tp", "kind", "x"]) | st.text(max_size=5),
                                        kids, max_size=3), max_leaves=12)
_SPOTS = [("",), ("workload",), ("deployment",), ("workload", "prompt_tokens"), ("deployment", "scheduler"),
          ("deployment", "router"), ("", "slo"), ("", "pipelines"), ("", "seed"), ("workload", "num_requests"),
          ("deployment", "replicas"), ("deployment", "tp"), ("workload", "rate_rps")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(_SPOTS), _trees)
def test_random_nested_values_in_a_scenario_give_one_line_or_a_sane_run(tmp_path, capsys, spot, tree):
    """A random YAML tree put at a scenario field: either the run succeeds with every request
    accounted for, or exit 2 with one line naming the file. Never a traceback."""
    doc = json.loads(json.dumps(BASE))
    parent = {"": doc, "workload": doc["workload"], "deployment": doc["deployments"][0]}[spot[0]]
    if len(spot) == 1:
        parent.clear()
        if isinstance(tree, dict):
            parent.update(tree)
        else:
            parent["x"] = tree
    else:
        parent[spot[1]] = tree
    p = tmp_path / "tree.yaml"
    p.write_text(yaml.safe_dump(doc))
    rc, out, err = run(capsys, "simulate", str(p), "--json", "--no-plots")
    if rc == 0:
        s = json.loads(out)
        assert s["completed"] + s["rejected"]["count"] == s["requests"]
    else:
        assert_one_line(rc, err, str(p))


def test_an_interrupt_a_library_turned_into_another_error_still_exits_as_the_interrupt(monkeypatch, capsys):
    """A SIGTERM landing inside Optuna's trial bookkeeping can surface as an UnboundLocalError
    raised while handling it: the CLI reports the interrupt (exit 143 / 130, one line), not a
    traceback; an error with no interrupt behind it is still raised (a bug stays visible)."""
    from hermes_sim import cli as cli_mod

    def failing(kind):
        def cmd(*a, **k):
            try:
                raise kind()
            except KeyboardInterrupt:
                raise UnboundLocalError("cannot access local variable 'updated_state'")
        return cmd

    for kind, code, word in ((cli_mod.Terminated, 143, "terminated"), (KeyboardInterrupt, 130, "interrupted")):
        monkeypatch.setattr(cli_mod.cli, "main", failing(kind))
        assert cli_mod.main(["search"]) == code
        assert capsys.readouterr().err.strip() == f"hermes-sim: {word}"

    def plain(*a, **k):
        raise UnboundLocalError("a bug")
    monkeypatch.setattr(cli_mod.cli, "main", plain)
    with pytest.raises(UnboundLocalError):
        cli_mod.main(["search"])
