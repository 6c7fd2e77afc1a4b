"""A score cache shared by every scorer, process and spec: (scorer id, sha256 of text) → score.

Scoring is the expensive part of rescoring (a classifier forward pass, or a rate-limited API call), and
the same texts come back again and again: a second spec over the same generations, a rerun after a
crash, another scorer listed next to the first. One sqlite file under `.cache/` keeps every score ever
computed. WAL mode lets readers run while one process writes; writers take the write lock up front
(`BEGIN IMMEDIATE`) and wait for it (busy timeout) instead of failing, so score jobs running side by side
never lose or duplicate an entry. Scores are committed chunk by chunk as they are computed, so a job
that is killed keeps everything it had finished. Beside each score the file keeps whether the text was
longer than the scorer reads at once, and per scorer id the settings it resolved when built (activation,
window, …), so a job answered wholly from the cache still reports both (`runtime.score`'s `scorer.json`).
Every row carries a checksum; a damaged file is moved aside and rebuilt (`runtime.scoring.sqlite_cache`).

The scorer id hashes only the fields that change scores: `spec.id_json()` (which leaves NOT_IN_ID fields
such as batch sizes and rates out; a Perspective endpoint is in it) with the display `name` blanked
(renaming a scorer's column must not rescore), plus the content fingerprints of the local checkpoints the
spec names, as the stage JSON holds them (retraining a classifier into the same folder must not hit the
old scores).
"""
from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from compiler.checks import local_paths
from compiler.errors import StageError
from compiler.schema.base import StrictModel
from compiler.schema.precision import Compute
from compiler.schema.scoring import ClassifierScorer, DetoxifyScorer
from runtime.scoring.sqlite_cache import DamagedCache, Layout, SqliteCacheFile, row_check

BUSY_TIMEOUT_S = 600.0
"""How long a writer waits for another process's write transaction before giving up."""
SQL_CHUNK = 500
"""Keys per `IN (...)` lookup: under sqlite's bound-parameter limit."""
STORE_CHUNK = 1024
"""Texts scored between two commits by `cached(...)`: what a killed job can lose at most (the classifier
length-sorts within a chunk, so a larger chunk pads less)."""


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def runs_a_model(spec: StrictModel) -> bool:
    """Does this scorer compute with a model whose scores depend on device and dtype (`runtime.device`)?"""
    return isinstance(spec, (ClassifierScorer, DetoxifyScorer))


def scorer_files(spec: StrictModel, files: Mapping[str, str]) -> dict[str, str]:
    """The content fingerprint of each local file or folder the scorer names, taken from `files` (a stage
    JSON's `files`: what the compiler fingerprinted; "missing" where it found nothing), so a stage never
    hashes a checkpoint a second time."""
    return {path: files.get(path, "missing") for path in sorted(local_paths(spec))}


def scorer_id(spec: StrictModel, files: Mapping[str, str] | None = None, compute: Compute | None = None) -> str:
    """sha256 of the spec's id JSON without its display name; with `files` (the stage JSON's fingerprints),
    also of the local files it names (by content); for a scorer that runs a model, also of the device type
    and precision it ran in (`compute`, None = CPU fp32, where every model scorer runs unless placed
    elsewhere), so CPU-fp32 and GPU-bf16 scores never share a key."""
    if getattr(spec, "name", None) is not None:
        spec = spec.model_validate({**spec.model_dump(), "name": None})
    parts = [spec.id_json()]
    if runs_a_model(spec):
        parts.append(f"compute={(compute or Compute()).label}")
    if files is not None:
        parts.extend(f"{path}={content}" for path, content in scorer_files(spec, files).items())
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


SCHEMA_VERSION = 1
"""`PRAGMA user_version` of the current layout. 0: the first one (scores without checks, long-text flags or
scorer descriptions), migrated on open with every row kept (their long-text flag unknown)."""


def _upgrade(db: sqlite3.Connection) -> None:
    """Create the tables, or migrate a layout-0 file."""
    old = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'scores'").fetchone()
    if old:
        db.execute("ALTER TABLE scores RENAME TO scores_v0")
    db.execute("CREATE TABLE scores (scorer_id TEXT NOT NULL, text_sha256 TEXT NOT NULL, score REAL NOT NULL, "
               "long INTEGER, crc INTEGER NOT NULL, PRIMARY KEY (scorer_id, text_sha256)) WITHOUT ROWID")
    db.execute("CREATE TABLE scorers (scorer_id TEXT PRIMARY KEY, description TEXT NOT NULL, "
               "crc INTEGER NOT NULL) WITHOUT ROWID")
    if old:
        rows = db.execute("SELECT scorer_id, text_sha256, score FROM scores_v0").fetchall()
        db.executemany("INSERT INTO scores VALUES (?, ?, ?, NULL, ?)",
                       [(sid, key, score, row_check(sid, key, score, None)) for sid, key, score in rows])
        db.execute("DROP TABLE scores_v0")


LAYOUT = Layout("score cache", SCHEMA_VERSION, _upgrade)


