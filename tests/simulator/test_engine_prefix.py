"""The engine's prefix cache (requests carrying their prompt's segments) and vLLM's async
scheduling lag (a request arriving during a step joins the step after the next one)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator import Scenario, simulate
from simulator.engine.prefix import EnginePrefixCache, parse_segments
from simulator.engine.workload import Requests

from simkit import BASE


def _scenario(version: str = "0.11.0", debug: bool = False, **args) -> Scenario:
    """Llama-3.1-8B on one H100 under vLLM ``version`` with these engine arguments."""
    doc = copy.deepcopy(BASE)
    doc["debug"] = debug
    dep = doc["deployments"][0]
    del dep["scheduler"]
    dep["engine"] = {"name": "vllm", "version": version, **args}
    return Scenario.model_validate(doc)


def _requests(arrival, prompt, output, segments) -> Requests:
    return Requests(np.asarray(arrival, float), np.asarray(prompt, np.int64), np.asarray(output, np.int64),
                    segments=tuple(segments))


def test_parse_segments_reads_the_run_tables_prefix_column():
    assert parse_segments("ab12:100 cd34:474") == [("ab12", 100), ("cd34", 474)]
    assert parse_segments("") == []


def test_a_repeated_prompt_prefills_only_what_the_cache_lacks():
    """The same 1000-token prompt sent again after the first finished: the second computes only
    the tokens past the last whole 16-token block before its final token (1000 - 992 = 8)."""
    reqs = _requests([0.0, 5.0], [1000, 1000], [10, 10], ["p1:1000", "p1:1000"])
    res = simulate(_scenario(), requests=reqs)
    assert res.summary["prefill_tokens_computed"] == 1000 + 8
    assert res.summary["engine_prefix_cache"]["hit_tokens"] == 992
    ttft = res.requests["ttft_s"].to_numpy()
    assert ttft[1] < ttft[0] / 3        # a 1000-token prefill vs 8 tokens


def test_a_shared_system_prompt_hits_its_whole_blocks_only():
    """Two prompts sharing a 100-token system prompt: the second reuses 96 tokens (6 blocks)."""
    reqs = _requests([0.0, 5.0], [600, 700], [5, 5], ["sys:100 a:500", "sys:100 b:600"])
    res = simulate(_scenario(), requests=reqs)
    assert res.summary["engine_prefix_cache"]["hit_tokens"] == 96
    assert res.summary["prefill_tokens_computed"] == 600 + 700 - 96


def test_prefix_caching_off_computes_every_prompt_token():
    reqs = _requests([0.0, 5.0], [1000, 1000], [10, 10], ["p1:1000", "p1:1000"])
    res = simulate(_scenario(enable_prefix_caching=False), requests=reqs)
    assert res.summary["prefill_tokens_computed"] == 2000
    assert "engine_prefix_cache" not in res.summary


def test_a_preempted_request_resumes_from_what_is_left_of_its_own_cached_blocks():
    """vLLM V1 with prefix caching frees a preempted request's blocks tail first to the end of
    the free queue and allocates from the front, so what it gets back is its first blocks
    minus those allocated since. Two 600-token prompts with 500 output tokens in 100 blocks
    of 16: at 800 + 800 tokens the newer one is preempted and frees its 50 blocks (none free
    ahead of them); the older grows to 1100 tokens, taking 19 of them; the preempted one
    resumes with 31 blocks (496 tokens) cached and recomputes 801 - 496 = 305 tokens.
    Prefix caching off: all 801. The general and the inlined step paths agree, and the
    summary's ``preempted_recompute`` says so."""
    reqs = Requests(np.zeros(2), np.array([600, 600]), np.array([500, 500]))
    for debug in (False, True):
        on = simulate(_scenario("0.19.0", debug=debug, num_gpu_blocks_override=100), requests=reqs)
        off = simulate(_scenario("0.19.0", debug=debug, num_gpu_blocks_override=100, enable_prefix_caching=False),
                       requests=reqs)
        assert on.requests["preemptions"].tolist() == off.requests["preemptions"].tolist() == [0, 1]
        assert on.summary["prefill_tokens_computed"] == 1200 + 305
        assert off.summary["prefill_tokens_computed"] == 1200 + 801
        assert on.summary["completed"] == off.summary["completed"] == 2
        assert on.requests["e2e_s"].iloc[1] < off.requests["e2e_s"].iloc[1]
        assert on.summary["preempted_recompute"] == {"requests": 1, "tokens": 801, "cached_tokens": 496,
                                                     "cached_share": 496 / 801}
        assert off.summary["preempted_recompute"]["cached_tokens"] == 0
    calm = simulate(_scenario("0.19.0"), requests=reqs)      # room for both: no preemption, no entry
    assert "preempted_recompute" not in calm.summary


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 30), blocks=st.integers(60, 400), max_prompt=st.integers(50, 1500),
       max_output=st.integers(20, 600), rate=st.floats(1, 40), caching=st.booleans(), seed=st.integers(0, 1000))
