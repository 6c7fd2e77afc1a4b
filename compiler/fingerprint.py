"""Content fingerprints of the local files a stage reads, so editing a data file makes a new id.

A path in a config says where data is, not what it is: two compiles that read different bytes from
`data/demo/toxigen.jsonl` must not share a stage instance. Files up to `HASH_LIMIT_BYTES` are hashed
(sha256 of the bytes); larger ones are fingerprinted by size and modification time, because hashing a
multi-GB corpus at every Snakemake parse would cost more than it protects (touching one reruns it).
Folders (Parquet or text sources) combine the fingerprints of their files; a glob (a source's `path:
data/raiders/*.tar.zst`) combines those of the files it matches, so a new shard makes a new id.
"""
from __future__ import annotations

import glob
import hashlib
import os
from functools import lru_cache
from pathlib import Path

from .schema.sources import is_glob

HASH_LIMIT_BYTES = 64 * 1024 * 1024


def local_exists(path: Path) -> bool:
    """Whether a local file or folder exists, or a glob matches at least one path."""
    return bool(_matches(path)) if is_glob(str(path)) else path.exists()


def fingerprint(path: Path) -> str:
    """A short content fingerprint of a file, a folder or a glob (which must exist / match)."""
    if is_glob(str(path)):
        anchor = _anchor(path)
        parts = [f"{os.path.relpath(p, anchor)}={fingerprint(p)}" for p in _matches(path)]
        return "glob:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    if path.is_dir():
        parts = [f"{p.relative_to(path)}={fingerprint(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
        return "dir:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    st = path.stat()
    return _file_fingerprint(str(path.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=4096)
def _file_fingerprint(path: str, size: int, mtime_ns: int) -> str:
    if size > HASH_LIMIT_BYTES:
        return f"size:{size},mtime_ns:{mtime_ns}"
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


def _matches(pattern: Path) -> list[Path]:
    return [Path(p) for p in sorted(glob.glob(str(pattern), recursive=True))]


def _anchor(pattern: Path) -> Path:
    """The glob's leading folders without wildcards: matches are named relative to it, so the
    fingerprint does not depend on where the project is checked out."""
    parts = pattern.parts
    fixed = next(i for i, part in enumerate(parts) if is_glob(part))
    return Path(*parts[:fixed]) if fixed else Path(".")
