"""`extends:` and `sweep:` — compile-time only; the runtime never sees either.

extends: `extends: base.yaml` (or a list, applied left to right) deep-merges the current file onto its
bases: mappings merge key by key, anything else (lists, scalars, null) replaces. Paths are relative to
the extending file; cycles are an error. Every key keeps the position of the file that set it.

sweep: `grid:` axes form a cartesian product, `zip:` axes advance in lock-step (equal lengths); the two
combine as grid × zip; an axis set to null (in an extending spec) is removed. Each run is the merged document with the axis values set at their dotted paths,
named `axis=value,…` by the last path component (the full path where two axes share one).
"""
from __future__ import annotations

import copy
import itertools
from collections import ChainMap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from .errors import Problem, SpecError
from .load import PathKey, Position, load_yaml


@dataclass(frozen=True)
class Document:
    """A merged spec document and where each of its keys came from."""

    data: dict[str, Any]
    positions: dict[PathKey, Position]
    file: str
    sources: tuple[str, ...] = ()  # every spec file read (the file and its `extends` chain)
    lock: Any = None               # compiler.lock.LockState once the lock files were applied

    def position(self, path: PathKey) -> Position:
        """Position of `path`, or of its closest ancestor that has one."""
        while path:
            if path in self.positions:
                return self.positions[path]
            path = path[:-1]
        return Position(self.file, 0, 0)


@dataclass(frozen=True)
class Run:
    """One concrete point of a sweep."""

    name: str
    axes: dict[str, Any]
    document: Document


def load_document(file: Path, display: str | None = None) -> Document:
    """Load a spec file and merge its `extends` chain."""
    return _load(Path(file), display or str(file), ())


def _load(file: Path, display: str, stack: tuple[Path, ...]) -> Document:
    real = file.resolve()
    if real in stack:
        chain = " -> ".join(p.name for p in (*stack, real))
        raise SpecError([Problem(display, 0, 0, "extends", f"extends cycle: {chain}")])
    data, positions = load_yaml(file, display)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError([Problem(display, 1, 1, "", "a spec must be a mapping of sections")])
    bases = data.pop("extends", None)
    if bases is None:
        return Document(data, positions, display, (str(real),))
    base_list = [bases] if isinstance(bases, str) else bases
    if not isinstance(base_list, list) or not all(isinstance(b, str) for b in base_list):
        p = positions[("extends",)]
        raise SpecError([Problem(display, p.line, p.column, "extends", "must be a file name or a list of them")])
    merged: dict[str, Any] = {}
    merged_pos: dict[PathKey, Position] = {}
    sources: tuple[str, ...] = (str(real),)
    for i, base in enumerate(base_list):
        base_file = (file.parent / base)
        if not base_file.exists():
            p = positions.get(("extends", i)) or positions[("extends",)]
            raise SpecError([Problem(display, p.line, p.column, "extends", f"base spec {base!r} not found (looked at {base_file})")])
        parent = _load(base_file, _display(base_file, display, base), (*stack, real))
        merged, merged_pos = _merge(merged, merged_pos, parent.data, parent.positions)
        sources += parent.sources
    merged, merged_pos = _merge(merged, merged_pos, data, {k: v for k, v in positions.items() if k[:1] != ("extends",)})
    return Document(merged, merged_pos, display, sources)


def _display(base_file: Path, child_display: str, base: str) -> str:
    return str(Path(child_display).parent / base) if not Path(base).is_absolute() else base


def _merge(a: dict, a_pos: dict, b: dict, b_pos: dict) -> tuple[dict, dict]:
    """Deep-merge b onto a; each position follows the file that set the value."""
    merged = _deep_merge(a, b)
    pos = {p: v for p, v in a_pos.items() if not _replaced(a, b, p)}
    pos.update(b_pos)
    return merged, pos


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _replaced(a: Any, b: Any, path: PathKey) -> bool:
    """Whether b overrides the value a holds at `path` (or one of its ancestors)."""
    for key in path:
        if not isinstance(b, dict) or key not in b:
            return False
        if not (isinstance(b[key], dict) and isinstance(a, dict) and isinstance(a.get(key), dict)):
            return True
        a, b = a[key], b[key]
    return True


def _strip(positions: dict[PathKey, Position], key: Any) -> dict[PathKey, Position]:
    return {k[1:]: v for k, v in positions.items() if len(k) > 1 and k[0] == key}


