"""Batching policies, routing and disaggregation behave as their serving systems do."""
from __future__ import annotations

import numpy as np
import pytest

from simulator import simulate

from simkit import make


def steps(res, name="llm/0"):
    return res.step_frame(name)


def test_chunked_respects_token_budget_chunk_and_batch_limits():
    """Chunked prefill: decodes + prefill tokens <= max_tokens_per_step every step, and
    long prompts are split (some steps mix decodes with a prefill chunk)."""
    res = simulate(make({"scheduler": {"policy": "chunked", "max_tokens_per_step": 700, "chunk_size": 256,
                                       "max_batch_size": 24}}, workload={"rate_rps": 25}))
    s = steps(res)
    assert (s.decode_seqs + s.prefill_tokens <= 700).all()
    assert (s.decode_seqs <= 24).all()
    assert ((s.decode_seqs > 0) & (s.prefill_tokens > 0)).any()
    assert s.prefill_tokens.max() <= 700


def test_continuous_steps_are_prefill_or_decode_never_both():
    """vLLM v0 continuous batching: a step runs new prompts or decodes, not both."""
    s = steps(simulate(make({"scheduler": {"policy": "continuous"}})))
    assert not ((s.decode_seqs > 0) & (s.prefill_tokens > 0)).any()
    assert (s.prefill_tokens > 0).any() and (s.decode_seqs > 0).any()


def test_static_batches_never_admit_into_a_running_batch():
    """Static batching: requests start in batches (same start time, at most max_batch),
    and a batch starts only after every request of the previous batch has finished."""
    res = simulate(make({"scheduler": {"policy": "static", "max_batch_size": 8}}))
    batches = res.requests.groupby("start_s").agg(size=("finish_s", "size"), end=("finish_s", "max"))
    assert batches["size"].max() <= 8 and batches["size"].max() > 1
    starts = batches.index.to_numpy()
    assert (starts[1:] >= batches["end"].to_numpy()[:-1]).all()
    assert (steps(res).decode_seqs <= 8).all()


def test_mixed_runs_whole_prompts_alongside_decodes():
    """Mixed (Orca/TRT-LLM) batches carry decodes and whole new prompts in one step."""
    res = simulate(make({"scheduler": {"policy": "mixed"}},
                        workload={"prompt_tokens": {"dist": "fixed", "mean": 300}}))
    s = steps(res)
    both = s[(s.decode_seqs > 0) & (s.prefill_tokens > 0)]
    assert len(both) > 0 and (both.prefill_tokens % 300 == 0).all()


def test_mixed_batch_waiting_holds_prompts_for_k_steps_or_a_full_step():
    """TensorRT-LLM batch waiting: a step that adds prompts to running decodes comes only
    after at least ``batch_wait_iters`` decode-only steps since the previous such step, or
    when it fills ``batch_wait_tokens_ratio`` of the token budget; prompts wait longer for
    their first token than without it, and every request still completes."""
    k, ratio, budget = 6, 0.9, 4096     # every prompt (<= 3000 tokens) fits a step
    sched = {"policy": "mixed", "max_tokens_per_step": budget}
    waited = simulate(make({"scheduler": {**sched, "batch_wait_iters": k, "batch_wait_tokens_ratio": ratio}}))
    plain = simulate(make({"scheduler": sched}))
    since, mixed_steps = None, 0
    for d, p in zip(steps(waited).decode_seqs, steps(waited).prefill_tokens):
        if d > 0 and p > 0:
            if since is not None:
                assert since >= k or d + p >= ratio * budget, (since, d, p)
            since, mixed_steps = 0, mixed_steps + 1
        elif d > 0 and since is not None:
            since += 1
    assert mixed_steps > 10
    assert waited.summary["completed"] == waited.summary["requests"]
    assert waited.summary["ttft_s"]["mean"] > 1.2 * plain.summary["ttft_s"]["mean"]


