"""Hugging Face datasets through `datasets.load_dataset`: a Hub id, or a local mirror of the Hub
repository (`path`), read the way the Hub would serve it (its README configs, split file names, formats)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from compiler.errors import StageError
from compiler.schema.sources import HFSource


def iter_hf(spec: HFSource, root: Path, where: str) -> Iterator[dict[str, Any]]:
    """The split's rows, streamed (`streaming: true`, the default) so no corpus is downloaded whole."""
    import datasets

    if spec.path is not None:
        target = Path(root) / spec.path
        if not target.exists():
            raise StageError(f"{where}: {target} does not exist")
        name, revision = str(target), None          # a local folder has no revisions
    else:
        name, revision = spec.name, spec.revision
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
