"""Real serving runs replayed through the simulator (simulator.fidelity.runs) and the
`validate` command on a run: conservation and alignment of requests, the error figures, the
saturation note, the written JSON + PNG, and one-line errors for runs the engine block cannot
express. Uses LLMServingSim's real vLLM 0.19.0 runs (subset to their first 60 requests)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hermes_sim.cli import main
from profiling.readers.runs import ServingRun, read_run
from simulator.fidelity.runs import replay_run, run_errors, scenario_for_run

N = 60


@pytest.fixture(scope="module")
def runs_dir(traces_dir) -> Path:
    d = traces_dir / "serving_runs" / "llmservingsim"
    if not d.is_dir():
        pytest.skip(f"no LLMServingSim runs under {d}")
    return d


def first(run: ServingRun, n: int = N) -> ServingRun:
    """The run's first ``n`` requests as a run of their own."""
    df = run.requests.iloc[:n].reset_index(drop=True)
    return ServingRun(run.info.model_copy(update={"num_requests": n, "num_failed": int((~df.ok).sum())}), df)


@pytest.fixture(scope="module")
def llama_run(runs_dir) -> ServingRun:
    return first(read_run(runs_dir / "RTXPRO6000" / "Llama-3.1-8B"))


@pytest.fixture(scope="module")
def replay(llama_run):
    return replay_run(llama_run)


def test_scenario_for_run_carries_the_engine_and_deployment(runs_dir):
    """The deployment of a DP=2 x EP=2 run: catalog model and GPU names, two replicas sharing
    their experts (ep 2), the engine block with vLLM 0.19.0 and the run's recorded max_num_seqs /
    max_num_batched_tokens, which set the scheduler (no deployment fields left among the
    engine's arguments)."""
    run = read_run(runs_dir / "RTXPRO6000" / "Qwen3-30B-A3B-Instruct-2507")
    sc = scenario_for_run(run)
    d = sc.deployments[0]
    assert (d.model, d.hardware, d.tp, d.replicas, d.ep, d.dtype) == ("Qwen3-30B-A3B", "RTX-PRO-6000", 1, 2, 2, "bf16")
    assert (d.engine.name, d.engine.version) == ("vllm", "0.19.0")
    assert d.engine.args["max_num_seqs"] == 128 and d.engine.args["max_num_batched_tokens"] == 2048
    assert "data_parallel_size" not in d.engine.args and "tensor_parallel_size" not in d.engine.args
    assert (d.scheduler.max_batch_size, d.scheduler.max_tokens_per_step) == (128, 2048)


def test_every_request_is_compared_or_listed_and_aligned(llama_run, replay):
    """Conservation: each of the 60 requests is compared or listed unsupported (none twice);
    both frames are indexed by the run's request ids in its order, and the simulated request
    carries the measured one's arrival and token counts."""
    ids = llama_run.requests["request_id"].tolist()
    assert replay.measured.index.tolist() == ids and replay.simulated.index.tolist() == ids
    listed = {u.split(": ", 1)[0] for u in replay.unsupported}
    compared = set(np.asarray(ids)[replay.compared])
    assert compared | listed == set(ids) and not compared & listed
    assert len(compared) == N                 # a real vLLM run of lengths the GPU can serve
    m, s = replay.measured, replay.simulated
    assert np.allclose(s["arrival_s"], m["arrival_s"])
    assert (s["prompt_tokens"] == m["prompt_tokens"]).all() and (s["output_tokens"] == m["output_tokens"]).all()
    assert s["finish_s"].notna().all()


