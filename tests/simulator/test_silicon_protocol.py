"""How silicon rows are replayed: the benchmark client (who is measured) and the engine
configuration of the harness (how many whole prompts one TRT-LLM step may take)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from simulator.fidelity.calibrate import _fit_group, run_row, RowResult
from simulator.scenario import OverheadConfig
from profiling.readers.serving import read_silicon
from simulator.fidelity.silicon import (AIC_PROMPTS_PER_STEP, TOKEN_BUDGET, bench_protocol,
                                        silicon_rows, token_budget)
from simulator.simulate import simulate

AIC_TRT = "source_file=/Users/x/aic-auto-gap-analysis/data/h100_sxm/trtllm/1.0.0rc3/Qwen_Qwen3-32B.csv"
IMAX = "source_file=2026-04-06.csv; model=Llama-3.1-70B; silicon_concurrency=8"


@pytest.fixture(scope="module")
def aic_row(traces_dir) -> pd.DataFrame:
    """One real AIConfigurator-harness TRT-LLM row: Qwen3-32B fp8, TP8, 1024/128, c=16."""
    df = read_silicon(traces_dir / "aiconfigurator" / "silicon_sample.csv")
    sel = df[(df.model_path == "Qwen/Qwen3-32B") & (df.backend == "trtllm") & (df.tp_size == 8)
             & (df.isl == 1024) & (df.osl == 128) & (df.batch_size == 16) & (df["mode"] == "agg")
             & df.silicon_data_source.str.contains("aic-auto-gap-analysis")]
    assert len(sel) >= 1
    return sel.iloc[:1].reset_index(drop=True)


def test_protocol_follows_the_harness_and_backend():
    """InferenceMAX rows keep the flat 8192-token budget; AIC-harness TRT-LLM and vLLM rows
    get a 4 x isl budget (AIC's generated max_num_tokens); AIC-harness SGLang rows keep the
    flat budget."""
    assert bench_protocol(IMAX, "trtllm").prompts_per_step is None
    trt = bench_protocol(AIC_TRT, "trtllm")
    assert trt.prompts_per_step == AIC_PROMPTS_PER_STEP == 4
    assert token_budget(trt, 2048) == 8192 and token_budget(trt, 4096) == 16384
    vllm = bench_protocol(AIC_TRT.replace("trtllm", "vllm"), "vllm")
    assert vllm.prompts_per_step == 4 and token_budget(vllm, 1024) == 4096
    assert bench_protocol(AIC_TRT.replace("trtllm", "sglang"), "sglang").prompts_per_step is None
    assert token_budget(bench_protocol(IMAX, "vllm"), 1024) == TOKEN_BUDGET
    assert token_budget(bench_protocol(IMAX, "vllm"), 9000) == 9000   # a whole prompt must fit
    assert bench_protocol(None).name == "fixed" and bench_protocol(IMAX).warmup_generations == 0


def test_inferencemax_db_dump_rows_get_the_inferencemax_client():
    """The dump's ``db-dump/...; workflow_run_id=`` rows (same campaign, grid and dates as the
    dated files) are replayed with InferenceMAX's client: lengths uniform in [0.8 L, L], ten
    requests per client; a source that merely mentions a dump stays fixed-length."""
    dump = ("db-dump/2026-04-27; config_id=691; silicon_concurrency=16; measured=2026-04-03T00:00:00.000Z; "
            "workflow_run_id=711; vllm/vllm-openai:v0.19.0-cu130")
    p = bench_protocol(dump, "vllm")
    assert (p.name, p.range_ratio, p.requests_per_client) == ("inferencemax", 0.8, 10)
    assert bench_protocol("notes: db-dump of something", "vllm").name == "fixed"


def _first_wave(row) -> tuple[np.ndarray, np.ndarray]:
    sc = row.scenario.model_copy(update={"surrogate": "roofline", "workload": row.scenario.workload.model_copy(
        update={"num_requests": 2 * row.scenario.workload.concurrency})})
    res = simulate(sc)
    steps = np.concatenate(list(res.steps.values()))
    c = row.scenario.workload.concurrency
    return np.sort(res.requests.ttft_s.to_numpy()[:c]), steps[:, 3]


def test_trtllm_harness_step_takes_at_most_k_prompts(aic_row):
    """With 16 clients starting together, an engine step prefills at most 4 whole
    1024-token prompts; decode tokens count against the same max_num_tokens, so once the
    first 4 decode only 3 more fit per step: first tokens come in groups 4, 3, 3, 3, 3.
    With the legacy flat 8192-token budget the wave runs as 8, 7, 1."""
    (row,) = silicon_rows(aic_row)
    dep = row.scenario.deployments[0]
    assert (dep.scheduler.policy, dep.scheduler.max_tokens_per_step) == ("mixed", 4096)
    ttft, prefill = _first_wave(row)
    assert prefill.max() == 4096
    groups = np.unique(np.round(ttft, 9), return_counts=True)[1]
    assert groups.tolist() == [4, 3, 3, 3, 3]

    (legacy,) = silicon_rows(aic_row, prompts_per_step=None)
    assert legacy.scenario.deployments[0].scheduler.max_tokens_per_step == TOKEN_BUDGET
    ttft8, prefill8 = _first_wave(legacy)
    assert prefill8.max() == 8192
    assert np.unique(np.round(ttft8, 9), return_counts=True)[1].tolist() == [8, 7, 1]


def test_warmup_generations_leave_the_first_requests_out(aic_row):
    """``warmup_generations=n`` measures only the requests after the first n x C by arrival
    (the steady-state client); by default every request, the first wave included, counts."""
    (row,) = silicon_rows(aic_row, requests_per_client=3, surrogate="roofline")
    (warm,) = silicon_rows(aic_row, requests_per_client=3, surrogate="roofline", warmup_generations=1)
    c = row.scenario.workload.concurrency
    assert (row.warmup, warm.warmup) == (0, c)
    df = simulate(row.scenario).requests.sort_values("arrival_s", kind="stable")
    all_rr, warm_rr = run_row(row), run_row(warm)
    assert all_rr.ttft_pred == pytest.approx(df.ttft_s.mean())
    assert warm_rr.ttft_pred == pytest.approx(df.ttft_s.iloc[c:].mean())
    assert warm_rr.ttft_pred < all_rr.ttft_pred     # the first wave queues behind 3 others


def test_fit_without_kernel_scale_keeps_kernels_as_given():
    """``kernel_scale=False``: the factor stays 1 and the additive per-step / per-sequence
    terms solve the TPOT gap exactly when it is additive (rows built with step 2 ms and
    30 us per sequence on top of the kernel time)."""
    th = OverheadConfig(step_s=0.0, per_seq_s=0.0, per_token_s=0.0, request_s=0.0, kernel_scale=1.0)
    rows = []
    for i, (kern, seqs) in enumerate([(0.010, 8), (0.020, 32), (0.030, 64), (0.015, 16)]):
        meas = kern + 0.002 + 30e-6 * seqs
        rows.append(RowResult(str(i), "g", 0.1, kern, 0.1, meas, (1.0, float(seqs), float(seqs))))
    fit = _fit_group(rows, th, fit_scale=False)
    assert fit.kernel_scale == 1.0
    assert fit.step_s == pytest.approx(0.002, rel=1e-6) and fit.per_seq_s == pytest.approx(30e-6, rel=1e-6)
    scaled = _fit_group(rows, th, fit_scale=True)
    assert scaled.kernel_scale == pytest.approx(1.0, rel=1e-6)


def test_trtllm_rows_reserve_kv_for_all_output(traces_dir):
    """TRT-LLM rows run GUARANTEED_NO_EVICT (KV for prompt + output reserved at admission):
    on the real B200 Llama-3.1-70B fp8 TP1 1k/8k row at concurrency 128, whose measured TTFT
    (137 s, about 5100 decode steps) shows clients waiting for whole requests, the simulated
    TTFT counted in simulated decode steps (TTFT / TPOT: how long a request waits, apart
    from how fast the kernels are, which silicon_fidelity.py measures) is within 15% of the
    measured one; vLLM and SGLang rows keep on-demand KV."""
    df = read_silicon(traces_dir / "aiconfigurator" / "silicon_sample.csv")
    sel = df[(df.backend == "trtllm") & (df.model_path == "meta-llama/Llama-3.1-70B") & (df.system == "b200_sxm")
             & (df.precision == "fp8") & (df.tp_size == 1) & (df.isl == 1024) & (df.osl == 8192)
             & (df.batch_size == 128) & (df["mode"] == "agg")]
    rows = silicon_rows(sel)
    assert len(rows) == 1 and rows[0].scenario is not None
    assert rows[0].scenario.deployments[0].scheduler.kv_reservation == "full"
    res = simulate(rows[0].scenario)
    waited = res.summary["ttft_s"]["mean"] / res.summary["tpot_s"]["mean"]
    assert waited == pytest.approx(rows[0].ttft_s / rows[0].tpot_s, rel=0.15)
    assert res.summary["preemptions"] == 0
    others = df[(df.backend.isin(["vllm", "sglang"])) & (df["mode"] == "agg")].head(20)
    assert all(r.scenario.deployments[0].scheduler.kv_reservation == "on_demand"
               for r in silicon_rows(others) if r.scenario is not None)


def test_trtllm_rows_fuse_rope_add_and_norms(aic_row):
    """TRT-LLM rows price the engine's fused kernels (RoPE in attention, add + RMSNorm in
    the all-reduce) as free: the row's fused scenario is faster than the same scenario
    with every kernel, by less than the kernels' share of a step."""
    (r,) = silicon_rows(aic_row)
    dep = r.scenario.deployments[0]
    assert set(dep.fusions) == {"rope_into_attention", "residual_into_norm", "norm_into_allreduce"}
    unfused = r.scenario.model_copy(update={"deployments": [dep.model_copy(update={"fusions": []})]})
    fast, slow = simulate(r.scenario).summary["tpot_s"]["mean"], simulate(unfused).summary["tpot_s"]["mean"]
    assert 0.7 * slow < fast < slow


