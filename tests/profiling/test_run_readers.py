"""Serving-run readers (profiling.readers.runs): the four real LLMServingSim vLLM runs, the
silicon_sample.csv rows, and small files in each public format's documented layout; every bad
input class gives one InputError line naming the file and field."""
from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from profiling.errors import HermesError, InputError
from profiling.readers.runs import (
    RUN_FORMATS,
    ServingRun,
    detect,
    known_engine_args,
    read_run,
    silicon,
)

RUNS = {  # folder -> (TP, DP, EP, GPU)
    "RTX4090/Llama-3.1-8B": (1, 1, 1, "RTX-4090"),
    "RTXPRO6000/Llama-3.1-8B": (1, 1, 1, "RTX-PRO-6000"),
    "RTXPRO6000/Qwen3-32B": (2, 1, 1, "RTX-PRO-6000"),
    "RTXPRO6000/Qwen3-30B-A3B-Instruct-2507": (1, 2, 2, "RTX-PRO-6000"),
}


def _summary(path: Path) -> dict[str, float]:
    """The 'vLLM' column (ms) of LLMServingSim's summary: the real run's own measured figures."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^(TTFT|TPOT|Latency) (Mean|Median|P\d+)\s+([\d.]+)\s+", line)
        if m:
            out[f"{m.group(1)} {m.group(2)}"] = float(m.group(3))
    return out


def _one_line(err: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)


# ---- LLMServingSim bench format: the real runs -------------------------------------------

@pytest.mark.parametrize("name", sorted(RUNS))
def test_llmservingsim_real_runs(traces_dir, name):
    """Each real vLLM 0.19.0 run reads as 300 requests whose TTFT/E2E medians and mean TPOT
    match the run's own measured summary within 1%, with its engine, TP/DP/EP and GPU."""
    folder = traces_dir / "serving_runs" / "llmservingsim" / name
    run = read_run(folder)
    tp, dp, ep, gpu = RUNS[name]
    info = run.info
    assert (info.format, info.engine, info.engine_version) == ("llmservingsim", "vllm", "0.19.0")
    assert (info.tp, info.dp, info.ep, info.gpu) == (tp, dp, ep, gpu)
    assert info.client.kind == "trace" and info.num_requests == 300 and info.num_failed == 0
    assert info.engine_args["max_num_batched_tokens"] == 2048
    want = _summary(folder / "llmservingsim_summary.txt")
    req = run.requests
    assert len(req) == 300 and req["ok"].all()
    assert req["ttft_s"].median() * 1e3 == pytest.approx(want["TTFT Median"], rel=0.01)
    assert req["e2e_s"].median() * 1e3 == pytest.approx(want["Latency Median"], rel=0.01)
    assert req["tpot_s"].mean() * 1e3 == pytest.approx(want["TPOT Mean"], rel=0.01)
    # Poisson arrivals at ~10 req/s: 300 of them span about 30 s from 0.
    assert req["arrival_s"].min() == 0 and 25 < req["arrival_s"].max() < 35


def test_llmservingsim_kv_facts_and_detect_on_file(traces_dir):
    """The RTX 4090 run keeps the KV block count vLLM resolved, and a path to its
    requests.jsonl is detected as the same run folder."""
    folder = traces_dir / "serving_runs" / "llmservingsim" / "RTX4090" / "Llama-3.1-8B"
    assert detect(folder / "requests.jsonl") == "llmservingsim"
    run = read_run(folder / "requests.jsonl")
    assert run.info.engine_facts["kv_cache"]["num_gpu_blocks"] == 2588
    assert run.info.model == "meta-llama/Llama-3.1-8B"


def test_parquet_round_trip_real_run(traces_dir, tmp_path):
    """A saved run (Parquet + info JSON beside it) loads back equal."""
    run = read_run(traces_dir / "serving_runs" / "llmservingsim" / "RTXPRO6000" / "Qwen3-32B")
    dest = run.save(tmp_path / "qwen.parquet")
    assert dest.is_file() and (tmp_path / "qwen.info.json").is_file()
    back = ServingRun.load(dest)
    assert back.info == run.info
    pd.testing.assert_frame_equal(back.requests, run.requests)