def test_errors_are_finite_and_match_a_hand_computation(replay):
    """run_errors: finite MAPEs, quantile and throughput errors on the whole replay; on the
    first two requests alone, the MAPE of each metric and the E2E ratio equal the figures
    computed by hand from the two frames."""
    e = run_errors(replay)
    for k in ("ttft", "tpot", "e2e"):
        assert np.isfinite(e[f"{k}_mape"]) and e[f"{k}_mape"] >= 0
        for q in ("p50", "p90", "p99"):
            assert np.isfinite(e[f"{k}_{q}"]["err_pct"])
    assert np.isfinite(e["output_tokens_per_s"]["err_pct"]) and e["e2e_ratio"] > 0
    assert e["compared"] == N and e["requests"] == N
    two = replace(replay, measured=replay.measured.iloc[:2], simulated=replay.simulated.iloc[:2])
    e2 = run_errors(two)
    for k in ("ttft", "tpot", "e2e"):
        sim = replay.simulated[f"{k}_s"].to_numpy()[:2]
        real = replay.measured[f"{k}_s"].to_numpy()[:2]
        hand = (abs(sim[0] - real[0]) / real[0] + abs(sim[1] - real[1]) / real[1]) / 2 * 100
        assert e2[f"{k}_mape"] == pytest.approx(hand, rel=1e-12)
    s, r = replay.simulated["e2e_s"].to_numpy()[:2], replay.measured["e2e_s"].to_numpy()[:2]
    assert e2["e2e_ratio"] == pytest.approx((s[0] + s[1]) / (r[0] + r[1]), rel=1e-12)
    assert e2["compared"] == 2


def test_saturation_note_fires_only_on_an_overloaded_replay(runs_dir, replay):
    """The first 60 requests did not saturate the real RTX PRO 6000 and do not saturate its
    simulation: no note. Replayed on an L4 (a sixth of the bandwidth), the simulated queue
    grows while the real one did not: the note says so, with both sides in one line."""
    assert run_errors(replay)["saturation"]["note"] is None
    slow = replay_run(first(read_run(runs_dir / "RTXPRO6000" / "Llama-3.1-8B", gpu="L4")))
    sat = run_errors(slow)["saturation"]
    assert sat["simulated"]["saturated"] and not sat["real"]["saturated"]
    assert sat["note"].startswith("the simulated server saturates but the real one did not")
    assert "\n" not in sat["note"] and "real not saturated" in sat["note"] and "simulated saturated" in sat["note"]


def _subset_folder(src: Path, dst: Path, n: int = N) -> Path:
    """A copy of an LLMServingSim run folder holding its first ``n`` requests."""
    dst.mkdir(parents=True)
    meta = json.loads((src / "meta.json").read_text())
    meta["num_requests"] = n
    (dst / "meta.json").write_text(json.dumps(meta))
    lines = (src / "requests.jsonl").read_text().splitlines()[:n]
    (dst / "requests.jsonl").write_text("\n".join(lines) + "\n")
    (dst / "config.json").write_text((src / "config.json").read_text())
    return dst


