"""YAML → plain data plus the source position of every key, safely.

PyYAML's SafeLoader constructs no objects from tags, but it silently keeps the last of duplicate keys
and forgets positions. Here the node tree is walked by hand: duplicate keys become problems, and every
mapping key and sequence item gets a `Position` (file, line, column; 1-based), keyed by its path tuple
(`("data", "sources", "clean", "path")`, list items by index).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem, SpecError

PathKey = tuple[Any, ...]
PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


@dataclass(frozen=True)
class Position:
    file: str
    line: int
    column: int


def dotted(path: PathKey) -> str:
    """`("probe", "layers", 2)` → `probe.layers[2]`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_yaml(file: Path, display: str | None = None) -> tuple[Any, dict[PathKey, Position]]:
    """Parse one YAML file; raise SpecError listing syntax errors, bad tags and duplicate keys."""
    name = display or str(file)
    try:
        text = Path(file).read_text()
    except OSError as exc:
        raise SpecError([Problem(name, 0, 0, "", f"cannot read: {exc.strerror or exc}")]) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise SpecError([Problem(name, mark.line + 1, mark.column + 1, "", f"YAML syntax: {exc.problem}")]) from None
    positions: dict[PathKey, Position] = {}
    problems: list[Problem] = []

    def pos(n: yaml.Node) -> Position:
        return Position(name, n.start_mark.line + 1, n.start_mark.column + 1)

    def walk(n: yaml.Node, path: PathKey) -> Any:
        if isinstance(n, (yaml.MappingNode, yaml.SequenceNode)) and n.tag not in PLAIN_TAGS:
            problems.append(Problem(name, *_lc(n), dotted(path), f"unsupported YAML tag {n.tag!r}"))
            return None
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in n.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    problems.append(Problem(name, *_lc(key_node), dotted(path), "YAML merge keys (<<) are not supported; use `extends:`"))
                    continue
                key = walk(key_node, path)
                if isinstance(key, (dict, list)):
                    problems.append(Problem(name, *_lc(key_node), dotted(path), "mapping keys must be scalars"))
                    continue
                if key in out:
                    first = positions[path + (key,)]
                    problems.append(Problem(name, *_lc(key_node), dotted(path + (key,)),
                                            f"duplicate key (first set at line {first.line}; YAML would silently keep this one)"))
                    continue
                positions[path + (key,)] = pos(key_node)
                out[key] = walk(value_node, path + (key,))
            return out
        if isinstance(n, yaml.SequenceNode):
            items = []
            for i, item in enumerate(n.value):
                positions[path + (i,)] = pos(item)
                items.append(walk(item, path + (i,)))
            return items
        try:
            return loader.construct_object(n, deep=True)
        except yaml.constructor.ConstructorError as exc:
            problems.append(Problem(name, *_lc(n), dotted(path), f"unsupported YAML tag: {exc.problem}"))
            return None

    data = walk(node, ()) if node is not None else {}
    loader.dispose()
    if problems:
        raise SpecError(problems)
    return data, positions


def _lc(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1