def _copy_run(traces_dir: Path, tmp_path: Path, name: str = "run") -> Path:
    src = traces_dir / "serving_runs" / "llmservingsim" / "RTX4090" / "Llama-3.1-8B"
    dst = tmp_path / name
    dst.mkdir()
    for f in ("meta.json", "requests.jsonl"):
        shutil.copy(src / f, dst / f)
    return dst


def _edit_requests(folder: Path, i: int, **changes) -> None:
    lines = (folder / "requests.jsonl").read_text().splitlines()
    row = json.loads(lines[i])
    for k, v in changes.items():
        if v is None:
            row.pop(k, None)
        else:
            row[k] = v
    lines[i] = json.dumps(row)
    (folder / "requests.jsonl").write_text("\n".join(lines) + "\n")


def test_llmservingsim_missing_field(traces_dir, tmp_path):
    """A request without queued_ts names requests.jsonl, its row and the field."""
    d = _copy_run(traces_dir, tmp_path)
    _edit_requests(d, 4, queued_ts=None)
    with pytest.raises(InputError) as e:
        read_run(d)
    _one_line(e, "requests.jsonl", "row 5", "queued_ts", "missing field")


def test_llmservingsim_clocks_do_not_line_up(traces_dir, tmp_path):
    """An engine queue time 30 s off the client's arrival spacing is refused, naming the field."""
    d = _copy_run(traces_dir, tmp_path)
    row = json.loads((d / "requests.jsonl").read_text().splitlines()[10])
    _edit_requests(d, 10, queued_ts=row["queued_ts"] + 30.0)
    with pytest.raises(InputError) as e:
        read_run(d)
    _one_line(e, "requests.jsonl", "row 11", "queued_ts", "does not line up")


def test_llmservingsim_unknown_engine_argument(traces_dir, tmp_path):
    """A misspelt vLLM argument in meta.json's engine_kwargs names meta.json and the argument."""
    d = _copy_run(traces_dir, tmp_path)
    meta = json.loads((d / "meta.json").read_text())
    meta["engine_kwargs"]["max_num_seq"] = 64
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(InputError) as e:
        read_run(d)
    _one_line(e, "meta.json", "engine_args.max_num_seq", "unknown vllm engine argument")


def test_llmservingsim_negative_latency_and_count_mismatch(traces_dir, tmp_path):
    """A first token before its queue time, and a request count that disagrees with meta.json,
    are each one line naming the file and field."""
    d = _copy_run(traces_dir, tmp_path)
    row = json.loads((d / "requests.jsonl").read_text().splitlines()[3])
    _edit_requests(d, 3, first_token_ts=row["queued_ts"] - 1.0)
    with pytest.raises(InputError) as e:
        read_run(d)
    _one_line(e, "requests.jsonl", "row 4", "first_token_ts")
    d2 = _copy_run(traces_dir, tmp_path, "short")
    lines = (d2 / "requests.jsonl").read_text().splitlines()
    (d2 / "requests.jsonl").write_text("\n".join(lines[:-5]) + "\n")
    with pytest.raises(InputError) as e:
        read_run(d2)
    _one_line(e, "meta.json", "num_requests", "295")


def test_llmservingsim_failed_request_is_kept(traces_dir, tmp_path):
    """A request the engine never gave a first token stays in the table as failed and counted."""
    d = _copy_run(traces_dir, tmp_path)
    _edit_requests(d, 7, first_token_ts=None, last_token_ts=None)
    run = read_run(d)
    assert run.info.num_requests == 300 and run.info.num_failed == 1
    row = run.requests.iloc[7]
    assert not row["ok"] and math.isnan(row["ttft_s"]) and row["error"]


# ---- vLLM bench serve / benchmark_serving JSON ---------------------------------------------

