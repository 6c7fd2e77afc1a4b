"""What happens to records between reading and a stage: dotted fields, explode, filters, sampling, counts.

Every step is a generator over `(position, record)` pairs, so a stage never holds more than the
sample's reservoirs in memory. A position is `(i,)` (the i-th record read, from 0) or `(i, j)` (element
j of record i's exploded list): errors name it.
"""
from __future__ import annotations

import heapq
import json
import operator
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Callable

from compiler.errors import StageError
from compiler.schema.sources import RecordFilter, RecordSample

Position = tuple[int, ...]
Positioned = tuple[Position, dict[str, Any]]


@dataclass(frozen=True)
class MissingField:
    """The first record found without a field it needs: the error when no record at all is kept."""

    field: str
    at: str
    fields: list[str]


@dataclass
class SourceCounts:
    """How many records a source read, and where the ones not kept went.

    `read`: records read from the files or the Hub (threads, when exploding); `exploded`: records
    made by `explode` (posts); `skipped_missing` / `skipped_null` / `skipped_empty`: records (or null
    list elements) dropped because a text field, or the exploded list, is absent / null / empty after
    cleaning; `filtered_out`: records the filters rejected; `sampled_out`: records the sample left out;
    `kept`: records handed to the stage (`max_documents` stops reading, so what lies beyond it is not counted).
    `hub_commit`: the commit a Hub dataset named by a branch was read at (an unlocked run records it).
    """

    read: int = 0
    exploded: int = 0
    skipped_missing: int = 0
    skipped_null: int = 0
    skipped_empty: int = 0
    filtered_out: int = 0
    sampled_out: int = 0
    kept: int = 0
    hub_commit: str = ""

    def as_dict(self) -> dict[str, int | str]:
        """The counts, and `hub_commit` when an unlocked Hub source was read."""
        return {name: value for name, value in asdict(self).items() if name != "hub_commit" or value}

    def metrics(self, role: str) -> dict[str, int | str]:
        """The counts as stage metrics, `source_<role>_<count>` (the manifest records them)."""
        return {f"source_{role}_{name}": value for name, value in self.as_dict().items()}


def position_text(position: Position, explode: str | None = None) -> str:
    """`record 12`, or `record 12 (posts[3])` for an exploded element."""
    if len(position) == 1:
        return f"record {position[0]}"
    return f"record {position[0]} ({explode}[{position[1]}])"


