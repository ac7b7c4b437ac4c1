"""Prefix identity (the ``prefix`` column) and engine facts from inference-perf experiment
folders: prompt texts -> chained segments, a shared_prefix spec -> slot cycling, exp-config.yaml
and vllm.log -> version, engine arguments and KV facts. Every fixture is written here."""
from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pandas as pd
import pytest

from profiling.errors import InputError
from profiling.readers.runs import ServingRun, read_run
from profiling.readers.runs.prefix import payload_text, prompt_segments, spec_segments


def _segments(value: str) -> list[tuple[str, int]]:
    return [(i, int(t)) for i, t in (s.split(":") for s in value.split())]


def _entry(start: float, tokens: int, request) -> dict:
    info = {"request_metrics": {"text": {"input_tokens": tokens}},
            "response_metrics": {"output_tokens": 3, "server_usage": None,
                                 "output_token_times": [start + 0.1, start + 0.2, start + 0.3]},
            "input_tokens": tokens}
    return {"start_time": start, "end_time": start + 0.3, "request": request, "response": "ok",
            "info": info, "error": None}


def _write(folder: Path, entries: list, files: dict[str, str] | None = None) -> Path:
    """The per-request file in ``folder``, with other files (name -> text) beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "per_request_lifecycle_metrics.json"
    p.write_text(json.dumps(entries))
    for name, text in (files or {}).items():
        (folder / name).write_text(text)
    return p


def _words(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_lowercase + " ", k=n))


def test_payload_text_completion_chat_and_token_ids():
    """Completions give their prompt, chats their messages as 'role: content' lines (string or
    text parts), token-ID prompts their IDs; anything else is None."""
    assert payload_text(json.dumps({"model": "m", "prompt": "hello"})) == "hello"
    assert payload_text({"prompt": ["a", "b"]}) == "a\nb"
    assert payload_text({"prompt": [1, 2, 3]}) == "1 2 3" == payload_text('{"prompt": [1, 2, 3]}')
    chat = {"messages": [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": [{"type": "text", "text": "hi"},
                                                      {"type": "image_url", "image_url": {"url": "x"}}]}]}
    assert payload_text(json.dumps(chat)) == "system: be brief\nuser: hi"
    for bad in (None, "not json", "[1, 2]", {"input": "x"}, {"messages": []}, {"prompt": [None]}):
        assert payload_text(bad) is None


def test_identical_and_shared_system_prompts(tmp_path):
    """Through the reader: identical prompts get identical values whose tokens sum to the
    prompt length; prompts sharing a 400-char system prompt share their first segment (ID and
    tokens) and differ after it; completion and chat payloads both count."""
    rng = random.Random(1)
    system, questions = _words(rng, 400), [_words(rng, 200) for _ in range(3)]
    entries = []
    for i in range(6):  # question i % 3: requests i and i + 3 send the same completion prompt
        text = system + questions[i % 3]
        entries.append(_entry(10.0 + i, 150, json.dumps({"prompt": text})))
    chat = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": "x" * 100}]}
    entries.append(_entry(20.0, 130, json.dumps(chat)))
    run = read_run(_write(tmp_path, entries))
    values = list(run.requests["prefix"])
    assert values[0] == values[3] and values[1] == values[4] and values[0] != values[1]
    for v, n in zip(values, run.requests["prompt_tokens"]):
        assert sum(t for _, t in _segments(v)) == n
    first = [_segments(v)[0] for v in values[:6]]
    assert len(set(first)) == 1 and first[0][1] < 150  # the shared system prompt, then each question
    assert len({_segments(v)[1][0] for v in values[:3]}) == 3
    assert _segments(values[6])[0][0] != first[0][0]  # the chat prompt starts 'system: ', not the text
    assert any(n.startswith("prefix: from the prompt text of 7 of 7") for n in run.info.notes)


def test_prompt_segments_without_text_or_length():
    """A request lacking its text or its token count gets '' (unknown); the others are unaffected."""
    out = prompt_segments(["abc" * 50, None, "abc" * 50, ""], [40, 40, float("nan"), 10])
    assert out[1] == out[2] == out[3] == "" and _segments(out[0])[0][1] == 40
    assert prompt_segments([None], [10]) == [""]


def test_spec_cycles_prompt_slots(tmp_path):
    """No text + config.yaml shared_prefix: request i (in start order, whatever the file's
    order) uses slot i % (G*P), so requests i and i + G*P match; a group's slots share the
    system prompt segment, capped to leave the question a token."""
    g, p = 2, 3
    cfg = ("data:\n  type: shared_prefix\n  shared_prefix:\n    num_groups: 2\n    num_prompts_per_group: 3\n"
           "    system_prompt_len: 100\n    question_len: 50\nserver:\n  type: vllm\n  model_name: m\n")
    entries = [_entry(float(i), 150, None) for i in range(14)]
    entries[13] = _entry(13.0, 80, None)
    run = read_run(_write(tmp_path, list(reversed(entries)), {"config.yaml": cfg}))
    r = run.requests.sort_values("arrival_s").reset_index(drop=True)
    v = list(r["prefix"])
    assert all(v[i] == v[i + g * p] for i in range(6))
    assert len(set(v[:6])) == 6
    assert _segments(v[0])[0] == _segments(v[2])[0] == _segments(v[4])[0]  # slots 0, 2, 4: group 0
    assert _segments(v[0])[0][0] != _segments(v[1])[0][0]
    assert [t for _, t in _segments(v[0])] == [100, 50]
    assert sum(t for _, t in _segments(v[13])) == 80
    note = next(n for n in run.info.notes if n.startswith("prefix:"))
    assert "config.yaml" in note and "2 groups x 3 prompts" in note
    assert spec_segments(1, [1], 1, 1, 100)[0].endswith(":1")  # a 1-token prompt is all question


def test_spec_slots_restart_with_each_load_stage(tmp_path):
    """inference-perf builds its data generator afresh for every load stage: with two stages
    (the second starting after a drain gap), the second stage's first request is slot 0 again,
    so it repeats the first stage's first prompt, not the slot the run-wide count reached."""
    cfg = ("data:\n  type: shared_prefix\n  shared_prefix:\n    num_groups: 1\n    num_prompts_per_group: 4\n"
           "    system_prompt_len: 10\n    question_len: 40\nload:\n  type: constant\n  stages:\n"
           "  - {rate: 1, duration: 5}\n  - {rate: 1, duration: 5}\nserver:\n  type: vllm\n  model_name: m\n")
    starts = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 20.0, 21.0, 22.0]      # a 15 s gap between the stages
    run = read_run(_write(tmp_path, [_entry(t, 50, None) for t in starts], {"config.yaml": cfg}))
    v = list(run.requests.sort_values("arrival_s")["prefix"])
    assert v[4] == v[0] and v[5] == v[1]        # stage 1 cycles its 4 slots
    assert v[6] == v[0] and v[7] == v[1]        # stage 2 starts at slot 0 again
    assert v[6] != v[2]                         # not the run-wide slot 6 % 4 = 2
    assert "load stage (2)" in next(n for n in run.info.notes if n.startswith("prefix:"))