def _vllm_new(tmp_path: Path, **edits) -> Path:
    """A `vllm bench serve --save-detailed` result (0.10+ layout: latencies, start_times)."""
    doc = {
        "date": "20260801-101010", "endpoint_type": "vllm", "backend": "vllm", "label": None,
        "model_id": "meta-llama/Llama-3.1-8B", "tokenizer_id": "meta-llama/Llama-3.1-8B",
        "num_prompts": 4, "request_rate": 2.0, "burstiness": 1.0, "max_concurrency": None,
        "duration": 3.1, "completed": 3, "failed": 1,
        "input_lens": [120, 300, 80, 512], "output_lens": [10, 20, 0, 5],
        "ttfts": [0.05, 0.08, 0.0, 0.12], "itls": [[0.01] * 9, [0.012] * 19, [], [0.02] * 4],
        "latencies": [0.14, 0.31, 0.0, 0.2], "start_times": [100.0, 100.4, 101.0, 101.9],
        "queue_times": [0.0, 0.0, 0.0, 0.0], "errors": ["", "", "ClientConnectorError: refused", ""],
        "mean_ttft_ms": 83.3}
    doc.update(edits)
    p = tmp_path / "vllm-2.0qps-Llama-3.1-8B.json"
    p.write_text(json.dumps(doc))
    return p


def test_vllm_bench_new_layout(tmp_path):
    """Arrivals from start_times, E2E from latencies, ITL lists kept, the failed request kept
    with NaN latencies, engine from the backend, open-loop rate kept beside the trace."""
    p = _vllm_new(tmp_path)
    assert detect(p) == "vllm-bench"
    run = read_run(p, gpu="NVIDIA H100 80GB HBM3", tp=2)
    r, info = run.requests, run.info
    assert list(r["arrival_s"]) == pytest.approx([0.0, 0.4, 1.0, 1.9])
    assert list(r["e2e_s"][[0, 1, 3]]) == pytest.approx([0.14, 0.31, 0.2])
    assert r["itl_s"][1] == pytest.approx([0.012] * 19) and r["itl_s"][2] is None
    assert (info.num_requests, info.num_failed) == (4, 1) and not r["ok"][2]
    assert math.isnan(r["ttft_s"][2]) and "refused" in r["error"][2]
    assert r["tpot_s"][0] == pytest.approx((0.14 - 0.05) / 9)
    assert (info.engine, info.gpu, info.tp, info.model) == ("vllm", "H100-SXM", 2, "meta-llama/Llama-3.1-8B")
    assert info.client.kind == "trace" and info.client.rate == 2.0


def test_vllm_bench_old_layout_with_trace(tmp_path):
    """An older benchmark_serving result (e2els, no arrivals) takes arrivals from the replayed
    trace; without it arrivals are NaN and the client mode is the open loop to draw."""
    p = _vllm_new(tmp_path, latencies=None, start_times=None, queue_times=None,
                  errors=["", "", "", ""], completed=4, output_lens=[10, 20, 3, 5],
                  ttfts=[0.05, 0.08, 0.03, 0.12], e2els=[0.14, 0.31, 0.09, 0.2], request_rate=4.0,
                  burstiness=0.5)
    trace = tmp_path / "trace.csv"
    trace.write_text("arrival_timestamp,prompt_size,token_size\n0.5,120,10\n0.7,300,20\n1.5,80,3\n2.0,512,5\n3.0,9,9\n")
    run = read_run(p, trace=trace)
    assert list(run.requests["arrival_s"]) == pytest.approx([0.0, 0.2, 1.0, 1.5])
    assert list(run.requests["e2e_s"]) == pytest.approx([0.14, 0.31, 0.09, 0.2])
    bare = read_run(p)
    assert bare.requests["arrival_s"].isna().all()
    assert (bare.info.client.kind, bare.info.client.rate, bare.info.client.burstiness) == ("open_loop", 4.0, 0.5)


def test_vllm_bench_closed_loop_and_e2e_from_itls(tmp_path):
    """An unlimited rate under max_concurrency is a closed loop; a result without any E2E list
    gets the last token's arrival (TTFT + sum ITL) and says so in its notes."""
    p = _vllm_new(tmp_path, latencies=None, request_rate="inf", max_concurrency=8)
    run = read_run(p)
    assert (run.info.client.kind, run.info.client.concurrency) == ("closed_loop", 8)
    assert run.requests["e2e_s"][0] == pytest.approx(0.05 + 0.09)
    assert any("sum(itls)" in n for n in run.info.notes)


