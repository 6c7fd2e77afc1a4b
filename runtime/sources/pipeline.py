"""The one pipeline every record source goes through:
read → explode → filters → text checks and cleaning → sample → max_documents."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from compiler.errors import StageError
from compiler.schema.sources import BuiltinSource, HFSource, MemmapSource

from .clean import clean_text
from .formats import Cursor, iter_local
from .hub import iter_hf
from .records import (
    MissingField, Positioned, SourceCounts, apply_filters, explode, field_value, position_text, sample_records, set_field,
)


def describe(spec: Any) -> str:
    """A short human name for a source in error messages: kind plus path or name."""
    where = getattr(spec, "path", None) or getattr(spec, "name", None)
    return f"{spec.kind} source {where!r}"


def iter_records(spec: Any, root: Path, counts: SourceCounts | None = None, *,
                 text_fields: Sequence[str] = ()) -> Iterator[dict[str, Any]]:
    """Every record of a source after explode, filters, sampling and `max_documents`, in source order.

    Records whose `text_fields` (dotted) are absent, null or empty after cleaning are skipped and
    counted before sampling; those fields hold the cleaned text in the records yielded; a value that
    is not text raises StageError naming the source, the record and the field. `counts` (updated as
    the stream is consumed) tells how many records were read, skipped and kept.
    """
    if isinstance(spec, MemmapSource):
        raise StageError(f"{describe(spec)} holds tokens, not records; it can only feed the tokenize stage")
    counts = SourceCounts() if counts is None else counts
    where, cursor = describe(spec), Cursor()
    stream: Iterator[Positioned] = _numbered(_read(spec, Path(root), where, cursor, counts), counts)
    missing: list[MissingField] = []
    if spec.explode:
        stream = explode(stream, spec.explode, counts, where, missing)
    if spec.filters:
        stream = apply_filters(stream, spec.filters, counts, where, spec.explode)
    if text_fields:
        stream = _texts(stream, spec, text_fields, counts, where, cursor, missing)
    if spec.sample is not None:
        stream = sample_records(stream, spec.sample, counts, where, spec.explode)
    if spec.max_documents:
        stream = islice(stream, spec.max_documents)
    for _, record in stream:
        counts.kept += 1
        yield record
    if missing and not (counts.kept or counts.skipped_null or counts.skipped_empty or counts.filtered_out):
        # every record read lacked a field it needs: a wrong `text_field` / `explode`, not data to skip
        raise StageError(f"{where}: no record has the field {missing[0].field!r} "
                         f"(fields of {missing[0].at}: {missing[0].fields})")


def iter_texts(spec: Any, root: Path, counts: SourceCounts | None = None) -> Iterator[str]:
    """The cleaned `text_field` of every record (null, absent and empty ones skipped and counted)."""
    field = spec.text_field
    for record in iter_records(spec, root, counts, text_fields=(field,)):
        yield field_value(record, field)


def _numbered(records: Iterator[dict[str, Any]], counts: SourceCounts) -> Iterator[Positioned]:
    for i, record in enumerate(records):
        counts.read += 1
        yield (i,), record


def _texts(stream: Iterator[Positioned], spec: Any, fields: Sequence[str], counts: SourceCounts, where: str,
           cursor: Cursor, missing: list[MissingField]) -> Iterator[Positioned]:
    """Records whose every text field is non-empty text, cleaned in place."""
    cleans = spec.html or spec.unescape
    for position, record in stream:
        for field in fields:
            try:
                value = field_value(record, field)
            except KeyError:
                counts.skipped_missing += 1
                if not missing:   # remembered for the error when no record has it
                    missing.append(MissingField(field, position_text(position, spec.explode), sorted(record)))
                break
            if value is None:
                counts.skipped_null += 1
                break
            if not isinstance(value, str):
                raise StageError(f"{where}: {position_text(position, spec.explode)} ({cursor.file}): field "
                                 f"{field!r} is {type(value).__name__} {_short(value)}, not text")
            if cleans:
                value = clean_text(value, spec)
                set_field(record, field, value)
            if not value or value.isspace():
                counts.skipped_empty += 1
                break
        else:
            yield position, record


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read(spec: Any, root: Path, where: str, cursor: Cursor, counts: SourceCounts) -> Iterator[dict[str, Any]]:
    if isinstance(spec, HFSource):
        cursor.file = spec.path or spec.name or "?"
        return iter_hf(spec, root, where, counts)
    if isinstance(spec, BuiltinSource):
        cursor.file = f"builtin:{spec.name}"
        return _builtin(spec, where)
    return iter_local(spec, root, where, cursor)


def _builtin(spec: BuiltinSource, where: str) -> Iterator[dict[str, Any]]:
    from runtime.demo_data import BUILTINS

    try:
        corpus = BUILTINS[spec.name]
    except KeyError:
        raise StageError(f"{where}: unknown built-in corpus (have {', '.join(sorted(BUILTINS))})") from None
    yield from corpus()
