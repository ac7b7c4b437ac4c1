"""Model catalog: derived sizes against published figures, trace names resolve, the
Hugging Face config.json path, and bad configs."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from profiling.errors import HermesError, InputError
from profiling.hardware import canonical_name
from profiling.models import ModelSpec, load_models, resolve_model

# Published parameter counts (model cards / papers), in billions.
PUBLISHED_PARAMS = {
    "Llama-2-7B": 6.74, "Llama-2-70B": 68.98, "Llama-3-8B": 8.03, "Llama-3-70B": 70.55,
    "Llama-3.1-8B": 8.03, "Llama-3.1-70B": 70.55, "CodeLlama-34B": 33.74, "Qwen-2-7B": 7.62,
    "Qwen-72B": 72.29, "Qwen3-32B": 32.8, "Qwen3-235B-A22B": 235.1, "InternLM-20B": 20.0,
    "phi-2": 2.78, "Mixtral-8x7B": 46.7, "bloom-176b": 176.2, "MiniMax-M2.5": 230.0,
    "e5-base-v2": 0.109, "e5-large-v2": 0.335, "bge-reranker-large": 0.560,
    "Llama-3.3-70B": 70.55, "Llama-3.1-405B": 405.85, "Llama-3.2-1B": 1.24, "Llama-3.2-3B": 3.21,
    "Mistral-7B": 7.25, "Qwen2.5-14B": 14.77, "Qwen2.5-32B": 32.76, "Qwen2.5-72B": 72.71,
    "Qwen3-8B": 8.19, "Qwen3-14B": 14.77, "Qwen3-30B-A3B": 30.53,
}
PUBLISHED_ACTIVE = {"Mixtral-8x7B": 12.9, "Qwen3-235B-A22B": 22.0, "Qwen3-30B-A3B": 3.35}
# KV cache bytes per token at the model's dtype (2 x layers x kv_heads x head_dim x 2 B).
KV_BYTES = {"Llama-3-8B": 131072, "Llama-2-7B": 524288, "Llama-2-70B": 327680,
            "Mixtral-8x7B": 131072, "Qwen3-32B": 262144, "bloom-176b": 2 * 70 * 14336 * 2}


@pytest.fixture(scope="module")
def models():
    return load_models()


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_param_count_matches_published(models, name):
    """Derived parameter count is within 1.5% of the published figure."""
    got = models.get(name).param_count() / 1e9
    assert got == pytest.approx(PUBLISHED_PARAMS[name], rel=0.015)


@pytest.mark.parametrize("name", sorted(PUBLISHED_ACTIVE))
def test_moe_active_params(models, name):
    """MoE active parameters per token (top-k experts) are within 1.5% of the published figure."""
    m = models.get(name)
    assert m.is_moe
    assert m.param_count(active_only=True) / 1e9 == pytest.approx(PUBLISHED_ACTIVE[name], rel=0.015)
    assert m.param_count(active_only=True) < m.param_count() / 3


def test_weight_bytes_follow_dtype(models):
    """Weight bytes are parameters x bytes per element at the model's dtype or the one asked;
    a quantized checkpoint keeps the embedding table and LM head (2 x 128256 x 4096) in bf16."""
    m = models.get("Llama-3-8B")
    assert m.dtype == "bf16"
    assert m.weight_bytes() == 2 * m.param_count()
    kept = 2 * 128256 * 4096
    assert m.weight_bytes("fp8") == (m.param_count() - kept) + 2 * kept
    assert m.weight_bytes("fp4") == (m.param_count() - kept) / 2 + 2 * kept
    assert models.get("e5-base-v2").weight_bytes() == 4 * models.get("e5-base-v2").param_count()


@pytest.mark.parametrize("name", sorted(KV_BYTES))
def test_kv_bytes_per_token(models, name):
    """KV bytes per token match 2 x layers x kv_heads x head_dim x dtype bytes."""
    m = models.get(name)
    assert m.kv_bytes_per_token() == KV_BYTES[name]
    assert m.kv_bytes_per_token("fp8") == KV_BYTES[name] / 2


def test_encoders_have_no_kv_and_right_arch(models):
    """Encoders and the cross-encoder reranker are recognised from their configs and hold no KV cache."""
    assert models.get("intfloat/e5-base-v2").arch == "encoder"
    assert models.get("BAAI/bge-reranker-large").arch == "cross-encoder"
    assert models.get("e5-large-v2").kv_bytes_per_token() == 0
    assert not models.get("e5-base-v2").gated_mlp and models.get("e5-base-v2").norm == "layernorm"


def test_family_quirks(models):
    """Families whose configs differ map right: bloom's n_embed, Qwen-1's doubled intermediate, phi-2's plain MLP."""
    bloom = models.get("bloom-176b")
    assert (bloom.hidden_size, bloom.num_heads, bloom.tie_embeddings, bloom.gated_mlp) == (14336, 112, True, False)
    assert models.get("Qwen-72B").intermediate_size == 24576 and models.get("Qwen-72B").qkv_bias
    assert not models.get("phi-2").gated_mlp and models.get("phi-2").bias
    assert models.get("Qwen-2-7B").qkv_bias and not models.get("Qwen3-32B").qkv_bias
    assert models.get("Qwen3-32B").head_dim == 128 and models.get("Qwen3-32B").q_dim == 8192


def test_no_alias_shared_by_two_models():
    """An alias names one model only."""
    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "profiling/data/models.yaml").read_text())
    seen: dict[str, str] = {}
    for m in doc["models"]:
        for a in (m["name"], *m.get("aliases", [])):
            key = canonical_name(a)
            assert seen.setdefault(key, m["name"]) == m["name"], f"{a}: {seen[key]} and {m['name']}"