def test_disaggregated_charges_kv_transfer_on_the_link():
    """Prefill pool steps carry no decodes; the first decode comes at least one KV transfer
    after the first token; a slower (inter-node) link makes TPOT worse, not TTFT."""
    base = {"scheduler": {"policy": "disaggregated", "prefill_replicas": 1, "decode_replicas": 1}}
    local = simulate(make({**base, "scheduler": {**base["scheduler"], "mode": "local"}}, debug=False))
    glob = simulate(make({**base, "scheduler": {**base["scheduler"], "mode": "global"}}, debug=False))
    assert (steps(local, "llm/prefill0").decode_seqs == 0).all()
    assert (steps(local, "llm/decode0").prefill_tokens == 0).all()
    assert local.summary["ttft_s"]["mean"] == pytest.approx(glob.summary["ttft_s"]["mean"])
    assert glob.summary["tpot_s"]["mean"] > local.summary["tpot_s"]["mean"]
    from profiling import load_catalog
    from simulator.engine.memory import kv_bytes_per_token
    from profiling import resolve_model
    hw = load_catalog().get("H100-SXM")
    df = glob.requests[glob.requests.output_tokens > 1]
    bw, lat = hw.link(2)
    xfer = lat + df.prompt_tokens * kv_bytes_per_token(resolve_model("Llama-3.1-8B"), 1, 1, None) / bw
    gap = (df.tpot_s * (df.output_tokens - 1))       # time from first token to last
    assert (gap >= xfer * (1 - 1e-9)).all()


@pytest.mark.parametrize("router", ["round_robin", "jsq", "least_tokens", "least_kv"])
def test_routers_spread_load_over_replicas(router):
    """Every router uses all replicas; round robin splits arrivals evenly."""
    res = simulate(make({"replicas": 3, "router": router}, debug=False))
    counts = res.requests.replica.value_counts()
    assert len(counts) == 3
    if router == "round_robin":
        assert counts.max() - counts.min() <= 1


def test_heavy_light_sends_long_prompts_to_the_heavy_group():
    """heavy_light with 4 replicas and share 0.25: prompts >= threshold go to replica 0 only."""
    res = simulate(make({"replicas": 4, "router": {"policy": "heavy_light", "threshold": 1000,
                                                   "heavy_fraction": 0.25}}, debug=False))
    df = res.requests
    assert (df[df.prompt_tokens >= 1000].replica == 0).all()
    assert (df[df.prompt_tokens < 1000].replica != 0).all()


def test_closed_loop_keeps_concurrency_fixed():
    """Closed loop: a new request arrives exactly when one finishes, so at most
    `concurrency` requests are ever in the system and arrivals equal earlier finishes."""
    res = simulate(make(workload={"arrival": "closed_loop", "concurrency": 8, "num_requests": 80}))
    df = res.requests
    assert (df.arrival_s.iloc[:8] == 0).all()
    later = np.sort(df.arrival_s.iloc[8:].to_numpy())
    assert np.allclose(later, np.sort(df.finish_s.to_numpy())[:len(later)])
    ev = np.concatenate([np.c_[df.arrival_s, np.ones(len(df))], np.c_[df.finish_s, -np.ones(len(df))]])
    ev = ev[np.lexsort((ev[:, 1], ev[:, 0]))]
    assert np.cumsum(ev[:, 1]).max() <= 8


def test_several_deployments_share_the_load_by_replicas():
    """Two deployments on different GPUs: arrivals split 2:1 by replica count; costs add up."""
    from simulator import Scenario
    from simkit import BASE
    d0 = {**BASE["deployments"][0], "name": "h100", "replicas": 2}
    d1 = {**BASE["deployments"][0], "name": "a100", "hardware": "A100-80GB", "replicas": 1}
    res = simulate(Scenario.model_validate({**BASE, "debug": False, "deployments": [d0, d1]}))
    assert set(res.steps) == {"h100/0", "h100/1", "a100/0"}
    n = {k: int(v[:, 3].astype(bool).sum()) for k, v in res.steps.items()}
    assert res.summary["completed"] == 300 and res.summary["devices"] == 3
    assert abs((n["h100/0"] + n["h100/1"]) / max(n["a100/0"], 1) - 2) < 0.5
