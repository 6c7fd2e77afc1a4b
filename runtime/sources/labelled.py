"""Labelled examples (probe data, detection data): text, binary label, group key and attributes of each kept
record of a labelled source, read through the source pipeline. Shared by the activations and evaluate
stages and the report's scorer check against the probe labels."""
from __future__ import annotations

import hashlib
import re
import unicodedata
from itertools import islice
from typing import TYPE_CHECKING

from compiler.errors import StageError
from compiler.schema.probe import LabelledData

if TYPE_CHECKING:
    from runtime.sources import SourceCounts
    from runtime.stage import StageContext


def normalise_text(text: str) -> str:
    """The text up to Unicode form, case and whitespace: duplicates by this key share a split side."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()


def group_key(text: str) -> str:
    """Short stable id of the normalised text (the unit of the grouped train/validation split)."""
    return hashlib.sha1(normalise_text(text).encode("utf-8")).hexdigest()[:16]


def load_examples(data: LabelledData, ctx: "StageContext", counts: "SourceCounts | None" = None) -> list[dict]:
    """Labelled examples in source order: text, binary label, group key, attributes (as strings).

    The source's reader gives the records (dotted fields, explode, cleaning, filters, sampling; texts
    null, absent or empty skipped and counted in `counts`); the label and attribute fields are dotted
    paths too, and a kept record without one is an error naming the source, the record and the field."""
    from runtime.sources import describe, field_value, iter_records, required_value

    source = data.source
    text_field = getattr(source, "text_field", "text")  # a memmap has none: iter_records rejects it
    records = islice(iter_records(source, ctx.root, counts, text_fields=(text_field,)), data.max_examples)
    out = []
    for i, record in enumerate(records):
        where = f"{describe(source)}: record {i} (after its filters and sample)"
        text = field_value(record, text_field)
        out.append({
            "index": len(out), "text": text,
            "label": binarise(required_value(record, data.label_field, where), data, where),
            "group": group_key(text),
            "attributes": {k: str(required_value(record, k, where)) for k in data.attribute_fields},
        })
    if not out:
        raise StageError(f"{describe(source)}: no labelled examples")
    return out


def binarise(value, data: LabelledData, where: str) -> int:
    """1 = toxic. A score is thresholded (score >= threshold); without a threshold it must be 0/1."""
    if data.label_threshold is not None:
        try:
            return int(float(value) >= data.label_threshold)
        except (TypeError, ValueError):
            raise StageError(f"{where}: {data.label_field}={value!r} is not a number") from None
    if isinstance(value, (bool, int, float)) and value in (0, 1):
        return int(value)
    raise StageError(f"{where}: {data.label_field}={value!r} is not 0/1; set label_threshold to "
                     "binarise a score")
