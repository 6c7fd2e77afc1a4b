"""Token shards: the `tokenize` stage's on-disk format, written resumably and read back checked.

A shard store (`results/tokenize/<id>/`) holds `shards/shard-XXXXX.npy` (raw OLMo memmaps, uint16, or
uint32 above 65,536 tokens; whole documents, each ending with EOS), `index.npy` (int64: the length of
every document, in order) and `manifest.json` (`shards`: file, documents and tokens of each). A shard
ends with the document that brings it to `tokens_per_file` tokens or more, and a document that ends a
fill is a shard of its own, so that a mix at the plan's largest budgets takes every other shard whole.
Mixes list whole shards as training files by reference, so a shard is never rewritten once published.
"""
from __future__ import annotations

import json
import os
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from runtime.artifacts import broken_artifact, read_json
from runtime.stage import write_json

SHARD_NAME = "shard-{:05d}.npy"
PROGRESS_FILE = "progress.json"


# --- writing ------------------------------------------------------------------------------------

class ShardWriter:
    """Appends documents to shards under `work` (a stage's work folder, kept across failed runs).

    Each finished shard is committed (its lengths saved, then `progress.json` rewritten atomically);
    `checkpoint` records the open shard the same way. Each record also keeps `state`, what the caller said
    about the last document added (the reader's counts). A rerun reopens the writer, keeps what was
    recorded (cutting off anything written after it) and continues after those documents, so the shards
    come out byte-identical to an uninterrupted run's."""

    def __init__(self, work: Path, dtype: np.dtype, tokens_per_file: int):
        self.folder, self.dtype, self.cap = work / "shards", dtype, tokens_per_file
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shards: list[dict[str, Any]] = []
        self.lengths: list[np.ndarray] = []
        self._file: BinaryIO | None = None
        self._open = array("q")     # lengths of the open shard's documents
        self._open_tokens = 0
        self.state: Any = None             # the caller's note on the last document added
        self._restore(work / PROGRESS_FILE)

    def _restore(self, progress_file: Path) -> None:
        """Recorded shards whose files hold at least what was recorded; stops at the first damaged one."""
        try:
            progress = json.loads(progress_file.read_text())
        except (OSError, json.JSONDecodeError):
            return
        for entry in progress.get("shards", []):
            lengths = self._recorded(entry)
            if lengths is None:
                return
            self.shards.append(entry)
            self.lengths.append(lengths)
            self.state = entry.get("state")
        entry = progress.get("open")
        lengths = self._recorded(entry) if entry and entry["file"] == self._name() else None
        if lengths is not None:
            self._file = open(self.folder / entry["file"], "r+b")
            self._file.truncate(entry["tokens"] * self.dtype.itemsize)   # drop what followed the record
            self._file.seek(0, os.SEEK_END)
            self._open.extend(lengths.tolist())
            self._open_tokens = int(lengths.sum())
            self.state = entry.get("state")

    def _recorded(self, entry: dict[str, Any]) -> np.ndarray | None:
        """The lengths of a recorded shard if its files agree with the record, else None."""
        shard = self.folder / entry["file"]
        try:
            lengths = np.load(self.folder / f"{shard.stem}.lengths.npy")
        except (OSError, ValueError):
            return None
        if (not shard.is_file() or shard.stat().st_size < entry["tokens"] * self.dtype.itemsize
                or len(lengths) != entry["documents"] or int(lengths.sum()) != entry["tokens"]):
            return None
        return lengths

    def _name(self) -> str:
        return SHARD_NAME.format(len(self.shards))

    def recorded_lengths(self) -> list[int]:
        """Lengths of every document written so far (committed shards, then the open one)."""
        return [n for lengths in self.lengths for n in lengths.tolist()] + self._open.tolist()

    @property
    def documents(self) -> int:
        """Documents written and recorded: what a rerun skips."""
        return sum(int(s["documents"]) for s in self.shards) + len(self._open)

    @property
    def tokens(self) -> int:
        return sum(int(s["tokens"]) for s in self.shards) + self._open_tokens

    def add(self, doc: np.ndarray, state: Any = None) -> None:
        """Append one document (`state`: the caller's note on it, kept with the record that includes it);
        the shard it brings to `tokens_per_file` tokens is committed."""
        self.state = state
        if self._file is None:
            self._file = open(self.folder / self._name(), "wb")
        self._file.write(doc.astype(self.dtype, copy=False).tobytes())
        self._open.append(len(doc))
        self._open_tokens += len(doc)
        if self._open_tokens >= self.cap:
            self._record(commit=True)

    def close_shard(self) -> None:
        """Commit the open shard now (if it holds documents): the next document starts a new one."""
        if self._file is not None:
            self._record(commit=True)

    def checkpoint(self) -> None:
        """Record the open shard as it stands, so a rerun appends to it."""
        if self._file is not None:
            self._record(commit=False)

    def _record(self, *, commit: bool) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        lengths = np.frombuffer(self._open, dtype=np.int64).copy()
        entry = {"file": self._name(), "documents": len(lengths), "tokens": int(lengths.sum()), "state": self.state}
        np.save(self.folder / f"{Path(entry['file']).stem}.lengths.npy", lengths)
        if commit:
            self._file.close()
            self._file, self._open, self._open_tokens = None, array("q"), 0
            self.shards.append(entry)
            self.lengths.append(lengths)
        write_json(self.folder.parent / PROGRESS_FILE, {"shards": self.shards, "open": None if commit else entry})

    def publish(self, out: Path) -> list[dict[str, Any]]:
        """Commit the open shard, move every shard into `out/shards/` and write `out/index.npy`; returns
        each shard's file, documents and tokens."""
        self.close_shard()
        (out / "shards").mkdir(parents=True, exist_ok=True)
        for entry in self.shards:
            os.replace(self.folder / entry["file"], out / "shards" / entry["file"])
        lengths = np.concatenate(self.lengths) if self.lengths else np.empty(0, np.int64)
        np.save(out / "index.npy", lengths.astype(np.int64, copy=False))
        return [{k: entry[k] for k in ("file", "documents", "tokens")} for entry in self.shards]


