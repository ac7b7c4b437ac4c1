"""`hermes-sim export`: every target on the built-in examples, the checks it promises, its refusals."""
from __future__ import annotations

import json
import shlex
from collections import Counter
from pathlib import Path

import kubernetes_validate
import numpy as np
import pytest
import yaml

from hermes_sim.cli import main
from profiling.errors import HermesError
from profiling.readers.runs.common import known_engine_args
from search.export import dynamo, engine_cmd
from search.export.k8s import K8S_VERSION
from simulator.engine.workload import build_requests
from simulator.pipelines.build import prepare
from simulator.scenario import load_scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCENARIOS = ("vllm_engine_llama8b", "disaggregated_llama8b", "rag_chat", "chat_llama8b")
# (scenario, target) pairs a target cannot express: refused in one line
REFUSED = {("vllm_engine_llama8b", "sglang"), ("vllm_engine_llama8b", "trtllm"),
           ("disaggregated_llama8b", "trtllm")}
TARGETS = ("vllm", "sglang", "trtllm", "k8s", "llm-d", "dynamo")


def run(capsys, *args) -> tuple[int, str]:
    code = main(["export", *[str(a) for a in args]])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Every example exported for every target it can express (and for all)."""
    out = {}
    for name in SCENARIOS:
        for target in (*TARGETS, "all"):
            if (name, target) in REFUSED:
                continue
            d = tmp_path_factory.mktemp(f"{name}-{target}")
            assert main(["export", str(EXAMPLES / f"{name}.yaml"), "--target", target, "-o", str(d)]) == 0
            out[name, target] = d
    return out


def commands(script: Path) -> list[list[str]]:
    """The engine commands of a launch script (without the GPU pinning and the '&')."""
    out = []
    for line in script.read_text().splitlines():
        if not line or line.startswith("#") or line in ("set -e", "wait"):
            continue
        words = shlex.split(line)
        out.append([w for w in words if not w.startswith("CUDA_VISIBLE_DEVICES=") and w != "&"])
    return out


def value(words: list[str], flag: str) -> str:
    return words[words.index(flag) + 1]


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_file_is_listed_in_the_readme(exported, name):
    for target in (*TARGETS, "all"):
        if (name, target) in REFUSED:
            continue
        d = exported[name, target]
        readme = (d / "README.md").read_text()
        files = sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
        assert f"examples/{name}.yaml" in readme
        for f in files:
            assert f"`{f}`" in readme, (target, f)
        assert "bench/dataset.jsonl" in files and "bench/run.sh" in files


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.parametrize("engine", ("vllm", "sglang", "trtllm"))
def test_engine_commands_use_known_flags_and_the_scenarios_numbers(exported, name, engine):
    if (name, engine) in REFUSED:
        return
    sc = load_scenario(EXAMPLES / f"{name}.yaml")
    dep = sc.deployments[0]
    lines = commands(exported[name, engine] / engine / f"{dep.name}.sh")
    version = dep.engine.version if dep.engine is not None else engine_cmd.DEFAULT_VERSION[engine]
    rel = engine_cmd.release_args(engine, version)
    # the version's own list where the project keeps one
    known = rel.names if rel is not None else known_engine_args()[engine]
    negatable = rel.negatable if rel is not None else known
    seqs, budget = engine_cmd.LIMIT_ARGS[engine]
    tp_flag = {"vllm": "--tensor-parallel-size", "sglang": "--tp-size", "trtllm": "--tp_size"}[engine]
    s = dep.scheduler
    replicas = s.prefill_replicas + s.decode_replicas if s.policy == "disaggregated" else dep.replicas
    assert len(lines) == replicas                          # one engine per replica
    for words in lines:
        for w in words:
            if w.startswith("--"):
                n = w[2:].replace("-", "_")
                assert n in known or (n.startswith("no_") and n[3:] in negatable), (version, w)
        assert value(words, tp_flag) == str(dep.tp)
        assert value(words, engine_cmd.flag(engine, seqs)) == str(s.max_batch_size)
        if engine != "sglang":                             # SGLang's step budget is its chunk size
            assert value(words, engine_cmd.flag(engine, budget)) == str(s.max_tokens_per_step)
    if s.policy == "disaggregated":
        roles = [value(w, "--disaggregation-mode") if engine == "sglang" else
                 json.loads(value(w, "--kv-transfer-config"))["kv_connector"] for w in lines]
        assert roles == (["prefill", "decode", "decode"] if engine == "sglang" else ["NixlConnector"] * 3)


def test_trtllm_extra_yaml_holds_known_llm_api_options(exported):
    d = exported["chat_llama8b", "trtllm"]
    words = commands(d / "trtllm" / "llm.sh")[0]
    extra = yaml.safe_load((d / value(words, "--extra_llm_api_options")).read_text())
    assert set(extra) <= known_engine_args()["trtllm"]
    assert extra["scheduler_config"]["capacity_scheduler_policy"] in ("GUARANTEED_NO_EVICT", "MAX_UTILIZATION")
    assert 0 < extra["kv_cache_config"]["free_gpu_memory_fraction"] <= 1


def test_engine_block_args_are_the_resolved_ones(exported):
    words = commands(exported["vllm_engine_llama8b", "vllm"] / "vllm" / "llm.sh")[0]
    assert value(words, "--max-num-seqs") == "256"           # set in the scenario
    assert value(words, "--max-num-batched-tokens") == "8192"  # vLLM 0.19's default on an H100
    assert "--enable-prefix-caching" in words and "--enable-chunked-prefill" in words


@pytest.mark.parametrize("name", SCENARIOS)
def test_kubernetes_manifests_validate_strictly(exported, name):
    sc = load_scenario(EXAMPLES / f"{name}.yaml")
    docs = [x for f in sorted((exported[name, "k8s"] / "k8s").glob("*.yaml"))
            for x in yaml.safe_load_all(f.read_text())]
    kinds = Counter(d["kind"] for d in docs)
    assert kinds["Deployment"] == kinds["Service"] >= 1
    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    deps = [d for d in docs if d["kind"] == "Deployment"]
    llm = [d for d in deps if d["spec"]["template"]["spec"]["containers"][0]["name"] == "engine"]
    dep = sc.deployments[0]
    for d in llm:
        pod = d["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == str(dep.tp * dep.pp)
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert sum(d["spec"]["replicas"] for d in llm) == (
        dep.scheduler.prefill_replicas + dep.scheduler.decode_replicas
        if dep.scheduler.policy == "disaggregated" else dep.replicas)
    assert len(deps) - len(llm) == len(sc.services)        # RAG / CPU services as their own workloads
    for d in deps:
        assert d["spec"]["template"]["spec"]["containers"][0]["image"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_dynamo_graph_and_llmd_values(exported, name):
    docs = list(yaml.safe_load_all((exported[name, "dynamo"] / "dynamo" / "llm.yaml").read_text()))
    graph = docs[-1]
    dynamo.check(graph, name)
    subs = sorted(s.get("subComponentType", "") for s in graph["spec"]["services"].values()
                  if s["componentType"] == "worker")
    assert subs == (["decode", "prefill"] if name.startswith("disagg") else [""])
    values = yaml.safe_load((exported[name, "llm-d"] / "llm-d" / "llm-values.yaml").read_text())
    assert values["prefill"]["create"] == name.startswith("disagg")
    assert values["modelArtifacts"]["name"] == "meta-llama/Llama-3.1-8B"
    for w in values["decode"]["containers"][0]["args"]:
        if w.startswith("--"):
            n = w[2:].replace("-", "_")
            assert n in known_engine_args()["vllm"] or n[3:] in known_engine_args()["vllm"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_dataset_is_the_simulators_request_stream(exported, name):
    sc = load_scenario(EXAMPLES / f"{name}.yaml")
    plan = prepare(sc, build_requests(sc.workload, sc.seed))
    rows = [json.loads(x) for x in (exported[name, "vllm"] / "bench" / "dataset.jsonl").read_text().splitlines()]
    assert len(rows) == sc.workload.num_requests
    for r in rows:
        assert len(r["prompt"].split()) == r["prompt_tokens"]
    added = np.array([sum(s.context_tokens for s in plan.classes[k].stages[:[x.kind for x in
                      plan.classes[k].stages].index("llm")]) for k in plan.klass])
    assert sorted(r["prompt_tokens"] for r in rows) == sorted((plan.requests.prompt + added).tolist())
    assert sorted(r["output_tokens"] for r in rows) == sorted(plan.requests.output.tolist())
    run_sh = (exported[name, "vllm"] / "bench" / "run.sh").read_text()
    bench = shlex.split(next(x for x in run_sh.splitlines() if x.startswith("vllm bench serve")))
    assert value(bench, "--num-prompts") == str(sc.workload.num_requests)
    assert float(value(bench, "--request-rate")) == sc.workload.rate_rps
    assert value(bench, "--dataset-name") == "custom" and "--save-result" in bench
    assert "hermes-sim validate" in run_sh and "hermes-sim calibrate --runs" in run_sh


def test_shared_system_prompts_are_the_same_text(exported):
    rows = [json.loads(x) for x in (exported["rag_chat", "vllm"] / "bench" / "dataset.jsonl").read_text().splitlines()]
    heads = Counter(" ".join(r["prompt"].split()[:600]) for r in rows)
    assert len(heads) == 2 and sum(heads.values()) == len(rows)   # rag_chat: 2 system prompts of 600 tokens


def test_same_scenario_same_bytes(tmp_path):
    for d in ("a", "b"):
        assert main(["export", str(EXAMPLES / "rag_chat.yaml"), "--target", "all", "-o", str(tmp_path / d)]) == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def _scenario(tmp_path, **dep) -> Path:
    doc = {"name": "x", "deployments": [{"name": "llm", "model": "Llama-3.1-8B", "hardware": "H100-SXM", **dep}],
           "workload": {"num_requests": 20}}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.mark.parametrize("dep, target, says", [
    ({"scheduler": {"policy": "static"}}, "vllm", "static batching has no vllm flag"),
    ({"scheduler": {"policy": "mixed"}}, "sglang", "use --target trtllm"),
    ({"scheduler": {"policy": "prefill_first"}}, "vllm", "use --target sglang"),
    ({"hardware": "MI300X"}, "k8s", "NVIDIA GPUs only"),
    ({"engine": {"name": "vllm", "version": "0.6.3", "cuda_graph_sizes": [256]}}, "vllm",
     "vllm 0.6.3 has no argument '--cuda-graph-sizes' (not in the argument list of vllm 0.6.0"),
    ({"engine": {"name": "vllm", "version": "0.15.1", "cuda_graph_sizes": [256]}}, "vllm",
     "vllm 0.15.1 has no argument '--cuda-graph-sizes'"),         # gone after 0.12
    ({"engine": {"name": "vllm", "version": "0.5.4"}}, "vllm",
     "deployments.0 (llm): vllm 0.5.4 is older than the oldest release"),
    ({"scheduler": {"policy": "disaggregated"}}, "trtllm", "disaggregated prefill/decode on trtllm"),
    ({"engine": {"name": "sglang", "version": "0.5.4"}}, "llm-d", "llm-d's model service runs vLLM"),
    ({"engine": {"name": "vllm", "version": "0.19.0"}}, "sglang", "use --target vllm"),
    ({"model": "Qwen3-30B-A3B", "replicas": 2, "ep": 2}, "trtllm", "TensorRT-LLM spreads experts within its TP"),
])
def test_refusals_are_one_line_exit_2(tmp_path, capsys, dep, target, says):
    code, err = run(capsys, _scenario(tmp_path, **dep), "--target", target, "-o", tmp_path / "out")
    assert code == 2
    assert err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "out").exists()                 # nothing written before the checks pass


def test_bad_command_line_is_one_line_exit_2(tmp_path, capsys):
    sc = _scenario(tmp_path)
    code, err = run(capsys, sc, "--target", "k8s", "--service-image", "nope", "-o", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1 and "NAME=IMAGE" in err
    code, err = run(capsys, tmp_path / "missing.yaml", "--target", "k8s", "-o", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1
    code, err = run(capsys, _scenario(tmp_path, replicas=3, tp=4), "--target", "vllm", "--data-parallel",
                    "-o", tmp_path / "o")
    assert code == 2 and "do not fit one" in err


def test_all_skips_what_a_target_cannot_express(tmp_path, capsys):
    sc = _scenario(tmp_path, engine={"name": "sglang", "version": "0.5.4"})
    code, _ = run(capsys, sc, "--target", "all", "-o", tmp_path / "o")
    assert code == 0
    readme = (tmp_path / "o" / "README.md").read_text()
    assert "## Targets not written" in readme and "llm-d" in readme
    assert (tmp_path / "o" / "sglang" / "llm.sh").is_file() and (tmp_path / "o" / "dynamo" / "llm.yaml").is_file()


def test_a_flag_is_checked_against_the_target_releases_own_list(tmp_path, capsys):
    """--async-scheduling came with vLLM 0.10: refused for 0.6.3 in one line, written for 0.15.1."""
    words = ["serve", "--max-num-seqs", "8", "--async-scheduling"]
    with pytest.raises(HermesError) as e:
        engine_cmd.check_flags("vllm", words, "x.yaml: deployments.0", version="0.6.3")
    assert str(e.value) == ("x.yaml: deployments.0: vllm 0.6.3 has no argument '--async-scheduling' (not in the "
                            "argument list of vllm 0.6.0, profiling/readers/runs/engine_args_releases.yaml); "
                            "the export cannot express it")
    engine_cmd.check_flags("vllm", words, "x", version="0.15.1")
    sc = _scenario(tmp_path, engine={"name": "vllm", "version": "0.15.1", "async_scheduling": True})
    code, err = run(capsys, sc, "--target", "vllm", "-o", tmp_path / "o")
    assert code == 0, err
    assert "--async-scheduling" in (tmp_path / "o" / "vllm" / "llm.sh").read_text()


def test_release_lists_pick_the_newest_release_at_or_below():
    assert engine_cmd.release_args("vllm", "0.10.0").release == "0.9.2"
    assert engine_cmd.release_args("vllm", "0.6.6").release == "0.6.6.post1"
    assert engine_cmd.release_args("vllm", "0.99.0").release == "0.34.0"
    assert engine_cmd.release_args("sglang", "0.5.4").release == "0.5.4"
    assert engine_cmd.release_args("trtllm", "0.20.0").release == "0.18.2"
    assert engine_cmd.release_args("trtllm", "1.0.0").release == "1.0.0+4c05a74"   # applied from 1.0.0 on
    early, late = engine_cmd.release_args("vllm", "0.6.0"), engine_cmd.release_args("vllm", "0.34.0")
    assert "use_v2_block_manager" in early.names and "use_v2_block_manager" not in late.names
    assert "async_scheduling" in late.negatable and "enable_chunked_prefill" not in early.negatable


def test_every_release_name_is_in_the_union_the_readers_accept():
    doc = engine_cmd._releases_doc()
    for engine, d in doc.items():
        assert set(d["args"]) <= known_engine_args()[engine], engine
        for r in d["releases"]:
            assert engine_cmd.release_args(engine, r).release == r


def test_trtllm_commands_are_checked_against_the_releases_own_list(tmp_path, capsys):
    """TensorRT-LLM 0.18.2 (its versioned docs' option list) has no --extra_llm_api_options: a flag
    outside its list is refused in one line naming the flag and the release; its export writes the
    KV memory fraction as its own flag and leaves settings at the release's defaults unsaid (one that
    differs is refused, named); 1.0.0 and later get the list of serve.py at commit 4c05a74."""
    words = ["trtllm-serve", "m", "--host", "0.0.0.0", "--port", "8000", "--tp_size", "2", "--pp_size", "1",
             "--max_batch_size", "64", "--max_num_tokens", "8192", "--kv_cache_free_gpu_memory_fraction", "0.9"]
    engine_cmd.check_flags("trtllm", words, "x", version="0.18.2")
    for flag in ("--extra_llm_api_options", "--ep_size"):
        with pytest.raises(HermesError) as e:
            engine_cmd.check_flags("trtllm", words + [flag, "1"], "x.yaml: deployments.0", version="0.18.2")
        assert str(e.value) == (f"x.yaml: deployments.0: trtllm 0.18.2 has no argument '{flag}' (not in the "
                                "argument list of trtllm 0.18.2, profiling/readers/runs/engine_args_releases.yaml); "
                                "the export cannot express it")
        engine_cmd.check_flags("trtllm", words + [flag, "1"], "x", version="1.0.0")
    old = {"scheduler": {"policy": "continuous", "block_size": 64, "kv_reservation": "full"}}
    code, err = run(capsys, _scenario(tmp_path, **old), "--target", "trtllm", "--engine-version", "0.18.2",
                    "-o", tmp_path / "old")
    assert code == 0, err
    rel = engine_cmd.release_args("trtllm", "0.18.2")
    (cmd,) = commands(tmp_path / "old" / "trtllm" / "llm.sh")
    assert all(w[2:] in rel.names for w in cmd if w.startswith("--")), cmd
    assert 0 < float(value(cmd, "--kv_cache_free_gpu_memory_fraction")) <= 1 and value(cmd, "--max_batch_size")
    assert not list((tmp_path / "old" / "trtllm").glob("*.yaml"))
    code, err = run(capsys, _scenario(tmp_path, scheduler={"policy": "continuous", "kv_reservation": "full"}),
                    "--target", "trtllm", "--engine-version", "0.18.2", "-o", tmp_path / "no")
    assert code == 2 and err.count("\n") == 1
    assert "no --extra_llm_api_options" in err and "kv_cache_config.tokens_per_block 16 (its default is 64)" in err, err
    code, err = run(capsys, _scenario(tmp_path, **old), "--target", "trtllm", "--engine-version", "0.17.0",
                    "-o", tmp_path / "older")
    assert code == 2 and "older than the oldest release" in err and "(0.18.2," in err, err
    code, err = run(capsys, EXAMPLES / "chat_llama8b.yaml", "--target", "trtllm", "--engine-version", "1.0.0",
                    "-o", tmp_path / "o")
    assert code == 0, err
    rel = engine_cmd.release_args("trtllm", "1.0.0")
    for words in commands(tmp_path / "o" / "trtllm" / "llm.sh"):
        assert all(w[2:] in rel.names for w in words if w.startswith("--")), words


@pytest.mark.parametrize("name", ("chat_llama8b", "disaggregated_llama8b"))
@pytest.mark.parametrize("engine, version", [("vllm", "0.8.5"), ("vllm", "0.10.2"), ("vllm", "0.15.1"),
                                             ("vllm", "0.34.0"), ("sglang", "0.4.10"), ("sglang", "0.5.23")])
def test_examples_export_for_each_release(tmp_path, capsys, name, engine, version):
    """Each command passes its own release's list (check_flags), checked again here word by word."""
    code, err = run(capsys, EXAMPLES / f"{name}.yaml", "--target", engine, "--engine-version", version,
                    "-o", tmp_path / "o")
    assert code == 0, err
    rel = engine_cmd.release_args(engine, version)
    for script in (tmp_path / "o" / engine).glob("*.sh"):
        for words in commands(script):
            for w in words:
                n = w[2:].replace("-", "_")
                assert not w.startswith("--") or n in rel.names or n[3:] in rel.negatable, (version, w)