@pytest.mark.parametrize("edits, needles", [
    ({"ttfts": None}, ["ttfts", "missing field"]),
    ({"output_lens": [10, 20, 0]}, ["output_lens", "has 3 entries", "have 4"]),
    ({"ttfts": [0.05, -0.08, 0.0, 0.12]}, ["row 2", "ttfts", "negative"]),
    ({"latencies": [0.14, 0.31, 0.0, float("inf")]}, ["row 4", "latencies", "finite"]),
    ({"num_prompts": 10}, ["num_prompts", "10"]),
])
def test_vllm_bench_bad_inputs(tmp_path, edits, needles):
    """Missing fields, lists of different lengths, negative or non-finite latencies and a
    truncated result each give one line naming the file and field."""
    p = _vllm_new(tmp_path, **edits)
    with pytest.raises(InputError) as e:
        read_run(p)
    _one_line(e, str(p), *needles)


def test_vllm_bench_trace_shorter_than_results(tmp_path):
    """A replayed trace with fewer requests than the result is refused, naming the trace."""
    p = _vllm_new(tmp_path, start_times=None, queue_times=None)
    trace = tmp_path / "short.csv"
    trace.write_text("arrival_timestamp,prompt_size,token_size\n0.5,120,10\n0.7,300,20\n")
    with pytest.raises(InputError) as e:
        read_run(p, trace=trace)
    _one_line(e, "short.csv", "2 requests", "hold 4")


def test_vllm_bench_unknown_engine_argument_override(tmp_path):
    """An engine argument the engine does not have, given by the user, is refused; a known one
    (CLI spelling) is kept under the engine's name and sets TP."""
    p = _vllm_new(tmp_path)
    with pytest.raises(InputError) as e:
        read_run(p, engine_args={"max_batch_tokens": 4096})
    _one_line(e, "--engine-arg.max_batch_tokens", "unknown vllm engine argument")
    run = read_run(p, engine_args={"--max-num-seqs": 64, "tensor-parallel-size": 4})
    assert run.info.engine_args == {"max_num_seqs": 64, "tensor_parallel_size": 4} and run.info.tp == 4
    with pytest.raises(HermesError):
        read_run(p, engine="vllmm")


def test_vllm_bench_append_result_needs_index(tmp_path):
    """An --append-result file (one result a line) reads one result by index, and says so when
    none is given."""
    one = json.loads(_vllm_new(tmp_path).read_text())
    p = tmp_path / "appended.json"
    p.write_text(json.dumps(one) + "\n" + json.dumps({**one, "model_id": "other"}) + "\n")
    with pytest.raises(InputError) as e:
        read_run(p, fmt="vllm-bench")
    _one_line(e, "holds 2", "index")
    assert read_run(p, fmt="vllm-bench", index=1).info.model == "other"


# ---- SGLang bench_serving JSONL --------------------------------------------------------------

def _sglang(tmp_path: Path, **edits) -> Path:
    run = {"backend": "sglang", "dataset_name": "random", "request_rate": float("inf"),
           "max_concurrency": 4, "sharegpt_output_len": None, "random_input_len": 1024,
           "random_output_len": 128, "random_range_ratio": 0.5, "duration": 5.0, "completed": 3,
           "mean_e2e_latency_ms": 900.0, "median_ttft_ms": 40.0,
           "input_lens": [900, 1024, 700], "output_lens": [100, 128, 64],
           "ttfts": [0.04, 0.05, 0.03], "itls": [[0.008] * 99, [0.009] * 127, [0.007] * 63],
           "generated_texts": ["a", "b", "c"], "errors": ["", "", ""]}
    run.update(edits)
    p = tmp_path / "sglang_0801_3_1024_128.jsonl"
    summary_only = {k: v for k, v in run.items() if k not in ("input_lens", "output_lens", "ttfts", "itls",
                                                               "generated_texts", "errors")}
    p.write_text(json.dumps(run) + "\n" + json.dumps(summary_only) + "\n")
    return p


def test_sglang_bench(tmp_path):
    """A --output-details run: E2E = TTFT + sum(ITL), engine sglang, closed loop of 4; the
    summary-only second line is another run, so the index is needed."""
    p = _sglang(tmp_path)
    assert detect(p) == "sglang-bench"
    with pytest.raises(InputError) as e:
        read_run(p)
    _one_line(e, "holds 2", "index")
    run = read_run(p, index=0, model="Qwen/Qwen3-8B")
    assert run.requests["e2e_s"][0] == pytest.approx(0.04 + 99 * 0.008)
    assert (run.info.engine, run.info.client.kind, run.info.client.concurrency) == ("sglang", "closed_loop", 4)
    assert run.requests["arrival_s"].isna().all() and run.info.model == "Qwen/Qwen3-8B"
    with pytest.raises(InputError) as e:
        read_run(p, index=1)
    _one_line(e, "input_lens", "missing field")


