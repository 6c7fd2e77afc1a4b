"""Where text comes from: one discriminated union, shared by every stage that reads data.

A source is local JSONL / JSON / Parquet / CSV / plain-text files (a file, a folder or a glob; plain,
`.gz` or `.zst` compressed; or `.tar`, `.tar.gz`, `.tar.zst` archives of those), a Hugging Face
dataset (a Hub id, or a local mirror laid out like the Hub repository), an already-tokenized OLMo
memmap, or a built-in generator shipped with mixsteer (the offline demo corpora). Local paths are
relative to the project root; the compiler checks they exist and fingerprints the files they name.

Every record source shares one pipeline (`runtime.sources`): read → `explode` a list field into
records → `filters` → skip records whose text is null, absent or empty (counted) → `sample` →
`max_documents`; the text at the dotted `text_field` is cleaned (`html`, `unescape`) on the way.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from .base import NOT_IN_ID, StrictModel

FilterOp = Literal["eq", "ne", "in", "not_in", "ge", "gt", "le", "lt"]

Scalar = Union[bool, int, float, str, None]


class RecordFilter(StrictModel):
    """Keep only records whose field compares true with `value` (an absent field counts as null)."""

    field: str = Field(description="Dotted path of the field, e.g. `prompt.toxicity`.")
    op: FilterOp = Field("eq", description="Comparison: eq, ne, in, not_in (value is a list), ge, gt, le, lt.")
    value: Union[Scalar, list[Scalar]] = Field(description="What the field is compared with.")

    @model_validator(mode="after")
    def _list_for_membership(self) -> "RecordFilter":
        if (self.op in ("in", "not_in")) != isinstance(self.value, list):
            raise ValueError(f"op {self.op!r} needs {'a list' if self.op in ('in', 'not_in') else 'a single'} value")
        return self


class RecordSample(StrictModel):
    """Seeded sample of `n` records, balanced across the strata of `stratify_by` (after explode and
    filters). Each stratum gets an equal share; a stratum holding fewer than its share gives all it has
    and the remainder is shared equally among the others (so the total is `n` whenever the source
    holds `n` records). The chosen records keep the source's order."""

    n: int = Field(gt=0, description="Records to keep.")
    seed: int = Field(0, description="Sampling seed: the same seed on the same data keeps the same records.")
    stratify_by: list[str] = Field(default_factory=list,
                                   description="Dotted fields whose value combinations are the strata; empty = one stratum.")


class _RecordSource(StrictModel):
    """Fields every record source shares: where the text is, how records are shaped, cleaned, chosen."""

    text_field: str = Field("text", description="Dotted path of the document text, e.g. `prompt.text`.")
    explode: str | None = Field(None, description="Dotted path of a list field; each element becomes one record "
                                                  "(an object's fields are the record's fields; any other value is "
                                                  "`{value: element}`), e.g. 4chan threads → `posts`.")
    html: bool = Field(False, description="Clean 4chan HTML in the text: `<br>` → newline, quote links and quotes "
                                          "unwrapped to their text, other tags dropped, entities unescaped.")
    unescape: bool = Field(False, description="Literal backslash escapes (`\\n`, `\\t`) in the text become characters.")
    filters: list[RecordFilter] = Field(default_factory=list, description="Keep records matching every filter.")
    sample: RecordSample | None = Field(None, description="Seeded (stratified) sample; null = every record.")
    max_documents: int | None = Field(None, gt=0, description="Read at most this many documents (after sampling); null = all.")
    declared_tokens: int | None = Field(None, gt=0, json_schema_extra=NOT_IN_ID,
                                        description="Tokens the source is known to hold (for the compile-time feasibility check).")
    declared_documents: int | None = Field(None, gt=0, json_schema_extra=NOT_IN_ID,
                                           description="Documents the source is known to hold (for the compile-time feasibility check).")


class _LocalFiles(_RecordSource):
    path: str = Field(description="A file, a folder or a glob, relative to the project root (must match something). "
                                  "Files may be `.gz`/`.zst` compressed, or `.tar`/`.tar.gz`/`.tar.zst` archives.")
    members: str | None = Field(None, description="Glob on the names of files inside a folder or archive to read "
                                                  "(e.g. `*.ndjson`); null = those with the kind's suffixes.")


