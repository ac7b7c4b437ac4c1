"""Engine settings the AIConfigurator harness did not record (a token budget of k x isl;
whether the engine runs one sequence fewer than its clients): ``fit_engines`` picks them
per group (in that harness, one model at one TP on one stack and GPU) on the calibration rows,
``apply_engines`` replays rows with them, and the
overhead file keeps them."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from profiling.errors import InputError
from simulator.fidelity.calibrate import EngineFit, apply_engines, fit_engines, load_overhead, run_rows, save_overhead
from simulator.scenario import OverheadConfig
from profiling.readers.serving import read_silicon
from simulator.fidelity.silicon import silicon_rows, with_engine


@pytest.fixture(scope="module")
def sample(traces_dir):
    return read_silicon(traces_dir / "aiconfigurator" / "silicon_sample.csv")


def _rows(sample, model: str):
    """Real AIC-harness TRT-LLM rows on H100 (TP4, osl 128, concurrency 8 and 16)."""
    sel = sample[(sample.model_path == model) & (sample.backend == "trtllm") & (sample.tp_size == 4)
                 & (sample.osl == 128) & sample.batch_size.isin([8, 16]) & (sample["mode"] == "agg")
                 & sample.silicon_data_source.str.contains("aic-auto-gap-analysis")]
    assert len(sel) >= 4
    return silicon_rows(sel.reset_index(drop=True), surrogate="roofline", requests_per_client=3)


def test_with_engine_sets_only_what_the_harness_did_not_record(sample):
    """An AIC-harness TRT-LLM row gets max_tokens_per_step = chunk_size = k x isl and
    max_batch_size = clients - held slots; an InferenceMAX row (its budget and batch are
    recorded) is returned unchanged."""
    row = _rows(sample, "Qwen/Qwen3-32B")[0]
    clients = row.scenario.workload.concurrency
    assert row.budget_isl == int(row.scenario.workload.prompt_tokens.mean)
    s = with_engine(row, 3, 1).scenario.deployments[0].scheduler
    assert s.max_tokens_per_step == s.chunk_size == 3 * row.budget_isl
    assert s.max_batch_size == clients - 1
    assert row.group == "trtllm-aic:Qwen3-32B:tp4/h100_sxm"   # the harness calibrates each model and TP on its own
    tp8 = sample[(sample.model_path == "Qwen/Qwen3-32B") & (sample.backend == "trtllm") & (sample.tp_size == 8)
                 & sample.silicon_data_source.str.contains("aic-auto-gap-analysis")].head(1)
    assert silicon_rows(tp8)[0].group == "trtllm-aic:Qwen3-32B:tp8/h100_sxm"
    imax = sample[sample.silicon_data_source.str.contains(r"source_file=\d{4}-\d\d-\d\d\.csv")
                  & (sample.model_path == "meta-llama/Llama-3.1-70B")].head(1)
    (r,) = silicon_rows(imax)
    assert r.budget_isl == 0 and with_engine(r, 3, 1) is r


def test_fit_engines_recovers_the_settings_that_made_the_measurements(sample):
    """Two models of one stack/GPU whose 'measured' TTFT/TPOT are the simulator's own
    predictions (default overhead): Qwen3-32B at 3 x isl with every slot used, Llama-3.1-8B
    at 2 x isl with one slot held. Fitting over the grid finds each model's settings, and
    apply_engines replays the rows with them."""
    truth = {"Qwen/Qwen3-32B": EngineFit(3, 0), "meta-llama/Llama-3.1-8B-Instruct": EngineFit(2, 1)}
    made = []
    for model, e in truth.items():
        rows = _rows(sample, model)[:4]
        pred = run_rows([with_engine(r, e.prompts_per_step, e.held_slots) for r in rows], None)
        made += [replace(r, ttft_s=p.ttft_pred, tpot_s=p.tpot_pred) for r, p in zip(rows, pred)]
    grid = (EngineFit(2, 0), EngineFit(3, 0), EngineFit(4, 0), EngineFit(2, 1), EngineFit(3, 1))
    engines = fit_engines(made, grid=grid, iterations=1)
    assert engines == {"trtllm-aic:Qwen3-32B:tp4/h100_sxm": truth["Qwen/Qwen3-32B"],
                       "trtllm-aic:Llama-3.1-8B-Instruct:tp4/h100_sxm": truth["meta-llama/Llama-3.1-8B-Instruct"]}
    for r in apply_engines(made, engines):
        e = engines[r.group]
        s = r.scenario.deployments[0].scheduler
        assert s.max_tokens_per_step == e.prompts_per_step * r.budget_isl
        assert s.max_batch_size == r.scenario.workload.concurrency - e.held_slots


def test_overhead_file_keeps_the_engine_settings_and_rejects_bad_ones(tmp_path):
    """save_overhead writes the overhead and the engine settings per group; load_overhead
    reads them back (and still reads a bare group -> overhead mapping); a non-integer
    budget is an error naming the file and the group."""
    theta = {"trtllm-aic:Qwen3-32B:tp4/h100_sxm": OverheadConfig(step_s=1e-3), "vllm-inferencemax/b200_sxm": OverheadConfig()}
    engines = {"trtllm-aic:Qwen3-32B:tp4/h100_sxm": EngineFit(3, 1)}
    p = tmp_path / "o.json"
    save_overhead(theta, p, engines)
    assert load_overhead(p) == (theta, engines)
    doc = json.loads(p.read_text())
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(doc["overhead"]))
    assert load_overhead(bare) == (theta, {})
    doc["engine"]["trtllm-aic:Qwen3-32B:tp4/h100_sxm"]["prompts_per_step"] = 2.5
    p.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"o\.json.*engine\.trtllm-aic:Qwen3-32B:tp4/h100_sxm.*prompts_per_step"):
        load_overhead(p)
