"""Lock files: every floating Hub reference of a spec resolved once to a commit.

A spec may name a Hub dataset (`kind: hf` with `name:`) or a Hub classifier (`kind: classifier` with
`model:`) by a branch or tag (`revision: main`, `refs/convert/parquet`) or by nothing at all (the default
branch). Such a reference floats: the Hub may serve other bytes under it tomorrow. `mixsteer lock SPEC`
asks the Hub once and writes `<spec>.lock.json` beside the spec; loading a spec replaces every locked
reference's revision by its commit *before* validation, so stage ids, `mixsteer show` and `mixsteer diff`
all see the commit. As with uv's and pip-tools' lock files, the same spec and lock give the same ids on
any machine.

A spec that `extends` others also reads their lock files (its own first): an ablation resolves what its
base already locked to the same commits, so it reuses the base's stage instances. A reference with no
lock entry stays as written and is reported as unlocked; a run refuses to start with one unless the user
opts in (`snakemake --config unlocked=true`), and then the runtime records the commit it read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Protocol

from .errors import MixsteerError, Problem
from .load import PathKey, dotted
from .schema.base import is_commit

LOCK_VERSION = 1
LOCK_SUFFIX = ".lock.json"


@dataclass(frozen=True, order=True)
class Ref:
    """One floating reference: a Hub repository at a branch, tag or the default branch (`revision` None)."""

    repo_type: str          # "dataset" or "model"
    repo: str
    revision: str | None

    @property
    def key(self) -> str:
        """The lock file's key: `dataset:allenai/c4@main` (`@` alone for the default branch)."""
        return f"{self.repo_type}:{self.repo}@{self.revision or ''}"

    def __str__(self) -> str:
        return f"{self.repo_type} {self.repo} at {self.revision or 'its default branch'}"


def hub_reference(node: Any) -> Ref | None:
    """The Hub reference a raw spec mapping holds, floating or not: a Hub dataset source or a Hub
    classifier scorer (both are discriminated by `kind`, so the raw document tells them apart)."""
    if not isinstance(node, dict):
        return None
    revision = node.get("revision")
    if not (revision is None or isinstance(revision, str)):
        return None                                  # the schema reports the type error
    if node.get("kind") == "hf" and isinstance(node.get("name"), str) and node.get("path") is None:
        return Ref("dataset", node["name"], revision)
    if node.get("kind") == "classifier" and isinstance(node.get("model"), str) and node.get("path") is None:
        return Ref("model", node["model"], revision)
    return None


