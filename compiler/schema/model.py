"""The `model` section: an OLMo architecture, from a preset plus explicit overrides.

Presets give every field explicitly (ai2-olmo's own defaults are GPT-2-like and must never leak in).
`olmo-1b` equals the model section of allenai/OLMo `configs/official/OLMo-1B.yaml`; `tiny` is olmo-1b with
a small width, depth and context (and `normal` init), stated as what differs; vocabulary fields
are not here: they follow from the `tokenizer` section (see `compiler.schema.data.TokenizerInfo`).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import StrictModel

OLMO_1B: dict[str, Any] = dict(
    d_model=2048, n_heads=16, n_kv_heads=None, n_layers=16, mlp_ratio=8, mlp_hidden_size=None,
    weight_tying=True, rope=True, rope_theta=10000.0, clip_qkv=None, include_bias=False,
    block_type="sequential", layer_norm_type="default", layer_norm_with_affine=False,
    bias_for_layer_norm=False, attention_layer_norm=False,
    attention_layer_norm_with_affine=False, activation_type="swiglu", attention_dropout=0.0,
    residual_dropout=0.0, embedding_dropout=0.0, max_sequence_length=2048,
    init_fn="mitchell", init_std=0.02,
)
PRESETS: dict[str, dict[str, Any]] = {
    "olmo-1b": OLMO_1B,
    "tiny": OLMO_1B | dict(d_model=128, n_heads=4, n_layers=4, mlp_ratio=4, max_sequence_length=256,
                           init_fn="normal"),
}


class ModelSection(StrictModel):
    """An OLMo decoder (ai2-olmo `ModelConfig` fields, all explicit)."""

    preset: Literal["olmo-1b", "tiny", "custom"] = Field(
        "tiny", description="Starting point; every other field overrides it. `custom` = no preset."
    )
    d_model: int = Field(description="Residual stream width.", gt=0)
    n_heads: int = Field(description="Attention heads per layer.", gt=0)
    n_kv_heads: int | None = Field(description="Key/value heads (GQA); null = n_heads.", gt=0)
    n_layers: int = Field(description="Transformer blocks. [open] in the paper: 16 (official) or 24.", gt=0)
    mlp_ratio: int = Field(description="MLP hidden size / d_model (SwiGLU halves it).", gt=0)
    mlp_hidden_size: int | None = Field(description="Explicit MLP hidden size; overrides mlp_ratio.")
    weight_tying: bool = Field(description="Tie input embedding and output layer.")
    rope: bool = Field(description="Rotary position embeddings.")
    rope_theta: float = Field(description="RoPE base.", gt=0)
    clip_qkv: float | None = Field(description="Clip q, k, v to ±clip_qkv; null = off.")
    include_bias: bool = Field(description="Biases in linear layers (HF export needs false).")
    block_type: Literal["sequential"] = Field(description="OLMo block type.")
    layer_norm_type: Literal["default"] = Field(description="OLMo LayerNorm type.")
    layer_norm_with_affine: bool = Field(description="Learnable LayerNorm scale/shift (HF export needs false).")
    bias_for_layer_norm: bool = Field(description="LayerNorm bias.")
    attention_layer_norm: bool = Field(description="QK LayerNorm (HF export needs false).")
    attention_layer_norm_with_affine: bool = Field(description="Affine QK LayerNorm.")
    activation_type: Literal["swiglu", "gelu", "relu"] = Field(description="MLP activation.")
    attention_dropout: float = Field(ge=0, lt=1, description="Dropout on attention probabilities.")
    residual_dropout: float = Field(ge=0, lt=1, description="Dropout on residual branches.")
    embedding_dropout: float = Field(ge=0, lt=1, description="Dropout on embeddings.")
    max_sequence_length: int = Field(gt=0, description="Longest sequence the model accepts, tokens.")
    init_fn: Literal["normal", "mitchell", "kaiming_normal", "fan_in", "full_megatron"] = Field(
        description="OLMo parameter initialisation scheme."
    )
    init_std: float = Field(gt=0, description="Std for `normal` init.")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", "tiny")
        base = dict(PRESETS.get(preset, {}))
        base.update(data)
        base.setdefault("preset", preset)
        return base

    @model_validator(mode="after")
    def _check_shape(self) -> "ModelSection":
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.n_kv_heads is not None and self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})")
        return self

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_params_estimate(self) -> int:
        """Non-embedding parameters, for cost estimates."""
        hidden = self.mlp_hidden_size or self.mlp_ratio * self.d_model
        per_layer = 4 * self.d_model * self.d_model + self.d_model * hidden * 3 // 2
        return self.n_layers * per_layer
