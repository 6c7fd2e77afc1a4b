"""Hugging Face datasets through `datasets.load_dataset`: a Hub id, or a local mirror of the Hub
repository (`path`), read the way the Hub would serve it (its README configs, split file names, formats)."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from compiler.errors import StageError
from compiler.schema.base import is_commit
from compiler.schema.sources import HFSource

from .records import SourceCounts


def iter_hf(spec: HFSource, root: Path, where: str, counts: SourceCounts) -> Iterator[dict[str, Any]]:
    """The split's rows, streamed (`streaming: true`, the default) so no corpus is downloaded whole.

    A spec read through its lock file names a commit. A branch reaches here only in a run the user let
    start unlocked: it is resolved to a commit once, read at that commit (never at a branch that may move
    mid-read) and recorded in `counts.hub_commit`, so the stage's metrics say what it read."""
    import datasets

    if spec.path is not None:
        target = Path(root) / spec.path
        if not target.exists():
            raise StageError(f"{where}: {target} does not exist")
        name, revision = str(target), None          # a local folder has no revisions
    else:
        name, revision = spec.name, spec.revision
        if not is_commit(revision):
            revision = counts.hub_commit = _current_commit(name, revision, where)
    extra = {"data_files": spec.data_files} if spec.data_files is not None else {}
    context = f"{where} (config {spec.config!r}, split {spec.split!r})"
    try:
        rows = datasets.load_dataset(name, spec.config, split=spec.split, revision=revision,
                                     streaming=spec.streaming, **extra)
    except Exception as exc:  # datasets raises many types (offline, gated, not found, bad config)
        raise StageError(f"{context}: cannot load: {type(exc).__name__}: {exc}") from exc
    try:
        yield from rows
    except Exception as exc:  # a shard that fails to download or parse midway
        raise StageError(f"{context}: reading failed: {type(exc).__name__}: {exc}") from exc


def _current_commit(name: str, revision: str | None, where: str) -> str:
    """The commit a dataset branch (or the default branch) points to now, logged."""
    from huggingface_hub import HfApi

    try:
        commit = str(HfApi().dataset_info(name, revision=revision).sha)
    except Exception as exc:  # offline, gated, missing: the same answers `load_dataset` would give
        raise StageError(f"{where}: cannot resolve revision {revision or 'default branch'!r} to a commit "
                         f"({type(exc).__name__}: {exc}); lock the spec (`mixsteer lock`) where there is network, "
                         f"or mirror the dataset and use `path:`") from exc
    print(f"{where}: unlocked revision {revision or 'default branch'!r} read at commit {commit}", file=sys.stderr)
    return commit
