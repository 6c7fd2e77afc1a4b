"""Helpers for compiler tests: write small specs into a temporary project root."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

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
  warmup_steps: 5
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
