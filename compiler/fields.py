"""Walking the spec schema by path: does `steer.alpha` exist, what did `probe.layrs` mean?"""
from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Union

from pydantic import BaseModel


def _members(annotation: Any) -> list[Any]:
    """Unwrap Optional / Annotated / Union into the concrete types."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        out = []
        for arg in typing.get_args(annotation):
            out.extend(_members(arg))
        return [m for m in out if m is not type(None)]
    return [annotation]


def _kind_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("kind")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return args[0] if args else None


def models_at(root: type[BaseModel], parts: tuple[Any, ...]) -> list[type[BaseModel]] | None:
    """The model classes that could sit at `parts` (None if the path leaves the schema).

    Discriminated-union tags in the path (pydantic puts `jsonl` in error locations) select a member.
    """
    current: list[Any] = [root]
    for part in parts:
        nxt: list[Any] = []
        for typ in current:
            origin = typing.get_origin(typ)
            if isinstance(typ, type) and issubclass(typ, BaseModel):
                if isinstance(part, str) and part in typ.model_fields:
                    nxt.extend(_members(typ.model_fields[part].annotation))
                elif _kind_of(typ) == part:
                    nxt.append(typ)
            elif origin is dict:
                nxt.extend(_members(typing.get_args(typ)[1]))
            elif origin in (list, tuple) and isinstance(part, int):
                args = [a for a in typing.get_args(typ) if a is not Ellipsis]
                for a in args:
                    nxt.extend(_members(a))
        if not nxt:
            return None
        current = nxt
    return [t for t in current if isinstance(t, type) and issubclass(t, BaseModel)] or [object]


def field_names_at(root: type[BaseModel], parts: tuple[Any, ...]) -> list[str]:
    models = models_at(root, parts) or []
    names: list[str] = []
    for m in models:
        if isinstance(m, type) and issubclass(m, BaseModel):
            names.extend(n for n in m.model_fields if n not in names)
    return names


def did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(str(word), candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_path(root: type[BaseModel], parts: tuple[str, ...]) -> str | None:
    """None if `parts` names a field of the schema, else a message with a suggestion."""
    for i in range(len(parts)):
        if models_at(root, parts[: i + 1]) is None:
            known = field_names_at(root, parts[:i])
            prefix = ".".join(parts[:i]) or "the spec"
            return f"unknown spec path {'.'.join(parts)!r}: {parts[i]!r} is not a field of {prefix}{did_you_mean(parts[i], known)}"
    return None


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts (a dumped spec or stage config) → {dotted path: leaf}; an empty dict is a leaf."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}