def test_attention_data_parallel_rows_are_listed_not_replayed(traces_dir):
    """Rows that run attention data-parallel (attention_dp_size > 1) are returned with that
    reason instead of being replayed as plain tensor parallelism; their TP siblings run."""
    df = read_silicon(traces_dir / "aiconfigurator" / "silicon_sample.csv")
    sel = df[df.model_path.str.contains("MiniMax-M2.5") & (df["mode"] == "agg")]
    dp = sel[sel.attention_dp_size > 1].head(3)
    tp = sel[sel.attention_dp_size == 1].head(3)
    assert len(dp) == 3 and len(tp) == 3
    for r in silicon_rows(dp):
        assert r.scenario is None and r.unsupported.startswith("attention data parallelism"), r.unsupported
    assert all(r.scenario is not None for r in silicon_rows(tp))


def test_disaggregated_rows_become_prefill_and_decode_pools(traces_dir):
    """The B200 TRT-LLM Qwen3-32B-NVFP4 disaggregated row (40 prefill workers at TP1 taking
    one prompt a step, 6 decode workers at TP4 of batch 80, 15000/500 tokens, recorded
    concurrency 480) replays as exactly those two pools in a closed loop of 480 clients,
    and every request completes; disaggregated rows with no recorded concurrency are
    listed with that reason instead of a guessed one."""
    df = read_silicon(traces_dir / "aiconfigurator" / "silicon_sample.csv")
    dis = df[df["mode"] == "disagg"]
    row = dis[dis.model_path == "nvidia/Qwen3-32B-NVFP4"]
    (r,) = silicon_rows(row, requests_per_client=1)
    assert r.scenario is not None, r.unsupported
    dep, s = r.scenario.deployments[0], r.scenario.deployments[0].scheduler
    assert (s.policy, s.prefill_replicas, dep.tp, s.decode_replicas, s.decode_tp) == ("disaggregated", 40, 1, 6, 4)
    assert (s.max_batch_size, s.max_tokens_per_step, r.scenario.workload.concurrency) == (80, 15000, 480)
    res = simulate(r.scenario)
    assert res.summary["completed"] == res.summary["requests"] == 480
    assert res.summary["ttft_s"]["mean"] > 0 and res.summary["tpot_s"]["mean"] > 0
    others = [x for x in silicon_rows(dis[dis.model_path == "Qwen/Qwen3-32B"])]
    assert others and all(x.scenario is None and "recorded concurrency" in x.unsupported for x in others)


