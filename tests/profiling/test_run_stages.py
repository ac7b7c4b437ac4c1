"""inference-perf runs known only by their per-stage reports: the reader, its synthesized
requests and its one-line errors (fixtures written by ``tests/stagekit.py``)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from profiling.errors import InputError
from profiling.readers.runs import detect, read_stages
from profiling.readers.runs import inference_perf_stages as ips

sys.path.append(str(Path(__file__).resolve().parents[1]))
from stagekit import Stage, write_results

SHARED = {"type": "shared_prefix", "shared_prefix": {"num_groups": 3, "num_prompts_per_group": 4,
                                                      "system_prompt_len": 200, "question_len": 150,
                                                      "output_len": 100}}


def _doc(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text())


def test_reads_a_two_stage_folder(tmp_path):
    folder = write_results(tmp_path / "results", [Stage(2, 30), Stage(5, 20, prompt_median=900)])
    assert ips.detect(folder) and ips.detect(folder / "stage_1_lifecycle_metrics.json")
    run = read_stages(folder, gpu="H100-SXM")
    assert [s.index for s in run.stages] == [0, 1]
    s0, s1 = run.stages
    assert (s0.count, s0.rate, s1.count, s1.rate) == (60, 2.0, 100, 5.0)
    assert s0.load_type == s1.load_type == "constant" and s0.concurrency is None
    doc = _doc(folder, "stage_1_lifecycle_metrics.json")
    assert s1.duration == doc["load_summary"]["send_duration"]
    assert s1.prompt_len == doc["successes"]["prompt_len"]
    assert s1.latency["time_to_first_token"] == doc["successes"]["latency"]["time_to_first_token"]
    assert s1.throughput["output_tokens_per_sec"] == doc["successes"]["throughput"]["output_tokens_per_sec"]
    # the span the throughputs divide by: successes / requests_per_sec
    assert s1.span_s == pytest.approx(100 / doc["successes"]["throughput"]["requests_per_sec"])
    assert run.summary is not None and run.summary.count == 160
    i = run.info
    assert (i.engine, i.model, i.gpu, i.format, i.client.kind) == (
        "vllm", "meta-llama/Llama-3.1-8B-Instruct", "H100-SXM", "inference-perf-stages", "trace")
    assert (i.num_requests, i.num_failed) == (160, 0) and len(run.requests) == 160
    assert list(run.requests.columns) == ["stage", "arrival_s", "prompt_tokens", "output_tokens", "prefix"]


def test_arrivals_per_stage_have_the_count_and_lie_in_the_stage_window(tmp_path):
    folder = write_results(tmp_path / "r", [Stage(3, 20), Stage(8, 15), Stage(1, 10)])
    run = read_stages(folder)
    for st in run.stages:
        a = run.requests.loc[run.requests["stage"] == st.index, "arrival_s"].to_numpy()
        assert len(a) == st.count
        assert a.min() == pytest.approx(st.start_s) and a.max() == pytest.approx(st.start_s + st.duration)
        assert np.all(np.diff(a) >= 0)
    for a, b in zip(run.stages, run.stages[1:]):
        # the next stage starts after the previous one's recorded span and the gap between stages
        assert b.start_s == pytest.approx(a.start_s + a.span_s + run.gap_s)
    assert run.gap_s > 0


def test_lengths_reproduce_the_recorded_medians(tmp_path):
    folder = write_results(tmp_path / "r", [Stage(50, 60, prompt_median=1200, output_median=300)])
    run = read_stages(folder, seed=3)
    st = run.stages[0]
    for col, dist in (("prompt_tokens", st.prompt_len), ("output_tokens", st.output_len)):
        x = run.requests[col].to_numpy()
        assert abs(np.median(x) / dist["median"] - 1) < 0.03
        assert dist["min"] - 0.5 <= x.min() and x.max() <= dist["max"] + 0.5
        assert abs(np.percentile(x, 90) / dist["p90"] - 1) < 0.05


def test_same_seed_same_requests(tmp_path):
    folder = write_results(tmp_path / "r", [Stage(4, 10), Stage(6, 10)])
    a, b, c = (read_stages(folder, seed=s).requests for s in (7, 7, 8))
    assert a.equals(b) and not a.equals(c)


def test_shared_prefix_slots_repeat_with_identical_lengths_and_prefix(tmp_path):
    folder = write_results(tmp_path / "r", [Stage(2, 30, prompt_median=350), Stage(3, 20, prompt_median=350)],
                           data=SHARED)
    run = read_stages(folder)
    slots = 12
    assert any("shared_prefix (3 groups x 4 prompts" in n for n in run.info.notes)
    for st in run.stages:
        df = run.requests[run.requests["stage"] == st.index].reset_index(drop=True)
        for i in range(len(df) - slots):
            for c in ("prompt_tokens", "output_tokens", "prefix"):  # the config's server ignores EOS
                assert df.at[i, c] == df.at[i + slots, c]
        segs = [p.split() for p in df["prefix"][:slots]]
        assert all(sum(int(s.split(":")[1]) for s in seg) == n for seg, n in zip(segs, df["prompt_tokens"][:slots]))
        # slot k is in group k % 3: its requests share the group's system prompt segment
        sys_id = [seg[0].split(":")[0] for seg in segs]
        assert sys_id[0] == sys_id[3] == sys_id[6] and sys_id[0] != sys_id[1]
    s0 = run.requests[run.requests["stage"] == 0].reset_index(drop=True)
    s1 = run.requests[run.requests["stage"] == 1].reset_index(drop=True)
    # loadgen asks the generator for data anew each stage: slot numbering restarts
    assert s0.loc[:slots - 1, "prefix"].tolist() == s1.loc[:slots - 1, "prefix"].tolist()


def test_a_concurrent_load_is_a_closed_loop_per_stage(tmp_path):
    folder = write_results(tmp_path / "r", [Stage(0, 5, concurrency=4, count=40),
                                            Stage(0, 5, concurrency=16, count=80)], load_type="concurrent")
    run = read_stages(folder)
    assert [(s.load_type, s.concurrency, s.count, s.rate) for s in run.stages] == [
        ("concurrent", 4, 40, None), ("concurrent", 16, 80, None)]
    assert run.requests["arrival_s"].isna().all()


def test_the_2026_report_layout(tmp_path):
    """Since 2026 the reports hold ``prompt_tokens`` (with totals) for ``prompt_len`` and the
    span as ``benchmark_time_seconds``."""
    folder = write_results(tmp_path / "r", [Stage(2, 10), Stage(4, 10)])
    for f in folder.glob("*_lifecycle_metrics.json"):
        doc = json.loads(f.read_text())
        succ = doc["successes"]
        succ["prompt_tokens"] = {"total": 1.0, "cached": 0.0, "uncached": 1.0, **succ.pop("prompt_len")}
        doc["benchmark_time_seconds"] = 12.5
        f.write_text(json.dumps(doc))
    run = read_stages(folder)
    assert run.stages[0].prompt_len["median"] == _doc(folder, "stage_0_lifecycle_metrics.json")[
        "successes"]["prompt_tokens"]["median"]
    assert all(s.span_s == 12.5 for s in run.stages)


def test_experiment_folder_files_are_read_as_for_a_per_request_run(tmp_path):
    exp = tmp_path / "exp"
    write_results(exp / "results", [Stage(2, 10)])
    (exp / "exp-config.yaml").write_text("model: meta-llama/Llama-3.1-8B\ntensor_parallelism: 2\n"
                                         "max_num_seqs: 64\n")
    (exp / "vllm.log").write_text("INFO 01-01 00:00:00 api_server.py:1] vLLM API server version 0.11.0\n")
    run = read_stages(exp)           # the experiment folder: its results/ is the results folder
    i = run.info
    assert (i.model, i.tp, i.engine_version, i.engine_args.get("max_num_seqs")) == (
        "meta-llama/Llama-3.1-8B", 2, "0.11.0", 64)
    assert i.source == str(exp / "results")


def test_a_per_request_report_leaves_the_folder_to_the_per_request_reader(tmp_path):
    folder = write_results(tmp_path / "r", [Stage(2, 10)])
    with pytest.raises(InputError, match="per-stage reports without per-request data"):
        detect(folder)
    (folder / "per_request_lifecycle_metrics.json").write_text("[]")
    assert not ips.detect(folder)


@pytest.mark.parametrize("path, field", [
    (("successes", "prompt_len"), "successes.prompt_len"),
    (("load_summary", "send_duration"), "load_summary.send_duration"),
    (("load_summary", "count"), "load_summary.count"),
    (("successes", "latency"), "successes.latency"),
])
def test_a_missing_field_names_file_and_field(tmp_path, path, field):
    folder = write_results(tmp_path / "r", [Stage(2, 10), Stage(3, 10)])
    f = folder / "stage_1_lifecycle_metrics.json"
    doc = json.loads(f.read_text())
    del doc[path[0]][path[1]]
    f.write_text(json.dumps(doc))
    with pytest.raises(InputError) as e:
        read_stages(folder)
    msg = str(e.value)
    assert "stage_1_lifecycle_metrics.json" in msg and f"'{field}'" in msg and "\n" not in msg


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d["successes"]["latency"]["time_to_first_token"].update(mean="fast"),
     "successes.latency.time_to_first_token.mean"),
    (lambda d: d["load_summary"].update(count=-3), "load_summary.count"),
    (lambda d: d["successes"]["prompt_len"].pop("median"), "successes.prompt_len.median"),
    (lambda d: d.update(load_summary=[1, 2]), "load_summary"),
])
def test_a_bad_value_names_file_and_field(tmp_path, edit, needle):
    folder = write_results(tmp_path / "r", [Stage(2, 10)])
    f = folder / "stage_0_lifecycle_metrics.json"
    doc = json.loads(f.read_text())
    edit(doc)
    f.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=needle.replace(".", r"\.")):
        read_stages(folder)


def test_a_trace_replay_load_is_not_supported(tmp_path):
    folder = write_results(tmp_path / "r", [Stage(2, 10)], load_type="trace_replay")
    with pytest.raises(InputError, match=r"config\.yaml, column 'load\.type': load type 'trace_replay' not "
                                         r"supported"):
        read_stages(folder)


def test_an_empty_folder_is_one_line(tmp_path):
    with pytest.raises(InputError, match="no stage_<i>_lifecycle_metrics.json here"):
        read_stages(tmp_path)