@pytest.mark.parametrize("edits, needles", [
    ({"ttfts": [0.04, 0.05]}, ["ttfts", "has 2 entries"]),
    ({"itls": [[0.008] * 99, [0.009, -1.0], [0.007]]}, ["row 2", "itls", "negative"]),
])
def test_sglang_bench_bad_inputs(tmp_path, edits, needles):
    """Lists of different lengths and a negative inter-token latency name file, field and row."""
    p = _sglang(tmp_path, **edits)
    with pytest.raises(InputError) as e:
        read_run(p, index=0)
    _one_line(e, p.name, *needles)


def test_sglang_unknown_engine_argument(tmp_path):
    """SGLang's own argument names are checked against SGLang's list, not vLLM's."""
    p = _sglang(tmp_path)
    assert read_run(p, index=0, engine_args={"chunked_prefill_size": 4096, "tp_size": 2}).info.tp == 2
    with pytest.raises(InputError) as e:
        read_run(p, index=0, engine_args={"max_num_seqs": 8})
    _one_line(e, "unknown sglang engine argument 'max_num_seqs'")


# ---- inference-perf per-request lifecycle metrics -----------------------------------------------

def _entry(start, end, inp, out, times, new_layout=True, error=None):
    if new_layout:
        info = {"request_metrics": {"text": {"input_tokens": inp}, "image": None, "video": None, "audio": None},
                "response_metrics": {"output_tokens": out, "server_usage": None, "response_chunks": [],
                                     "chunk_times": times, "output_token_times": times},
                "extra_info": {}, "lora_adapter": None, "labels": {}, "input_tokens": inp}
    else:
        info = {"input_tokens": inp, "output_tokens": out, "output_token_times": times}
    return {"start_time": start, "end_time": end, "request": "{\"prompt\": \"x\"}", "response": "y",
            "info": info, "error": error}


def _inference_perf(tmp_path: Path, entries: list, config: str | None = None) -> Path:
    p = tmp_path / "per_request_lifecycle_metrics.json"
    p.write_text(json.dumps(entries))
    if config:
        (tmp_path / "config.yaml").write_text(config)
    return p


def test_inference_perf_both_layouts(tmp_path):
    """Old and new `info` layouts read alike: TTFT from the first token time, ITL gaps,
    arrivals from start times; an errored request is kept and counted; config.yaml gives the
    engine, model and rate."""
    cfg = ("load:\n  type: poisson\n  stages:\n  - rate: 5\n    duration: 30\nserver:\n  type: vllm\n"
           "  model_name: Qwen/Qwen3-32B\n  base_url: http://0.0.0.0:8000\n")
    new = _inference_perf(tmp_path, [
        _entry(10.0, 10.5, 100, 4, [10.1, 10.2, 10.3, 10.5]),
        _entry(10.3, 11.0, 50, 3, [10.5, 10.75, 11.0]),
        _entry(10.6, 10.7, 70, 0, [], error={"error_type": "ClientResponseError", "error_msg": "503"})], cfg)
    assert detect(new) == "inference-perf"
    run = read_run(new)
    r = run.requests
    assert list(r["arrival_s"]) == pytest.approx([0.0, 0.3, 0.6])
    assert list(r["ttft_s"][:2]) == pytest.approx([0.1, 0.2]) and r["itl_s"][0] == pytest.approx([0.1, 0.1, 0.2])
    assert (run.info.num_failed, run.info.engine, run.info.model, run.info.client.rate) == (1, "vllm", "Qwen/Qwen3-32B", 5.0)
    assert "503" in r["error"][2]
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    old = _inference_perf(old_dir, [_entry(10.0, 10.5, 100, 4, [10.1, 10.2, 10.3, 10.5], new_layout=False)])
    o = read_run(old).requests
    assert (o["ttft_s"][0], o["e2e_s"][0], o["prompt_tokens"][0]) == (pytest.approx(0.1), pytest.approx(0.5), 100)


