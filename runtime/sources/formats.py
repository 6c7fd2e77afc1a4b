"""Local files as records: which files a `path` names, how they are decompressed, unpacked and parsed.

A path is a file, a folder (every file under it whose name has the kind's suffix, or matches
`members`) or a glob (its matches, folders expanded). Files may be `.gz` or `.zst` compressed; a
`.tar`, `.tar.gz`/`.tgz` or `.tar.zst` archive is read member by member, streaming, in the kind's
format. JSONL, CSV and text stream line by line; Parquet by row batches (a compressed Parquet file or
an archive member is read into memory first, one at a time); a `json` file is parsed whole.
A truncated or corrupt file raises `StageError` naming it.
"""
from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import tarfile
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import IO, Any

from compiler.errors import StageError
from compiler.schema.sources import is_glob

PARQUET_BATCH_ROWS = 1024
"""Rows per pyarrow batch: bounds memory for folders of multi-GB Parquet files."""

READ_CHUNK_BYTES = 1 << 20
"""Compressed bytes read at a time from a .zst file."""

ZSTD_MAX_WINDOW = 1 << 31
"""Largest zstd window accepted: archives made with `zstd --long=31` (as large dumps are) need it."""

KIND_SUFFIXES = {
    "jsonl": (".jsonl", ".ndjson", ".json"),   # C4 ships JSON lines as `.json.gz`
    "json": (".json",),
    "parquet": (".parquet",),
    "csv": (".csv", ".tsv"),
    "text": (".txt",),
}
COMPRESSIONS = (".gz", ".zst")
ARCHIVES = (".tar", ".tar.gz", ".tgz", ".tar.zst")


class Cursor:
    """Which file (or `archive:member`) the reader is in, for error messages."""

    file: str = "?"


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVES)


def _selected(name: str, kind: str, members: str | None) -> bool:
    """Whether a file inside a folder or archive is read: it matches `members` (its relative path or
    its base name), or by default has the kind's suffix (after a compression suffix). Hidden files and
    macOS `._` resource forks are never read."""
    base = name.rsplit("/", 1)[-1]
    if base.startswith("."):
        return False
    if members is not None:
        return fnmatch(name, members) or fnmatch(base, members)
    plain = base.lower()
    for suffix in COMPRESSIONS:
        if plain.endswith(suffix):
            plain = plain[: -len(suffix)]
    return plain.endswith(KIND_SUFFIXES[kind])


def local_files(spec: Any, root: Path, where: str) -> list[Path]:
    """The files a local source reads, in sorted order; a StageError when there are none."""
    target = root / spec.path
    if is_glob(spec.path):
        found = []
        for match in sorted(glob.glob(str(target), recursive=True)):
            path = Path(match)
            found.extend(_folder_files(path, spec) if path.is_dir() else [path])
        if not found:
            raise StageError(f"{where}: the glob {str(target)!r} matches no file")
        return found
    if target.is_dir():
        found = _folder_files(target, spec)
        if not found:
            wanted = spec.members or " / ".join(f"*{s}" for s in KIND_SUFFIXES[spec.kind])
            raise StageError(f"{where}: no {wanted} files (or archives) under {target}")
        return found
    if not target.is_file():
        raise StageError(f"{where}: {target} does not exist")
    return [target]


def _folder_files(folder: Path, spec: Any) -> list[Path]:
    return [p for p in sorted(folder.rglob("*")) if p.is_file()
            and (is_archive(p.name) or _selected(p.relative_to(folder).as_posix(), spec.kind, spec.members))]


def iter_local(spec: Any, root: Path, where: str, cursor: Cursor) -> Iterator[dict[str, Any]]:
    """Every record of every file a local source names, in file order."""
    for path in local_files(spec, root, where):
        cursor.file = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        try:
            with open(path, "rb") as raw:
                if is_archive(path.name):
                    yield from _archive(decompressed(raw, path.name), spec, where, cursor)
                else:
                    yield from parse(decompressed(raw, path.name), path.name, spec, where, cursor, path)
        except StageError:
            raise
        except UnicodeDecodeError as exc:
            raise StageError(f"{where}: {cursor.file} is not UTF-8 text ({exc})") from None
        except (EOFError, OSError, tarfile.TarError) as exc:
            raise StageError(f"{where}: {cursor.file} is truncated or corrupt ({type(exc).__name__}: {exc})") from None
        except Exception as exc:
            if type(exc).__module__.startswith(("zstandard", "pyarrow")):
                raise StageError(f"{where}: {cursor.file} is truncated or corrupt ({exc})") from None
            raise


