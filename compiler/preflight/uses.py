"""Every source a spec reads, with the record fields each reader will ask it for and where the spec
names them.

A source is read by the section that holds it: that section names the fields it needs in attributes
ending in `_field` (a dotted path) or `_fields` (a list of them): `label_field`, `attribute_fields`,
`challenging_field`, `prompt_field`, `chosen_field`, `rejected_field`, `target_field`. The source adds
its own `text_field` (unless its reader ignores it), `explode`, filter fields and `sample.stratify_by`.
The scorer-check references are read in their public layouts, so their fields are fixed here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, get_args

from pydantic import BaseModel

from ..checks import unseen_sections, walk_models
from ..schema import Spec
from ..schema.posttrain import DPOSection
from ..schema.scorer_check import RTP_FIELDS, TOXIGEN_FIELDS, RTPCheck, ToxiGenCheck
from ..schema.sources import TextSourceSpec

SOURCE_TYPES: tuple[type, ...] = get_args(get_args(TextSourceSpec)[0])
"""Every source kind of the `TextSourceSpec` union."""

TEXT_ROLES = ("text_field", "prompt_field", "chosen_field", "rejected_field", "target_field")
"""Attributes whose field must hold text (or null): an object there (RTP's `prompt`) is a mistake."""

FIXED_FIELDS: dict[type, tuple[str, ...]] = {
    RTPCheck: tuple(f for fields in RTP_FIELDS.values() for f in fields),
    ToxiGenCheck: TOXIGEN_FIELDS,
}
"""Readers that use their reference's own field names (and no `text_field`)."""

NO_TEXT_FIELD = (DPOSection, *FIXED_FIELDS)
"""Readers that never read the source's `text_field` (DPO reads prompt / chosen / rejected)."""


@dataclass(frozen=True)
class FieldNeed:
    """One record field a reader needs, and the spec key that names it."""

    field: str        # dotted path into a record
    key: tuple[Any, ...]
    text: bool        # must hold text (or null)


@dataclass(frozen=True)
class SourceUse:
    """One source as one section reads it."""

    path: tuple[Any, ...]   # spec key path of the source
    source: Any             # a TextSourceSpec model
    fields: tuple[FieldNeed, ...]


def source_uses(spec: Spec, checked: set[int] | None = None) -> Iterator[SourceUse]:
    """Every source of a spec's sections, each once (`checked`: ids of sections already walked; runs of
    a sweep share their sections)."""
    for name, section in unseen_sections(spec, set() if checked is None else checked):
        for path, model in walk_models(section, (name,)):
            for key, source in _sources_of(model):
                yield SourceUse((*path, *key), source, tuple(_needs(model, (*path, *key), source, path)))


def _sources_of(model: BaseModel) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """(key path below the model, source) of the sources a model holds directly."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SOURCE_TYPES):
            yield (name,), value
        elif isinstance(value, dict):
            yield from (((name, k), v) for k, v in value.items() if isinstance(v, SOURCE_TYPES))


def _needs(reader: BaseModel, at: tuple[Any, ...], source: Any, reader_at: tuple[Any, ...]) -> Iterator[FieldNeed]:
    if isinstance(reader, tuple(FIXED_FIELDS)):
        yield from (FieldNeed(f, at, f.endswith(".text") or f == "text") for f in FIXED_FIELDS[type(reader)])
        if isinstance(reader, RTPCheck) and reader.records.challenging_only:
            yield FieldNeed("challenging", (*reader_at, "records", "challenging_only"), False)
    elif not isinstance(reader, NO_TEXT_FIELD) and hasattr(source, "text_field"):
        yield FieldNeed(source.text_field, (*at, "text_field"), True)
    for name in type(reader).model_fields:
        value = getattr(reader, name)
        if name.endswith("_field") and isinstance(value, str):
            yield FieldNeed(value, (*reader_at, name), name in TEXT_ROLES)
        elif name.endswith("_fields") and isinstance(value, (list, tuple)):
            yield from (FieldNeed(v, (*reader_at, name, i), False) for i, v in enumerate(value))
    for i, f in enumerate(getattr(source, "filters", ())):
        yield FieldNeed(f.field, (*at, "filters", i, "field"), False)
    sample = getattr(source, "sample", None)
    for i, f in enumerate(sample.stratify_by if sample else ()):
        yield FieldNeed(f, (*at, "sample", "stratify_by", i), False)
