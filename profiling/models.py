"""Model catalog: the architecture numbers a cost model needs, read from HF ``config.json``.

Built-in entries live in ``profiling/data/models.yaml`` (each written as the subset of
the model's Hugging Face config that matters, so they can be checked against the hub).
"""
from __future__ import annotations

import math
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .dtypes import dtype_bytes, is_quantized, normalize_dtype
from .errors import HermesError, InputError
from .hardware import canonical_name
from .jsonfile import read_json


class ModelSpec(BaseModel):
    """Architecture of a transformer (decoder LLM, encoder or cross-encoder)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    aliases: tuple[str, ...] = ()
    arch: Literal["decoder", "encoder", "cross-encoder"] = "decoder"
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    gated_mlp: bool = True
    num_experts: int = Field(default=1, ge=1)
    experts_per_token: int = Field(default=1, ge=1)
    moe_intermediate_size: int | None = None
    tie_embeddings: bool = False
    bias: bool = False            # linear-layer biases (BERT, phi-2, bloom, Qwen-1 QKV)
    qkv_bias: bool = False        # biases on Q/K/V only (Qwen-2)
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    position_embeddings: int = 0  # learned absolute positions (BERT, phi? no: rotary = 0)
    type_vocab_size: int = 0
    dtype: str = "bf16"
    max_context: int = 4096
    # Layers whose attention sees only the last ``sliding_window`` tokens (gpt-oss
    # alternates them with full-attention layers; HF ``layer_types``).
    sliding_window: int | None = Field(default=None, gt=0)
    sliding_layers: int = Field(default=0, ge=0)
    # What a quantized checkpoint of this model quantizes: every linear layer, or only the
    # MoE experts (gpt-oss ships MXFP4 experts beside 16-bit attention).
    quantized_layers: Literal["all", "experts"] = "all"

    @model_validator(mode="after")
    def _check(self) -> "ModelSpec":
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if self.experts_per_token > self.num_experts:
            raise ValueError("experts_per_token exceeds num_experts")
        if self.sliding_layers > self.num_layers:
            raise ValueError("sliding_layers exceeds num_layers")
        if self.sliding_layers and not self.sliding_window:
            raise ValueError("sliding_layers needs sliding_window")
        object.__setattr__(self, "dtype", normalize_dtype(self.dtype))
        return self

    # ---- derived sizes ------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def expert_intermediate(self) -> int:
        return self.moe_intermediate_size or self.intermediate_size

    def _expert_params(self) -> int:
        mats = 3 if self.gated_mlp else 2
        p = mats * self.hidden_size * self.expert_intermediate
        if self.bias:
            p += self.expert_intermediate * (mats - 1) + self.hidden_size
        return p

    def layer_params(self, active_only: bool = False) -> int:
        h = self.hidden_size
        attn = h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h
        if self.bias:
            attn += self.q_dim + 2 * self.kv_dim + h
        elif self.qkv_bias:
            attn += self.q_dim + 2 * self.kv_dim
        experts = self.experts_per_token if active_only else self.num_experts
        mlp = experts * self._expert_params()
        if self.is_moe:
            mlp += h * self.num_experts  # router
        norms = 2 * h * (2 if self.norm == "layernorm" else 1)
        return attn + mlp + norms

    def param_count(self, active_only: bool = False) -> int:
        h = self.hidden_size
        emb = self.vocab_size * h + (self.position_embeddings + self.type_vocab_size) * h
        head = 0 if (self.tie_embeddings or self.arch != "decoder") else self.vocab_size * h
        final_norm = h * (2 if self.norm == "layernorm" else 1)
        if self.arch != "decoder":
            final_norm = h * 2  # embedding layernorm
            # BERT pooler / cross-encoder classifier dense (h x h), plus a 1-logit output.
            head = h * h + h + (h + 1 if self.arch == "cross-encoder" else 0)
        return emb + head + final_norm + self.num_layers * self.layer_params(active_only)

    def expert_weight_bytes(self, dtype: str | None = None) -> float:
        """Every expert of every layer at ``dtype`` (experts are always in the GEMM dtype); 0
        for a dense model."""
        if not self.is_moe:
            return 0.0
        return self.num_layers * self.num_experts * self._expert_params() * dtype_bytes(dtype or self.dtype)

    def weight_bytes(self, dtype: str | None = None) -> float:
        """Weights at ``dtype``; a quantized checkpoint keeps the embedding table and LM head
        in the model's 16-bit dtype (ModelOpt and vLLM leave them unquantized), and
        everything but the experts too when only experts are quantized."""
        dtype = dtype or self.dtype
        if not is_quantized(dtype) or self.arch != "decoder" or is_quantized(self.dtype):
            return self.param_count() * dtype_bytes(dtype)
        if self.quantized_layers == "experts" and self.is_moe:
            quant = self.num_layers * self.num_experts * self._expert_params()
        else:
            quant = self.param_count() - self.vocab_size * self.hidden_size * (1 if self.tie_embeddings else 2)
        return quant * dtype_bytes(dtype) + (self.param_count() - quant) * dtype_bytes(self.dtype)

    @property
    def kv_layers(self) -> int:
        """Layers whose KV grows with the context. Sliding-window layers keep only their
        window (vLLM's hybrid KV manager and TensorRT-LLM free the rest), so they are left
        out, unless every layer slides (then none would be counted)."""
        full = self.num_layers - self.sliding_layers
        return full if full > 0 else self.num_layers

    def kv_bytes_per_token(self, kv_dtype: str | None = None) -> float:
        """K and V of every full-attention layer for one token (no KV for encoders)."""
        if self.arch != "decoder":
            return 0.0
        return 2 * self.kv_layers * self.kv_dim * dtype_bytes(kv_dtype or self.dtype)

    # ---- Hugging Face config ------------------------------------------
    @classmethod
    def from_hf_config(cls, config: dict[str, Any] | str | Path, name: str | None = None) -> "ModelSpec":
        """Build from a Hugging Face ``config.json`` (a dict or a path)."""
        src = None
        if not isinstance(config, dict):
            src = Path(config)
            config = read_json(src, "config.json")
        if not isinstance(config, dict):
            raise InputError("config.json must hold a JSON object", file=src)
        try:
            return cls.model_validate(_from_hf(config, name))
        except KeyError as e:
            raise InputError(f"config has no '{e.args[0]}' field", file=src) from None
        except _BadCount as e:
            raise InputError(f"field '{e.key}' must be a positive whole number (got {e.value!r})",
                             file=src) from None
        except ValidationError as e:
            err = e.errors()[0]
            raise InputError(f"field '{'.'.join(map(str, err['loc']))}': {err['msg']}", file=src) from None
        except InputError:
            raise
        except HermesError as e:  # e.g. an unknown torch_dtype
            raise InputError(str(e), file=src) from None
        except (TypeError, ValueError) as e:  # a field of the wrong type, e.g. "hidden_size": "wide"
            raise InputError(f"a field has the wrong type ({e})", file=src) from None


def _pick(cfg: dict[str, Any], *keys: str, default: Any = KeyError) -> Any:
    for k in keys:
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    if default is KeyError:
        raise KeyError(keys[0])
    return default


class _BadCount(ValueError):
    def __init__(self, key: str, value: Any) -> None:
        super().__init__(key)
        self.key, self.value = key, value


def _count(cfg: dict[str, Any], *keys: str, default: Any = KeyError) -> int:
    """The positive whole number under the first of ``keys`` present; a zero, fraction or
    string raises naming the config key (0 heads would divide by zero further on)."""
    for k in keys:
        v = cfg.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 1 or v != int(v):
            raise _BadCount(k, v)
        return int(v)
    if default is KeyError:
        raise KeyError(keys[0])
    return default


def _from_hf(cfg: dict[str, Any], name: str | None) -> dict[str, Any]:
    mtype = str(cfg.get("model_type", "")).lower()
    archs = " ".join(cfg.get("architectures") or []).lower()
    hidden = _count(cfg, "hidden_size", "n_embd", "n_embed", "d_model")
    heads = _count(cfg, "num_attention_heads", "n_head", "num_heads")
    kv = _count(cfg, "num_key_value_heads", "num_kv_heads", "multi_query_group_num", default=heads)
    if cfg.get("multi_query") and mtype in ("falcon",):
        kv = 1
    encoder = mtype in ("bert", "xlm-roberta", "roberta", "deberta-v2", "nomic_bert")
    cross = encoder and "sequenceclassification" in archs
    gated = mtype not in ("phi", "bloom", "gpt2", "gpt_neox", "opt", "falcon") and not encoder
    inter = _pick(cfg, "intermediate_size", "ffn_hidden_size", "n_inner", default=None) or 4 * hidden
    if mtype == "qwen":  # Qwen-1 counts both halves of its gated MLP in intermediate_size
        inter = int(inter) // 2
    layernorm = encoder or mtype in ("phi", "bloom", "gpt2", "gpt_neox", "opt", "falcon")
    bias = encoder or mtype in ("phi", "bloom", "gpt2", "gpt_neox", "opt")
    torch_dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    sliding = sum(t == "sliding_attention" for t in cfg.get("layer_types") or [])
    return dict(
        name=name or cfg.get("_name_or_path") or mtype or "model",
        arch="cross-encoder" if cross else ("encoder" if encoder else "decoder"),
        num_layers=_count(cfg, "num_hidden_layers", "n_layer", "num_layers"),
        hidden_size=hidden, num_heads=heads, num_kv_heads=kv,
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        intermediate_size=int(inter),
        vocab_size=_count(cfg, "vocab_size", "padded_vocab_size"),
        gated_mlp=gated,
        num_experts=_count(cfg, "num_local_experts", "num_experts", "n_routed_experts", default=1),
        experts_per_token=_count(cfg, "num_experts_per_tok", "moe_topk", default=1),
        moe_intermediate_size=cfg.get("moe_intermediate_size"),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", mtype in ("bloom", "gpt2"))),
        bias=bias, qkv_bias=bool(cfg.get("qkv_bias") or cfg.get("attention_bias") or mtype in ("qwen", "qwen2")
                                or (mtype == "internlm" and cfg.get("bias"))),
        norm="layernorm" if layernorm else "rmsnorm",
        position_embeddings=int(cfg.get("max_position_embeddings", 0)) if encoder else 0,
        type_vocab_size=int(cfg.get("type_vocab_size", 0)) if encoder else 0,
        dtype=normalize_dtype(torch_dtype) if torch_dtype != "float32" else "fp32",
        max_context=_count(cfg, "max_position_embeddings", "n_positions", "seq_length", default=4096),
        sliding_layers=sliding,
        sliding_window=int(cfg["sliding_window"]) if sliding else None,
    )


# Words checkpoint repositories append to a base model's name: chat/instruct variants and
# quantization recipes (the weight format itself is read elsewhere).
_VARIANT_WORDS = frozenset({
    "instruct", "chat", "hf", "it", "base", "fp8", "dynamic", "static", "block", "nvfp4", "mxfp4", "fp4",
    "awq", "gptq", "int4", "int8", "w8a8", "w4a16", "w4a4", "w8a16", "quantized", "kv", "marlin", "v0.1",
    "v0.2", "v0.3", "2507", "fp16", "bf16"})


class ModelCatalog:
    def __init__(self, specs: list[ModelSpec]) -> None:
        self._by_key: dict[str, ModelSpec] = {}
        self._specs: dict[str, ModelSpec] = {}
        for s in specs:
            self._specs[s.name] = s
            for a in (s.name, *s.aliases):
                self._by_key[canonical_name(a)] = s

    def get(self, name: str) -> ModelSpec:
        key = canonical_name(name)
        if key in self._by_key:
            return self._by_key[key]
        # 'meta-llama/Llama-2-7b-hf' resolves by its last path part too
        tail = canonical_name(str(name).rsplit("/", 1)[-1])
        if tail in self._by_key:
            return self._by_key[tail]
        raise HermesError(f"unknown model '{name}' (known: {', '.join(sorted(self._specs))}; "
                          "or give a path to a Hugging Face config.json)")

    def base_of(self, checkpoint: str) -> ModelSpec | None:
        """The catalog model a checkpoint repository derives from: its name without the
        variant and quantization words repositories append (``RedHatAI/Meta-Llama-3.1-8B-
        Instruct-FP8-dynamic`` is Llama-3.1-8B); None when nothing is left that the catalog knows."""
        tail = str(checkpoint).rsplit("/", 1)[-1]
        words = re.split(r"[-_]", tail)
        while words:
            for cand in ("-".join(words), "-".join(words[1:]) if words[0].lower() == "meta" else None):
                if cand and canonical_name(cand) in self._by_key:
                    return self._by_key[canonical_name(cand)]
            if words[-1].lower() not in _VARIANT_WORDS:
                return None
            words.pop()
        return None

    def __contains__(self, name: object) -> bool:
        try:
            self.get(str(name))
            return True
        except HermesError:
            return False

    def __iter__(self):
        return iter(self._specs.values())

    def names(self) -> list[str]:
        return list(self._specs)


@lru_cache(maxsize=1)
def _builtin_models() -> tuple[ModelSpec, ...]:
    text = resources.files("profiling").joinpath("data/models.yaml").read_text()
    doc = yaml.safe_load(text)
    out = []
    for entry in doc["models"]:
        entry = dict(entry)
        hf = entry.pop("hf_config")
        spec = ModelSpec.from_hf_config(hf, name=entry.pop("name"))
        out.append(spec.model_copy(update=entry))
    return tuple(out)


def load_models() -> ModelCatalog:
    return ModelCatalog(list(_builtin_models()))


def resolve_model(ref: str) -> ModelSpec:
    """A catalog name, an alias, or a path to a ``config.json``."""
    p = Path(ref)
    if p.suffix == ".json" or p.is_file():
        return ModelSpec.from_hf_config(p, name=p.parent.name or p.stem)
    return load_models().get(ref)
