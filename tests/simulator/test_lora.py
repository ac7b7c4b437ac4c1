"""LoRA adapters (simulator.engine.lora): slots, tiers and load times, vLLM's max_loras skip,
the adapters' GEMM cost and memory, and the scenario's one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import simulator.engine.lora as lora_mod
from hermes_sim.cli import main
from profiling.models import resolve_model
from simulator import simulate
from simulator.engine.deployment import resolve
from simulator.engine.lora import LoraCost, adapter_bytes, draw_adapters, slot_bytes
from simulator.engine.stepcost import load_predictor
from simulator.engine.workload import Requests
from simkit import make

MODEL = "Llama-3.1-8B"
SLOTS = {"adapters": 16, "max_loras": 2, "max_cpu_loras": 4}


def _lora(**kw) -> dict:
    return {"lora": {**SLOTS, **kw}}


def _load_s(lora: dict, rank: int = 16, cpu: bool = False) -> float:
    """Seconds to bring one adapter of ``rank`` (all seven modules) into a slot on one H100."""
    m = resolve_model(MODEL)
    full = adapter_bytes(m, ("q", "k", "v", "o", "gate", "up", "down"), rank, "bf16")
    h2d = full / 64e9                                   # H100-SXM pcie_bw_gb_s, TP 1
    return h2d if cpu else h2d + lora.get("disk_latency_s", 0.0) + full / (lora.get("disk_bw_gb_s", 2.0) * 1e9)


def _spaced(n: int, gap: float = 20.0, prompt: int = 256, output: int = 8) -> Requests:
    """``n`` requests far enough apart that each runs alone."""
    return Requests(np.arange(n) * gap, np.full(n, prompt, np.int64), np.full(n, output, np.int64))


@pytest.mark.parametrize("loading", ["blocking", "background"])
def test_adapters_never_exceed_their_slots(loading, monkeypatch):
    """Under heavy contention (16 adapters, 2 slots, 30 req/s) no step ever runs more distinct
    adapters than max_loras, and the GPU and CPU tiers never hold more than their sizes: the
    debug run asserts it every step (LoraState.check), and the per-step record agrees."""
    seen: list[int] = []
    orig = lora_mod.LoraState.step_s

    def record(self, decodes, chunks):
        out = orig(self, decodes, chunks)
        seen.append(len(self.refs))
        return out
    monkeypatch.setattr(lora_mod.LoraState, "step_s", record)
    r = simulate(make(_lora(loading=loading), workload={"rate_rps": 30, "num_requests": 250}))
    s = r.summary["lora"]["llm"]
    assert r.summary["completed"] == 250
    assert seen and max(seen) <= 2 and s["peak_active_adapters"] == 2
    assert s["loads"] > 2                      # slots turned over


@pytest.mark.parametrize("loading", ["blocking", "background"])
def test_cold_adapter_waits_its_load_and_a_warm_one_does_not(loading, monkeypatch):
    """Requests alone on the replica, adapters A, B, A, none with one slot and a CPU cache of two:
    the first A and B wait a disk read + host copy (their TTFT grows by exactly that over the
    base model's plus the adapter's GEMMs), the second A only the host copy (it is in the CPU
    cache), the request without adapter nothing; a warm A (two slots) waits nothing."""
    lora = {"adapters": 2, "max_loras": 1, "max_cpu_loras": 2, "loading": loading, "disk_latency_s": 0.05}
    monkeypatch.setattr(lora_mod, "draw_adapters", lambda cfg, n, seed, name: [0, 1, 0, -1])
    base = simulate(make(), requests=_spaced(4)).requests
    r = simulate(make({"lora": lora}), requests=_spaced(4)).requests
    extra = (r.ttft_s - base.ttft_s).to_numpy()
    disk, cpu = _load_s(lora), _load_s(lora, cpu=True)
    gemm = extra[2] - cpu                       # the adapter's own GEMMs in the prefill step
    assert 0 < gemm < 2e-3
    assert extra[0] == pytest.approx(disk + gemm, rel=1e-6)
    assert extra[1] == pytest.approx(disk + gemm, rel=1e-6)
    assert extra[3] == pytest.approx(0.0, abs=1e-12)
    assert r.adapter.tolist() == ["lora0", "lora1", "lora0", ""]
    assert r.adapter_wait_s.to_numpy()[:3] == pytest.approx([disk, disk, cpu], rel=1e-6)
    # two slots: A stays on the GPU, its second request waits nothing
    monkeypatch.setattr(lora_mod, "draw_adapters", lambda cfg, n, seed, name: [0, 1, 0, -1])
    warm = simulate(make({"lora": {**lora, "max_loras": 2}}), requests=_spaced(4))
    assert warm.requests.adapter_wait_s.to_numpy()[2] == 0.0
    s = warm.summary["lora"]["llm"]
    assert (s["loads_from_disk"], s["loads_from_cpu"], s["hit_rate"]) == (2, 0, 1 / 3)


def test_requests_without_adapter_are_not_blocked_by_adapter_contention():
    """One slot, eight adapters read at 0.02 GB/s (seconds each), loaded in the background: the
    adapter requests queue for seconds, the half without an adapter are admitted as they come
    (vLLM skips only requests whose adapter cannot join the batch)."""
    sc = make(_lora(adapters=8, max_loras=1, max_cpu_loras=1, loading="background", disk_bw_gb_s=0.02,
                    popularity={"dist": "uniform", "base_share": 0.5}),
              workload={"rate_rps": 5, "num_requests": 120})
    r = simulate(sc)
    names = r.requests.adapter.to_numpy()
    queue = (r.requests.start_s - r.requests.arrival_s).to_numpy()
    assert r.summary["completed"] == 120
    base, withad = queue[names == ""], queue[names != ""]
    assert len(base) > 40 and len(withad) > 40
    assert base.max() < 0.1
    assert np.median(withad) > 5.0


def test_waits_grow_with_more_adapters_than_slots():
    """Same load and two slots: 2, 8 then 32 adapters (uniform) -> more loads, lower hit rate,
    longer adapter waits and a longer p99 TTFT."""
    out = []
    for k in (2, 8, 32):
        r = simulate(make(_lora(adapters=k, max_cpu_loras=None, popularity={"dist": "uniform"}),
                          workload={"rate_rps": 20, "num_requests": 200}, debug=False))
        s = r.summary["lora"]["llm"]
        out.append((s["loads"], s["hit_rate"], s["adapter_wait_s"]["mean"], r.summary["ttft_s"]["p99"]))
    loads, hits, waits, p99 = zip(*out)
    assert loads[0] == 2 and loads[0] < loads[1] < loads[2]
    assert hits[0] > hits[1] > hits[2]
    assert waits[0] < waits[1] < waits[2]
    assert p99[0] < p99[1] < p99[2]


def test_tokens_and_requests_are_conserved():
    """Every request finishes once; the decode steps emit exactly each request's output tokens
    after its first; the prefill computes every prompt token once (no preemption here)."""
    r = simulate(make(_lora(), workload={"rate_rps": 20, "num_requests": 200}))
    df, s = r.requests, r.summary
    assert s["completed"] == 200 and s["preemptions"] == 0
    assert (df.finish_s >= df.first_token_s).all() and (df.first_token_s >= df.start_s).all()
    assert r.steps["llm/0"][:, 2].sum() == (df.output_tokens - 1).sum()
    assert s["prefill_tokens_computed"] == df.prompt_tokens.sum()
    assert s["lora"]["llm"]["adapter_requests"] == 200


def test_slots_come_off_the_kv_cache_and_memory_never_overflows():
    """The slots reserve max_loras adapters of max_lora_rank on every projection (vLLM's up-front
    allocation): the KV cache loses exactly those bytes' worth of blocks, the plan never exceeds
    usable memory, and the debug run's KV use never exceeds its blocks."""
    sc = make(_lora(max_loras=8, max_lora_rank=64, max_cpu_loras=8))
    dep = sc.deployments[0]
    model, hw = resolve(dep)
    slots = slot_bytes(dep.lora, model, None, 1, 1)
    assert slots == pytest.approx(8 * adapter_bytes(model, ("q", "k", "v", "o", "gate", "up", "down"), 64, "bf16"))
    r0 = simulate(make(workload={"num_requests": 50}))
    r1 = simulate(sc.model_copy(update={"workload": sc.workload.model_copy(update={"num_requests": 50})}))
    b0, b1 = r0.kv_blocks["llm/0"], r1.kv_blocks["llm/0"]
    per_block = model.num_layers * 2 * model.kv_dim * 2 * dep.scheduler.block_size
    assert b0 - b1 == pytest.approx(slots / per_block, abs=1.0)
    from simulator.engine.deployment import memory_plan
    plan = memory_plan(dep, model, hw, 1)
    assert plan.weights + plan.activations + plan.reserve + plan.adapters + plan.num_blocks * per_block <= plan.usable
    assert r1.steps["llm/0"][:, 4].max() <= b1


