"""Operator expansion: FLOPs of a step against 2 x params x tokens, TP/PP sharding, MoE
expert activation, bad parallelism, and properties over random batches."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiling.errors import HermesError
from profiling.models import load_models
from profiling.operators import (ATTN_DECODE, ATTN_PREFILL, COLLECTIVE, ELEMENTWISE, GEMM, BatchShape, active_experts,
                                 expand_step, step_cost)

MODELS = load_models()


def _flops(ops, kind=None, names=None):
    return sum(o.flops for o in ops if (kind is None or o.kind == kind) and (names is None or o.name in names))


def _matmul_params(m):
    """Parameters that multiply activations in a step: all but the input embedding table."""
    return m.param_count() - m.vocab_size * m.hidden_size


@pytest.mark.parametrize("name", ["Llama-3-8B", "Llama-2-70B", "Qwen3-32B", "phi-2"])
def test_decode_step_flops_are_2_params_tokens_plus_attention(name):
    """A decode step of T sequences costs 2 x params x T (+ attention 4 x heads x d x KV per layer) within 2%."""
    m = MODELS.get(name)
    kv = tuple(range(100, 100 + 64 * 37, 37))  # 64 sequences of different lengths
    ops = expand_step(m, BatchShape(decode_kv=kv))
    t = len(kv)
    dense = 2 * _matmul_params(m) * t
    attn = 4 * m.num_layers * m.num_heads * m.head_dim * sum(kv)
    assert _flops(ops, GEMM) == pytest.approx(dense, rel=0.01)
    assert _flops(ops, ATTN_DECODE) == pytest.approx(attn, rel=0.01)
    assert step_cost(ops)[0] == pytest.approx(dense + attn, rel=0.02)


def test_prefill_step_flops_causal_and_one_lm_head_row():
    """A prefill chunk computes the LM head for its last token only, and causal attention over q(q+1)/2 pairs."""
    m = MODELS.get("Llama-2-7B")
    q = 1024
    ops = expand_step(m, BatchShape(prefill=((q, q),)))
    vh = m.vocab_size * m.hidden_size
    dense = 2 * (_matmul_params(m) - vh) * q + 2 * vh
    attn = 4 * m.num_layers * m.num_heads * m.head_dim * q * (q + 1) / 2
    assert _flops(ops, GEMM) == pytest.approx(dense, rel=0.01)
    assert _flops(ops, ATTN_PREFILL) == pytest.approx(attn, rel=1e-9)
    # A chunk after 3000 cached tokens attends to all of them.
    later = expand_step(m, BatchShape(prefill=((q, 3000 + q),)))
    assert _flops(later, ATTN_PREFILL) == pytest.approx(attn + 4 * m.num_layers * m.num_heads * m.head_dim * q * 3000)


def test_weights_read_once_per_step():
    """A small decode step is memory-bound: its bytes are at least the weights it multiplies."""
    m = MODELS.get("Llama-3-8B")
    ops = expand_step(m, BatchShape(decode_kv=(512,)))
    gemm_bytes = sum(o.bytes for o in ops if o.kind == GEMM)
    assert gemm_bytes == pytest.approx(_matmul_params(m) * 2, rel=0.01)


@pytest.mark.parametrize("name, tp", [("Llama-3-8B", 2), ("Llama-2-70B", 4), ("Llama-2-70B", 8), ("Mixtral-8x7B", 2)])
def test_tensor_parallel_divides_gemms_and_adds_all_reduces(name, tp):
    """Under TP each device does 1/TP of the GEMM FLOPs and two all-reduces per layer of tokens x hidden."""
    m = MODELS.get(name)
    batch = BatchShape(prefill=((256, 256),), decode_kv=(300,) * 31)
    one = expand_step(m, batch)
    sharded = expand_step(m, batch, tp=tp)
    # The MoE router (tokens x experts) is replicated, not sharded.
    sharded_gemm = _flops(sharded, GEMM) - _flops(sharded, GEMM, {"moe_router"})
    full_gemm = _flops(one, GEMM) - _flops(one, GEMM, {"moe_router"})
    assert sharded_gemm * tp == pytest.approx(full_gemm, rel=1e-6)
    ars = [o for o in sharded if o.kind == COLLECTIVE and o.shape["collective"] == "all_reduce"]
    assert len(ars) == 2 and all(o.count == m.num_layers for o in ars)
    assert all(o.shape["msg_bytes"] == batch.tokens * m.hidden_size * 2 and o.shape["world"] == tp for o in ars)
    assert not [o for o in one if o.kind == COLLECTIVE]


def test_vidur_named_ops_have_true_shapes_at_tp4():
    """Vidur's mlp_up_proj / attn_pre_proj at TP 4 on Llama-2-70B map to GEMMs of the sharded width."""
    m = MODELS.get("Llama-2-70B")
    ops = {o.name: o for o in expand_step(m, BatchShape(prefill=((128, 128),)), tp=4)}
    assert ops["mlp_up_proj"].shape == {"m": 128, "n": 2 * 28672 // 4, "k": 8192}
    assert ops["attn_qkv_proj"].shape == {"m": 128, "n": (8192 + 2 * 1024) // 4, "k": 8192}
    assert ops["mlp_down_proj"].shape == {"m": 128, "n": 8192, "k": 28672 // 4}
    assert ops["attn_prefill"].shape["heads"] == 16 and ops["attn_prefill"].shape["kv_heads"] == 2


def test_elementwise_ops_have_vidur_shape_columns():
    """Elementwise ops carry what the Vidur reader writes for the same op: token rows as batch 1
    x q_len, the TP degree, and the same elements/bytes (RoPE on q and k only, plus int64
    positions; the embedding also reads int64 ids); MoE activations run per expert's rows."""
    m = MODELS.get("Llama-2-70B")
    b = BatchShape(prefill=((128, 128),), decode_kv=(50, 60, 70))
    ew = {o.name: o.shape for o in expand_step(m, b, tp=4, dtype="fp16") if o.kind == "elementwise"}
    assert set(ew) == {"input_norm", "attn_rope", "post_attn_norm", "mlp_act", "residual_add", "embedding_lookup"}
    assert all((s["batch"], s["q_len"], s["tp"]) == (1, 131, 4) for s in ew.values())
    d = 128
    assert ew["attn_rope"]["elements"] == 131 * (64 + 8) * d // 4
    assert ew["attn_rope"]["io_bytes"] == 2 * 131 * (64 + 8) * d // 4 * 2 + 8 * 131
    assert ew["embedding_lookup"]["io_bytes"] == 2 * 131 * 8192 * 2 + 8 * 131
    moe = MODELS.get("Mixtral-8x7B")
    act = [o for o in expand_step(moe, BatchShape(decode_kv=(10,) * 16), tp=2) if o.name == "mlp_act"][0]
    assert (act.count, act.shape["q_len"]) == (moe.num_layers, 16 * 2)  # one kernel over the 32 picks


def test_pipeline_parallel_splits_layers_and_sends_activations():
    """Under PP each stage runs layers/PP of every layer op and sends tokens x hidden to the next stage."""
    m = MODELS.get("Llama-2-70B")
    batch = BatchShape(decode_kv=(1000,) * 16)
    one = {o.name: o for o in expand_step(m, batch)}
    staged = {o.name: o for o in expand_step(m, batch, pp=4)}
    assert staged["mlp_up_proj"].count == one["mlp_up_proj"].count // 4 == 20
    send = staged["pp_send_recv"]
    assert send.shape["collective"] == "send_recv" and send.shape["msg_bytes"] == 16 * 8192 * 2
    assert "pp_send_recv" not in one


@pytest.mark.parametrize("tokens, active", [(1, 2), (3, 5), (1024, 8)])
def test_moe_runs_only_active_experts(tokens, active):
    """Mixtral runs top-2 of 8 experts per token: a lone token touches 2 experts, 3 tokens the
    expected 8 x (1 - (6/8)^3) = 4.6 -> 5 distinct ones, a big batch all 8. All active experts
    run as one grouped kernel per layer that reads each one's weights once, and the FLOPs are
    exactly 2 x picks x expert weights."""
    m = MODELS.get("Mixtral-8x7B")
    ops = {o.name: o for o in expand_step(m, BatchShape(decode_kv=(64,) * tokens))}
    up, down = ops["mlp_up_proj"], ops["mlp_down_proj"]
    assert up.count == down.count == m.num_layers  # one launch per layer, not one per expert
    assert up.shape["n"] == active * 2 * m.intermediate_size and down.shape["n"] == active * m.hidden_size
    expert = 3 * m.hidden_size * m.intermediate_size
    assert up.flops + down.flops == pytest.approx(2 * tokens * 2 * expert * m.num_layers, rel=1e-9)
    # Weights of exactly the active experts are read (plus activations, small in decode).
    weights = active * expert * 2 * m.num_layers
    assert weights <= up.bytes + down.bytes
    if tokens < 16:
        assert up.bytes + down.bytes <= 1.05 * weights
    assert ops["moe_router"].shape["n"] == 8


@given(st.integers(1, 512), st.integers(1, 256), st.integers(1, 4096))
@settings(max_examples=200, deadline=None)
def test_active_experts_bounded_and_monotone(top_k, experts, tokens):
    """Expected distinct experts lies in [top_k, experts] and never falls as tokens grow."""
    top_k = min(top_k, experts)
    a = active_experts(experts, top_k, tokens)
    assert top_k <= a <= experts
    assert active_experts(experts, top_k, tokens + 1) >= a
    assert active_experts(experts, top_k, 1) == top_k


@pytest.mark.parametrize("tp, pp", [(3, 1), (0, 1), (-2, 1), (1, 0), (1, 3)])
def test_invalid_parallelism(tp, pp):
    """A TP that does not divide heads/widths, or a non-positive TP/PP, or PP not dividing layers is a HermesError."""
    with pytest.raises(HermesError):
        expand_step(MODELS.get("Llama-3-8B"), BatchShape(decode_kv=(10,)), tp=tp, pp=pp)


def test_empty_batch_is_empty_step():
    """A batch with no tokens expands to no operators."""
    assert expand_step(MODELS.get("Llama-3-8B"), BatchShape()) == []


_NAMES = ["Llama-2-7B", "Mixtral-8x7B", "Qwen3-32B", "phi-2", "e5-base-v2"]


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(_NAMES), n=st.integers(1, 200), kv=st.integers(1, 8192),
       q=st.integers(1, 4096), tp=st.sampled_from([1, 2, 4]))
def test_cost_monotone_and_positive(name, n, kv, q, tp):
    """FLOPs never drop when a sequence or prompt tokens are added; every operator moves a positive number of bytes."""
    m = MODELS.get(name)
    base = BatchShape(prefill=((q, q),), decode_kv=(kv,) * n)
    more_seq = BatchShape(prefill=((q, q),), decode_kv=(kv,) * (n + 1))
    more_tok = BatchShape(prefill=((q + 1, q + 1),), decode_kv=(kv,) * n)
    ops = expand_step(m, base, tp=tp)
    f0, b0 = step_cost(ops)
    assert f0 > 0 and b0 > 0
    assert all(o.bytes > 0 and o.flops >= 0 for o in ops)
    assert step_cost(expand_step(m, more_seq, tp=tp))[0] >= f0
    assert step_cost(expand_step(m, more_tok, tp=tp))[0] >= f0


def test_fusions_remove_exactly_the_fused_kernels():
    """Each engine fusion drops its kernels and nothing else; the all-reduce fusion needs
    TP > 1 (no all-reduce to fold the norms into otherwise); an unknown name is an error."""
    from profiling.operators import FUSIONS, fused_away, layer_ops
    m = MODELS.get("Llama-2-70B")
    for tp in (1, 4):
        plain = [o.name for o in layer_ops(m, 256, tp, "bf16")]
        every = [o.name for o in layer_ops(m, 256, tp, "bf16", list(FUSIONS))]
        gone = {"attn_rope", "residual_add"} | ({"input_norm", "post_attn_norm"} if tp > 1 else set())
        assert every == [n for n in plain if n not in gone]
        assert set(plain) - set(every) == gone == fused_away(FUSIONS, tp)
    assert [o.name for o in layer_ops(m, 256, 1, "bf16", ["norm_into_allreduce"])] == \
        [o.name for o in layer_ops(m, 256, 1, "bf16")]
    with pytest.raises(HermesError, match="unknown fusion 'bogus'"):
        layer_ops(m, 256, 2, "bf16", ["bogus"])


@pytest.mark.parametrize("quant", ["fp8", "fp4"])
def test_quantized_weights_keep_activations_16_bit(quant):
    """A quantized checkpoint quantizes GEMM weights only: norms, RoPE, the activation,
    residual adds, all-reduces, the LM head and the embedding move exactly the bytes of the
    bf16 model; decode attention computes in bf16 over an FP8 KV cache and prefill attention
    in FP8 over it (TRT-LLM's FP8 context FMHA); with no KV dtype given the KV cache stays
    bf16, as the memory plan assumes."""
    m = MODELS.get("Llama-3.1-70B")
    b = BatchShape(prefill=((100, 300),), decode_kv=(500,) * 4)
    bf = {o.name: o for o in expand_step(m, b, dtype="bf16", tp=4)}
    qt = {o.name: o for o in expand_step(m, b, dtype=quant, tp=4, kv_dtype="fp8")}
    assert set(qt) == set(bf)
    for name, o in qt.items():
        if o.kind == GEMM and name != "lm_head":
            assert o.dtype == quant and o.bytes < bf[name].bytes, name
        elif o.kind in (ELEMENTWISE, COLLECTIVE) or name == "lm_head":
            assert o.dtype == "bf16" and o.bytes == bf[name].bytes, name
    assert (qt["attn_decode"].dtype, qt["attn_decode"].kv_dtype) == ("bf16", "fp8")
    assert qt["attn_prefill"].dtype == "fp8"
    plain = {o.name: o for o in expand_step(m, b, dtype=quant, tp=4)}
    assert plain["attn_prefill"].dtype == "bf16" and plain["attn_decode"].kv_dtype == "bf16"
    assert plain["attn_decode"].bytes == bf["attn_decode"].bytes