class TextScoreCache:
    """(scorer id, text hash) → score and whether the text was longer than the scorer reads at once, plus
    each scorer's resolved settings; one sqlite file shared by concurrent reader and writer processes. A
    damaged file is moved aside and rebuilt (`runtime.scoring.sqlite_cache`)."""

    def __init__(self, path: Path, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        self._file = SqliteCacheFile(path, LAYOUT, busy_timeout_s)

    def _rows(self, scorer_id: str, texts: Sequence[str]) -> dict[int, tuple[float, bool | None]]:
        """{index in `texts`: (score, long)} of every stored text, each row checked."""
        positions: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            positions.setdefault(text_sha256(text), []).append(i)
        keys = list(positions)

        def query(db: sqlite3.Connection) -> dict[int, tuple[float, bool | None]]:
            out: dict[int, tuple[float, bool | None]] = {}
            for start in range(0, len(keys), SQL_CHUNK):
                chunk = keys[start:start + SQL_CHUNK]
                rows = db.execute(
                    f"SELECT text_sha256, score, long, crc FROM scores WHERE scorer_id = ? "
                    f"AND text_sha256 IN ({','.join('?' * len(chunk))})", [scorer_id, *chunk])
                for key, score, long, crc in rows:
                    if crc != row_check(scorer_id, key, score, long):
                        raise DamagedCache(f"a stored score fails its checksum (scorer {scorer_id[:12]})")
                    out.update((i, (score, None if long is None else bool(long))) for i in positions[key])
            return out

        return self._file.read(query)

    def get_many(self, scorer_id: str, texts: Sequence[str]) -> dict[int, float]:
        """{index in `texts`: score} for every text this scorer has scored before."""
        return {i: score for i, (score, _) in self._rows(scorer_id, texts).items()}

    def long_flags(self, scorer_id: str, texts: Sequence[str]) -> dict[int, bool | None]:
        """{index in `texts`: whether it was longer than the scorer reads at once (None: not recorded)}."""
        return {i: long for i, (_, long) in self._rows(scorer_id, texts).items()}

    def put_many(self, scorer_id: str, texts: Sequence[str], scores: Sequence[float],
                 long: Sequence[bool | None] | None = None) -> None:
        """Store scores (and long-text flags) in one transaction; a text already stored keeps its first score."""
        flags = [None] * len(texts) if long is None else list(long)
        if not len(texts) == len(scores) == len(flags):
            raise ValueError(f"{len(texts)} texts but {len(scores)} scores and {len(flags)} flags")
        rows = []
        for text, score, flag in zip(texts, scores, flags):
            key, value, bit = text_sha256(text), float(score), None if flag is None else int(flag)
            rows.append((scorer_id, key, value, bit, row_check(scorer_id, key, value, bit)))
        self._file.write(lambda db: db.executemany("INSERT OR IGNORE INTO scores VALUES (?, ?, ?, ?, ?)", rows))

    def put_description(self, scorer_id: str, description: dict[str, Any]) -> None:
        """Record what the scorer resolved when it was built (activation, window, …): a later job answered
        wholly from the cache reports it without loading the scorer."""
        text = json.dumps(description, sort_keys=True)
        self._file.write(lambda db: db.execute("INSERT OR REPLACE INTO scorers VALUES (?, ?, ?)",
                                               (scorer_id, text, row_check(scorer_id, text))))

    def description(self, scorer_id: str) -> dict[str, Any] | None:
        """The settings recorded for this scorer id; None if none were (scores from a layout-0 cache)."""
        def query(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute("SELECT description, crc FROM scorers WHERE scorer_id = ?", (scorer_id,)).fetchone()
            if row is None:
                return None
            if row[1] != row_check(scorer_id, row[0]):
                raise DamagedCache(f"a scorer description fails its checksum (scorer {scorer_id[:12]})")
            return json.loads(row[0])

        return self._file.read(query)

    def __len__(self) -> int:
        return self._file.read(lambda db: db.execute("SELECT COUNT(*) FROM scores").fetchone()[0])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "TextScoreCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class CachedScorer:
    """A scorer that answers from the cache and scores (and stores) only the distinct misses.

    `hits` counts texts answered from the cache, `misses` texts that had to be scored (hits + misses =
    every text passed to `score`). With each score it stores the inner scorer's long-text flag.
    """

    def __init__(self, inner: Any, scorer_id: str, cache: TextScoreCache, chunk_size: int = STORE_CHUNK) -> None:
        self.inner = inner
        self.scorer_id = scorer_id
        self.cache = cache
        self.chunk_size = chunk_size
        self.hits = 0
        self.misses = 0

    def score(self, texts: Sequence[str]) -> list[float]:
        from runtime.scoring import long_text_flags

        known = self.cache.get_many(self.scorer_id, texts)
        missing = [i for i in range(len(texts)) if i not in known]
        self.hits += len(known)
        self.misses += len(missing)
        distinct = list(dict.fromkeys(texts[i] for i in missing))
        fresh: dict[str, float] = {}
        for start in range(0, len(distinct), self.chunk_size):
            chunk = distinct[start:start + self.chunk_size]
            flags = long_text_flags(self.inner, chunk)
            scores = _checked(self.inner.score(chunk), len(chunk))
            self.cache.put_many(self.scorer_id, chunk, scores, flags)
            fresh.update(zip(chunk, scores))
        return [known[i] if i in known else fresh[text] for i, text in enumerate(texts)]


def _checked(scores: Iterable[float], expected: int) -> list[float]:
    out = [float(s) for s in scores]
    if len(out) != expected:
        raise StageError(f"scorer returned {len(out)} scores for {expected} texts")
    bad = [s for s in out if not math.isfinite(s)]
    if bad:
        raise StageError(f"scorer returned non-finite scores ({bad[:3]}); nothing of this chunk was cached")
    return out


def cached(scorer: Any, spec: StrictModel, cache: TextScoreCache, files: Mapping[str, str] | None = None,
           chunk_size: int = STORE_CHUNK, compute: Compute | None = None) -> CachedScorer:
    """`scorer` behind `cache`, keyed by `scorer_id(spec, files, compute)` (pass the stage's `files` so that
    local checkpoints are keyed by content, and the `compute` the scorer runs in)."""
    return CachedScorer(scorer, scorer_id(spec, files, compute), cache, chunk_size)
