"""Pre-tokenized OLMo memmaps: EOS-separated documents read a chunk at a time."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from compiler.errors import StageError
from compiler.schema.sources import MemmapSource

MEMMAP_CHUNK_TOKENS = 1 << 22
"""Tokens read at a time when splitting a memmap on EOS."""


def iter_memmap_documents(spec: MemmapSource, root: Path, eos_token_id: int) -> Iterator[np.ndarray]:
    """Documents of a pre-tokenized memmap, each ending with its EOS (a trailing partial one too)."""
    path = Path(root) / spec.path
    if not path.is_file():
        raise StageError(f"memmap source {spec.path!r}: {path} does not exist")
    tokens = np.memmap(path, dtype=np.dtype(spec.dtype), mode="r")
    carry = np.empty(0, dtype=tokens.dtype)
    for start in range(0, len(tokens), MEMMAP_CHUNK_TOKENS):
        chunk = np.concatenate([carry, tokens[start:start + MEMMAP_CHUNK_TOKENS]])
        ends = np.flatnonzero(chunk == eos_token_id) + 1
        begin = 0
        for end in ends:
            yield np.array(chunk[begin:end])
            begin = end
        carry = chunk[begin:]
    if len(carry):
        yield np.append(carry, np.array([eos_token_id], dtype=carry.dtype))