def test_expert_parallel_deployment_is_one_data_parallel_command_per_group(tmp_path, capsys):
    """ep 4 over TP 2 x 4 replicas: two vLLM commands of two data-parallel ranks each (ranks that
    share experts cannot be separate servers), with expert parallelism on, four GPUs apiece; SGLang
    the same with its own flags; ep = tp stays one server per replica with EP inside TP."""
    sc = _scenario(tmp_path, model="Qwen3-30B-A3B", tp=2, replicas=4, ep=4)
    assert run(capsys, sc, "--target", "vllm", "-o", tmp_path / "v")[0] == 0
    cmds = commands(tmp_path / "v" / "vllm" / "llm.sh")
    assert len(cmds) == 2
    for words in cmds:
        assert "--enable-expert-parallel" in words and value(words, "--data-parallel-size") == "2"
        assert value(words, "--tensor-parallel-size") == "2"
    script = (tmp_path / "v" / "vllm" / "llm.sh").read_text()
    assert "CUDA_VISIBLE_DEVICES=0,1,2,3" in script and "CUDA_VISIBLE_DEVICES=4,5,6,7" in script
    assert run(capsys, sc, "--target", "sglang", "-o", tmp_path / "s")[0] == 0
    words = commands(tmp_path / "s" / "sglang" / "llm.sh")[0]
    assert value(words, "--ep-size") == "4" and value(words, "--dp-size") == "2" and "--enable-dp-attention" in words
    inside = _scenario(tmp_path, model="Qwen3-30B-A3B", tp=2, replicas=2, ep=2)
    assert run(capsys, inside, "--target", "vllm", "-o", tmp_path / "i")[0] == 0
    cmds = commands(tmp_path / "i" / "vllm" / "llm.sh")
    assert len(cmds) == 2 and all("--enable-expert-parallel" in w and "--data-parallel-size" not in w for w in cmds)