class JsonlSource(_LocalFiles):
    """JSON lines (`.jsonl`, `.ndjson`, `.json` shards as C4 ships them), one record per line."""

    kind: Literal["jsonl"] = "jsonl"


class JsonSource(_LocalFiles):
    """JSON files: a top-level array is its records; a top-level object is one record (use
    `explode: data` to read a `{"data": [...]}` file). Each file is parsed whole, one at a time."""

    kind: Literal["json"] = "json"


class ParquetSource(_LocalFiles):
    """Parquet files (read by row batches)."""

    kind: Literal["parquet"] = "parquet"


class CsvSource(_LocalFiles):
    """CSV files with a header row; every value is text (a number in a filter compares numerically)."""

    kind: Literal["csv"] = "csv"
    delimiter: str = Field(",", min_length=1, max_length=1, description="Field separator (`\\t` for TSV).")


class TextSource(_LocalFiles):
    """Plain-text files, one document per file (record fields: `text_field`, `path`)."""

    kind: Literal["text"] = "text"


class HFSource(_RecordSource):
    """A Hugging Face dataset read with `datasets.load_dataset(..., streaming=True)`: a Hub id
    (`name`, needs network or a local cache; gated ones a token) or a local mirror laid out like the
    Hub repository (`path`; fields and format unchanged)."""

    kind: Literal["hf"] = "hf"
    name: str | None = Field(None, description="Hub dataset id, e.g. `allenai/c4`; or give `path`.")
    path: str | None = Field(None, description="Local folder laid out like the Hub repository, relative to the "
                                               "project root (instead of `name`).")
    config: str | None = Field(None, description="Dataset configuration, e.g. `en`.")
    split: str = Field("train", description="Split to read.")
    revision: str | None = Field(None, description="Git revision on the Hub; pin it for reproducibility "
                                                   "(a local mirror has none: ignored with `path`).")
    data_files: str | list[str] | None = Field(None, description="Files of the repository to read (globs); null = the config's.")
    streaming: bool = Field(True, description="Stream instead of downloading the whole split.")

    @model_validator(mode="after")
    def _name_or_path(self) -> "HFSource":
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of `name` (a Hub id) or `path` (a local mirror)")
        return self


class MemmapSource(StrictModel):
    """Already-tokenized OLMo uint16/uint32 memmap (`.npy` raw token file), EOS-separated."""

    kind: Literal["memmap"] = "memmap"
    path: str = Field(description="Token file relative to the project root (must exist).")
    tokenizer: str = Field(description="Tokenizer identifier it was made with; must match the spec's.")
    dtype: Literal["uint16", "uint32"] = Field("uint16", description="Token dtype on disk.")
    declared_tokens: int | None = Field(None, gt=0, json_schema_extra=NOT_IN_ID,
                                        description="Tokens the file holds (for the compile-time feasibility check).")


class BuiltinSource(_RecordSource):
    """A corpus generated or shipped by mixsteer (offline demo data; see README `Demo data`)."""

    kind: Literal["builtin"] = "builtin"
    name: str = Field(description="Built-in corpus name, e.g. `demo-clean`, `demo-toxic`.")


RecordSourceSpec = Union[JsonlSource, JsonSource, ParquetSource, CsvSource, TextSource, HFSource, BuiltinSource]
"""The sources that hold records (every kind but memmap)."""

TextSourceSpec = Annotated[
    Union[JsonlSource, JsonSource, ParquetSource, CsvSource, TextSource, HFSource, MemmapSource, BuiltinSource],
    Field(discriminator="kind"),
]
"""Any document source, chosen by `kind:`."""

LOCAL_PATH_KINDS = ("jsonl", "json", "parquet", "csv", "text", "memmap", "hf")
"""Kinds whose `path` names local files (an `hf` source's only when it is a local mirror)."""

GLOB_CHARS = "*?["
"""A local `path` holding any of these is a glob (`compiler.fingerprint.local_files`)."""


def is_glob(path: str) -> bool:
    """Whether a local path is a glob pattern rather than one file or folder."""
    return any(c in path for c in GLOB_CHARS)

