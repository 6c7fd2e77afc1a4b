"""A score cache shared by every scorer, process and spec: (scorer id, sha256 of text) → score.

Scoring is the expensive part of rescoring (a classifier forward pass, or a rate-limited API call), and
the same texts come back again and again: a second spec over the same generations, a rerun after a
crash, another scorer listed next to the first. One sqlite file under `.cache/` keeps every score ever
computed. WAL mode lets readers run while one process writes; writers take the write lock up front
(`BEGIN IMMEDIATE`) and wait for it (busy timeout) instead of failing, so score jobs running side by side
never lose or duplicate an entry. Scores are committed chunk by chunk as they are computed, so a job
that is killed keeps everything it had finished.

The scorer id hashes only the fields that change scores: `spec.id_json()` (which leaves NOT_IN_ID fields
such as batch sizes and endpoints out) with the display `name` blanked (renaming a scorer's column must
not rescore), plus, when the project root is given, the content fingerprints of the local checkpoints
the spec names (retraining a classifier into the same folder must not hit the old scores).
"""
from __future__ import annotations

import hashlib
import math
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Sequence

from compiler.checks import local_paths
from compiler.errors import StageError
from compiler.fingerprint import fingerprint, local_exists
from compiler.schema.base import StrictModel

BUSY_TIMEOUT_S = 600.0
"""How long a writer waits for another process's write transaction before giving up."""
SQL_CHUNK = 500
"""Keys per `IN (...)` lookup: under sqlite's bound-parameter limit."""
STORE_CHUNK = 1024
"""Texts scored between two commits by `cached(...)`: what a killed job can lose at most (the classifier
length-sorts within a chunk, so a larger chunk pads less)."""


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def scorer_id(spec: StrictModel, root: Path | None = None) -> str:
    """sha256 of the spec's id JSON without its display name; with `root`, also of the local files it
    names (by content)."""
    if getattr(spec, "name", None) is not None:
        spec = spec.model_validate({**spec.model_dump(), "name": None})
    parts = [spec.id_json()]
    if root is not None:
        for path in sorted(local_paths(spec)):
            full = root / path
            parts.append(f"{path}={fingerprint(full) if local_exists(full) else 'missing'}")
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


class ScoreCache:
    """(scorer id, text hash) → score in one sqlite file, safe for concurrent reader and writer processes."""

    def __init__(self, path: Path, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # isolation_level=None: no implicit transactions; put_many opens its own BEGIN IMMEDIATE.
        self._db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: atomic and safe against a killed process
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS scores (scorer_id TEXT NOT NULL, text_sha256 TEXT NOT NULL, "
            "score REAL NOT NULL, PRIMARY KEY (scorer_id, text_sha256)) WITHOUT ROWID"
        )

    def get_many(self, scorer_id: str, texts: Sequence[str]) -> dict[int, float]:
        """{index in `texts`: score} for every text this scorer has scored before."""
        positions: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            positions.setdefault(text_sha256(text), []).append(i)
        keys = list(positions)
        out: dict[int, float] = {}
        for start in range(0, len(keys), SQL_CHUNK):
            chunk = keys[start:start + SQL_CHUNK]
            rows = self._db.execute(
                f"SELECT text_sha256, score FROM scores WHERE scorer_id = ? "
                f"AND text_sha256 IN ({','.join('?' * len(chunk))})", [scorer_id, *chunk],
            )
            for key, score in rows:
                out.update((i, score) for i in positions[key])
        return out

    def put_many(self, scorer_id: str, texts: Sequence[str], scores: Sequence[float]) -> None:
        """Store scores in one transaction; a text already stored keeps its first score."""
        if len(texts) != len(scores):
            raise ValueError(f"{len(texts)} texts but {len(scores)} scores")
        rows = [(scorer_id, text_sha256(t), float(s)) for t, s in zip(texts, scores)]
        self._db.execute("BEGIN IMMEDIATE")  # take the write lock now: waits on the busy timeout
        try:
            self._db.executemany(
                "INSERT OR IGNORE INTO scores (scorer_id, text_sha256, score) VALUES (?, ?, ?)", rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ScoreCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class CachedScorer:
    """A scorer that answers from the cache and scores (and stores) only the distinct misses.

    `hits` counts texts answered from the cache, `misses` texts that had to be scored (hits + misses =
    every text passed to `score`); `truncated` is the inner scorer's count (0 if it never truncates).
    """

    def __init__(self, inner: Any, scorer_id: str, cache: ScoreCache, chunk_size: int = STORE_CHUNK) -> None:
        self.inner = inner
        self.scorer_id = scorer_id
        self.cache = cache
        self.chunk_size = chunk_size
        self.hits = 0
        self.misses = 0

    @property
    def truncated(self) -> int:
        return getattr(self.inner, "truncated", 0)

    def score(self, texts: Sequence[str]) -> list[float]:
        known = self.cache.get_many(self.scorer_id, texts)
        missing = [i for i in range(len(texts)) if i not in known]
        self.hits += len(known)
        self.misses += len(missing)
        distinct = list(dict.fromkeys(texts[i] for i in missing))
        fresh: dict[str, float] = {}
        for start in range(0, len(distinct), self.chunk_size):
            chunk = distinct[start:start + self.chunk_size]
            scores = _checked(self.inner.score(chunk), len(chunk))
            self.cache.put_many(self.scorer_id, chunk, scores)
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


def cached(scorer: Any, spec: StrictModel, cache: ScoreCache, root: Path | None = None,
           chunk_size: int = STORE_CHUNK) -> CachedScorer:
    """`scorer` behind `cache`, keyed by `scorer_id(spec, root)` (pass the project `root` so that local
    checkpoints are keyed by content)."""
    return CachedScorer(scorer, scorer_id(spec, root), cache, chunk_size)
