"""Shared base for every spec and stage-config model.

Every model forbids unknown keys (a typo is an error, never a silent default) and is frozen (a
validated spec is a value: the planner hashes it, nobody mutates it afterwards).

Fields that do not change a stage's results (worker counts, logging cadence, batch sizes of pure
inference) are marked with ``NOT_IN_ID``: the planner leaves them out of the content id, so changing
them never reruns anything. The marker is opt-out on purpose: a field someone forgets to mark costs a
rerun, never a stale cache hit.

A stage config field that restates a spec field is declared with ``same_as``, so each bound is written once
(in the spec section) and an edited stage JSON is refused for the same values the spec refuses.
"""
from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from pydantic_core import to_jsonable_python

from ..ids import plain_json

HUB_COMMIT = re.compile(r"[0-9a-f]{40}")
"""A Hub commit id: the only revision that never floats (`compiler.lock` resolves the others)."""


def is_commit(revision: str | None) -> bool:
    return revision is not None and HUB_COMMIT.fullmatch(revision) is not None


NOT_IN_ID = {"not_in_id": True}
"""Pass as ``Field(json_schema_extra=NOT_IN_ID)`` on fields that must not enter the content id."""


def same_as(section: type[BaseModel], name: str, *, keep_default: bool = False, **overrides: Any) -> Any:
    """The field `name` of spec model `section`, for a stage config that restates it: the same constraints
    (bounds, lengths, patterns), description and id marker, applied to the stage field's own annotation.

    Required, since the planner always passes the value; `keep_default=True` keeps the section's default
    (for callers that build a stage config by hand), and `overrides` are `Field` arguments that replace the
    section's (e.g. a different default). Descriptions and defaults do not enter content ids."""
    spec_field = section.model_fields[name]
    arguments: dict[str, Any] = {"description": spec_field.description,
                                 "json_schema_extra": spec_field.json_schema_extra,
                                 "discriminator": spec_field.discriminator}
    if keep_default and spec_field.default_factory is not None:
        arguments["default_factory"] = spec_field.default_factory
    elif keep_default:
        arguments["default"] = spec_field.default
    field = Field(**(arguments | overrides))
    field.metadata = list(spec_field.metadata)
    return field


class StrictModel(BaseModel):
    """Forbid unknown keys, freeze instances, validate defaults and assignments."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
    _id_cache: Any = PrivateAttr(default=None)
    _id_json_cache: str | None = PrivateAttr(default=None)
    _json_cache: str | None = PrivateAttr(default=None)
    _derived: dict[str, Any] = PrivateAttr(default_factory=dict)

    # The caches below are read through `__pydantic_private__` (a plain dict): `self._x` goes through
    # pydantic's `__getattr__`, which cost a fifth of a 1,000-run compile.

    def derived(self, key: str, compute: Any) -> Any:
        """Memoise a value computed from this (frozen) instance, e.g. the local paths it names."""
        store = self.__pydantic_private__["_derived"]
        if key not in store:
            store[key] = compute()
        return store[key]

    def full_json(self) -> str:
        """Canonical JSON of every field (NOT_IN_ID ones included), cached like `id_json`."""
        private = self.__pydantic_private__
        if private["_json_cache"] is None:
            private["_json_cache"] = "{" + ",".join(
                f'"{name}":{_id_json(getattr(self, name), full=True)}' for name in _sorted_fields(type(self))
            ) + "}"
        return private["_json_cache"]

    @classmethod
    def id_fields(cls) -> tuple[str, ...]:
        """This model's own fields that enter the content id (all but those marked NOT_IN_ID)."""
        cached = cls.__dict__.get("_id_fields_cache")
        if cached is None:
            cached = tuple(
                name for name, field in cls.model_fields.items()
                if not (isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("not_in_id"))
            )
            setattr(cls, "_id_fields_cache", cached)
        return cached

    def id_dump(self) -> Any:
        """JSON-safe dump of the fields that enter the content id (recursively).

        Instances are frozen, so the dump is computed once per instance and cached.
        """
        private = self.__pydantic_private__
        if private["_id_cache"] is None:
            private["_id_cache"] = {name: _id_dump(getattr(self, name)) for name in self.id_fields()}
        return private["_id_cache"]


    def id_json(self) -> str:
        """Canonical JSON of `id_dump()` (sorted keys, no whitespace), cached per instance.

        Built from the cached strings of nested models, so hashing a stage config costs only its
        new parts: the same bytes as `json.dumps(self.id_dump(), sort_keys=True, separators=(",", ":"))`.
        """
        private = self.__pydantic_private__
        if private["_id_json_cache"] is None:
            private["_id_json_cache"] = "{" + ",".join(
                f'"{name}":{_id_json(getattr(self, name))}' for name in sorted(self.id_fields())
            ) + "}"
        return private["_id_json_cache"]


def _sorted_fields(cls: type[BaseModel]) -> list[str]:
    """Field names in sorted order (Python identifiers: they need no JSON escaping)."""
    cached = cls.__dict__.get("_sorted_fields_cache")
    if cached is None:
        cached = sorted(cls.model_fields)
        setattr(cls, "_sorted_fields_cache", cached)
    return cached


def _id_json(value: Any, full: bool = False) -> str:
    if isinstance(value, StrictModel):
        return value.full_json() if full else value.id_json()
    plain = plain_json(value)
    if plain is not None:
        return plain
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return json.dumps(value)
    if isinstance(value, (list, tuple, dict)):
        try:  # plain JSON data (e.g. the report's rows): one C-speed dump
            text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False, default=_plain_fields)
            if "-0.0" not in text:
                return text
        except (TypeError, ValueError):
            pass  # holds models, non-finite or non-string-keyed values: go element by element
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_id_json(v, full) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{_id_json(value[k], full)}"
                              for k in sorted(map(str, value))) + "}"
    return json.dumps(_id_dump(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _plain_fields(value: Any) -> Any:
    """The fast path's view of a model whose every field enters its id: its fields (the bytes of its
    `id_json` and `full_json` when they are plain JSON); anything else is not plain JSON."""
    if isinstance(value, StrictModel) and len(value.id_fields()) == len(type(value).model_fields):
        return value.__dict__
    raise TypeError("not plain JSON")


def _id_dump(value: Any) -> Any:
    if isinstance(value, StrictModel):
        return value.id_dump()
    if isinstance(value, (list, tuple)):
        return [_id_dump(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _id_dump(v) for k, v in value.items()}
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"non-finite float {value!r} cannot enter a stage id")
        return value + 0.0  # -0.0 → 0.0
    return to_jsonable_python(value)