def test_lora_gemm_cost_grows_with_rank_tokens_and_adapters():
    """The shrink/expand GEMMs priced by the predictor: more tokens, a higher rank or more
    distinct adapters (their weights read side by side) never cost less, and do cost more."""
    m, hw = resolve_model(MODEL), resolve(make().deployments[0])[1]
    pred = load_predictor("roofline")

    def cost(rank, **kw):
        cfg = make(_lora(max_lora_rank=rank, max_loras=8, max_cpu_loras=8)).deployments[0].lora
        return LoraCost(cfg, m, hw, pred, dtype=None, tp=1, pp=1, max_tokens=2048, kernel_scale=1.0)
    c16, c64 = cost(16), cost(64)
    assert 0 < c16(1, 1) < c16(2048, 1)
    assert c16(64, 1) < c16(64, 8)
    assert c16(2048, 1) < c64(2048, 1)
    assert all(c16(t, k) <= c16(t + 1, k) for t in (1, 100, 1000) for k in (1, 3, 8))


def test_same_seed_same_run_other_seed_other_adapters():
    """Same seed: identical requests, steps and LoRA summary; the adapter draw follows the seed
    and the popularity (zipf: the first adapter most often; base_share: that share without)."""
    sc = make(_lora(popularity={"dist": "zipf", "exponent": 1.2, "base_share": 0.25}),
              workload={"num_requests": 120}, debug=False)
    a, b = simulate(sc), simulate(sc)
    assert a.requests.equals(b.requests)
    assert np.array_equal(a.steps["llm/0"], b.steps["llm/0"])
    assert a.summary["lora"] == b.summary["lora"]
    cfg = sc.deployments[0].lora
    x, y = draw_adapters(cfg, 4000, 3, "llm"), draw_adapters(cfg, 4000, 4, "llm")
    assert x != y
    x = np.asarray(x)
    assert abs((x == -1).mean() - 0.25) < 0.03
    counts = np.bincount(x[x >= 0], minlength=16)
    assert counts[0] == counts.max() and counts[0] > 2 * counts[3]