def test_speculative_block_exports_as_vllms_speculative_config(tmp_path, capsys):
    """A draft-model speculative block becomes vLLM's --speculative-config (the draft's Hugging
    Face name, k, the batch cut-off); an EAGLE head (a checkpoint the block does not name) and a
    non-vLLM target are refused in one line rather than exported without speculation."""
    spec = {"method": "draft", "draft_model": "Llama-3.2-1B", "num_speculative_tokens": 4, "acceptance": 0.7,
            "disable_above_batch": 32}
    sc = _scenario(tmp_path, speculative=spec)
    assert run(capsys, sc, "--target", "vllm", "-o", tmp_path / "v")[0] == 0
    words = commands(tmp_path / "v" / "vllm" / "llm.sh")[0]
    cfg = json.loads(value(words, "--speculative-config"))
    assert cfg["method"] == "draft_model" and cfg["num_speculative_tokens"] == 4 and cfg["disable_by_batch_size"] == 32
    assert "/" in cfg["model"] and "1B" in cfg["model"]
    for dep, target, says in (({**spec, "method": "eagle", "draft_model": None}, "vllm", "EAGLE head"),
                              (spec, "sglang", "exported for vllm only")):
        code, err = run(capsys, _scenario(tmp_path, speculative=dep), "--target", target, "-o", tmp_path / "x")
        assert code == 2 and err.count("\n") == 1 and says in err, err


