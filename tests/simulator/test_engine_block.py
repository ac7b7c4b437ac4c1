"""The ``engine:`` block: a release's documented defaults plus the scenario's engine arguments
resolve into the scheduler, memory and step-time effects (simulator.engine.engines)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from simkit import make

from profiling import load_catalog, resolve_model
from simulator import load_scenario, simulate
from simulator.engine.config import Deployment, OverheadConfig
from simulator.engine.engines import capture_sizes, resolve_engine, version_entry
from simulator.engine.stepcost import StepCost, step_table
from simulator.fidelity.silicon import (
    BACKEND_FUSIONS,
    BACKEND_KV_RESERVATION,
    BACKEND_POLICY,
)

ROOT = Path(__file__).resolve().parents[2]
STORED = Path(__file__).with_name("engine_block_chat_llama8b_summary.json")


def _dep(hardware: str = "H100-SXM", model: str = "Llama-3.1-8B", **engine) -> Deployment:
    engine.setdefault("name", "vllm")
    engine.setdefault("version", "0.19.0")
    return Deployment.model_validate({"model": model, "hardware": hardware, "engine": engine})


@pytest.mark.parametrize("hardware, tokens, seqs", [("H100-SXM", 8192, 1024), ("RTX-4090", 2048, 256),
                                                    ("A100-80GB", 2048, 256), ("L40S", 2048, 256)])
def test_vllm_019_budget_follows_gpu_memory(hardware, tokens, seqs):
    """vLLM 0.19 as a server: >= 70 GiB and not an A100 -> max_num_batched_tokens 8192 and
    max_num_seqs 1024; a 24 GB RTX 4090, a 48 GB L40S and (excluded by name) an A100-80GB ->
    2048 and 256. V1 always chunks, block 16, on-demand KV."""
    s = _dep(hardware).scheduler
    assert (s.max_tokens_per_step, s.max_batch_size) == (tokens, seqs)
    assert (s.policy, s.chunk_size, s.block_size, s.kv_reservation) == ("chunked", tokens, 16, "on_demand")


def test_vllm_defaults_change_with_the_release():
    """V0 (0.6) on a 4k-context model runs whole prompts with a budget of max(4096, 2048) and 256
    sequences; V1 0.9 on an H100 uses the offline LLM class's 16384 when asked; async scheduling
    is on from 0.14 and off in 0.13; the 0.10 capture list steps by 8 up to 2 x max_num_seqs."""
    v0 = _dep(model="Llama-2-7B", version="0.6.0").scheduler
    assert (v0.policy, v0.max_tokens_per_step, v0.max_batch_size) == ("continuous", 4096, 256)
    assert _dep(version="0.9.2", usage_context="llm_class").scheduler.max_tokens_per_step == 16384
    model, hw = resolve_model("Llama-3.1-8B"), load_catalog().get("H100-SXM")
    assert resolve_engine("vllm", "0.14.0", {}, model=model, hw=hw).async_scheduling is True
    assert resolve_engine("vllm", "0.13.0", {}, model=model, hw=hw).async_scheduling is False
    r10 = resolve_engine("vllm", "0.10.1", {"max_num_seqs": 100}, model=model, hw=hw)
    assert r10.cuda_graph_sizes == (1, 2, 4) + tuple(range(8, 201, 8))
    assert version_entry("vllm", "0.19.0")["until"] is None


def test_explicit_args_override_defaults():
    """The engine's own argument names (CLI spelling too) override the release defaults and
    reach the scheduler and the memory plan; a scheduler value equal to the engine's is fine."""
    d = Deployment.model_validate({
        "model": "Llama-3.1-8B", "hardware": "H100-SXM", "scheduler": {"max_batch_size": 64},
        "engine": {"name": "vllm", "version": "0.19.0", "--max-num-seqs": 64,
                   "args": {"max_num_batched_tokens": 4096, "block_size": 32, "gpu_memory_utilization": 0.8,
                            "max_model_len": 16384}}})
    s = d.scheduler
    assert (s.max_batch_size, s.max_tokens_per_step, s.block_size) == (64, 4096, 32)
    assert (d.gpu_memory_utilization, d.max_model_len) == (0.8, 16384)