def test_vllm_engine_arguments_set_the_slots():
    """enable_lora / max_loras / max_lora_rank / max_cpu_loras of a vLLM engine block set the
    lora block's slots (vLLM's defaults where unset) and show in the engine summary."""
    sc = make({"scheduler": None, "engine": {"name": "vllm", "version": "0.15.1", "enable_lora": True,
                                              "max_loras": 4, "max_cpu_loras": 8},
               "lora": {"adapters": 8}}, workload={"num_requests": 20}, debug=False)
    lo = sc.deployments[0].lora
    assert (lo.max_loras, lo.max_lora_rank, lo.cpu_slots) == (4, 16, 8)
    args = simulate(sc).summary["deployments"]["llm"]["engine"]["args"]
    assert (args["enable_lora"], args["max_loras"], args["max_cpu_loras"]) == (True, 4, 8)


BAD = [
    ({"lora": {"adapters": 4, "max_loras": 4, "max_cpu_loras": 2}}, "max_cpu_loras 2 must be >= max_loras 4"),
    ({"lora": {"adapters": [{"id": "a", "rank": 64}]}}, "rank 64 exceeds max_lora_rank 16"),
    ({"lora": {"adapters": 2, "target_modules": ["qkv"]}}, "lora.target_modules"),
    ({"lora": {"adapters": [{"id": "a"}, {"id": "a"}]}}, "adapter id 'a' appears twice"),
    ({"lora": {"adapters": 0}}, "lora.adapters"),
    ({"lora": {"adapters": 3, "popularity": {"dist": "weights", "weights": [1, 2]}}}, "2 weights for 3 adapters"),
    ({"lora": {"adapters": 3, "loading": "lazy"}}, "lora.loading"),
    ({"lora": {"adapters": 3, "disk_bw_gb_s": 0}}, "lora.disk_bw_gb_s"),
    ({"lora": {"adapters": 3}, "scheduler": {"policy": "disaggregated"}}, "not modelled for a disaggregated"),
    ({"lora": {"adapters": 3}, "engine": {"name": "vllm", "version": "0.15.1"}}, "enable_lora: true"),
    ({"engine": {"name": "vllm", "version": "0.15.1", "enable_lora": True}}, "lora: block naming its adapters"),
    ({"engine": {"name": "vllm", "version": "0.15.1", "max_loras": 2}}, "max_loras needs enable_lora"),
    ({"lora": {"adapters": 3, "max_loras": 2}, "engine": {"name": "vllm", "version": "0.15.1", "enable_lora": True}},
     "lora.max_loras 2 conflicts with engine vllm 0.15.1 (1)"),
    ({"model": "Qwen3-30B-A3B", "lora": {"adapters": 2}}, "mixture-of-experts model Qwen3-30B-A3B"),
]


