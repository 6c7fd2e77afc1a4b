"""Read any `TextSourceSpec` as a stream of records, so no stage ever holds a whole corpus in memory.

One pipeline for every record source (`compiler.schema.sources`):

    read (formats / hub / builtin) → explode → filters → text checks → sample → max_documents

`iter_records(spec, root, counts, text_fields=...)` yields records (dicts) after that pipeline;
records whose `text_fields` are null, absent or empty are skipped and counted, and those fields are
cleaned (`html`, `unescape`) in the record. `iter_texts(spec, root, counts)` yields the cleaned
`text_field` of each record. Stages that need a text plus other fields of the same record (labels,
targets, flags) pass those fields as `text_fields`, or use `field_value` and `clean_text` themselves.
Local paths are relative to `root` (the project root). Problems the user can fix (missing file, bad
JSON, a non-text value, a truncated archive) raise `StageError` naming the source.
Memmap sources hold tokens, not text: read them with `iter_memmap_documents`. `SOURCE_READER` is
this pipeline as `mixsteer check` and the workflow's start peek into local sources.
"""
from __future__ import annotations

from .clean import clean_text
from .memmap import iter_memmap_documents
from .pipeline import describe, iter_records, iter_texts
from .reader import SOURCE_READER
from .records import SourceCounts, field_value, required_value

__all__ = [
    "SOURCE_READER", "SourceCounts", "clean_text", "describe", "field_value", "iter_memmap_documents", "iter_records",
    "iter_texts", "required_value",
]