def test_sglang_and_trtllm_defaults():
    """SGLang 0.5 on a 24 GB card chunks prompts at 2048 with mem_fraction_static (24 GiB - 2.9
    GiB) / 24 GiB and runs prefill and decode in separate steps, prefill first (mixed steps
    only with enable_mixed_chunk); TensorRT-LLM 1.x reserves KV for whole requests (GUARANTEED_NO_EVICT),
    fuses as BACKEND_FUSIONS says, batches 8192 tokens / 2048 sequences, captures graphs of
    1..31, 32, 64, 128 without padding."""
    sg = _dep("RTX-4090", name="sglang", version="0.5.2")
    assert (sg.scheduler.policy, sg.scheduler.max_tokens_per_step, sg.scheduler.block_size) == \
        ("prefill_first", 2048, 1)
    assert _dep("RTX-4090", name="sglang", version="0.5.2", enable_mixed_chunk=True).scheduler.policy == "chunked"
    gib = load_catalog().get("RTX-4090").mem_bytes / 2 ** 30
    assert sg.gpu_memory_utilization == pytest.approx(round((gib - 2.9) / gib, 3))
    tr = _dep(name="trtllm", version="1.1.0")
    assert tr.scheduler.kv_reservation == BACKEND_KV_RESERVATION["trtllm"] == "full"
    assert tr.scheduler.policy == BACKEND_POLICY["trtllm"]
    assert tr.fusions == BACKEND_FUSIONS["trtllm"]
    assert (tr.scheduler.max_tokens_per_step, tr.scheduler.max_batch_size, tr.scheduler.block_size) == (8192, 2048, 32)
    model, hw = resolve_model("Llama-3.1-8B"), load_catalog().get("H100-SXM")
    r = resolve_engine("trtllm", "1.1.0", {}, model=model, hw=hw)
    assert r.cuda_graph_sizes == tuple(range(1, 32)) + (32, 64, 128) and r.pad_decode is False


def test_sglangs_overlap_scheduler_is_async_scheduling_unless_disabled():
    """SGLang 0.4 and later overlap the next batch's scheduling with the running one (on by
    default): the engine block models it as async scheduling; disable_overlap_schedule turns it off."""
    model, hw = resolve_model("Qwen3-32B"), load_catalog().get("H100-SXM")
    on = resolve_engine("sglang", "0.5.2", {}, model=model, hw=hw, tp=2)
    off = resolve_engine("sglang", "0.5.2", {"disable_overlap_schedule": True}, model=model, hw=hw, tp=2)
    assert on.async_scheduling is True and on.args["disable_overlap_schedule"] is False
    assert off.async_scheduling is False and off.args["disable_overlap_schedule"] is True
    assert resolve_engine("sglang", "0.4.3", {}, model=model, hw=hw, tp=2).async_scheduling is True



def test_trtllm_overlap_scheduler_is_async_scheduling_from_1_0_unless_disabled():
    """TensorRT-LLM's PyTorch backend (the default from 1.0) launches step n+1 before it
    processes step n's outputs, on by default: async scheduling here, off with
    disable_overlap_scheduler; the 0.x TensorRT engine backend has no such scheduler."""
    model, hw = resolve_model("Llama-3.1-8B"), load_catalog().get("H100-SXM")
    on = resolve_engine("trtllm", "1.0.0rc3", {}, model=model, hw=hw)
    off = resolve_engine("trtllm", "1.2.0", {"disable_overlap_scheduler": True}, model=model, hw=hw)
    assert on.async_scheduling is True and on.args["disable_overlap_scheduler"] is False
    assert off.async_scheduling is False and off.args["disable_overlap_scheduler"] is True
    old = resolve_engine("trtllm", "0.18.2", {}, model=model, hw=hw)
    assert old.async_scheduling is False and "disable_overlap_scheduler" not in old.args