def floating_refs(data: Any, path: PathKey = ()) -> Iterator[tuple[PathKey, Ref]]:
    """Every floating reference of a raw spec document (sweep values included), with its key path."""
    ref = hub_reference(data)
    if ref is not None and not is_commit(ref.revision):
        yield path, ref
    if isinstance(data, dict):
        for key, value in data.items():
            yield from floating_refs(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from floating_refs(value, (*path, i))


def lock_path(spec_file: str | Path) -> Path:
    """`specs/paper.yaml` → `specs/paper.lock.json`."""
    spec_file = Path(spec_file)
    return spec_file.with_name(spec_file.stem + LOCK_SUFFIX)


@dataclass(frozen=True)
class Entry:
    commit: str
    resolved_at: str        # when `mixsteer lock` asked the Hub (UTC, ISO 8601)


@dataclass
class LockFile:
    """One spec's lock file: reference key → the commit it was resolved to."""

    path: Path
    entries: dict[str, Entry] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> "LockFile":
        """The lock file at `path` (empty when there is none); a damaged one is an error naming the fix."""
        if not path.exists():
            return cls(path)
        fix = "fix it or delete it and run `mixsteer lock` on its spec again"
        try:
            data = json.loads(path.read_text())
            if data.get("version") != LOCK_VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {LOCK_VERSION}")
            entries = {key: Entry(str(e["commit"]), str(e.get("resolved_at", "")))
                       for key, e in data["references"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MixsteerError(f"lock file {path} cannot be read ({type(exc).__name__}: {exc}): {fix}") from None
        bad = [key for key, e in entries.items() if not is_commit(e.commit)]
        if bad:
            raise MixsteerError(f"lock file {path}: {', '.join(bad)} not resolved to a 40-hex commit: {fix}")
        return cls(path, entries)

    def write(self) -> None:
        """Sorted, one entry per reference, written atomically (a cut write never leaves half a lock)."""
        body = {"version": LOCK_VERSION,
                "comment": "written by `mixsteer lock`: every floating Hub reference of the spec, resolved "
                           "to a commit. Commit it beside the spec.",
                "references": {k: {"commit": e.commit, "resolved_at": e.resolved_at}
                               for k, e in sorted(self.entries.items())}}
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(body, indent=2) + "\n")
        tmp.replace(self.path)


@dataclass(frozen=True)
class Unlocked:
    """A floating reference no lock file resolves, and where the spec names it."""

    path: PathKey
    ref: Ref


@dataclass(frozen=True)
class LockState:
    """What loading a spec did with its floating references."""

    lock_files: tuple[str, ...] = ()              # every lock file consulted, read or absent
    resolved: dict[str, str] = field(default_factory=dict)   # reference key → commit used
    unlocked: tuple[Unlocked, ...] = ()


def lock_files_for(sources: tuple[str, ...]) -> list[Path]:
    """The lock files of a spec and of its `extends` chain, its own first."""
    return [lock_path(s) for s in sources]


def apply_locks(data: dict[str, Any], sources: tuple[str, ...]) -> tuple[dict[str, Any], LockState]:
    """The document with every locked reference's revision replaced by its commit (a copy along the
    changed paths only), and what was resolved or left floating."""
    files = lock_files_for(sources)
    table: dict[str, str] = {}
    for lock in reversed([LockFile.read(f) for f in files]):   # the spec's own lock wins
        table.update({k: e.commit for k, e in lock.entries.items()})
    resolved: dict[str, str] = {}
    unlocked: list[Unlocked] = []
    for path, ref in list(floating_refs(data)):
        commit = table.get(ref.key)
        if commit is None:
            unlocked.append(Unlocked(path, ref))
            continue
        resolved[ref.key] = commit
        data = _set_revision(data, path, commit)
    return data, LockState(tuple(map(str, files)), resolved, tuple(unlocked))


def _set_revision(data: Any, path: PathKey, commit: str) -> Any:
    """A copy of `data` whose mapping at `path` has `revision: commit` (siblings shared, not copied)."""
    if not path:
        return {**data, "revision": commit}
    head, rest = path[0], path[1:]
    if isinstance(data, list):
        out = list(data)
        out[head] = _set_revision(data[head], rest, commit)
        return out
    return {**data, head: _set_revision(data[head], rest, commit)}


def unlocked_warnings(state: LockState, position: Any) -> list[Problem]:
    """One located warning per floating reference left unlocked; the fix locks the file that names it
    (a base spec's lock then serves every spec extending it)."""
    out = []
    for u in state.unlocked:
        p = position(u.path)
        out.append(Problem(p.file, p.line, p.column, dotted(u.path), (
            f"warning: {u.ref} floats and is not locked: a run will refuse to start until "
            f"`mixsteer lock {p.file}` resolves it to a commit")))
    return out


class Resolver(Protocol):
    """What `mixsteer lock` asks of the Hub (the real one, or a fake in tests)."""

    def resolve(self, repo: str, repo_type: str, revision: str | None) -> str: ...


@dataclass(frozen=True)
class LockChange:
    ref: Ref
    old: str | None
    new: str


def lock_spec(spec_file: Path, sources: tuple[str, ...], refs: list[Ref], hub: Resolver,
              upgrade: bool = False) -> list[LockChange]:
    """Resolve the spec's floating references into its own lock file: those its bases' lock files do not
    already resolve (an ablation keeps its base's commits), and with `upgrade` every one of its own again.
    Returns what changed; the file is written only when something did."""
    own = LockFile.read(lock_path(spec_file))
    inherited: dict[str, str] = {}
    for f in reversed(lock_files_for(sources)[1:]):
        inherited.update({k: e.commit for k, e in LockFile.read(f).entries.items()})
    now = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    changes = []
    wanted = {ref.key: ref for ref in refs if ref.key not in inherited}
    for key in [k for k in own.entries if k not in wanted]:       # references the spec no longer names
        del own.entries[key]
        changes.append(LockChange(_ref_of(key), None, ""))
    for key, ref in sorted(wanted.items()):
        old = own.entries.get(key)
        if old is not None and not upgrade:
            continue
        commit = hub.resolve(ref.repo, ref.repo_type, ref.revision)
        if not is_commit(commit):
            raise MixsteerError(f"the Hub answered {commit!r} for {ref}: not a commit")
        if old is None or old.commit != commit:
            own.entries[key] = Entry(commit, now)
            changes.append(LockChange(ref, old.commit if old else None, commit))
    if changes:
        own.write()
    return changes


def _ref_of(key: str) -> Ref:
    repo_type, rest = key.split(":", 1)
    repo, revision = rest.rsplit("@", 1)
    return Ref(repo_type, repo, revision or None)


def lock_record(state: LockState) -> dict[str, Any]:
    """The lock part of `build/<spec>/lock.json`: which references were resolved to which commits."""
    return {"lock_files": list(state.lock_files), "resolved": dict(sorted(state.resolved.items())),
            "unlocked": [u.ref.key for u in state.unlocked]}
