"""Where text comes from: one discriminated union, shared by every stage that reads data.

A source is a local JSONL / Parquet / plain-text folder, a Hugging Face dataset (loaded with
`datasets` when online), an already-tokenized OLMo memmap, or a built-in generator shipped with
mixsteer (the offline demo corpora). Local paths are written relative to the spec file; the compiler
checks they exist and stores them relative to the project root.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from .base import StrictModel


class _LocalFile(StrictModel):
    path: str = Field(description="File or folder, relative to the spec file (must exist).")
    text_field: str = Field("text", description="Field holding the document text.")
    max_documents: int | None = Field(None, gt=0, description="Read at most this many documents; null = all.")


class JsonlSource(_LocalFile):
    """Local JSON-lines file (optionally .gz), one document per line."""

    kind: Literal["jsonl"] = "jsonl"


class ParquetSource(_LocalFile):
    """Local Parquet file or folder of Parquet files."""

    kind: Literal["parquet"] = "parquet"


class TextSource(_LocalFile):
    """Local folder of .txt files, one document per file."""

    kind: Literal["text"] = "text"


class HFSource(StrictModel):
    """A Hugging Face dataset, loaded with `datasets.load_dataset` (needs network or a local cache)."""

    kind: Literal["hf"] = "hf"
    name: str = Field(description="Dataset id, e.g. `allenai/c4`.")
    config: str | None = Field(None, description="Dataset configuration, e.g. `en`.")
    split: str = Field("train", description="Split to read.")
    revision: str | None = Field(None, description="Git revision on the hub; pin it for reproducibility.")
    text_field: str = Field("text", description="Field holding the document text.")
    streaming: bool = Field(True, description="Stream instead of downloading the whole split.")
    max_documents: int | None = Field(None, gt=0, description="Read at most this many documents.")


class MemmapSource(StrictModel):
    """Already-tokenized OLMo uint16/uint32 memmap (`.npy` raw token file), EOS-separated."""

    kind: Literal["memmap"] = "memmap"
    path: str = Field(description="Token file relative to the spec file (must exist).")
    tokenizer: str = Field(description="Tokenizer identifier it was made with; must match the spec's.")
    dtype: Literal["uint16", "uint32"] = Field("uint16", description="Token dtype on disk.")


class BuiltinSource(StrictModel):
    """A corpus generated or shipped by mixsteer (offline demo data; see README `Demo data`)."""

    kind: Literal["builtin"] = "builtin"
    name: str = Field(description="Built-in corpus name, e.g. `demo-clean`, `demo-toxic`.")
    max_documents: int | None = Field(None, gt=0, description="Read at most this many documents.")


TextSourceSpec = Annotated[
    Union[JsonlSource, ParquetSource, TextSource, HFSource, MemmapSource, BuiltinSource],
    Field(discriminator="kind"),
]
"""Any document source, chosen by `kind:`."""

LOCAL_PATH_KINDS = ("jsonl", "parquet", "text", "memmap")