def test_spec_from_profile_yaml_one_folder_up(tmp_path):
    """The harness's profile.yaml (one line of JSON, long field names) one folder up gives the
    shape, the load and the server when no config.yaml sits beside the file."""
    profile = {"api": {"type": "completion"}, "load": {"stages": [{"rate": 4, "duration": 10}], "type": "constant"},
               "data": {"type": "shared_prefix", "shared_prefix": {
                   "num_unique_system_prompts": 3, "num_users_per_system_prompt": 2, "system_prompt_len": 20,
                   "question_len": 10, "output_len": 5}},
               "server": {"type": "vllm", "model_name": "org/model"}}
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "profile.yaml").write_text(json.dumps(profile))
    run = read_run(_write(tmp_path / "exp" / "results", [_entry(float(i), 30, None) for i in range(8)]))
    v = list(run.requests["prefix"])
    assert v[0] == v[6] and v[1] == v[7] and len(set(v[:6])) == 6
    assert (run.info.model, run.info.client.rate, run.info.engine) == ("org/model", 4.0, "vllm")
    assert any("profile.yaml's shared_prefix (3 groups x 2 prompts" in n for n in run.info.notes)


def test_spec_multi_turn_extends_the_slot():
    """With multi-turn chat a slot's next request repeats its previous segments and adds one."""
    v = spec_segments(4, [30, 30, 50, 50], 1, 2, 20, multi_turn=True)
    assert v[2].startswith(v[0] + " ") and _segments(v[2])[-1][1] == 20
    assert _segments(v[0]) == [(_segments(v[0])[0][0], 20), (_segments(v[0])[1][0], 10)]