# silicon_sample models the catalog does not describe: MLA / hybrid-attention / sliding-window
# architectures whose KV and FLOPs a GQA ModelSpec would get wrong.
UNMODELLED = {"deepseek-ai/DeepSeek-R1", "deepseek-ai/DeepSeek-V3", "nvidia/DeepSeek-R1-NVFP4",
              "nvidia/DeepSeek-V3.1-NVFP4", "MiniMaxAI/MiniMax-M2.5", "openai/gpt-oss-120b",
              "Qwen/Qwen3.5-397B-A17B", "moonshotai/Kimi-K2.5", "zhipuai/GLM-5"}


def test_trace_model_names_resolve(models, traces_dir):
    """Model names used by Vidur directories, Splitwise and silicon_sample resolve to catalog entries."""
    compute = traces_dir / "vidur/data/profiling/compute"
    names = {f"{p.parent.name}/{p.name}" for p in compute.glob("*/*/*")}
    with open(traces_dir / "splitwise/perf_model.csv") as f:
        names |= {r["model"] for r in csv.DictReader(f)}
    with open(traces_dir / "aiconfigurator/silicon_sample.csv") as f:
        silicon = {r["model_path"] for r in csv.DictReader(f)}
    names |= silicon - UNMODELLED
    assert {"meta-llama/Meta-Llama-3-8B", "Qwen/Qwen-2-7B", "internlm/internlm-20b", "microsoft/phi-2",
            "llama2-70b", "bloom-176b", "Qwen/Qwen3-32B"} <= names
    missing = sorted(n for n in names if n not in models)
    assert not missing, missing
    assert models.get("llama2-70b").name == "Llama-2-70B"
    assert models.get("meta-llama/Llama-3.1-8B-Instruct").name == "Llama-3.1-8B"


def test_vidur_shapes_match_catalog(models, traces_dir):
    """Heads, KV heads, width, MLP width and gating in Vidur's profiled configs equal the catalog's."""
    checked = 0
    for f in sorted((traces_dir / "vidur/data/profiling/compute").glob("*/*/*/mlp.csv")):
        row = pd.read_csv(f, nrows=1).iloc[0]
        m = models.get(f"{f.parent.parent.name}/{f.parent.name}")
        assert (m.num_heads, m.num_kv_heads, m.hidden_size, m.intermediate_size, m.gated_mlp) == (
            row.n_head, row.n_kv_head, row.n_embd, row.n_expanded_embd, bool(row.use_gated_mlp)), f
        checked += 1
    assert checked >= 10


LLAMA3_CONFIG = {  # meta-llama/Meta-Llama-3-8B config.json as published
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 8192,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 500000.0,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.40.0.dev0",
    "use_cache": True, "vocab_size": 128256}


def test_from_hf_config_file(tmp_path, models):
    """A real config.json on disk builds the same spec as the catalog entry, by path too."""
    d = tmp_path / "Meta-Llama-3-8B"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(LLAMA3_CONFIG, indent=2))
    m = ModelSpec.from_hf_config(d / "config.json", name="mine")
    ref = models.get("Llama-3-8B")
    assert m.param_count() == ref.param_count() and m.kv_bytes_per_token() == ref.kv_bytes_per_token()
    assert (m.name, m.max_context, m.dtype) == ("mine", 8192, "bf16")
    r = resolve_model(str(d / "config.json"))
    assert r.name == "Meta-Llama-3-8B" and r.param_count() == ref.param_count()


def test_from_hf_config_moe(tmp_path):
    """A Mixtral-style config gives experts and top-k."""
    cfg = {**LLAMA3_CONFIG, "model_type": "mixtral", "num_local_experts": 8, "num_experts_per_tok": 2,
           "vocab_size": 32000}
    f = tmp_path / "config.json"
    f.write_text(json.dumps(cfg))
    m = ModelSpec.from_hf_config(f)
    assert (m.num_experts, m.experts_per_token, m.is_moe) == (8, 2, True)


@pytest.mark.parametrize("text, words", [
    ("{not json", ["not valid JSON"]),
    (json.dumps({k: v for k, v in LLAMA3_CONFIG.items() if k != "hidden_size"}), ["hidden_size"]),
    (json.dumps({**LLAMA3_CONFIG, "num_key_value_heads": 5}), ["num_kv_heads"]),
    (json.dumps({**LLAMA3_CONFIG, "num_hidden_layers": 0}), ["num_hidden_layers"]),
    (json.dumps({**LLAMA3_CONFIG, "torch_dtype": "float64"}), ["float64"]),
    (json.dumps({**LLAMA3_CONFIG, "hidden_size": "wide"}), ["wide"]),
    (json.dumps([1, 2]), ["object"]),
])
def test_bad_config_names_file(tmp_path, text, words):
    """A malformed config.json gives one HermesError line naming the file and what is wrong."""
    f = tmp_path / "config.json"
    f.write_text(text)
    with pytest.raises(HermesError) as e:
        ModelSpec.from_hf_config(f)
    msg = str(e.value)
    assert "\n" not in msg
    assert all(w in msg for w in words), msg
    assert isinstance(e.value, InputError) and str(f) in msg


def test_missing_config_and_unknown_model(tmp_path):
    """A missing config.json and an unknown model name are clear HermesErrors."""
    with pytest.raises(InputError, match="not found"):
        resolve_model(str(tmp_path / "config.json"))
    with pytest.raises(HermesError, match="unknown model 'gpt-7'"):
        resolve_model("gpt-7")