def test_preempted_resumes_account_every_token(n, blocks, max_prompt, max_output, rate, caching, seed):
    """Under KV pressure (vLLM 0.19, a few hundred blocks): every request finishes or is
    rejected; the prefill tokens computed are exactly the prompts plus what the resumes
    recomputed (their tokens less what the cache held, nothing held without prefix caching);
    KV in use never exceeds the pool; the inlined and the general step paths agree."""
    rng = np.random.default_rng(seed)
    reqs = Requests(np.cumsum(rng.exponential(1.0 / rate, n)), rng.integers(1, max_prompt + 1, n),
                    rng.integers(1, max_output + 1, n))
    runs = [simulate(_scenario("0.19.0", debug=debug, num_gpu_blocks_override=blocks,
                               enable_prefix_caching=caching), requests=reqs) for debug in (False, True)]
    for res in runs:
        df, s = res.requests, res.summary
        done = df[df.finish_s.notna()]
        assert len(done) + s["rejected"]["count"] == n
        pr = s.get("preempted_recompute", {"requests": 0, "tokens": 0, "cached_tokens": 0})
        assert pr["requests"] == int(done.preemptions.sum())
        assert 0 <= pr["cached_tokens"] <= pr["tokens"] and (caching or pr["cached_tokens"] == 0)
        assert s["prefill_tokens_computed"] == done.prompt_tokens.sum() + pr["tokens"] - pr["cached_tokens"]
        for name, a in res.steps.items():
            assert (a[:, 4] <= res.kv_blocks[name]).all() and (a[:, 4] >= 0).all()
    assert runs[0].summary["prefill_tokens_computed"] == runs[1].summary["prefill_tokens_computed"]
    assert np.allclose(runs[0].requests.e2e_s.to_numpy(), runs[1].requests.e2e_s.to_numpy(), equal_nan=True)


def test_requests_without_segments_run_as_before():
    """No segments (None) means no cache at all: the same step log as the engine without one."""
    plain = Requests(np.array([0.0, 5.0]), np.array([1000, 1000]), np.array([10, 10]))
    off = simulate(_scenario(enable_prefix_caching=False), requests=plain)
    on = simulate(_scenario(), requests=plain)
    assert on.summary["prefill_tokens_computed"] == off.summary["prefill_tokens_computed"] == 2000
    for name, steps in on.steps.items():
        assert np.array_equal(steps, off.steps[name])


def test_the_cache_evicts_least_recently_used_blocks_beyond_its_capacity():
    """Four blocks of room: a's 3 blocks, then b's 3 evict a's oldest; a then misses entirely."""
    cache = EnginePrefixCache(capacity_blocks=4, block_tokens=16)
    a, b = cache.keys("a:64"), cache.keys("b:64")
    cache.insert(a[:3])
    assert cache.lookup(a, 64) == 48           # 3 whole blocks before the last token
    cache.insert(b[:3])
    assert cache.lookup(a, 64) == 0            # a's first block was the least recently used
    assert cache.lookup(b, 64) == 48


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 60), groups=st.integers(1, 4), prompts=st.integers(1, 6), sys_len=st.integers(0, 300),
       q_len=st.integers(1, 400), rate=st.floats(2, 60), seed=st.integers(0, 1000))
def test_prefix_hits_conserve_tokens_and_requests(n, groups, prompts, sys_len, q_len, rate, seed):
    """Every request finishes; computed prefill + cache hits = all prompt tokens (nothing is
    preempted at this memory); a hit never covers a whole prompt; fast and debug paths agree."""
    rng = np.random.default_rng(seed)
    slot = rng.integers(0, groups * prompts, n)
    prompt = sys_len + q_len
    segs = [(f"s{s % groups}:{sys_len} " if sys_len else "") + f"q{s}:{q_len}" for s in slot]
    arrival = np.cumsum(rng.exponential(1 / rate, n))
    reqs = _requests(arrival, [prompt] * n, rng.integers(1, 50, n), segs)
    fast = simulate(_scenario(), requests=reqs)
    slow = simulate(_scenario(debug=True), requests=reqs)
    assert fast.requests["finish_s"].notna().all()
    hit = fast.summary["engine_prefix_cache"]["hit_tokens"]
    assert fast.summary["prefill_tokens_computed"] + hit == n * prompt
    assert fast.summary["prefill_tokens_computed"] >= n       # at least one token each
    cols = ["start_s", "first_token_s", "finish_s"]
    assert fast.requests[cols].equals(slow.requests[cols])
    assert slow.summary["engine_prefix_cache"] == fast.summary["engine_prefix_cache"]


def _lone_arrival(version: str) -> tuple[float, np.ndarray]:
    """A long decode keeps the replica busy; a short request arrives mid-step. Returns its
    first-token time and the replica's step log."""
    reqs = Requests(np.array([0.0, 0.1003]), np.array([200, 16]), np.array([400, 1]))
    res = simulate(_scenario(version), requests=reqs)
    return float(res.requests["first_token_s"].iat[1]), next(iter(res.steps.values()))