def test_cli_validate_on_a_run_folder_writes_json_and_png(runs_dir, tmp_path, capsys):
    """`validate RUN_FOLDER -o DIR --json` on a real run: exit 0, one JSON object on stdout
    with the errors and every request, the same JSON in DIR/validate.json and a PNG beside it."""
    run = _subset_folder(runs_dir / "RTXPRO6000" / "Llama-3.1-8B", tmp_path / "run")
    out = tmp_path / "out"
    code = main(["validate", str(run), "-o", str(out), "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["run"]["engine"] == "vllm" and doc["run"]["gpu"] == "RTX-PRO-6000"
    assert len(doc["rows"]) == N and doc["errors"]["compared"] == N and doc["unsupported"] == []
    assert np.isfinite(doc["e2e_mape"]) and doc["deployment"]["engine"]["version"] == "0.19.0"
    assert json.loads((out / "validate.json").read_text())["e2e_mape"] == doc["e2e_mape"]
    png = (out / "validate.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


@pytest.fixture
def bare_csv(llama_run, tmp_path) -> Path:
    """The run's requests as a plain per-request CSV, which records no engine, model or GPU."""
    p = tmp_path / "m.csv"
    llama_run.requests[["arrival_s", "prompt_tokens", "output_tokens", "ttft_s", "e2e_s"]].to_csv(p, index=False)
    return p


@pytest.mark.parametrize("args, words", [
    (("--engine", "vllm", "--engine-version", "0.19.0", "--model", "Llama-3.1-8B"), ("m.csv", "'gpu'", "--gpu")),
    (("--model", "Llama-3.1-8B", "--gpu", "RTX-PRO-6000"), ("m.csv", "'engine'", "unknown", "--engine")),
    (("--engine", "vllm", "--engine-version", "0.19.0", "--model", "Llama-3.1-8B", "--gpu", "Voodoo-5"),
     ("m.csv", "'gpu'", "Voodoo-5", "catalog")),
    (("--engine", "tgi",), ("--engine", "tgi")),
], ids=["no-gpu", "no-engine", "unknown-gpu", "unknown-engine"])
def test_runs_the_engine_block_cannot_express_are_one_line(bare_csv, capsys, args, words):
    """A run lacking the GPU or the engine, naming a GPU the catalog lacks or an engine
    HERMES does not know: exit 2 with one line naming the file and field (or the option)."""
    code = main(["validate", str(bare_csv), "--format", "request-csv", *args])
    _, err = capsys.readouterr()
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("hermes-sim: error: "), err
    assert all(w in lines[0] for w in words), lines[0]


def test_cli_validate_bare_csv_with_flags_replays(bare_csv, capsys):
    """The same CSV with --engine, --engine-version, --model and --gpu supplying what it
    lacks replays: exit 0 and the errors of every request."""
    code = main(["validate", str(bare_csv), "--engine", "vllm", "--engine-version", "0.19.0",
                 "--model", "Llama-3.1-8B", "--gpu", "RTX-PRO-6000", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["errors"]["compared"] == N and doc["run"]["format"] == "request-csv"


def test_overhead_file_picks_the_runs_engine_and_gpu_group(runs_dir, tmp_path):
    """load_run_overhead: a bare overhead block applies as is; per stack/GPU groups, the one
    naming the run's engine and GPU wins over the engine-wide one, and scenario_for_run puts
    it on the deployment; a file with no group for the run is one InputError naming it."""
    from profiling.errors import InputError
    from simulator.fidelity.runs import load_run_overhead
    run = read_run(runs_dir / "RTX4090" / "Llama-3.1-8B")
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"step_s": 0.002, "per_seq_s": 1e-5}))
    assert load_run_overhead(bare, run.info).step_s == 0.002
    grouped = tmp_path / "grouped.json"
    grouped.write_text(json.dumps({"overhead": {"vllm": {"step_s": 0.001}, "vllm/RTX-4090": {"step_s": 0.005},
                                                "vllm/RTX-PRO-6000": {"step_s": 0.009}}}))
    oh = load_run_overhead(grouped, run.info)
    assert oh.step_s == 0.005
    assert scenario_for_run(run, overhead=oh).deployments[0].overhead.step_s == 0.005
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"overhead": {"sglang/H100-SXM": {"step_s": 0.001}}}))
    with pytest.raises(InputError) as e:
        load_run_overhead(other, run.info)
    assert "other.json" in str(e.value) and "RTX-4090" in str(e.value) and "\n" not in str(e.value)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"overhead": {"vllm": {"step_s": -1}}}))
    with pytest.raises(InputError, match="vllm.step_s"):
        load_run_overhead(bad, run.info)


def test_engine_profile_overhead_is_read_and_its_engine_checked(runs_dir, tmp_path):
    """An engine profile ({"engine", "overhead", ...}) gives its overhead block to a run of
    its engine and is refused, naming the file and field, for a run of another engine."""
    from profiling.errors import InputError
    from simulator.fidelity.runs import load_run_overhead
    run = read_run(runs_dir / "RTX4090" / "Llama-3.1-8B")
    prof = tmp_path / "vllm.json"
    prof.write_text(json.dumps({"format": 1, "engine": "vllm", "overhead": {"step_s": 0.0042, "request_s": 0.01}}))
    assert load_run_overhead(prof, run.info).request_s == 0.01
    prof.write_text(json.dumps({"format": 1, "engine": "sglang", "overhead": {"step_s": 0.0042}}))
    with pytest.raises(InputError, match="vllm.json.*'engine'.*sglang"):
        load_run_overhead(prof, run.info)