def _cli(tmp_path: Path, engine: dict, **dep) -> subprocess.CompletedProcess:
    doc = {"name": "t", "surrogate": "roofline",
           "deployments": [{"model": "Llama-3.1-8B", "hardware": "H100-SXM", "engine": engine, **dep}],
           "workload": {"num_requests": 5}}
    p = tmp_path / "s.yaml"
    p.write_text(json.dumps(doc))
    return subprocess.run([sys.executable, "-m", "hermes_sim.cli", "simulate", str(p), "--json"],
                          capture_output=True, text=True, check=False)


def test_cli_refuses_unknown_argument_and_conflicting_scheduler(tmp_path):
    """Through the real CLI: an argument vLLM does not have, and a scheduler value that
    contradicts the engine's, each exit 2 with one stderr line naming the field."""
    r = _cli(tmp_path, {"name": "vllm", "version": "0.19.0", "max_num_seqz": 8})
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "deployments.0.engine" in r.stderr and "max_num_seqz" in r.stderr
    r = _cli(tmp_path, {"name": "vllm", "version": "0.19.0"}, scheduler={"max_batch_size": 256})
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "scheduler.max_batch_size 256 conflicts with engine vllm 0.19.0" in r.stderr
    r = _cli(tmp_path, {"name": "vllm", "version": 0.10})
    assert r.returncode == 2 and "engine.version" in r.stderr and "quoted" in r.stderr


def test_cuda_graph_padding_pads_to_the_next_capture_size_and_never_speeds_up():
    """vLLM 0.19's capture list: a decode step of 3 runs as 4, 9 as 16, 257 as 272, 513 eager;
    a padded decode step costs what its kernels cost at the padded batch (attention at the real
    one) and never less than unpadded, for every batch up to the cap."""
    model, hw = resolve_model("Llama-3.1-8B"), load_catalog().get("H100-SXM")
    sizes = capture_sizes({"pattern": "v1_step16", "max": "seqs_x2_512"}, 1024, 8192)
    table = step_table("roofline", model, hw, dtype="bf16", kv_dtype=None, tp=1, pp=1)
    zero = OverheadConfig(step_s=0, per_seq_s=0, per_token_s=0)
    plain = StepCost(table, zero, 8192, 600)
    pad = StepCost(table, zero, 8192, 600, graph_sizes=sizes)
    assert [pad.padded(n) for n in (1, 3, 9, 255, 257, 512, 513)] == [1, 4, 16, 256, 272, 512, 513]
    oh = OverheadConfig()
    plain_oh, pad_oh = StepCost(table, oh, 8192, 600), StepCost(table, oh, 8192, 600, graph_sizes=sizes)
    for n in range(1, 600):
        p = pad.padded(n)
        kernels = pad(n, n, n * 700.0) - pad.decode(n, n * 700.0)
        assert kernels == pytest.approx(plain._tok[p] + plain._seq[p], rel=1e-12)
        assert pad_oh(n, n, n * 700.0) >= plain_oh(n, n, n * 700.0)
    assert pad(300, 0, 0, [(300, 300)]) == plain(300, 0, 0, [(300, 300)])   # mixed steps unpadded


def _run(engine: dict, overhead: dict | None = None) -> dict:
    sc = make({"scheduler": None, "engine": engine, **({"overhead": overhead} if overhead else {})})
    return simulate(sc).summary


def _strip(s: dict) -> str:
    return json.dumps({k: v for k, v in s.items() if k not in ("sim_wall_s", "deployments")}, sort_keys=True)


def test_async_scheduling_hides_host_time_and_admits_a_step_later():
    """Same scenario with async scheduling on and off: on hides the host work (mean E2E, TPOT
    and makespan never worse). With zero host overhead there is nothing to hide and only the
    admission lag is left: a request arriving during a step joins the step after the next,
    so mean TTFT grows by at most about two steps and never shrinks."""
    base = {"name": "vllm", "version": "0.19.0", "max_num_seqs": 64, "max_num_batched_tokens": 2048}
    on, off = _run({**base, "async_scheduling": True}), _run({**base, "async_scheduling": False})
    assert on["deployments"]["llm"]["engine"]["async_scheduling"] is True
    assert off["deployments"]["llm"]["engine"]["async_scheduling"] is False
    assert on["e2e_s"]["mean"] < off["e2e_s"]["mean"]
    assert on["tpot_s"]["mean"] < off["tpot_s"]["mean"] and on["makespan_s"] <= off["makespan_s"]
    zero = {"step_s": 0.0, "per_seq_s": 0.0, "per_token_s": 0.0}
    lag, sync = _run({**base, "async_scheduling": True}, zero), _run({**base, "async_scheduling": False}, zero)
    assert lag["completed"] == sync["completed"] == 300
    step = sync["itl_s"]["p50"]
    assert sync["ttft_s"]["mean"] < lag["ttft_s"]["mean"] < sync["ttft_s"]["mean"] + 2.5 * step



