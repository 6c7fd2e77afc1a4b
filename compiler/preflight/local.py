"""Open a local source and look at its first records: does every field the spec asks for exist?

Reads through a `SourceReader`, the runtime's own readers (`runtime.sources.SOURCE_READER`, passed in
by the CLI and the Snakefile: the compiler never imports the runtime), so records look as the stages
will see them; but only a handful of records and without the source's `sample` and `filters` (a seeded
sample may read a whole corpus; a filter may reject the first million records): the filter and strata
fields are checked for existence instead. A field is missing only when none of the records looked at
has it (4chan posts often lack `com`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from compiler.errors import MixsteerError
from compiler.fingerprint import local_exists
from compiler.schema.sources import MemmapSource, is_glob

from .findings import Finding
from .uses import SourceUse

PEEK_RECORDS = 10
"""Records read from each local source."""


@dataclass(frozen=True)
class SourceReader:
    """How preflight reads local sources: the runtime's readers, given by the composition root."""

    peek: Callable[[Any, Path, int], list[dict[str, Any]]]
    """(source spec, project root, n) → its first n records, read as a stage reads them."""
    field: Callable[[dict[str, Any], str], Any]
    """(record, dotted path) → the value there; KeyError when the record has no such field."""


def is_local(source: Any) -> bool:
    """Whether a source is read from this machine (a file, folder, glob, local mirror or built-in)."""
    return getattr(source, "path", None) is not None or source.kind == "builtin"


def local_findings(use: SourceUse, root: Path, reader: SourceReader) -> list[Finding]:
    """Problems of one local source: missing files, unreadable records, absent or non-text fields."""
    source = use.source
    if getattr(source, "path", None) is not None and not _exists(root, source.path):
        missing = "matches no file" if is_glob(source.path) else "does not exist"
        return [Finding("problem", (*use.path, "path"), f"{source.path!r} {missing} (relative to {root})")]
    if isinstance(source, MemmapSource):
        return []
    unsampled = source.model_copy(update={"sample": None, "filters": []}) if hasattr(source, "sample") else source
    try:
        records = reader.peek(unsampled, root, PEEK_RECORDS)
    except MixsteerError as exc:
        return [Finding("problem", use.path, f"cannot read: {exc}")]
    except Exception as exc:  # a reader library's own error (pyarrow, datasets, zstandard): say it, no traceback
        return [Finding("problem", use.path, f"cannot read: {type(exc).__name__}: {exc}")]
    if not records:
        return [Finding("problem", use.path, "holds no records")]
    return [f for need in use.fields for f in _field_findings(need, records, use, reader)]


def _exists(root: Path, path: str) -> bool:
    return local_exists(root / path)


def _field_findings(need: Any, records: list[dict[str, Any]], use: SourceUse,
                    reader: SourceReader) -> list[Finding]:
    values = []
    for record in records:
        try:
            values.append(reader.field(record, need.field))
        except KeyError:
            continue
    if not values:
        fields = ", ".join(sorted(records[0]))
        return [Finding("problem", need.key, f"none of the first {len(records)} records of {_name(use)} has field "
                        f"{need.field!r} (fields: {fields})")]
    wrong = next((v for v in values if v is not None and not isinstance(v, str)), None)
    if need.text and wrong is not None:
        texts = [f"{need.field}.{k}" for k, v in wrong.items() if isinstance(v, str)] if isinstance(wrong, dict) else []
        hint = f"; did you mean {' or '.join(map(repr, texts))}?" if texts else ""
        return [Finding("problem", need.key, f"field {need.field!r} of {_name(use)} holds "
                        f"{type(wrong).__name__}, not text{hint}")]
    return []


def _name(use: SourceUse) -> str:
    where = getattr(use.source, "path", None) or getattr(use.source, "name", None)
    return f"{use.source.kind} source {where!r}"