def test_no_prefix_source_is_noted(tmp_path):
    """No text and no shared_prefix spec: the column stays '' and a note says so."""
    run = read_run(_write(tmp_path, [_entry(1.0, 10, None)]))
    assert list(run.requests["prefix"]) == [""]
    assert any("prefix: not recorded" in n for n in run.info.notes)


EXP_CONFIG = ("model: org/Exp-Model\ntensor_parallelism: 1\nmax_model_len: 4096\nmax_num_batched_tokens: 2048\n"
              "max_num_seqs: 128\napp: inference-perf\nblock_size: 32\n")
VLLM_LOG = """\
INFO 02-17 15:54:40 [api_server.py:1839] vLLM API server version 0.15.1
INFO 02-17 15:54:40 [utils.py:326] non-default args: {'model_tag': 'org/Exp-Model', 'host': '0.0.0.0', \
'port': 8000, 'model': '/models/exp', 'max_num_seqs': 256, 'tensor_parallel_size': 2, \
'enable_prefix_caching': True, 'compilation_config': {'cudagraph_mode': 'FULL'}, \
'kv_transfer_config': KVTransferConfig(kv_connector='OffloadingConnector')}
INFO 02-17 15:55:10 [gpu_worker.py:298] Available KV cache memory: 38.97 GiB
INFO 02-17 15:55:10 [kv_cache_utils.py:1087] GPU KV cache size: 119,408 tokens
INFO 02-17 15:55:10 [factory.py:50] Creating offloading spec with {'cpu_bytes_to_use': 42949672960}
INFO 02-17 15:55:30 [launcher.py:44] Application startup complete.
INFO 02-17 15:55:31 [api_server.py:1839] vLLM API server version 9.9.9
"""


def _experiment(tmp_path: Path, log: str | None = VLLM_LOG, exp: str | None = EXP_CONFIG,
                config: str | None = None) -> Path:
    """<tmp>/exp/{exp-config.yaml, vllm.log} and the run in <tmp>/exp/results/ (config.yaml beside it)."""
    d = tmp_path / "exp"
    d.mkdir(parents=True)
    if exp is not None:
        (d / "exp-config.yaml").write_text(exp)
    if log is not None:
        (d / "vllm.log").write_text(log)
    return _write(d / "results", [_entry(1.0, 10, None), _entry(2.0, 12, None)],
                  {"config.yaml": config} if config else None)


def test_vllm_log_version_args_and_kv_facts(tmp_path):
    """vllm.log gives the first logged version, its non-default vLLM arguments (model, host and
    port dropped; a non-literal entry skipped and named) over exp-config.yaml's (the harness's
    'app' ignored), TP from tensor_parallel_size, the KV cache size in tokens and blocks (the
    arguments' block size), the available memory and the CPU offload size in GiB."""
    run = read_run(_experiment(tmp_path, config="server:\n  type: vllm\n  model_name: served\n"))
    i = run.info
    assert (i.engine, i.engine_version, i.model, i.tp) == ("vllm", "0.15.1", "org/Exp-Model", 2)
    assert i.engine_args == {"max_model_len": 4096, "max_num_batched_tokens": 2048, "max_num_seqs": 256,
                             "block_size": 32, "tensor_parallel_size": 2, "enable_prefix_caching": True,
                             "compilation_config": {"cudagraph_mode": "FULL"}, "kv_offloading_size": 40.0}
    assert i.engine_facts["kv_cache"] == {"gpu_tokens": 119408, "num_gpu_blocks": 119408 // 32,
                                          "available_gib": 38.97}
    assert any("kv_transfer_config" in n for n in i.notes)
    assert any(n == "engine arguments from vllm.log over exp-config.yaml" for n in i.notes)