@pytest.mark.parametrize("entry, needles", [
    ({"end_time": None}, ["row 1", "end_time", "missing field"]),
    ({"end_time": 9.0}, ["row 1", "end_time", "precedes"]),
    ({"start_time": float("nan")}, ["row 1", "start_time", "finite"]),
])
def test_inference_perf_bad_inputs(tmp_path, entry, needles):
    """A missing, backwards or non-finite time names the file, row and field."""
    e = _entry(10.0, 10.5, 100, 4, [10.1, 10.5])
    e.update(entry)
    p = _inference_perf(tmp_path, [e])
    with pytest.raises(InputError) as err:
        read_run(p)
    _one_line(err, p.name, *needles)


# ---- AIPerf profile_export.jsonl ---------------------------------------------------------------

def _aiperf_record(i, start_ns, ttft_ms=None, latency_ms=None, isl=550, osl=9, error=None, phase="profiling"):
    metrics = {"error_isl": {"value": isl, "unit": "tokens"}} if error else {
        "input_sequence_length": {"value": isl, "unit": "tokens"},
        "time_to_first_token": {"value": ttft_ms, "unit": "ms"},
        "request_latency": {"value": latency_ms, "unit": "ms"},
        "output_token_count": {"value": osl, "unit": "tokens"},
        "inter_chunk_latency": {"value": [4.9, 5.3, 4.8], "unit": "ms"},
        "output_sequence_length": {"value": osl, "unit": "tokens"},
        "inter_token_latency": {"value": 5.2, "unit": "ms"}}
    return {"metadata": {"session_num": i, "x_request_id": f"req-{i}", "x_correlation_id": "c",
                         "conversation_id": "conv", "turn_index": 0, "request_start_ns": start_ns,
                         "request_ack_ns": None, "request_end_ns": start_ns + 300_000_000,
                         "worker_id": "worker_1", "record_processor_id": "rp_1",
                         "benchmark_phase": phase, "was_cancelled": bool(error), "cancellation_time_ns": None},
            "metrics": metrics, "error": error}


def _aiperf(tmp_path: Path, records: list) -> Path:
    p = tmp_path / "profile_export.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return p


def test_aiperf(tmp_path):
    """Units converted per metric (ms -> s), arrivals from request_start_ns, the cancelled
    request kept as failed, a warm-up record left out and noted, model and concurrency from
    profile_export_aiperf.json."""
    t0 = 1_759_813_207_532_900_363
    p = _aiperf(tmp_path, [
        _aiperf_record(0, t0 - 5_000_000_000, 10.0, 50.0, phase="warmup"),
        _aiperf_record(1, t0, 255.9, 297.5),
        _aiperf_record(2, t0 + 250_000_000, 120.0, 180.0, isl=300, osl=12),
        _aiperf_record(3, t0 + 500_000_000, error={"code": 499, "type": "RequestCancellationError",
                                                   "message": "Request was cancelled"})])
    (tmp_path / "profile_export_aiperf.json").write_text(json.dumps(
        {"input_config": {"endpoint": {"model_names": ["Qwen/Qwen3-8B"]}, "loadgen": {"concurrency": 8}}}))
    assert detect(p) == "aiperf"
    run = read_run(p, engine="trtllm")
    r = run.requests
    assert list(r["arrival_s"]) == pytest.approx([0.0, 0.25, 0.5])
    assert list(r["ttft_s"][:2]) == pytest.approx([0.2559, 0.12]) and r["itl_s"][0] == pytest.approx([0.0049, 0.0053, 0.0048])
    assert (run.info.num_requests, run.info.num_failed, r["prompt_tokens"][2]) == (3, 1, 550)
    assert (run.info.model, run.info.client.kind, run.info.client.concurrency) == ("Qwen/Qwen3-8B", "closed_loop", 8)
    assert any("warm-up" in n for n in run.info.notes)


