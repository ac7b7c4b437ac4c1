"""`profiling.plan` and `hermes-sim profile plan`: which few kernels to measure on a new GPU."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from profiling.hardware import load_catalog
from profiling.ingest import read_traces
from profiling.models import resolve_model
from profiling.plan import (GPPrior, by_kind, covariance, deployment_candidates, embed, greedy_plan, plan_table,
                            variant_of)
from profiling.schema import COLUMNS


def _run(*args):
    return subprocess.run([sys.executable, "-m", "hermes_sim.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def l40s_gemm(traces_dir) -> pd.DataFrame:
    """2000 real bf16 GEMM shapes of L40S (TensorRT-LLM's table), a plan's candidate pool."""
    t = read_traces(traces_dir / "aiconfigurator/data/l40s/gemm/trtllm/1.3.0rc20/gemm_perf.parquet",
                    "aiconfigurator").table
    return t[t["dtype"] == "bf16"].sample(2000, random_state=0).reset_index(drop=True)


def _mean_variance(pool: pd.DataFrame, chosen: np.ndarray, prior: GPPrior) -> float:
    """Mean posterior variance of the correction over ``pool`` once ``chosen`` are measured."""
    z, v = embed("gemm", pool), variant_of(pool)
    k = covariance(z, v, z, v, prior)
    kc = k[np.ix_(chosen, chosen)] + prior.noise * np.eye(len(chosen))
    red = (k[:, chosen] @ np.linalg.solve(kc, k[chosen, :])).diagonal()
    return float(np.mean(np.diag(k) - red))


def test_plan_narrows_more_than_random_rows(l40s_gemm):
    """On real GEMM shapes the greedy plan leaves a lower mean interval (posterior variance)
    than 30 random rows of the same pool, for every one of 5 random draws; it is
    deterministic and names distinct rows."""
    prior = GPPrior()
    order = greedy_plan({"gemm": l40s_gemm}, 30, {"gemm": prior})
    assert order == greedy_plan({"gemm": l40s_gemm}, 30, {"gemm": prior})
    chosen = by_kind(order)["gemm"]
    assert len(chosen) == len(set(chosen)) == 30
    planned = _mean_variance(l40s_gemm, chosen, prior)
    for seed in range(5):
        rand = np.random.default_rng(seed).choice(len(l40s_gemm), 30, replace=False)
        assert planned < _mean_variance(l40s_gemm, rand, prior)


def _target_variance(pool: pd.DataFrame, targets: pd.DataFrame, chosen: np.ndarray, prior: GPPrior) -> float:
    """Mean posterior variance of the correction over ``targets`` once ``chosen`` of ``pool`` are measured."""
    zp, vp, zt, vt = embed("gemm", pool), variant_of(pool), embed("gemm", targets), variant_of(targets)
    kc = covariance(zp[chosen], vp[chosen], zp[chosen], vp[chosen], prior) + prior.noise * np.eye(len(chosen))
    ktc = covariance(zt, vt, zp[chosen], vp[chosen], prior)
    prior_t = np.diag(covariance(zt, vt, zt, vt, prior))
    return float(np.mean(prior_t - (ktc @ np.linalg.solve(kc, ktc.T)).diagonal()))


def test_targets_steer_the_plan_to_the_deployments_shapes(l40s_gemm):
    """With the GEMM shapes Llama-3.1-8B's step tables query as ``targets`` (small m among
    them), 30 rows planned from L40S's table leave a lower mean variance on those shapes than
    the plan over the pool alone; no targets plans exactly as before."""
    prior = GPPrior()
    targets = deployment_candidates([resolve_model("Llama-3.1-8B")], [1])["gemm"]
    plain = by_kind(greedy_plan({"gemm": l40s_gemm}, 30, {"gemm": prior}))["gemm"]
    aimed = by_kind(greedy_plan({"gemm": l40s_gemm}, 30, {"gemm": prior}, targets={"gemm": targets}))["gemm"]
    assert _target_variance(l40s_gemm, targets, aimed, prior) < _target_variance(l40s_gemm, targets, plain, prior)
    assert greedy_plan({"gemm": l40s_gemm}, 30, {"gemm": prior}, targets={}) == \
        greedy_plan({"gemm": l40s_gemm}, 30, {"gemm": prior})


def test_plan_spreads_over_kinds_and_writes_canonical_rows():
    """Candidates of Llama-3.1-8B at TP 2 hold all four planned kinds; a 40-kernel plan takes
    rows of each and becomes a canonical table without latencies, ranked in choice order,
    with a positive roofline GPU-time estimate."""
    pools = deployment_candidates([resolve_model("Llama-3.1-8B")], [2])
    assert set(pools) == {"gemm", "attn_prefill", "attn_decode", "collective"}
    order = greedy_plan(pools, 40)
    assert {k for k, _ in order} == set(pools)
    t = plan_table(pools, order, load_catalog().get("L40S"))
    assert tuple(t.columns[:len(COLUMNS)]) == COLUMNS
    assert len(t) == 40 and t["latency_ms"].isna().all() and (t["hardware"] == "L40S").all()
    assert (t["est_gpu_ms"] > 0).all() and t["plan_rank"].tolist() == list(range(40))


def test_budget_below_one_is_refused():
    """A budget of 0 kernels is an error, not an empty plan."""
    with pytest.raises(Exception, match="budget"):
        greedy_plan({"gemm": pd.DataFrame({"m": [1], "n": [1], "k": [1]})}, 0)


def test_profile_plan_cli(tmp_path):
    """`profile plan` writes a CSV and a Parquet plan of exactly the budget, one JSON line
    on stdout, within seconds."""
    for name in ("plan.csv", "plan.parquet"):
        out = tmp_path / name
        p = _run("profile", "plan", "--gpu", "H100-SXM", "--budget", "25", "-o", out, "--json")
        assert p.returncode == 0, p.stderr
        doc = json.loads(p.stdout)
        t = pd.read_csv(out) if name.endswith(".csv") else pd.read_parquet(out)
        assert doc["kernels"] == len(t) == 25 and sum(doc["by_kind"].values()) == 25
        assert doc["seconds"] < 60


def test_profile_plan_with_scenario(tmp_path):
    """A scenario's deployments are what the plan covers."""
    from pathlib import Path
    scen = Path(__file__).resolve().parents[2] / "examples" / "chat_llama8b.yaml"
    p = _run("profile", "plan", "--gpu", "L40S", "--budget", "10", "--scenario", scen, "-o", tmp_path / "p.csv",
             "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["deployments"] == ["Llama-3.1-8B TP1 bf16"]


@pytest.mark.parametrize("args, word", [
    (("--gpu", "NoSuchGPU", "--budget", "10"), "NoSuchGPU"),
    (("--gpu", "L40S", "--budget", "0"), "budget"),
    (("--gpu", "L40S", "--budget", "10", "--scenario", "/nonexistent/s.yaml"), "scenario"),
])
def test_profile_plan_bad_input(tmp_path, args, word):
    """Unknown GPU, budget below 1, unreadable scenario: one line on stderr, exit 2."""
    p = _run("profile", "plan", *args, "-o", tmp_path / "p.csv")
    assert p.returncode == 2, p.stderr
    assert word in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p.csv").exists()


def test_bench_runs_exactly_a_plan(tmp_path):
    """`profile bench --plan` on the CPU times exactly the plan's runnable kernels, in the
    plan's shapes, and leaves out the all-reduce a single device cannot run."""
    pools = {"gemm": pd.DataFrame({"m": [16, 64], "n": [512, 256], "k": [256, 256], "dtype": "bf16"}),
             "attn_decode": pd.DataFrame({"batch": [4], "kv_len": [256], "heads": [8], "kv_heads": [2],
                                          "head_dim": [64], "dtype": "bf16"}),
             "collective": pd.DataFrame({"msg_bytes": [65536], "world": [2], "collective": "all_reduce",
                                         "dtype": "bf16"})}
    order = greedy_plan(pools, 4)
    plan = tmp_path / "plan.csv"
    plan_table(pools, order, load_catalog().get("L40S")).to_csv(plan, index=False)
    out = tmp_path / "measured.parquet"
    p = _run("profile", "bench", "--plan", plan, "--repeats", "2", "--warmup", "0", "-o", out, "--json")
    assert p.returncode == 0, p.stderr
    t = pd.read_parquet(out)
    assert sorted(t["op"]) == ["attn_decode", "gemm", "gemm"] and (t["latency_ms"] > 0).all()
    assert sorted(map(tuple, t.loc[t["op"] == "gemm", ["m", "n", "k"]].to_numpy().tolist())) == \
        [(16.0, 512.0, 256.0), (64.0, 256.0, 256.0)]
    bad = _run("profile", "bench", "--plan", tmp_path / "none.csv", "-o", out)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