def test_lora_block_exports_vllms_slot_arguments(tmp_path, capsys):
    """A lora: block without an engine block still exports its GPU slots and rank to vLLM
    (--enable-lora --max-loras --max-lora-rank); SGLang, which counts slots differently, is
    refused in one line rather than written without adapters."""
    sc = _scenario(tmp_path, lora={"adapters": 8, "max_loras": 4, "max_lora_rank": 32, "rank": 32})
    assert run(capsys, sc, "--target", "vllm", "-o", tmp_path / "v")[0] == 0
    words = commands(tmp_path / "v" / "vllm" / "llm.sh")[0]
    assert "--enable-lora" in words and value(words, "--max-loras") == "4" and value(words, "--max-lora-rank") == "32"
    code, err = run(capsys, sc, "--target", "sglang", "-o", tmp_path / "s")
    assert code == 2 and err.count("\n") == 1 and "exported for vllm only" in err, err


def test_autoscaling_policy_is_stated_in_the_export_readme(tmp_path, capsys):
    """An autoscaled deployment is written at its starting fleet, and the export's README says
    so with the simulated policy's bounds (not silently dropped)."""
    sc = _scenario(tmp_path, replicas=4, autoscaling={"min_replicas": 1, "max_replicas": 4, "signal": "queue",
                                                      "scale_up_at": 4, "scale_down_at": 1})
    assert run(capsys, sc, "--target", "vllm", "-o", tmp_path / "v")[0] == 0
    readme = (tmp_path / "v" / "README.md").read_text()
    assert "autoscaling is not written as manifests: 4 replicas are the starting fleet" in readme
    assert "scales 1-4 replicas on 'queue'" in readme