def test_aiperf_bad_inputs(tmp_path):
    """An unknown time unit and a successful record without its latency name the field and row."""
    rec = _aiperf_record(1, 10**18, 255.9, 297.5)
    rec["metrics"]["time_to_first_token"]["unit"] = "fortnights"
    p = _aiperf(tmp_path, [rec])
    with pytest.raises(InputError) as e:
        read_run(p)
    _one_line(e, "row 1", "metrics.time_to_first_token", "unit")
    rec = _aiperf_record(1, 10**18, 255.9, 297.5)
    del rec["metrics"]["request_latency"]
    p = _aiperf(tmp_path, [rec])
    with pytest.raises(InputError) as e:
        read_run(p)
    _one_line(e, "row 1", "metrics.request_latency")


# ---- genai-perf / perf_analyzer profile_export.json -------------------------------------------------

def _chunk(content=None, usage=None, role=False):
    delta = {"role": "assistant"} if role else ({"content": content} if content is not None else {})
    body = {"id": "abc", "object": "chat.completion.chunk", "created": 123, "model": "llama-2-7b",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    if usage:
        body["usage"] = usage
    return {"response": "data: " + json.dumps(body) + "\n\n"}


def _genai(tmp_path: Path, requests: list, mode="concurrency", value=10) -> Path:
    doc = {"service_kind": "openai", "endpoint": "v1/chat/completions",
           "experiments": [{"experiment": {"mode": mode, "value": value}, "requests": requests}]}
    p = tmp_path / "profile_export.json"
    p.write_text(json.dumps(doc))
    return p


def test_genai_perf(tmp_path):
    """Chunks without content are not tokens: TTFT from the first content chunk, E2E from the
    last response, token counts from a usage chunk or NaN, closed loop of 10."""
    ms = 1_000_000
    reqs = [
        {"timestamp": 1 * ms, "request_inputs": {"payload": "{\"model\": \"llama-2-7b\"}"},
         "response_timestamps": [3 * ms, 5 * ms, 8 * ms, 12 * ms, 13 * ms, 14 * ms],
         "response_outputs": [_chunk(role=True), _chunk("I"), _chunk(" like"), _chunk(" dogs"),
                              _chunk(usage={"prompt_tokens": 12, "completion_tokens": 3}), {"response": "data: [DONE]\n\n"}]},
        {"timestamp": 2 * ms, "request_inputs": {"payload": "{}"},
         "response_timestamps": [4 * ms, 7 * ms, 11 * ms], "response_outputs": [_chunk(role=True), _chunk("I"), _chunk(" do")]}]
    p = _genai(tmp_path, reqs)
    assert detect(p) == "genai-perf"
    run = read_run(p)
    r = run.requests
    assert list(r["ttft_s"]) == pytest.approx([0.004, 0.005]) and list(r["e2e_s"]) == pytest.approx([0.013, 0.009])
    assert r["itl_s"][0] == pytest.approx([0.003, 0.004])
    assert (r["prompt_tokens"][0], r["output_tokens"][0]) == (12, 3) and pd.isna(r["output_tokens"][1])
    assert (run.info.client.kind, run.info.client.concurrency, run.info.model) == ("closed_loop", 10, "llama-2-7b")


def test_genai_perf_bad_inputs(tmp_path):
    """A response stamped before its request and response lists of different lengths are refused."""
    ms = 1_000_000
    p = _genai(tmp_path, [{"timestamp": 5 * ms, "response_timestamps": [3 * ms], "response_outputs": [_chunk("x")]}])
    with pytest.raises(InputError) as e:
        read_run(p)
    _one_line(e, "row 1", "response_timestamps", "precedes")
    p = _genai(tmp_path, [{"timestamp": 1 * ms, "response_timestamps": [3 * ms, 4 * ms], "response_outputs": [_chunk("x")]}])
    with pytest.raises(InputError) as e:
        read_run(p)
    _one_line(e, "row 1", "response_outputs")


# ---- silicon_sample.csv and the plain per-request CSV ----------------------------------------------------

def test_silicon_rows_as_closed_loop_runs(traces_dir, tmp_path):
    """Every row with a client concurrency is a closed-loop run with its mean TTFT/TPOT; rows
    without one (Dynamo/disaggregated rows lacking silicon_concurrency) are listed with the
    reason, not dropped. Read on every 20th real row plus the rows around the first refused one."""
    path = traces_dir / "aiconfigurator" / "silicon_sample.csv"
    raw = pd.read_csv(path)
    sample = pd.concat([raw.iloc[::20], raw.iloc[490:510]]).drop_duplicates("id")
    sub = tmp_path / "silicon_sample.csv"
    sample.to_csv(sub, index=False)
    runs, refused = silicon.read_all(sub)
    assert len(runs) + len(refused) == len(sample) and len(runs) > 100 and refused
    assert all("silicon_data_source" in line and "no client concurrency" in line for line in refused)
    assert {r.info.client.kind for r in runs} == {"closed_loop"}
    first = silicon.read(path, index=str(raw["id"].iloc[0]))
    row = raw.iloc[0]
    assert first.info.client.kind == "closed_loop" and first.info.gpu in ("B200", "H100-SXM")
    assert first.requests["ttft_s"][0] == pytest.approx(row["silicon_ttft_ms"] / 1e3)
    assert first.requests["tpot_s"][0] == pytest.approx(row["silicon_tpot_ms"] / 1e3)
    assert (first.info.engine, first.info.engine_version, first.info.tp) == (row["backend"], str(row["backend_version"]), int(row["tp_size"]))
    assert detect(path) == "silicon"


def test_silicon_bad_row(traces_dir, tmp_path):
    """A row with a negative measured TTFT names the CSV line and column."""
    raw = pd.read_csv(traces_dir / "aiconfigurator" / "silicon_sample.csv").head(3)
    raw.loc[1, "silicon_ttft_ms"] = -5.0
    p = tmp_path / "silicon.csv"
    raw.to_csv(p, index=False)
    with pytest.raises(InputError) as e:
        silicon.read(p, index=1)
    _one_line(e, "row 3", "silicon_ttft_ms")


def test_request_csv(tmp_path):
    """A plain CSV is a trace-mode run whose engine the overrides supply; a negative latency is refused."""
    p = tmp_path / "requests.csv"
    p.write_text("arrival_s,prompt_tokens,output_tokens,ttft_s,e2e_s\n5.0,100,10,0.1,0.5\n5.5,200,20,0.2,0.9\n")
    assert detect(p) == "request-csv"
    run = read_run(p, engine="sglang", version="0.5.2", model="Qwen/Qwen3-8B", gpu="l40s", tp=2)
    assert list(run.requests["arrival_s"]) == [0.0, 0.5]
    assert (run.info.engine, run.info.engine_version, run.info.gpu, run.info.tp) == ("sglang", "0.5.2", "L40S", 2)
    p.write_text("arrival_s,prompt_tokens,output_tokens,ttft_s,e2e_s\n5.0,100,10,0.1,0.5\n5.5,200,20,0.2,-0.9\n")
    with pytest.raises(InputError) as e:
        read_run(p)
    _one_line(e, "requests.csv", "e2e_s")


def test_detect_unknown_file_and_formats_registry(tmp_path):
    """A file in no known layout names itself and the formats; every format is registered with
    detection, and the engine argument lists cover the three engines."""
    p = tmp_path / "notes.json"
    p.write_text("{\"hello\": 1}")
    with pytest.raises(InputError) as e:
        detect(p)
    _one_line(e, "notes.json", "vllm-bench")
    assert set(RUN_FORMATS) == {"llmservingsim", "vllm-bench", "sglang-bench", "inference-perf", "aiperf",
                                "genai-perf", "silicon", "request-csv"}
    known = known_engine_args()
    assert {"max_num_seqs", "enable_chunked_prefill"} <= known["vllm"]
    assert {"chunked_prefill_size", "mem_fraction_static"} <= known["sglang"]
    assert {"max_batch_size", "kv_cache_config"} <= known["trtllm"]


def test_save_load_keeps_lists_and_failures(tmp_path):
    """Parquet round trip of a run with ITL lists, NaN latencies and a failed request."""
    run = read_run(_vllm_new(tmp_path))
    back = ServingRun.load(run.save(tmp_path / "run.parquet"))
    assert back.info == run.info
    pd.testing.assert_frame_equal(back.requests, run.requests)
    assert back.requests["itl_s"][2] is None and not back.requests["ok"][2]
    burst = read_run(_vllm_new(tmp_path, start_times=None, queue_times=None, request_rate="inf"))
    assert burst.info.client.rate == math.inf
    assert ServingRun.load(burst.save(tmp_path / "burst.parquet")).info == burst.info
