"""pretrain stage: ai2-olmo training on tiny memmaps (loss falls, torchrun parity, resume) + HF export."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import ROOT, TOKENIZER_TEXTS, build_tiny_tokenizer

TINY_MODEL = dict(preset="tiny", d_model=32, n_heads=4, n_layers=2, mlp_ratio=4, max_sequence_length=64)
TINY_TRAIN = dict(
    sequence_length=32, global_batch_size=8, device_microbatch_size=2, learning_rate=3e-3,
    warmup_steps=2, precision="fp32", distributed_strategy="ddp", checkpoint_interval_steps=4,
    log_interval_steps=1,
)


def write_artifacts(root: Path, *, n_documents: int = 400, seed: int = 0) -> dict[str, str]:
    """`tokenizer` and `mix` artifact folders under `root`, in the formats of runtime/ARTIFACTS.md."""
    tok = build_tiny_tokenizer()
    tok_dir, mix_dir = root / "results/tokenizer/t", root / "results/mix/m"
    (mix_dir / "tokens").mkdir(parents=True)
    tok_dir.mkdir(parents=True)
    tok.save(str(tok_dir / "tokenizer.json"))
    info = dict(identifier="bpe-300", vocab_size=tok.get_vocab_size(), embedding_size=384,
                eos_token_id=0, pad_token_id=1)
    (tok_dir / "info.json").write_text(json.dumps(info))
    rng = np.random.default_rng(seed)
    ids: list[int] = []
    for i in rng.integers(0, len(TOKENIZER_TEXTS), n_documents):
        ids += tok.encode(TOKENIZER_TEXTS[i]).ids + [info["eos_token_id"]]
    half = len(ids) // 2
    files = []
    for k, part in enumerate((ids[:half], ids[half:])):
        name = f"tokens/part-{k:05d}.npy"
        mm = np.memmap(mix_dir / name, dtype=np.uint16, mode="w+", shape=(len(part),))
        mm[:] = part
        mm.flush()
        files.append(name)
    (mix_dir / "manifest.json").write_text(json.dumps({"token_files": files}))
    return {"tokenizer": "results/tokenizer/t", "mix": "results/mix/m"}


def envelope(root: Path, inputs: dict[str, str], *, stage_id: str = "pretrain-test", max_steps: int = 12,
             seed: int = 0, model: dict[str, Any] | None = None, train: dict[str, Any] | None = None,
             ) -> dict[str, Any]:
    """A stage JSON as the compiler writes it."""
    info = json.loads((root / inputs["tokenizer"] / "info.json").read_text())
    config = dict(model=model or TINY_MODEL, vocab=info, train={**TINY_TRAIN, **(train or {})},
                  max_steps=max_steps, seed=seed)
    return {"kind": "pretrain", "id": stage_id, "version": 1, "config": config, "inputs": inputs,
            "output": f"results/pretrain/{stage_id}", "root": str(root), "resources": {"threads": 1}}