def expand_sweep(doc: Document, check_path: Callable[[PathKey], str | None]) -> list[Run]:
    """Expand `sweep:` into runs. `check_path(parts)` returns None for a spec field, else a message."""
    sweep = doc.data.get("sweep") or {}
    if not isinstance(sweep, dict):
        return [Run("run", {}, doc)]
    problems: list[Problem] = []
    axes: dict[str, list[tuple[Any, PathKey]]] = {}
    lengths: dict[str, list[str]] = {"grid": [], "zip": []}
    for mode in ("grid", "zip"):
        table = sweep.get(mode) or {}
        if not isinstance(table, dict):
            continue  # the schema reports the type error
        for key, values in table.items():
            if values is None:
                continue  # `axis: null` in an extending spec removes the base's axis
            where = doc.position(("sweep", mode, key))
            parts = tuple(str(key).split("."))
            if parts[0] in ("sweep", "extends", "name"):
                problems.append(Problem(where.file, where.line, where.column, f"sweep.{mode}.{key}", f"cannot sweep {parts[0]!r}"))
                continue
            unknown = check_path(parts)
            if unknown:
                problems.append(Problem(where.file, where.line, where.column, f"sweep.{mode}.{key}", unknown))
                continue
            if not isinstance(values, list) or not values:
                problems.append(Problem(where.file, where.line, where.column, f"sweep.{mode}.{key}", "must be a non-empty list of values"))
                continue
            if key in axes:
                problems.append(Problem(where.file, where.line, where.column, f"sweep.{mode}.{key}", "path swept in both grid and zip"))
                continue
            axes[key] = [(v, ("sweep", mode, key, i)) for i, v in enumerate(values)]
            lengths[mode].append(key)
    zip_lens = {len(axes[k]) for k in lengths["zip"]}
    if len(zip_lens) > 1:
        where = doc.position(("sweep", "zip"))
        sizes = ", ".join(f"{k}: {len(axes[k])}" for k in lengths["zip"])
        problems.append(Problem(where.file, where.line, where.column, "sweep.zip", f"zip axes must have equal lengths ({sizes})"))
    if problems:
        raise SpecError(problems)
    grid_keys, zip_keys = lengths["grid"], lengths["zip"]
    grid_points = list(itertools.product(*(axes[k] for k in grid_keys))) or [()]
    zip_points = list(zip(*(axes[k] for k in zip_keys))) if zip_keys else [()]
    short = _short_names([*grid_keys, *zip_keys])
    base_positions = {k: v for k, v in doc.positions.items() if k[:1] != ("sweep",)}
    base_data = {k: v for k, v in doc.data.items() if k != "sweep"}
    sections: dict[tuple, Any] = {}  # runs with equal axis values in a section share its dict
    runs = []
    for g in grid_points:
        for z in zip_points:
            chosen = {key: value for key, (value, _) in zip([*grid_keys, *zip_keys], [*g, *z])}
            overlay: dict[PathKey, Position] = {}
            by_section: dict[str, list[tuple[PathKey, Any]]] = {}
            for key, (value, vpath) in zip([*grid_keys, *zip_keys], [*g, *z]):
                parts = tuple(key.split("."))
                by_section.setdefault(parts[0], []).append((parts, value))
                overlay[parts] = doc.positions[vpath]
            data = dict(base_data)
            for section, items in by_section.items():
                cache_key = (section, tuple((p, _fmt(v)) for p, v in items))
                if cache_key not in sections:
                    holder = {section: base_data.get(section)}
                    for parts, value in items:
                        _set(holder, parts, copy.deepcopy(value))
                    sections[cache_key] = holder[section]
                data[section] = sections[cache_key]
            positions: Any = ChainMap(overlay, base_positions)
            if any(isinstance(v, (dict, list)) for v in chosen.values()):  # drop positions of replaced subtrees
                positions = {k: v for k, v in base_positions.items()
                             if not any(k[: len(p)] == p for p in overlay)} | overlay
            name = ",".join(f"{short[k]}={_fmt(v)}" for k, v in chosen.items()) or "run"
            runs.append(Run(name, chosen, replace(doc, data=data, positions=positions)))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        where = doc.position(("sweep",))
        raise SpecError([Problem(where.file, where.line, where.column, "sweep", "sweep produces duplicate runs")])
    return runs


def _short_names(keys: list[str]) -> dict[str, str]:
    last = [k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (dict, list)):
        import json
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    return str(v)


def _set(data: dict, parts: PathKey, value: Any) -> None:
    """Set a dotted path, copying (never mutating) the shared dicts along it."""
    for p in parts[:-1]:
        nxt = data.get(p)
        nxt = dict(nxt) if isinstance(nxt, dict) else {}
        data[p] = nxt
        data = nxt
    data[parts[-1]] = value
