"""Read any `TextSourceSpec` as a stream of records, so no stage ever holds a whole corpus in memory.

`iter_records(spec, root)` yields full records (dicts) — labelled data, prompts, DPO pairs and
pretraining documents all come through here; `iter_texts(spec, root)` yields only the `text_field`.
Local paths are relative to `root` (the project root; the compiler stores them that way). Problems the
user can fix (missing file, unknown built-in, missing field) raise `StageError` naming source and path.
Memmap sources hold tokens, not text: read them with `iter_memmap_documents`.
"""
from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from compiler.errors import StageError
from compiler.schema.sources import (
    BuiltinSource, HFSource, JsonlSource, MemmapSource, ParquetSource, TextSource,
)

PARQUET_BATCH_ROWS = 1024
"""Rows per pyarrow batch: bounds memory for folders of multi-GB Parquet files."""

MEMMAP_CHUNK_TOKENS = 1 << 22
"""Tokens read at a time when splitting a memmap on EOS."""


def describe(spec: Any) -> str:
    """A short human name for a source in error messages: kind plus path or name."""
    where = getattr(spec, "path", None) or getattr(spec, "name", None)
    return f"{spec.kind} source {where!r}"


def iter_records(spec: Any, root: Path) -> Iterator[dict[str, Any]]:
    """Every record of a text source, in the source's order, at most `max_documents`."""
    if isinstance(spec, MemmapSource):
        raise StageError(f"{describe(spec)} holds tokens, not records; it can only feed the mix stage")
    readers = {
        JsonlSource: _jsonl, ParquetSource: _parquet, TextSource: _text_folder,
        HFSource: _hf, BuiltinSource: _builtin,
    }
    records = readers[type(spec)](spec, Path(root))
    return islice(records, spec.max_documents) if spec.max_documents else records


def iter_texts(spec: Any, root: Path) -> Iterator[str]:
    """The `text_field` of every record (built-in corpora use `text`)."""
    field = getattr(spec, "text_field", "text")
    for i, record in enumerate(iter_records(spec, root)):
        try:
            text = record[field]
        except KeyError:
            raise StageError(
                f"{describe(spec)}: record {i} has no field {field!r} (fields: {sorted(record)})"
            ) from None
        if not isinstance(text, str):
            raise StageError(f"{describe(spec)}: record {i} field {field!r} is {type(text).__name__}, not text")
        yield text


def iter_memmap_documents(spec: MemmapSource, root: Path, eos_token_id: int) -> Iterator[np.ndarray]:
    """Documents of a pre-tokenized memmap, each ending with its EOS (a trailing partial one too)."""
    path = _existing(spec, root)
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


def _existing(spec: Any, root: Path) -> Path:
    path = root / spec.path
    if not path.exists():
        raise StageError(f"{describe(spec)}: {path} does not exist")
    return path


def _jsonl(spec: JsonlSource, root: Path) -> Iterator[dict[str, Any]]:
    path = _existing(spec, root)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise StageError(f"{describe(spec)}: {path}:{lineno}: bad JSON ({exc.msg})") from None


def _parquet(spec: ParquetSource, root: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    path = _existing(spec, root)
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise StageError(f"{describe(spec)}: no .parquet files under {path}")
    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=PARQUET_BATCH_ROWS):
            yield from batch.to_pylist()


def _text_folder(spec: TextSource, root: Path) -> Iterator[dict[str, Any]]:
    path = _existing(spec, root)
    if not path.is_dir():
        raise StageError(f"{describe(spec)}: {path} is not a folder of .txt files")
    for file in sorted(path.rglob("*.txt")):
        yield {spec.text_field: file.read_text(encoding="utf-8"), "path": str(file.relative_to(path))}


def _hf(spec: HFSource, root: Path) -> Iterator[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(spec.name, spec.config, split=spec.split, revision=spec.revision,
                                   streaming=spec.streaming)
    except Exception as exc:  # datasets raises many types (offline, not found, bad config)
        raise StageError(f"{describe(spec)} (config {spec.config!r}, split {spec.split!r}): "
                         f"cannot load: {exc}") from exc
    yield from ds


def _builtin(spec: BuiltinSource, root: Path) -> Iterator[dict[str, Any]]:
    from runtime.demo_data import BUILTINS

    try:
        corpus = BUILTINS[spec.name]
    except KeyError:
        raise StageError(
            f"{describe(spec)}: unknown built-in corpus (have {', '.join(sorted(BUILTINS))})"
        ) from None
    yield from corpus()