def test_dynamo_aggregated_rows_spread_clients_over_engines(traces_dir):
    """A Dynamo deployment records one engine's max batch in batch_size and the clients in
    silicon_concurrency: the B200 TRT-LLM Qwen3-32B-NVFP4 row (c416, batch 13, TP2) replays
    as 32 TP2 engines of max batch 13 under 416 clients, and every request completes.
    Dynamo rows with no recorded concurrency (the H100 Qwen3-32B 4000/1000 rows) are listed
    with that reason, not replayed at batch_size clients; plain harness rows keep
    concurrency = batch_size on one engine."""
    df = read_silicon(traces_dir / "aiconfigurator" / "silicon_sample.csv")
    agg = df[df["mode"] == "agg"]
    row = agg[(agg.model_path == "nvidia/Qwen3-32B-NVFP4") & agg.silicon_data_source.str.contains("dynamo_version=")]
    (r,) = silicon_rows(row, requests_per_client=1)
    assert r.scenario is not None, r.unsupported
    dep = r.scenario.deployments[0]
    assert (dep.replicas, dep.tp, dep.scheduler.max_batch_size, r.scenario.workload.concurrency) == (32, 2, 13, 416)
    res = simulate(r.scenario)
    assert res.summary["completed"] == res.summary["requests"] == 416
    blind = agg[(agg.model_path == "Qwen/Qwen3-32B") & agg.silicon_data_source.str.contains("dynamo_version=")]
    listed = silicon_rows(blind)
    assert len(listed) >= 3
    assert all(x.scenario is None and "recorded concurrency" in x.unsupported for x in listed)
    plain = silicon_rows(agg[agg.silicon_data_source.str.contains("aic-auto-gap-analysis")
                             & ~agg.silicon_data_source.str.contains("dynamo_version=")
                             & (agg.model_path == "Qwen/Qwen3-32B")].head(3))
    for x in plain:
        d = x.scenario.deployments[0]
        assert (d.replicas, d.scheduler.max_batch_size) == (1, x.scenario.workload.concurrency)


