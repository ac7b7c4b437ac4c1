"""An inference-perf run known only by its per-stage reports, replayed stage by stage
(``simulator.fidelity.stages``) and through ``hermes-sim validate`` (fixtures written by
``tests/stagekit.py``; Llama-3.1-8B on H100-SXM with the roofline surrogate for speed)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from hermes_sim.cli import main
from profiling.readers.runs import read_stages
from simulator.fidelity.stages import replay_stages

sys.path.append(str(Path(__file__).resolve().parents[1]))
from stagekit import Stage, write_results

RUN = {"gpu": "H100-SXM", "version": "0.11.0"}


@pytest.fixture
def folder(tmp_path) -> Path:
    return write_results(tmp_path / "results", [Stage(2, 20), Stage(6, 15, prompt_median=800)])


def test_replay_gives_finite_errors_per_stage(folder):
    run = read_stages(folder, **RUN)
    rep = replay_stages(run, surrogate="roofline")
    assert [f.index for f in rep.stages] == [0, 1] and rep.simulations == 1
    for f, st in zip(rep.stages, run.stages):
        assert f.requests == f.simulated == st.count
        for m in ("ttft", "e2e", "ntpot", "tpot"):
            for s in ("mean", "p50", "p90", "p99"):
                c = f.metrics[m][s]
                assert math.isfinite(c.err) and c.err == pytest.approx(c.sim / c.real - 1)
        assert math.isfinite(f.output_tokens_per_s.err)
    assert rep.summary is not None and rep.summary.index is None and rep.summary.requests == len(run.requests)
    assert math.isfinite(rep.summary.metrics["e2e"]["p90"].err)
    doc = json.loads(json.dumps(rep.to_dict()))
    assert doc["run"]["format"] == "inference-perf-stages" and doc["deployment"]["model"] == "Llama-3.1-8B"
    assert [s["rate"] for s in doc["stages"]] == [2.0, 6.0]


def test_a_stage_the_simulation_finishes_late_pushes_the_next_back(tmp_path):
    """loadgen starts a stage only once the previous one has finished: a first stage that
    saturates the simulated server delays the second, and the note says the real one did not
    saturate."""
    folder = write_results(tmp_path / "r", [Stage(80, 10, prompt_median=3000, output_median=400), Stage(2, 10)])
    run = read_stages(folder, **RUN)
    rep = replay_stages(run, surrogate="roofline")
    sim = rep.simulated
    end0 = sim.loc[sim["stage"] == 0, "finish_s"].max()
    first1 = sim.loc[sim["stage"] == 1, "arrival_s"].min()
    assert rep.simulations >= 2 and first1 >= end0 + run.gap_s > run.stages[1].start_s
    assert rep.stages[0].sim_saturated and rep.stages[0].real_saturated is False
    assert any(n.startswith("stage 0: the simulated server saturates") for n in rep.notes)
    assert any("pushed back" in n for n in rep.notes)


def test_a_concurrent_load_replays_as_closed_loops(tmp_path):
    folder = write_results(tmp_path / "r", [Stage(0, 5, concurrency=2, count=20),
                                            Stage(0, 5, concurrency=8, count=40)], load_type="concurrent")
    rep = replay_stages(read_stages(folder, **RUN), surrogate="roofline")
    assert [f.simulated for f in rep.stages] == [20, 40]
    assert rep.simulated["sim_arrival_s"].notna().all()
    assert all(np.isfinite(f.metrics["e2e"]["mean"].err) for f in rep.stages)


def test_cli_validate_writes_json_and_png_and_is_deterministic(folder, tmp_path, capsys):
    out = tmp_path / "val"
    args = ["validate", str(folder), "--gpu", "H100-SXM", "--engine-version", "0.11.0", "--surrogate", "roofline",
            "--seed", "3"]
    assert main([*args, "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "output tok/s" in captured.err and "TTFT p99" in captured.err
    doc = json.loads((out / "validate.json").read_text())
    assert len(doc["stages"]) == 2 and doc["summary"]["metrics"]["ttft"]["mean"]["real"] > 0
    assert (out / "validate.png").read_bytes()[:4] == b"\x89PNG"
    assert main([*args, "--json", "--format", "inference-perf-stages"]) == 0
    assert json.loads(capsys.readouterr().out) == doc


@pytest.mark.parametrize("extra, needle", [
    ([], "column 'gpu': GPU not recorded in the run (give --gpu)"),
    (["--gpu", "H100-SXM", "--trace", "t.csv"], "--trace does not apply to --format inference-perf-stages"),
])
def test_cli_bad_input_is_one_line_exit_2(folder, capsys, extra, needle):
    code = main(["validate", str(folder), "--engine-version", "0.11.0", *extra])
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert code == 2 and len(err) == 1 and needle in err[0]
