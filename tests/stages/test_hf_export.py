"""HF export: OlmoForCausalLM reproduces ai2-olmo's logits (fp32) and refuses what it cannot represent."""
from __future__ import annotations

import pytest
import torch

from compiler.errors import StageError
from compiler.schema.model import PRESETS

TOL = 1e-4  # fp32; observed 0.0 (SDPA) on this CPU


def olmo_config(**overrides):
    from olmo.config import ModelConfig

    base = dict(PRESETS["tiny"], d_model=32, n_heads=4, n_layers=2, max_sequence_length=64)
    base.update(vocab_size=300, embedding_size=384, eos_token_id=0, pad_token_id=1, init_device="cpu",
                layer_norm_eps=1e-5, alibi=False, flash_attention=False)
    base.update(overrides)
    base["rope_theta"] = int(base["rope_theta"])
    return ModelConfig(**base)


def max_logit_gap(cfg, seq_len: int = 24, seed: int = 0) -> float:
    from olmo.model import OLMo

    from runtime.pretrain.hf_export import to_hf_model

    torch.manual_seed(seed)
    olmo = OLMo(cfg).eval()
    hf = to_hf_model(cfg, olmo.state_dict())
    ids = torch.randint(0, cfg.vocab_size, (2, seq_len))
    with torch.no_grad():
        return (olmo(ids).logits - hf(ids).logits).abs().max().item()


@pytest.mark.parametrize("overrides", [
    {},
    {"weight_tying": False},
    {"n_kv_heads": 2},
    {"clip_qkv": 0.05},
    {"rope_theta": 500000, "mlp_hidden_size": 96},
], ids=["tied", "untied", "gqa", "clip_qkv", "theta_hidden"])
def test_tiny_logits_parity(overrides):
    assert max_logit_gap(olmo_config(**overrides)) <= TOL


@pytest.mark.slow  # ~100 M parameters (the 50k embedding) built twice: minutes on 2 shared cores
def test_olmo_1b_shape_parity_two_layers():
    """The official OLMo-1B shape (d 2048, 16 heads, SwiGLU 16384, vocab 50304), randomly initialised."""
    cfg = olmo_config(**{**PRESETS["olmo-1b"], "n_layers": 2, "vocab_size": 50280, "embedding_size": 50304,
                         "eos_token_id": 50279})
    assert cfg.d_model == 2048 and cfg.mlp_ratio == 8
    assert max_logit_gap(cfg, seq_len=16) <= TOL


def test_parity_check_is_sensitive_to_swapped_swiglu_halves(monkeypatch):
    """Guard for the test itself: swapping up/gate (a classic export bug) breaks parity by far."""
    from runtime.pretrain import hf_export

    real = hf_export.convert_state_dict

    def swapped(cfg, sd):
        out = real(cfg, sd)
        for k in [k for k in out if k.endswith("mlp.up_proj.weight")]:
            g = k.replace("up_proj", "gate_proj")
            out[k], out[g] = out[g], out[k]
        return out

    monkeypatch.setattr(hf_export, "convert_state_dict", swapped)
    assert max_logit_gap(olmo_config(init_std=0.2)) > 100 * TOL


def test_clip_qkv_is_carried_into_the_config():
    from runtime.pretrain.hf_export import hf_config

    assert hf_config(olmo_config(clip_qkv=0.05)).clip_qkv == 0.05
    assert hf_config(olmo_config()).vocab_size == 384  # embedding_size, not the tokenizer's 300


@pytest.mark.parametrize("overrides, words", [
    ({"include_bias": True}, "include_bias"),
    ({"layer_norm_with_affine": True}, "layer_norm_with_affine"),
    ({"attention_layer_norm": True}, "attention_layer_norm"),
    ({"activation_type": "gelu"}, "activation_type"),
    ({"rope": False}, "rope"),
])
def test_unrepresentable_architectures_are_refused(overrides, words):
    from runtime.pretrain.hf_export import check_representable

    with pytest.raises(StageError, match=words):
        check_representable(olmo_config(**overrides))


def test_export_folder_loads_offline(tmp_path):
    """Weights + config + tokenizer saved by `export` reload with the Auto classes, ids from info.json."""
    import json

    from olmo.model import OLMo
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import build_tiny_tokenizer
    from runtime.pretrain.hf_export import export

    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    build_tiny_tokenizer().save(str(tok_dir / "tokenizer.json"))
    (tok_dir / "info.json").write_text(json.dumps(dict(identifier="bpe-300", vocab_size=300,
                                                       embedding_size=384, eos_token_id=0, pad_token_id=1)))
    cfg = olmo_config()
    torch.manual_seed(0)
    olmo = OLMo(cfg).eval()
    export(cfg, olmo.state_dict(), tok_dir, tmp_path / "model")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert (tok.eos_token, tok.pad_token) == ("<|endoftext|>", "<|padding|>")
    ids = torch.tensor([tok("the quick brown fox").input_ids])
    with torch.no_grad():
        assert (olmo(ids).logits - hf(ids).logits).abs().max().item() <= TOL
