"""An append-only JSONL work file that survives a kill: whole chunks of rows, each made durable before the
next, and on resume only the verified prefix of whole chunks is kept.

A chunk is written with one `write`, then `flush` and `fsync` (the folder is fsynced once, when the file is
created). A process killed mid-write leaves at most a torn tail: a last line without its newline, or the
first lines of a chunk. `resume` reads the file against the rows the run will write (each planned row
without its produced fields), drops a torn or partial tail, stops at the first row that does not match the
row it claims to be, and truncates the file to the end of the last whole chunk before that.

A header (`<name>.header.json`) records what the rows depend on beyond their own fields (batch layout,
device, library versions); rows written under another header are discarded, not mixed.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compiler.errors import StageError
from runtime.artifacts import fsync_dir
from runtime.stage import write_json


class RowLog:
    """`path` holds chunks of JSON rows; `chunks[i]` are the planned rows of chunk i, each without the
    fields in `produced` (what the work adds, e.g. the continuation)."""

    def __init__(self, path: Path, chunks: Sequence[Sequence[dict[str, Any]]], produced: Sequence[str],
                 header: dict[str, Any]):
        self.path, self.chunks, self.produced, self.header = path, chunks, tuple(produced), header
        self.header_path = path.with_name(f"{path.name}.header.json")

    def resume(self) -> tuple[int, str | None]:
        """Keep the verified whole chunks already written; returns (chunks kept, what was dropped and why,
        or None when nothing was)."""
        if not self.path.exists():
            self._start()
            return 0, None
        if self._saved_header() != self.header:
            self._start()
            return 0, f"rows made under {self._saved_header()} were discarded: this run has {self.header}"
        data = self.path.read_bytes()
        kept_rows, kept_bytes, why = self._valid_prefix(data)
        chunks = ends = 0
        for size in (len(c) for c in self.chunks):
            if ends + size > kept_rows:
                break
            ends += size
            chunks += 1
        cut = kept_bytes[ends]
        if cut < len(data):
            why = why or f"{kept_rows - ends} rows of an unfinished chunk"
            with open(self.path, "r+b") as f:
                f.truncate(cut)
                os.fsync(f.fileno())
        return chunks, why

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write one chunk's rows durably. A write that fails (full disk, file size limit) is cut off again
        and stops the stage with a clear error; the chunks before it stay for the rerun."""
        blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        size = self.path.stat().st_size
        try:
            with open(self.path, "ab") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            try:
                os.truncate(self.path, size)
            except OSError:
                pass   # the rerun drops a partial chunk anyway
            raise StageError(f"cannot write {self.path}: {exc.strerror or exc}; the rows written before are kept: "
                             "make room and run it again") from None

    def _start(self) -> None:
        self.path.write_bytes(b"")   # emptied before the header changes: no old rows under a new header
        write_json(self.header_path, self.header)
        fsync_dir(self.path.parent)

    def _saved_header(self) -> Any:
        try:
            return json.loads(self.header_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def _valid_prefix(self, data: bytes) -> tuple[int, list[int], str | None]:
        """(rows that match the plan, byte offset after each of them (from 0), why reading stopped early)."""
        planned = [row for chunk in self.chunks for row in chunk]
        offsets, start = [0], 0
        while start < len(data):
            end = data.find(b"\n", start)
            n = len(offsets) - 1
            if end < 0:
                return n, offsets, "a torn last line"
            if n >= len(planned):
                return n, offsets, f"rows beyond the {len(planned)} planned"
            try:
                row = json.loads(data[start:end])
            except (UnicodeDecodeError, json.JSONDecodeError):
                return n, offsets, f"line {n + 1} is not JSON"
            if not isinstance(row, dict) or {k: v for k, v in row.items() if k not in self.produced} != planned[n] \
                    or any(not isinstance(row.get(k), str) for k in self.produced):
                return n, offsets, f"line {n + 1} is not the row it claims to be ({planned[n]})"
            offsets.append(end + 1)
            start = end + 1
        return len(offsets) - 1, offsets, None

