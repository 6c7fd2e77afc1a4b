"""Open a local source and look at its first records: does every field the spec asks for exist?

Reads through `runtime.sources.iter_records`, as the stages will, but only a handful of records and
without the source's `sample` and `filters` (a seeded sample may read a whole corpus; a filter may
reject the first million records): the filter and strata fields are checked for existence instead.
A field is missing only when none of the records looked at has it (4chan posts often lack `com`).
"""
from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

from compiler.errors import MixsteerError
from compiler.fingerprint import local_exists
from compiler.schema.sources import MemmapSource, is_glob

from .findings import Finding
from .uses import SourceUse

PEEK_RECORDS = 10
"""Records read from each local source."""


def is_local(source: Any) -> bool:
    """Whether a source is read from this machine (a file, folder, glob, local mirror or built-in)."""
    return getattr(source, "path", None) is not None or source.kind == "builtin"


def local_findings(use: SourceUse, root: Path) -> list[Finding]:
    """Problems of one local source: missing files, unreadable records, absent or non-text fields."""
    source = use.source
    if getattr(source, "path", None) is not None and not _exists(root, source.path):
        missing = "matches no file" if is_glob(source.path) else "does not exist"
        return [Finding("problem", (*use.path, "path"), f"{source.path!r} {missing} (relative to {root})")]
    if isinstance(source, MemmapSource):
        return []
    try:
        records = _peek(source, root)
    except MixsteerError as exc:
        return [Finding("problem", use.path, f"cannot read: {exc}")]
    except Exception as exc:  # a reader library's own error (pyarrow, datasets, zstandard): say it, no traceback
        return [Finding("problem", use.path, f"cannot read: {type(exc).__name__}: {exc}")]
    if not records:
        return [Finding("problem", use.path, "holds no records")]
    return [f for need in use.fields for f in _field_findings(need, records, use)]


def _exists(root: Path, path: str) -> bool:
    return local_exists(root / path)


def _peek(source: Any, root: Path) -> list[dict[str, Any]]:
    from runtime.sources import iter_records

    raw = source.model_copy(update={"sample": None, "filters": []}) if hasattr(source, "sample") else source
    return list(islice(iter_records(raw, root, text_fields=()), PEEK_RECORDS))


def _field_findings(need: Any, records: list[dict[str, Any]], use: SourceUse) -> list[Finding]:
    from runtime.sources import field_value

    values = []
    for record in records:
        try:
            values.append(field_value(record, need.field))
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