def test_exp_config_precedence(tmp_path):
    """exp-config.yaml fills what the log lacks and beats config.yaml; the user's overrides beat
    both (blocks follow the final block size); an empty log records nothing."""
    log = "INFO GPU KV cache size: 1,600 tokens\nINFO nothing else\n"
    p = _experiment(tmp_path, log=log, config="server:\n  type: vllm\n  model_name: served\n")
    run = read_run(p)
    i = run.info
    assert (i.model, i.tp, i.engine_version) == ("org/Exp-Model", 1, "")
    assert i.engine_args["max_num_seqs"] == 128 and "app" not in i.engine_args and "model" not in i.engine_args
    assert i.engine_facts["kv_cache"] == {"gpu_tokens": 1600, "num_gpu_blocks": 50}
    over = read_run(p, model="cli/model", tp=4, engine_args={"max-num-seqs": 8, "block-size": 16}).info
    assert (over.model, over.tp, over.engine_args["max_num_seqs"]) == ("cli/model", 4, 8)
    assert over.engine_facts["kv_cache"]["num_gpu_blocks"] == 100
    bare = read_run(_experiment(tmp_path / "bare", log="", exp=None)).info
    assert (bare.engine_args, bare.engine_facts, bare.engine_version) == ({}, {}, "")


def test_parquet_round_trip_keeps_prefix(tmp_path):
    """Save/load keeps the prefix column; a run saved before the column existed loads with ''."""
    rng = random.Random(2)
    texts = [_words(rng, 300) for _ in range(2)]
    run = read_run(_write(tmp_path, [_entry(float(i), 80, json.dumps({"prompt": texts[i % 2]}))
                                     for i in range(4)]))
    back = ServingRun.load(run.save(tmp_path / "run.parquet"))
    pd.testing.assert_frame_equal(back.requests, run.requests)
    assert back.requests["prefix"][0] == back.requests["prefix"][2] != ""
    old = run.requests.drop(columns=["prefix"]).copy()
    old["itl_s"] = [None if v is None else list(v) for v in old["itl_s"]]
    old.to_parquet(tmp_path / "old.parquet", index=False)
    (tmp_path / "old.info.json").write_text(run.info.model_dump_json())
    assert list(ServingRun.load(tmp_path / "old.parquet").requests["prefix"]) == [""] * 4


@pytest.mark.parametrize("files, needles", [
    ({"exp": "model: [unclosed\n"}, ["exp-config.yaml", "not valid YAML"]),
    ({"exp": "- a list\n"}, ["exp-config.yaml", "expected a mapping"]),
    ({"exp": "tensor_parallelism: two\n"}, ["exp-config.yaml", "tensor_parallelism", "positive integer"]),
    ({"profile": '{"data": {"type": "shared_prefix"'}, ["profile.yaml", "not valid YAML"]),
    ({"config": "data:\n  type: shared_prefix\n  shared_prefix:\n    num_groups: 0\n"},
     ["config.yaml", "data.shared_prefix.num_groups", "positive integer"]),    ({"config": "- not a mapping\n"}, ["config.yaml", "expected a mapping"]),
])
def test_bad_experiment_files(tmp_path, files, needles):
    """A malformed exp-config.yaml, profile.yaml or shared_prefix field is one InputError line naming it."""
    d = tmp_path / "exp"
    d.mkdir()
    if "exp" in files:
        (d / "exp-config.yaml").write_text(files["exp"])
    if "profile" in files:
        (d / "profile.yaml").write_text(files["profile"])
    p = _write(d / "results", [_entry(1.0, 10, None)], {"config.yaml": files["config"]} if "config" in files else None)
    with pytest.raises(InputError) as err:
        read_run(p)
    msg = str(err.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