def test_kv_offload_exports_as_each_engines_own_arguments(tmp_path, capsys):
    """KV offload to host memory in the engine block comes out as the engine's own argument:
    vLLM --kv-offloading-size (accepted by 0.15.1's list), SGLang --enable-hierarchical-cache,
    TensorRT-LLM kv_cache_config.host_cache_size in its LLM API options; vLLM 0.10.2, whose list
    has no such flag, is refused in one line."""
    sc = _scenario(tmp_path, engine={"name": "vllm", "version": "0.15.1", "kv_offloading_size": 64})
    assert run(capsys, sc, "--target", "vllm", "-o", tmp_path / "v")[0] == 0
    assert value(commands(tmp_path / "v" / "vllm" / "llm.sh")[0], "--kv-offloading-size") == "64.0"
    old = _scenario(tmp_path, engine={"name": "vllm", "version": "0.10.2", "kv_offloading_size": 64})
    code, err = run(capsys, old, "--target", "vllm", "-o", tmp_path / "old")
    assert code == 2 and err.count("\n") == 1 and "'--kv-offloading-size'" in err, err
    sg = _scenario(tmp_path, engine={"name": "sglang", "version": "0.5.2", "enable_hierarchical_cache": True})
    assert run(capsys, sg, "--target", "sglang", "-o", tmp_path / "s")[0] == 0
    assert "--enable-hierarchical-cache" in commands(tmp_path / "s" / "sglang" / "llm.sh")[0]
    trt = _scenario(tmp_path, engine={"name": "trtllm", "version": "1.0.0",
                                      "kv_cache_config": {"host_cache_size": 2 ** 35}})
    assert run(capsys, trt, "--target", "trtllm", "-o", tmp_path / "t")[0] == 0
    extra = yaml.safe_load((tmp_path / "t" / "trtllm" / "llm-extra-llm-api.yaml").read_text())
    assert extra["kv_cache_config"]["host_cache_size"] == 2 ** 35