def test_async_scheduling_puts_a_mid_step_arrival_two_steps_later():
    """vLLM >= 0.14 (async scheduling, two steps in flight): the request arriving during step k
    is computed in step k+2, so its first token comes at the end of k+2; the synchronous
    scheduler (0.11) takes it into step k+1."""
    t = 0.1003
    first_sync, steps_sync = _lone_arrival("0.11.0")
    k = int(np.searchsorted(steps_sync[:, 1], t))            # the step running at t
    assert steps_sync[k, 0] < t < steps_sync[k, 1]
    assert first_sync == pytest.approx(steps_sync[k + 1, 1])
    first_async, steps_async = _lone_arrival("0.15.1")
    k = int(np.searchsorted(steps_async[:, 1], t))
    assert steps_async[k, 0] < t < steps_async[k, 1]
    assert steps_async[k + 1, 3] == 0                           # step k+1 has no prefill tokens
    assert first_async == pytest.approx(steps_async[k + 2, 1])


def test_an_inference_perf_run_with_repeated_prompts_replays_with_cache_hits(tmp_path):
    """inference-perf per-request report whose 40 requests cycle through 4 prompts (as its
    shared_prefix generator does): the replay finds every repeat in vLLM's prefix cache,
    computes far fewer prefill tokens than were sent and says so in a note."""
    import json

    from profiling.readers.runs import read_run
    from simulator.fidelity.runs import replay_run

    words = [f"w{i}" for i in range(400)]
    prompts = [" ".join(words[k * 50:k * 50 + 300]) for k in range(4)]     # ~1500 chars, 400 tokens
    entries = []
    for i in range(40):
        t = i * 0.5
        times = [t + 0.05 + 0.01 * j for j in range(20)]
        entries.append({"start_time": t, "end_time": times[-1], "error": None, "response": "",
                        "request": json.dumps({"prompt": prompts[i % 4], "max_tokens": 20, "stream": True}),
                        "info": {"input_tokens": 400, "output_tokens": 20, "output_token_times": times}})
    f = tmp_path / "per_request_lifecycle_metrics.json"
    f.write_text(json.dumps(entries))
    (tmp_path / "config.yaml").write_text("server:\n  type: vllm\n  model_name: meta-llama/Llama-3.1-8B\n")
    run = read_run(f, gpu="H100-SXM", version="0.15.1")
    assert run.requests["prefix"].iloc[0] == run.requests["prefix"].iloc[4] != run.requests["prefix"].iloc[1]
    rep = replay_run(run, surrogate="roofline")
    pc = rep.summary["engine_prefix_cache"]
    assert pc["hit_tokens"] == 36 * (399 // 16) * 16                    # every repeat, whole blocks
    assert rep.summary["prefill_tokens_computed"] == 40 * 400 - pc["hit_tokens"]
    assert any(n.startswith("engine prefix cache: ") for n in rep.notes)


def test_cli_validate_on_an_experiment_folder_reads_its_engine_files(tmp_path, capsys):
    """An llm-d-style experiment folder (exp-config.yaml, vllm.log, results/ with the per-request
    report and inference-perf's config.yaml), given as the folder: the release and arguments
    come from the log and exp-config, the KV cache from the log, prompts repeat in the cache."""
    import json

    from hermes_sim.cli import main

    exp = tmp_path / "20260101-000000-llama-3-1-8b-tp1-chat"
    res = exp / "results"
    res.mkdir(parents=True)
    prompts = [" ".join(f"w{k}x{j}" for j in range(300)) for k in range(3)]
    entries = []
    for i in range(30):
        t = i * 0.4
        times = [t + 0.04 + 0.01 * j for j in range(10)]
        entries.append({"start_time": t, "end_time": times[-1], "error": None, "response": "",
                        "request": json.dumps({"prompt": prompts[i % 3], "max_tokens": 10}),
                        "info": {"input_tokens": 600, "output_tokens": 10, "output_token_times": times}})
    (res / "per_request_lifecycle_metrics.json").write_text(json.dumps(entries))
    (res / "config.yaml").write_text("server:\n  type: vllm\n  model_name: meta-llama/Llama-3.1-8B-Instruct\n")
    (exp / "exp-config.yaml").write_text("model: meta-llama/Llama-3.1-8B-Instruct\ntensor_parallelism: 1\n"
                                         "max_num_batched_tokens: 1024\nmax_num_seqs: 64\napp: inference-perf\n")
    (exp / "vllm.log").write_text(
        "INFO vllm.entrypoints.openai.api_server: vLLM API server version 0.15.1\n"
        "INFO vllm.v1.core.kv_cache_utils: GPU KV cache size: 160,000 tokens\n")
    code = main(["validate", str(exp), "--gpu", "H100-SXM", "--surrogate", "roofline", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    eng = doc["deployment"]["engine"]
    assert eng["version"] == "0.15.1" and eng["args"]["max_num_seqs"] == 64
    assert eng["args"]["max_num_batched_tokens"] == 1024 and eng["args"]["num_gpu_blocks_override"] == 10_000
    # 27 repeats x 592 tokens (37 whole blocks before the last token) of 30 x 600
    assert any("prefix cache: 88.8% of prompt tokens found cached (15,984 of 18,000)" in n for n in doc["notes"])
