"""The model's shape: one dataclass, filled from a checkpoint and saved with every checkpoint we write."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class ModelArgs:
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None  # None: same as n_heads (no grouped-query attention)
    vocab_size: int = 32016
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    hidden_dim: int | None = None  # derived from the three above unless a checkpoint states it
    norm_eps: float = 1e-5
    rope_theta: float = 10_000.0
    max_seq_len: int = 16_384  # the length the model was trained for; longer prompts still run

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.hidden_dim is None:
            self.hidden_dim = llama_hidden_dim(self.dim, self.multiple_of, self.ffn_dim_multiplier)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        assert self.n_kv_heads is not None
        return self.n_kv_heads * self.head_dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelArgs:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    # ---- conversions from the two published layouts -------------------------------------------

    @classmethod
    def from_meta_params(cls, params: dict[str, Any]) -> ModelArgs:
        """`params.json` of a Meta release. vocab_size may be -1 there (then taken from the weights)."""
        return cls(
            dim=params["dim"],
            n_layers=params["n_layers"],
            n_heads=params["n_heads"],
            n_kv_heads=params.get("n_kv_heads"),
            vocab_size=params.get("vocab_size", -1),
            multiple_of=params.get("multiple_of", 256),
            ffn_dim_multiplier=params.get("ffn_dim_multiplier"),
            # Not in Meta's releases; our own exports write it when the width is not Llama's formula.
            hidden_dim=params.get("hidden_dim"),
            norm_eps=params.get("norm_eps", 1e-5),
            rope_theta=float(params.get("rope_theta", 10_000.0)),
            max_seq_len=params.get("max_seq_len", 16_384),
        )

    def to_meta_params(self) -> dict[str, Any]:
        params = {
            "dim": self.dim,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "vocab_size": self.vocab_size,
            "multiple_of": self.multiple_of,
            "norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "max_seq_len": self.max_seq_len,
        }
        if self.ffn_dim_multiplier is not None:
            params["ffn_dim_multiplier"] = self.ffn_dim_multiplier
        if self.hidden_dim != llama_hidden_dim(self.dim, self.multiple_of, self.ffn_dim_multiplier):
            params["hidden_dim"] = self.hidden_dim
        return params

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> ModelArgs:
        """`config.json` of a Hugging Face LlamaForCausalLM (transformers 4.x or 5.x)."""
        rope = config.get("rope_parameters") or {}
        theta = rope.get("rope_theta", config.get("rope_theta", 10_000.0))
        scaling = config.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
        if rope_type not in (None, "default"):
            raise ValueError(f"rope scaling '{rope_type}' is not supported (Code Llama uses plain rotary)")
        return cls(
            dim=config["hidden_size"],
            n_layers=config["num_hidden_layers"],
            n_heads=config["num_attention_heads"],
            n_kv_heads=config.get("num_key_value_heads"),
            vocab_size=config["vocab_size"],
            hidden_dim=config["intermediate_size"],
            norm_eps=config.get("rms_norm_eps", 1e-5),
            rope_theta=float(theta),
            max_seq_len=config.get("max_position_embeddings", 16_384),
        )

    def to_hf_config(self, dtype: str = "bfloat16") -> dict[str, Any]:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "vocab_size": self.vocab_size,
            "intermediate_size": self.hidden_dim,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_seq_len,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "attention_bias": False,
            "mlp_bias": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": dtype,
        }


def llama_hidden_dim(dim: int, multiple_of: int, ffn_dim_multiplier: float | None) -> int:
    """SwiGLU width as Llama 2 computes it: 2/3 of 4*dim, scaled, rounded up to multiple_of."""
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * math.ceil(hidden / multiple_of)
