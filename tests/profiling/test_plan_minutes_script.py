"""`profile plan --minutes` (a GPU-time budget) and `--script` (the plan as a standalone measuring script)."""
from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from profiling.hardware import load_catalog
from profiling.ingest import read_traces
from profiling.models import resolve_model
from profiling.plan import deployment_candidates, greedy_plan, kernel_ms, plan_table
from profiling.plan_script import plan_rows, plan_script

SHAPE = ["op", "m", "n", "k", "batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim", "elements", "msg_bytes",
         "world", "dtype"]


def _run(*args):
    return subprocess.run([sys.executable, "-m", "hermes_sim.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_minutes_budget_is_never_exceeded_and_more_minutes_never_plan_fewer():
    """Over budgets from 3 s to 2 min of estimated GPU time on Llama-3.1-8B TP 2's shapes, the
    plan's total estimated time stays within the budget, and a larger budget plans at least
    as many kernels (the same order, a longer prefix)."""
    hw = load_catalog().get("H100-SXM")
    pools = deployment_candidates([resolve_model("Llama-3.1-8B")], [2])
    cost = {k: kernel_ms(k, f, hw) for k, f in pools.items()}
    counts, orders = [], []
    for minutes in (0.05, 0.1, 0.25, 0.5, 1.0, 2.0):
        order = greedy_plan(pools, None, cost_ms=cost, max_ms=minutes * 60_000)
        total = plan_table(pools, order, hw)["est_gpu_ms"].sum()
        assert 0 < total <= minutes * 60_000
        counts.append(len(order))
        orders.append(order)
    assert counts == sorted(counts) and counts[0] < counts[-1]
    for short, long in zip(orders, orders[1:]):
        assert long[:len(short)] == short
    # a kernel cap and a time budget together: whichever binds first
    assert len(greedy_plan(pools, 5, cost_ms=cost, max_ms=60_000)) == 5


def test_profile_plan_minutes_cli_and_script(tmp_path):
    """`profile plan --minutes` reports an estimated total within the budget that matches
    the table's column, writes the measuring script with `--script`, and refuses a budget
    that is neither kernels nor minutes (exit 2, one line)."""
    out, script = tmp_path / "plan.csv", tmp_path / "measure.py"
    p = _run("profile", "plan", "--gpu", "L40S", "--minutes", "0.2", "-o", out, "--script", script, "--json")
    assert p.returncode == 0, p.stderr
    doc, t = json.loads(p.stdout), pd.read_csv(out)
    assert 0 < doc["est_gpu_seconds"] <= 12 and doc["kernels"] == len(t)
    assert abs(t["est_gpu_ms"].sum() / 1000 - doc["est_gpu_seconds"]) < 0.01
    assert len(plan_rows(t)) == len(t) and f"{len(t)} kernels planned for L40S" in script.read_text()
    for args, word in ((("--gpu", "L40S"), "--minutes"), (("--gpu", "L40S", "--minutes", "-1"), "--minutes")):
        bad = _run("profile", "plan", *args, "-o", tmp_path / "x.csv")
        assert bad.returncode == 2 and word in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.fixture
def small_plan() -> pd.DataFrame:
    """A plan of every runnable kind: two GEMMs, a prefill chunk after context, a decode
    batch, an elementwise add and an all-reduce."""
    pools = {"gemm": pd.DataFrame({"m": [16, 64], "n": [512, 256], "k": [256, 128], "dtype": "bf16"}),
             "attn_prefill": pd.DataFrame({"batch": [1], "q_len": [64], "kv_len": [192], "heads": [8],
                                           "kv_heads": [2], "head_dim": [64], "dtype": "bf16", "kv_dtype": "bf16"}),
             "attn_decode": pd.DataFrame({"batch": [4], "kv_len": [256], "heads": [8], "kv_heads": [2],
                                          "head_dim": [64], "dtype": "bf16", "kv_dtype": "bf16"}),
             "elementwise": pd.DataFrame({"elements": [1 << 14], "io_bytes": [3 * 2 << 14], "dtype": "bf16",
                                          "name": "add"}),
             "collective": pd.DataFrame({"msg_bytes": [65536], "world": [2], "collective": "all_reduce",
                                         "dtype": "bf16"})}
    order = [(k, i) for k, p in pools.items() for i in range(len(p))]
    return plan_table(pools, order, load_catalog().get("L40S"))


def _load(path):
    spec = importlib.util.spec_from_file_location("measure_script", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _same_shapes(measured: pd.DataFrame, plan: pd.DataFrame) -> None:
    def key(f: pd.DataFrame) -> list[str]:
        shape = f.reindex(columns=SHAPE)
        return sorted(map(str, shape.astype(object).where(shape.notna()).to_numpy().tolist()))
    assert key(measured) == key(plan)


def test_script_is_standalone_and_its_csv_reads_back(small_plan, tmp_path):
    """The script imports nothing but the standard library and PyTorch (torch only inside
    main), embeds the plan's rows, and the CSV its own writer produces is read by the
    project's CSV ingest without a column map: the plan's shapes, positive latencies."""
    path = tmp_path / "measure.py"
    path.write_text(plan_script(small_plan, "L40S"))
    tree = ast.parse(path.read_text())
    top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert top <= {"argparse", "csv", "os", "statistics", "sys", "time"}
    every = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert every <= top | {"torch"}
    mod = _load(path)
    assert mod.PLAN == plan_rows(small_plan) and mod.HARDWARE == "L40S"
    rows = [mod.out_row(r, [0.5 + i, 0.7 + i, 0.6 + i], "L40S", "plan-script:test", "torch test")
            for i, r in enumerate(mod.PLAN)]
    csv = tmp_path / "measured.csv"
    mod.write_csv(rows, str(csv))
    got = read_traces(csv, "csv")
    assert len(got.quarantine) == 0
    t = got.table
    _same_shapes(t, small_plan)
    assert (t["latency_ms"] > 0).all() and (t["hardware"] == "L40S").all()
    np.testing.assert_allclose(sorted(t["latency_ms"]), [0.6 + i for i in range(len(rows))])


def test_script_measures_the_plan_on_this_machine(small_plan, tmp_path):
    """Run here (the CPU fallback where CUDA is absent): every single-device kernel of the
    plan is timed, the all-reduce left to torchrun, the source names the CPU timing, and the
    CSV reads back through ingest as the plan's shapes with positive latencies."""
    pytest.importorskip("torch", reason="PyTorch is not installed here, so the measuring script cannot run (its "
                                        "output format: test_script_is_standalone_and_its_csv_reads_back)")
    path, csv = tmp_path / "measure.py", tmp_path / "measured.csv"
    path.write_text(plan_script(small_plan, "L40S"))
    p = subprocess.run([sys.executable, str(path), "-o", str(csv), "--warmup", "1", "--repeats", "3"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    raw = pd.read_csv(csv)
    import torch
    assert raw["source"].str.contains("cuda-events" if torch.cuda.is_available() else "cpu-perf_counter").all()
    t = read_traces(csv, "csv").table
    _same_shapes(t, small_plan[small_plan["op"] != "collective"])
    assert (t["latency_ms"] > 0).all()