def test_async_scheduling_admits_a_simultaneous_first_wave_together():
    """Eight closed-loop clients arriving together at t = 0 on an idle engine: no step is
    planned yet, so with async scheduling as without all eight prompts (8 x 500 tokens, under
    the 8192-token budget) share the first step and their first tokens come at one time."""
    import numpy as np
    for asyn in (True, False):
        sc = make({"scheduler": None, "engine": {"name": "vllm", "version": "0.19.0", "async_scheduling": asyn,
                                                 "max_num_batched_tokens": 8192}},
                  workload={"arrival": "closed_loop", "concurrency": 8, "num_requests": 16,
                            "prompt_tokens": {"dist": "fixed", "mean": 500},
                            "output_tokens": {"dist": "fixed", "mean": 50}})
        req = simulate(sc).requests
        first = req.ttft_s.to_numpy()[req.arrival_s.to_numpy() == 0.0]
        assert len(first) == 8 and np.ptp(first) == pytest.approx(0.0, abs=1e-12), (asyn, first)

def test_async_step_charges_only_host_time_beyond_the_previous_kernels():
    """StepCost with async overlap prices kernels only; kernels plus ``cpu`` equal the sync price."""
    model, hw = resolve_model("Llama-3.1-8B"), load_catalog().get("H100-SXM")
    table = step_table("roofline", model, hw, dtype="bf16", kv_dtype=None, tp=1, pp=1)
    oh = OverheadConfig(step_s=2e-3, per_seq_s=3e-5, per_token_s=1e-6)
    sync, asyn = StepCost(table, oh, 4096, 128), StepCost(table, oh, 4096, 128, async_overlap=True)
    for args in [(32, 32, 32 * 900.0, ()), (700, 188 - 100, 88 * 300.0, [(612, 1000)])]:
        seqs = args[1] + len(args[3])
        assert asyn(*args) + asyn.cpu(args[0], seqs) == pytest.approx(sync(*args), rel=1e-12)
    assert asyn._cpud[40] == pytest.approx(asyn.cpu(40, 40))


def test_no_engine_block_leaves_the_summary_byte_identical():
    """examples/chat_llama8b.yaml (no engine block) gives the summary stored before the engine
    block existed, byte for byte (wall time aside), and no 'deployments' section. The stored
    file is regenerated only when the kernel model itself changes on purpose."""
    r = subprocess.run([sys.executable, "-m", "hermes_sim.cli", "simulate", str(ROOT / "examples" / "chat_llama8b.yaml"),
                        "--json"], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert "deployments" not in s
    s.pop("sim_wall_s")
    assert json.dumps(s, sort_keys=True, indent=1) + "\n" == STORED.read_text()


def test_resolved_engine_is_in_the_summary_of_the_example():
    """The example with an engine block reports what the engine resolved to (defaults and
    explicit arguments) under deployments.<name>.engine."""
    sc = load_scenario(ROOT / "examples" / "vllm_engine_llama8b.yaml")
    sc = sc.model_copy(update={"workload": sc.workload.model_copy(update={"num_requests": 30})})
    e = simulate(sc).summary["deployments"]["llm"]["engine"]
    assert e["args"]["max_num_seqs"] == 256 and e["args"]["max_num_batched_tokens"] == 8192
    assert e["explicit"] == ["gpu_memory_utilization", "max_num_seqs"] and e["async_scheduling"] is True
    assert e["cuda_graph_sizes"][-1] == 512 and e["all_reduce"] == "none"