def test_inferencemax_trtllm_1k1k_rows_wait_for_batches_below_tp8(traces_dir):
    """InferenceMAX's Llama-3.1-70B TRT-LLM launch script sets batch waiting (20 steps, 90%
    of the budget) for isl = osl = 1024 below TP8 only (gpt-oss's script does not). On the real B200 Llama-3.1-70B fp4 rows at
    concurrency 4, kernels alone (no framework overhead) then land within 25% of the
    measured TTFT at TP1/2/4, while without the wait they come out below half of it; the
    TP8 row runs without waiting."""
    df = read_silicon(traces_dir / "aiconfigurator" / "silicon_sample.csv")
    sel = df[df.silicon_data_source.str.contains(r"source_file=\d{4}-\d\d-\d\d\.csv")
             & df.model_path.str.contains("70B") & (df.system == "b200_sxm") & (df.backend == "trtllm")
             & (df.isl == 1024) & (df.osl == 1024) & (df.precision == "fp4") & (df.batch_size == 4)]
    assert sorted(sel.tp_size.astype(int)) == [1, 2, 4, 8]
    zero = OverheadConfig(step_s=0, per_seq_s=0, per_token_s=0)
    for r in silicon_rows(sel):
        dep = r.scenario.deployments[0]
        s = dep.scheduler
        if dep.tp == 8:
            assert s.batch_wait_iters == 0
            continue
        assert (s.batch_wait_iters, s.batch_wait_tokens_ratio) == (20, 0.9)
        off = s.model_copy(update={"batch_wait_iters": 0, "batch_wait_tokens_ratio": 0.0})
        plain = replace(r, scenario=r.scenario.model_copy(
            update={"deployments": [dep.model_copy(update={"scheduler": off})]}))
        waited, eager = run_row(r, {r.group: zero}), run_row(plain, {r.group: zero})
        assert waited.ttft_pred == pytest.approx(r.ttft_s, rel=0.25), (dep.tp, waited.ttft_pred, r.ttft_s)
        assert eager.ttft_pred < 0.5 * r.ttft_s
    other = df[df.silicon_data_source.str.contains(r"source_file=\d{4}-\d\d-\d\d\.csv")
               & df.model_path.str.contains("gpt-oss") & (df.backend == "trtllm") & (df.isl == 1024)
               & (df.osl == 1024) & (df.tp_size < 8)]
    replayed = [r for r in silicon_rows(other) if r.scenario is not None]
    assert len(replayed) >= 3   # gpt-oss's own script sets no batch waiting
    assert all(r.scenario.deployments[0].scheduler.batch_wait_iters == 0 for r in replayed)