def field_value(record: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted path (`prompt.text`; list indices as numbers, `posts.0.com`).

    A key that itself holds dots is found first. A null on the way gives null; a missing key (or a
    step into something that is not an object or list) raises KeyError naming the path.
    """
    if dotted in record:
        return record[dotted]
    value: Any = record
    for part in dotted.split("."):
        if value is None:
            return None
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(dotted)
    return value


def set_field(record: dict[str, Any], dotted: str, value: Any) -> None:
    """Replace the value at a dotted path that `field_value` found."""
    if dotted in record:
        record[dotted] = value
        return
    *parents, last = dotted.split(".")
    holder: Any = record
    for part in parents:
        holder = holder[int(part)] if isinstance(holder, list) else holder[part]
    holder[int(last) if isinstance(holder, list) else last] = value


def explode(stream: Iterable[Positioned], path: str, counts: SourceCounts, where: str,
            missing: list[MissingField]) -> Iterator[Positioned]:
    """Each element of the list at `path` as its own record: an object's fields become the record's;
    any other value becomes `{"value": element}`. An absent or null list, or a null element, is skipped
    and counted (the first absent one remembered in `missing`); a value that is not a list is an error."""
    for (i, *_), record in stream:
        try:
            items = field_value(record, path)
        except KeyError:
            counts.skipped_missing += 1
            if not missing:
                missing.append(MissingField(path, f"record {i}", sorted(record)))
            continue
        if items is None:
            counts.skipped_null += 1
            continue
        if not isinstance(items, list):
            raise StageError(f"{where}: record {i} field {path!r} is {type(items).__name__}, not a list to explode")
        for j, item in enumerate(items):
            if item is None:
                counts.skipped_null += 1
                continue
            counts.exploded += 1
            yield (i, j), item if isinstance(item, dict) else {"value": item}


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt,
}


def _comparable(value: Any, target: Any) -> Any:
    """A text value compared with a number is read as a number when it is one (CSV cells are text)."""
    if isinstance(value, str) and isinstance(target, (int, float)) and not isinstance(target, bool):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _matches(value: Any, rule: RecordFilter) -> bool:
    if rule.op in ("in", "not_in"):
        targets = rule.value if isinstance(rule.value, list) else [rule.value]
        found = any(_comparable(value, t) == t for t in targets)
        return found if rule.op == "in" else not found
    value = _comparable(value, rule.value)
    if rule.op == "eq":
        return value == rule.value
    if rule.op == "ne":
        return value != rule.value
    if value is None or rule.value is None:
        return False
    return _ORDER[rule.op](value, rule.value)


def apply_filters(stream: Iterable[Positioned], rules: Sequence[RecordFilter], counts: SourceCounts,
                  where: str, explode_path: str | None) -> Iterator[Positioned]:
    """Records matching every rule (an absent field counts as null; ordering never matches null)."""
    for position, record in stream:
        for rule in rules:
            try:
                value = field_value(record, rule.field)
            except KeyError:
                value = None
            try:
                ok = _matches(value, rule)
            except TypeError:
                raise StageError(
                    f"{where}: {position_text(position, explode_path)} field {rule.field!r} is "
                    f"{type(value).__name__} {value!r}, which cannot be compared with {rule.value!r} ({rule.op})"
                ) from None
            if not ok:
                counts.filtered_out += 1
                break
        else:
            yield position, record


def _stratum(record: dict[str, Any], fields: Sequence[str], where: str, position: str) -> tuple[str, ...]:
    """The stratum key: the JSON of each field's value (hashable, sortable, lists and nulls included)."""
    key = []
    for name in fields:
        try:
            value = field_value(record, name)
        except KeyError:
            raise StageError(f"{where}: {position} has no field {name!r} to stratify by "
                             f"(fields: {sorted(record)})") from None
        key.append(json.dumps(value, sort_keys=True, default=str))
    return tuple(key)


def stratum_quotas(sizes: dict[tuple[str, ...], int], n: int) -> dict[tuple[str, ...], int]:
    """Split n over strata as equally as their sizes allow (water-filling): a stratum holding no more
    than an equal share of what is left gives everything; the rest share the remainder equally, the
    first strata in sorted order taking one more when it does not divide."""
    quotas: dict[tuple[str, ...], int] = {}
    remaining, open_ = n, sorted(sizes)
    while open_:
        share, extra = divmod(remaining, len(open_))
        small = [k for k in open_ if sizes[k] <= share]
        if not small:
            quotas.update({k: share + (i < extra) for i, k in enumerate(open_)})
            break
        for k in small:
            quotas[k] = sizes[k]
            remaining -= sizes[k]
        open_ = [k for k in open_ if sizes[k] > share]
    return quotas


def sample_records(stream: Iterable[Positioned], sample: RecordSample, counts: SourceCounts, where: str,
                   explode_path: str | None) -> Iterator[Positioned]:
    """A seeded, stratified sample of `sample.n` records in the source's order.

    Each record draws a key from `Random(seed)` in source order; each stratum keeps the `n` records with
    the smallest keys (a uniform sample of any size up to n; memory: at most n records per stratum), and
    `stratum_quotas` decides how many of those each stratum gives. The same seed on the same records
    keeps the same records. A source with fewer than n records gives them all.
    """
    rng = random.Random(sample.seed)
    reservoirs: dict[tuple[str, ...], list[tuple[float, int, Positioned]]] = {}
    seen: dict[tuple[str, ...], int] = {}
    for order, (position, record) in enumerate(stream):
        key = _stratum(record, sample.stratify_by, where, position_text(position, explode_path))
        heap = reservoirs.setdefault(key, [])
        seen[key] = seen.get(key, 0) + 1
        entry = (-rng.random(), order, (position, record))   # max-heap on the key: evict the largest
        if len(heap) < sample.n:
            heapq.heappush(heap, entry)
        elif entry[0] > heap[0][0]:
            heapq.heapreplace(heap, entry)
    quotas = stratum_quotas({k: len(h) for k, h in reservoirs.items()}, sample.n)
    chosen = []
    for key, heap in reservoirs.items():
        chosen.extend(sorted(heap, reverse=True)[:quotas[key]])   # smallest keys first
    counts.sampled_out += sum(seen.values()) - len(chosen)
    for _, _, item in sorted(chosen, key=lambda e: e[1]):
        yield item


def required_value(record: dict[str, Any], field: str, where: str) -> Any:
    """The value at a dotted field of a record that is not its text (a label, an attribute, a flag):
    absent or null is the data's error, raised naming `where` and the field, never a silent skip."""
    try:
        value = field_value(record, field)
    except KeyError:
        value = None
    if value is None:
        raise StageError(f"{where} has no value for field {field!r} (fields: {sorted(record)})")
    return value