@pytest.mark.parametrize("dep, expected", BAD, ids=[e for _, e in BAD])
def test_bad_lora_values_are_one_line_errors(tmp_path: Path, capsys, dep, expected):
    """Each bad lora value through `hermes-sim simulate`: exit 2, one stderr line naming the file
    and what is wrong."""
    doc = {"name": "bad", "surrogate": "roofline",
           "deployments": [{"name": "llm", "model": MODEL, "hardware": "H100-SXM", **dep}],
           "workload": {"num_requests": 5, "rate_rps": 5, "prompt_tokens": {"mean": 100},
                        "output_tokens": {"mean": 20}}}
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(doc))
    rc = main(["simulate", str(p), "--no-plots"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("hermes-sim: error: ") and "Traceback" not in err, err
    assert str(p) in err and expected in err, err


def test_cli_reports_lora_summary(tmp_path: Path, capsys):
    """A good lora scenario through the CLI runs and its JSON summary carries the lora section."""
    doc = {"name": "ok", "surrogate": "roofline",
           "deployments": [{"name": "llm", "model": MODEL, "hardware": "H100-SXM", "lora": SLOTS}],
           "workload": {"num_requests": 30, "rate_rps": 5, "prompt_tokens": {"mean": 100},
                        "output_tokens": {"mean": 20}}}
    p = tmp_path / "ok.yaml"
    p.write_text(yaml.safe_dump(doc))
    rc = main(["simulate", str(p), "--json", "--no-plots", "--out", str(tmp_path / "out")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    s = json.loads(out.out)["lora"]["llm"]
    assert s["adapter_requests"] == 30 and s["max_loras"] == 2


def test_lora_example_runs():
    """examples/lora/lora_llama8b.yaml runs as written (40 requests here) and reports its adapters
    (examples/ tests only the top-level files)."""
    from simulator import parse_scenario
    path = Path(__file__).resolve().parents[2] / "examples" / "lora" / "lora_llama8b.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["workload"]["num_requests"] = 40
    r = simulate(parse_scenario(doc, path))
    s = r.summary["lora"]["llm"]
    assert r.summary["completed"] == 40 and s["max_loras"] == 4 and s["max_cpu_loras"] == 16
    assert s["peak_active_adapters"] <= 4


def test_lora_example_writes_identical_files_in_two_processes(tmp_path: Path):
    """examples/lora (60 requests) through `hermes-sim simulate -o` in two interpreters with
    different string-hash seeds: summary.json (wall clock aside) and requests.parquet, with the
    adapter columns, are the same bytes."""
    import os
    import subprocess
    import sys
    src = Path(__file__).resolve().parents[2] / "examples" / "lora" / "lora_llama8b.yaml"
    doc = yaml.safe_load(src.read_text())
    doc["workload"]["num_requests"] = 60
    doc["surrogate"] = "roofline"               # what is checked is the run, not the kernel model
    sc = tmp_path / "lora.yaml"
    sc.write_text(yaml.safe_dump(doc))
    procs = [subprocess.Popen([sys.executable, "-m", "hermes_sim.cli", "simulate", str(sc), "--no-plots", "-o",
                               str(tmp_path / f"run{i}")], env={**os.environ, "PYTHONHASHSEED": str(i + 1)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    sums = [json.loads((tmp_path / f"run{i}" / "summary.json").read_text()) for i in range(2)]
    for s in sums:
        s["sim_wall_s"] = None
    assert sums[0] == sums[1] and sums[0]["lora"]["llm"]["adapter_requests"] > 0
    a, b = ((tmp_path / f"run{i}" / "requests.parquet").read_bytes() for i in range(2))
    assert a == b
