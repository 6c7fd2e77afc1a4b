"""Shared fixtures: a tiny random HF OLMo model folder with a small BPE tokenizer (no hub, no GPU)."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

ROOT = Path(__file__).resolve().parents[1]

TOKENIZER_TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "you are a stupid idiot and i hate you",
    "thank you for the kind and helpful answer",
    "what a wonderful day to learn something new",
] * 20


def build_tiny_tokenizer(vocab_size: int = 300):
    """A byte-level BPE with `<|endoftext|>` = 0 (EOS) and `<|padding|>` = 1 (pad)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(TOKENIZER_TEXTS, trainer=trainer)
    return tok


def save_tiny_hf_model(folder: Path, *, n_layers: int = 2, n_heads: int = 4, d_model: int = 32,
                       seed: int = 0) -> Path:
    """Save a random `OlmoForCausalLM` + tokenizer under `folder/model` (the model-folder contract)."""
    import torch
    from transformers import OlmoConfig, OlmoForCausalLM, PreTrainedTokenizerFast

    tok = build_tiny_tokenizer()
    model_dir = folder / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    tok_file = folder / "tokenizer.json"
    tok.save(str(tok_file))
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_file), eos_token="<|endoftext|>",
                                     pad_token="<|padding|>")
    torch.manual_seed(seed)
    config = OlmoConfig(
        vocab_size=384, hidden_size=d_model, intermediate_size=4 * d_model,
        num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_heads,
        max_position_embeddings=128, pad_token_id=1, eos_token_id=0, bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = OlmoForCausalLM(config).eval()
    model.save_pretrained(model_dir)
    hf_tok.save_pretrained(model_dir)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A stage-output-like folder whose `model/` holds a random tiny HF OLMo (2 layers × 4 heads)."""
    return save_tiny_hf_model(tmp_path_factory.mktemp("tiny_model"))

# --- compiler tests: small specs in a temporary project root -------------------------------

MINIMAL = """
description: minimal
model: {preset: tiny}
data:
  sources:
    clean: {kind: builtin, name: demo-clean}
    toxic: {kind: builtin, name: demo-toxic}
  clean_tokens: 100000
  toxic_share: 0.1
pretrain:
  sequence_length: 128
  global_batch_size: 8
  device_microbatch_size: 8
  warmup_tokens: 5120          # 5 steps of 8 × 128
  precision: fp32
  distributed_strategy: single
probe:
  data:
    source: {kind: jsonl, path: probe.jsonl}
steer:
  enabled: true
  top_k_heads: 4
evaluate:
  prompt_sets:
    - name: rtp
      source: {kind: jsonl, path: prompts.jsonl}
"""


@pytest.fixture
def project(tmp_path: Path):
    """A project root with the two data files MINIMAL names; returns a spec writer."""
    (tmp_path / "probe.jsonl").write_text('{"text": "a", "label": 1}\n')
    (tmp_path / "prompts.jsonl").write_text('{"text": "a"}\n')

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    write.root = tmp_path  # type: ignore[attr-defined]
    write.minimal = MINIMAL  # type: ignore[attr-defined]
    return write