def test_gpt_oss_rows_replay_with_window_layers_and_mxfp4_experts(traces_dir):
    """gpt-oss-120b on B200 (InferenceMAX, TRT-LLM and vLLM, 1k/1k, concurrency 4-8, TP1-8):
    replayed with 16-bit KV (its MXFP4 checkpoint has no KV scales), sliding-window layers
    and fp4 experts beside bf16 attention, kernels alone (no framework overhead) land every
    TPOT within 25% of the measured one, 12% on average, on a model never calibrated on."""
    df = read_silicon(traces_dir / "aiconfigurator" / "silicon_sample.csv")
    sel = df[df.model_path.str.contains("gpt-oss-120b") & (df.system == "b200_sxm") & (df.batch_size <= 8)
             & (df.isl == 1024) & (df.osl == 1024)]
    rows = [r for r in silicon_rows(sel, requests_per_client=2) if r.scenario is not None]
    assert len(rows) >= 15
    assert all(r.scenario.deployments[0].kv_dtype is None and r.scenario.deployments[0].dtype == "fp4" for r in rows)
    zero = OverheadConfig(step_s=0, per_seq_s=0, per_token_s=0)
    errs = [abs(run_row(r, {r.group: zero}).tpot_pred / r.tpot_s - 1) for r in rows]
    assert max(errs) < 0.25 and np.mean(errs) < 0.12, errs


def test_rows_run_their_engine_block_and_nightlies_take_the_newest_release(traces_dir):
    """Aggregated rows are replayed through the row's engine block (its backend and release,
    the harness's clients as the engine's sequence limit); a nightly build without a release
    number takes the newest documented release; engine=False keeps the plain deployment."""
    from simulator.engine.engines import engine_defaults, parse_version
    from simulator.fidelity.silicon import engine_version
    newest = max((e["since"] for e in engine_defaults()["sglang"]), key=parse_version)
    assert engine_version("sglang", "nightly-dev-20260216-d3bae71e") == newest
    assert engine_version("vllm", "0.15.1") == "0.15.1" and engine_version("vllm", None) == \
        max((e["since"] for e in engine_defaults()["vllm"]), key=parse_version)
    df = read_silicon(traces_dir / "aiconfigurator" / "silicon_sample.csv")
    sel = df[(df["mode"] == "agg") & (df.model_path == "Qwen/Qwen3-32B")].groupby("backend").head(1)
    for r, (_, src) in zip(silicon_rows(sel), sel.iterrows()):
        dep = r.scenario.deployments[0]
        assert dep.engine.name == src.backend
        limit = {"vllm": "max_num_seqs", "trtllm": "max_batch_size", "sglang": "max_running_requests"}[src.backend]
        assert dep.engine.args[limit] == dep.scheduler.max_batch_size
    (plain,) = silicon_rows(sel.head(1), engine=False)
    assert plain.scenario.deployments[0].engine is None
