"""ai2-olmo `OLMo` → transformers `OlmoForCausalLM`, with exact logit parity.

Why a converter of our own: ai2-olmo's `hf_olmo` wrapper is broken on transformers 5 (STACK.md). The
facts that decide parity (all checked by tests/stages/test_hf_export.py):
- HF `vocab_size` is OLMo's `embedding_size` (the padded embedding), not the tokenizer's vocab size;
- `att_proj` rows are [q; k; v] (k, v of `n_kv_heads × head_dim` each);
- `ff_proj` rows are [up; gate] — OLMo's SwiGLU computes `silu(second half) * first half`;
- `attn_out` → o_proj, `ff_out` → down_proj, `wte` → embed_tokens, `transformer.ff_out` → lm_head
  unless tied; `clip_qkv` must be copied into the config.
HF OLMo has parameter-free LayerNorms (eps 1e-5), no MLP biases, no QK norm and always RoPE: any other
OLMo architecture is refused before training starts (`check_representable`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from compiler.errors import StageError

if TYPE_CHECKING:
    import torch
    from olmo.config import ModelConfig
    from transformers import OlmoConfig


def check_representable(cfg: "ModelConfig") -> None:
    """Raise StageError listing every OLMo setting HF `OlmoForCausalLM` cannot reproduce."""
    problems = []
    if cfg.include_bias:
        problems.append("include_bias: true (HF OLMo has no MLP biases)")
    if cfg.layer_norm_with_affine:
        problems.append("layer_norm_with_affine: true (HF OLMo LayerNorm has no parameters)")
    if cfg.bias_for_layer_norm:
        problems.append("bias_for_layer_norm: true (HF OLMo LayerNorm has no bias)")
    if cfg.attention_layer_norm:
        problems.append("attention_layer_norm: true (HF OLMo has no QK LayerNorm)")
    if not cfg.rope or cfg.alibi:
        problems.append("rope: false / alibi (HF OLMo always uses RoPE)")
    if cfg.activation_type != "swiglu":
        problems.append(f"activation_type: {cfg.activation_type} (HF OLMo MLP is SwiGLU)")
    if cfg.block_type != "sequential":
        problems.append(f"block_type: {cfg.block_type} (HF OLMo blocks are sequential)")
    if str(cfg.layer_norm_type) != "default" or cfg.layer_norm_eps != 1e-5:
        problems.append(f"layer_norm_type {cfg.layer_norm_type} / eps {cfg.layer_norm_eps} "
                        "(HF OLMo: default LayerNorm, eps 1e-5)")
    if cfg.scale_logits or cfg.embedding_layer_norm or cfg.norm_after:
        problems.append("scale_logits / embedding_layer_norm / norm_after (not in HF OLMo)")
    if cfg.multi_query_attention:
        problems.append("multi_query_attention (write n_kv_heads: 1 instead)")
    if problems:
        raise StageError("this OLMo architecture cannot be exported to HF OlmoForCausalLM: "
                         + "; ".join(problems))


def _hidden_size(cfg: "ModelConfig") -> int:
    return cfg.mlp_hidden_size if cfg.mlp_hidden_size is not None else cfg.mlp_ratio * cfg.d_model


def hf_config(cfg: "ModelConfig") -> "OlmoConfig":
    """The HF config of an OLMo model config (after `check_representable`)."""
    from transformers import OlmoConfig

    check_representable(cfg)
    return OlmoConfig(
        vocab_size=cfg.embedding_size or cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=_hidden_size(cfg) // 2,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads or cfg.n_heads,
        hidden_act="silu",
        max_position_embeddings=cfg.max_sequence_length,
        initializer_range=cfg.init_std,
        pad_token_id=cfg.pad_token_id,
        eos_token_id=cfg.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=cfg.weight_tying,
        rope_theta=float(cfg.rope_theta),
        attention_bias=False,
        attention_dropout=0.0,
        clip_qkv=cfg.clip_qkv,
    )


def convert_state_dict(cfg: "ModelConfig", olmo_sd: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """Rename and split OLMo weights into HF OlmoForCausalLM keys."""
    head_dim = cfg.d_model // cfg.n_heads
    kv_dim = (cfg.n_kv_heads or cfg.n_heads) * head_dim
    sd = {k.removeprefix("model."): v for k, v in olmo_sd.items()}  # tolerate a wrapped model
    out = {"model.embed_tokens.weight": sd["transformer.wte.weight"]}
    for i in range(cfg.n_layers):
        src, dst = f"transformer.blocks.{i}.", f"model.layers.{i}."
        q, k, v = sd[src + "att_proj.weight"].split([cfg.d_model, kv_dim, kv_dim], dim=0)
        up, gate = sd[src + "ff_proj.weight"].chunk(2, dim=0)
        out.update({
            dst + "self_attn.q_proj.weight": q, dst + "self_attn.k_proj.weight": k,
            dst + "self_attn.v_proj.weight": v, dst + "self_attn.o_proj.weight": sd[src + "attn_out.weight"],
            dst + "mlp.up_proj.weight": up, dst + "mlp.gate_proj.weight": gate,
            dst + "mlp.down_proj.weight": sd[src + "ff_out.weight"],
        })
    if not cfg.weight_tying:
        out["lm_head.weight"] = sd["transformer.ff_out.weight"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def to_hf_model(cfg: "ModelConfig", olmo_sd: dict[str, "torch.Tensor"]):
    """An `OlmoForCausalLM` (fp32, eval mode) holding exactly the OLMo weights."""
    from transformers import OlmoForCausalLM

    model = OlmoForCausalLM(hf_config(cfg)).float()
    missing, unexpected = model.load_state_dict(convert_state_dict(cfg, olmo_sd), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and cfg.weight_tying)]
    if missing or unexpected:
        raise StageError(f"HF export key mismatch: missing {missing}, unexpected {unexpected}")
    return model.eval()


def save_tokenizer(tokenizer_dir: Path, out_dir: Path) -> None:
    """Save `tokenizer.json` as a PreTrainedTokenizerFast with EOS / pad taken from `info.json` ids."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    info = json.loads((tokenizer_dir / "info.json").read_text())
    tok_file = tokenizer_dir / "tokenizer.json"
    raw = Tokenizer.from_file(str(tok_file))
    eos, pad = raw.id_to_token(info["eos_token_id"]), raw.id_to_token(info["pad_token_id"])
    if eos is None or pad is None:
        raise StageError(f"{tok_file}: eos id {info['eos_token_id']} or pad id {info['pad_token_id']} "
                         "is not in the vocabulary")
    PreTrainedTokenizerFast(tokenizer_file=str(tok_file), eos_token=eos, pad_token=pad).save_pretrained(out_dir)


def export(cfg: "ModelConfig", olmo_sd: dict[str, "torch.Tensor"], tokenizer_dir: Path, out_dir: Path) -> None:
    """Write `out_dir` as an HF checkpoint (weights + config + tokenizer) that loads offline."""
    out_dir.mkdir(parents=True, exist_ok=True)
    to_hf_model(cfg, olmo_sd).save_pretrained(out_dir)
    save_tokenizer(tokenizer_dir, out_dir)
