"""Sliding-window attention layers and experts-only quantization (gpt-oss): parsing, the
attention work of windowed layers, the KV they keep, and which GEMMs a quantized
checkpoint quantizes."""
from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st
import pytest

from profiling.models import ModelSpec, load_models
from profiling.operators import ATTN_DECODE, ATTN_PREFILL, GEMM, BatchShape, expand_step, windowed_prefill


@pytest.fixture(scope="module")
def oss():
    return load_models().get("openai/gpt-oss-120b")


def test_gpt_oss_parses_alternating_window_layers(oss):
    """gpt-oss-120b: 36 layers, every other one a 128-token sliding window, 128 experts top-4,
    117B parameters (published 116.8B), MXFP4 experts only."""
    assert (oss.num_layers, oss.sliding_layers, oss.sliding_window) == (36, 18, 128)
    assert (oss.num_experts, oss.experts_per_token, oss.quantized_layers) == (128, 4, "experts")
    assert oss.param_count() / 1e9 == pytest.approx(116.83, rel=0.005)
    cfg = {"model_type": "x", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 3,
           "vocab_size": 100, "sliding_window": 32,
           "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]}
    m = ModelSpec.from_hf_config(cfg, name="x")
    assert (m.sliding_layers, m.sliding_window) == (2, 32)
    # a sliding_window without layer_types marking window layers (Qwen2 configs carry one
    # with use_sliding_window false) leaves every layer full
    plain = ModelSpec.from_hf_config({**cfg, "layer_types": None}, name="y")
    assert (plain.sliding_layers, plain.sliding_window) == (0, None)


def test_window_layers_stop_growing_with_context(oss):
    """Decode: the window layers' attention reads the same bytes at 4k and 8k context while
    the full layers' doubles; each op runs on its own share of the 36 layers."""
    def attn(kv):
        ops = expand_step(oss, BatchShape(decode_kv=(kv,) * 8), dtype="fp4", tp=2)
        return {o.name: o for o in ops if o.kind == ATTN_DECODE}
    a, b = attn(4000), attn(8000)
    assert a["attn_decode"].count == a["attn_decode_window"].count == 18
    assert b["attn_decode_window"].bytes == a["attn_decode_window"].bytes
    assert b["attn_decode"].bytes == pytest.approx(2 * a["attn_decode"].bytes, rel=0.01)
    assert a["attn_decode_window"].shape["kv_len"] == 128


@settings(max_examples=200, deadline=None)
@given(q=st.integers(1, 20000), extra=st.integers(0, 20000), window=st.integers(1, 8192))
@example(q=3, extra=0, window=2).via("the 2x a rounding once gave")
@example(q=43, extra=0, window=32).via("a chunk at the sequence start")
def test_windowed_prefill_does_the_windowed_work(q, extra, window):
    """Property: the plain causal op standing in for a windowed chunk counts between 1x and
    1.6x the query-key pairs a sliding-window kernel computes, within 5% for windows of 64
    keys or more (gpt-oss: 128), also for a chunk that starts near the sequence start
    (exactly the causal chunk when the context fits the window), never the ~q^2/2 of
    unwindowed attention. (q=3 over 3 keys with a window of 2 once counted 2x.)"""
    kv = q + extra
    exact = sum(min(window, kv - q + i + 1) for i in range(q)) if q <= 2000 else None
    bs, qq, kk = windowed_prefill(q, kv, window)
    assert 1 <= qq <= kk <= kv
    proxy = bs * (qq * (kk - qq) + qq * (qq + 1) / 2)
    if kv <= window:
        assert (bs, qq, kk) == (1, q, kv)
    if exact is not None:
        assert exact <= proxy * (1 + 1e-9) and proxy <= (1.05 if window >= 64 else 1.6) * exact


def test_only_full_layers_hold_kv_per_token(oss):
    """KV per token counts the 18 full-attention layers (8 KV heads x 64 x K,V x 2 bytes);
    the window layers keep only their last 128 tokens."""
    assert oss.kv_bytes_per_token("bf16") == 2 * 18 * 8 * 64 * 2
    assert oss.kv_layers == 18


def test_experts_only_quantization(oss):
    """An fp4 gpt-oss step runs expert GEMMs in fp4 and the attention projections, router
    and LM head in bf16; its weights are 16-bit except the experts."""
    ops = {o.name: o for o in expand_step(oss, BatchShape(prefill=((512, 512),)), dtype="fp4", tp=1)}
    assert ops["mlp_up_proj"].dtype == ops["mlp_down_proj"].dtype == "fp4"
    assert {ops[n].dtype for n in ("attn_qkv_proj", "attn_out_proj", "moe_router", "lm_head")} == {"bf16"}
    experts = oss.num_layers * oss.num_experts * 3 * oss.hidden_size * oss.expert_intermediate
    assert oss.weight_bytes("fp4") == pytest.approx(experts * 0.5 + (oss.param_count() - experts) * 2)
    assert {o.kind for o in ops.values()} >= {GEMM, ATTN_PREFILL}