def _archive(stream: IO[bytes], spec: Any, where: str, cursor: Cursor) -> Iterator[dict[str, Any]]:
    archive_name = cursor.file
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isfile() or not _selected(member.name, spec.kind, spec.members):
                continue
            cursor.file = f"{archive_name}:{member.name}"
            data = tar.extractfile(member)
            assert data is not None  # a regular file
            member_stream = io.BufferedReader(_Forward(data), buffer_size=READ_CHUNK_BYTES)
            yield from parse(decompressed(member_stream, member.name), member.name, spec, where, cursor)
        cursor.file = archive_name


def decompressed(raw: IO[bytes], name: str) -> IO[bytes]:
    """A binary stream of a file's content, decompressed by its suffix (`.gz`, `.tgz`, `.zst`)."""
    lower = name.lower()
    if lower.endswith((".gz", ".tgz")):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if lower.endswith(".zst"):
        return io.BufferedReader(ZstdReader(raw), buffer_size=READ_CHUNK_BYTES)
    return raw


def parse(stream: IO[bytes], name: str, spec: Any, where: str, cursor: Cursor,
          path: Path | None = None) -> Iterator[dict[str, Any]]:
    """The records of one (decompressed) file in the source's format."""
    kind = spec.kind
    if kind == "jsonl":
        for lineno, line in enumerate(io.TextIOWrapper(stream, encoding="utf-8"), 1):
            if line.strip():
                yield _object(_json(line, where, cursor, lineno), where, cursor, lineno)
    elif kind == "json":
        data = _json(io.TextIOWrapper(stream, encoding="utf-8").read(), where, cursor, None)
        for i, item in enumerate(data if isinstance(data, list) else [data]):
            yield _object(item, where, cursor, None, i)
    elif kind == "parquet":
        yield from _parquet(path if path is not None and not name.lower().endswith(COMPRESSIONS)
                            else io.BytesIO(stream.read()))
    elif kind == "csv":
        yield from csv.DictReader(io.TextIOWrapper(stream, encoding="utf-8", newline=""), delimiter=spec.delimiter)
    elif kind == "text":
        yield {spec.text_field: stream.read().decode("utf-8"), "path": cursor.file}
    else:
        raise ValueError(f"not a local file kind: {kind}")


def _json(text: str, where: str, cursor: Cursor, lineno: int | None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f":{lineno}" if lineno else f" (line {exc.lineno})"
        raise StageError(f"{where}: {cursor.file}{at}: bad JSON ({exc.msg})") from None


def _object(value: Any, where: str, cursor: Cursor, lineno: int | None, index: int | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        at = f":{lineno}" if lineno else f" element {index}"
        raise StageError(f"{where}: {cursor.file}{at} is a JSON {type(value).__name__}, not an object (a record)")
    return value


def _parquet(source: Any) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(source).iter_batches(batch_size=PARQUET_BATCH_ROWS):
        yield from batch.to_pylist()


class _Forward(io.RawIOBase):
    """A forward-only view of a streamed archive member: `tarfile`'s own member object asks its
    (unseekable) stream whether it can seek, which `io.TextIOWrapper` triggers."""

    def __init__(self, member: IO[bytes]):
        self._member = member

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._member.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class ZstdTruncated(EOFError):
    """A .zst stream ended inside a frame."""


class ZstdReader(io.RawIOBase):
    """Decompresses a zstd stream (one frame or several) and notices when it ends mid-frame, which
    `zstandard`'s own stream reader silently accepts."""

    def __init__(self, raw: IO[bytes]):
        import zstandard

        self._raw = raw
        self._new = lambda: zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).decompressobj()
        self._dobj = self._new()
        self._in_frame = False
        self._out = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._pos >= len(self._out):
            chunk = self._raw.read(READ_CHUNK_BYTES)
            if not chunk:
                if self._in_frame:
                    raise ZstdTruncated("the zstd stream ends inside a frame")
                return 0
            self._out, self._pos = self._feed(chunk), 0
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = self._out[self._pos:self._pos + n]
        self._pos += n
        return n

    def _feed(self, data: bytes) -> bytes:
        out = []
        while data:
            out.append(self._dobj.decompress(data))
            if not self._dobj.eof:
                self._in_frame = True
                break
            data, self._dobj, self._in_frame = self._dobj.unused_data, self._new(), False
        return b"".join(out)