def test_a_vllm_runs_recorded_kv_blocks_size_its_replayed_cache(runs_dir):
    """The RTX 4090 run's meta.json records vLLM's num_gpu_blocks (2588): the replay holds
    exactly that many blocks (not the 2774 the memory plan would give), and says so."""
    run = first(read_run(runs_dir / "RTX4090" / "Llama-3.1-8B"), 20)
    sc = scenario_for_run(run)
    assert sc.deployments[0].kv_blocks == 2588
    assert sc.deployments[0].engine.args["num_gpu_blocks_override"] == 2588
    rep = replay_run(run)
    assert set(rep.summary["kv_blocks"].values()) == {2588}
    assert any("the engine recorded 2588, the simulation holds 2588" in n for n in rep.notes)


def test_num_gpu_blocks_override_sets_the_kv_blocks_and_nothing_else():
    """vLLM's num_gpu_blocks_override fixes the KV blocks of every replica; the memory plan
    still refuses a model that does not fit."""
    from simulator import Scenario, simulate
    doc = {"name": "t", "surrogate": "roofline",
           "deployments": [{"name": "llm", "model": "Llama-3.1-8B", "hardware": "H100-SXM", "replicas": 2,
                            "engine": {"name": "vllm", "version": "0.11.0", "num_gpu_blocks_override": 123}}],
           "workload": {"rate_rps": 5, "num_requests": 20}}
    res = simulate(Scenario.model_validate(doc))
    assert set(res.kv_blocks.values()) == {123}
    doc["deployments"][0]["model"] = "Llama-3.1-405B"
    with pytest.raises(Exception, match="does not fit"):
        simulate(Scenario.model_validate(doc))


@pytest.mark.parametrize("model, args, name, dtype", [
    ("RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8", {}, "Llama-3.1-8B", "fp8"),
    ("neuralmagic/Meta-Llama-3.1-8B-Instruct-FP8-dynamic", {}, "Llama-3.1-8B", "fp8"),
    ("nvidia/Qwen3-32B-NVFP4", {}, "Qwen3-32B", "fp4"),
    ("Qwen/Qwen3-32B", {"quantization": "fp8"}, "Qwen3-32B", "fp8"),
    ("Qwen/Qwen3-32B", {"dtype": "bfloat16"}, "Qwen3-32B", "bf16"),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", {}, "Mixtral-8x7B", None),
])
def test_a_quantized_or_instruct_checkpoint_replays_its_base_model_in_its_weight_format(model, args, name, dtype):
    """A run serving a checkpoint repository: the catalog model it derives from, with the
    weights in the format its name or vLLM's --quantization gives (else the engine's dtype)."""
    from profiling.readers.runs import ClientMode, RunInfo
    from simulator.fidelity.runs import scenario_for_info
    info = RunInfo(engine="vllm", engine_version="0.15.1", model=model, gpu="H100-SXM", engine_args=args,
                   client=ClientMode(kind="trace"))
    d = scenario_for_info(info, 10, surrogate="roofline").deployments[0]
    assert (d.model, d.dtype) == (name, dtype)


def test_an_unknown_checkpoint_is_still_refused_in_one_line():
    """Stripping variant words never invents a model: an unknown base is a one-line error."""
    from profiling.errors import InputError
    from profiling.readers.runs import ClientMode, RunInfo
    from simulator.fidelity.runs import scenario_for_info
    info = RunInfo(engine="vllm", engine_version="0.15.1", model="foo/Bar-7B-Instruct-FP8", gpu="H100-SXM",
                   client=ClientMode(kind="trace"))
    with pytest.raises(InputError, match="foo/Bar-7B-Instruct-FP8"):
        scenario_for_info(info, 10)