# --- reading ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardStore:
    """A published shard store, checked on open: every shard has the size its index says, and ends
    with EOS. Token positions are global (shard after shard)."""

    folder: Path
    manifest: dict[str, Any]
    shards: list[Path]
    dtype: np.dtype
    doc_ends: np.ndarray     # int64, cumulative document ends
    shard_ends: np.ndarray   # int64, cumulative shard ends (tokens)

    @classmethod
    def open(cls, folder: Path) -> "ShardStore":
        manifest = _read_manifest(folder / "manifest.json")
        dtype = np.dtype(manifest["dtype"])
        index = folder / "index.npy"
        try:
            lengths = np.load(index)
        except FileNotFoundError:
            raise broken_artifact(index, "missing") from None
        except (OSError, ValueError) as exc:
            raise broken_artifact(index, f"not a document index: {exc}") from None
        documents = [int(s["documents"]) for s in manifest["shards"]]
        if len(lengths) != sum(documents) or (len(lengths) and lengths.min() < 1):
            raise broken_artifact(index, f"{len(lengths)} document lengths, the manifest says {sum(documents)}")
        shards, first = [], 0
        for entry, n in zip(manifest["shards"], documents):
            path = folder / "shards" / entry["file"]
            tokens = int(lengths[first:first + n].sum())
            if not path.is_file():
                raise broken_artifact(path, "missing")
            if tokens != int(entry["tokens"]) or path.stat().st_size != tokens * dtype.itemsize:
                raise broken_artifact(path, f"{path.stat().st_size // dtype.itemsize} tokens, the index says {tokens}")
            if np.memmap(path, dtype=dtype, mode="r")[-1] != manifest["eos_token_id"]:
                raise broken_artifact(path, "its last document does not end with EOS")
            shards.append(path)
            first += n
        doc_ends = np.cumsum(lengths, dtype=np.int64)
        shard_ends = np.cumsum([int(s["tokens"]) for s in manifest["shards"]], dtype=np.int64)
        return cls(folder, manifest, shards, dtype, doc_ends, shard_ends)

    @property
    def eos(self) -> int:
        return int(self.manifest["eos_token_id"])

    @property
    def total_tokens(self) -> int:
        return int(self.shard_ends[-1]) if len(self.shard_ends) else 0

    @property
    def exhausted(self) -> bool:
        """The source ended before the stage's budget: these are all of its documents."""
        return bool(self.manifest["exhausted"])

    def doc_start(self, doc: int) -> int:
        return int(self.doc_ends[doc - 1]) if doc else 0

    def shard_start(self, shard: int) -> int:
        return int(self.shard_ends[shard - 1]) if shard else 0

    def pieces(self, start: int, stop: int) -> list[tuple[int, int, int]]:
        """The token range [start, stop) as (shard, first, end) ranges local to each shard."""
        out = []
        shard = int(np.searchsorted(self.shard_ends, start, side="right"))
        while start < stop:
            base, end = self.shard_start(shard), int(self.shard_ends[shard])
            out.append((shard, start - base, min(stop, end) - base))
            start, shard = min(stop, end), shard + 1
        return out

    def is_whole(self, piece: tuple[int, int, int]) -> bool:
        shard, first, end = piece
        return first == 0 and end == self.shard_ends[shard] - self.shard_start(shard)

    def tokens(self, piece: tuple[int, int, int]) -> np.ndarray:
        shard, first, end = piece
        return np.memmap(self.shards[shard], dtype=self.dtype, mode="r")[first:end]


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest = read_json(path)
    keys = ("shards", "dtype", "eos_token_id", "exhausted", "tokenizer")
    if not isinstance(manifest, dict) or any(k not in manifest for k in keys):
        raise broken_artifact(path, f"not a tokenize manifest (needs {', '.join(keys)})")
    return manifest
