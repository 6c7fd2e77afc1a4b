"""Perspective API client: client-side rate limit, retries with backoff, and a persistent score cache.

Scoring thousands of generations takes hours at the default quota (1 query/s), and requests fail now and
then, so every score is written to an sqlite cache (key: sha256 of the text) the moment it arrives: a
rerun, or a run after a crash, sends nothing already scored. 429, 5xx, timeouts, dropped connections and
malformed replies are retried with exponential backoff; any other HTTP error (bad key, bad request) stops
the run at once. Blank texts score 0 without a request (the API rejects empty comments).
"""
from __future__ import annotations

import hashlib
import http.client
import json
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

from tqdm.auto import tqdm

from compiler.errors import StageError

MAX_BACKOFF_S = 64.0


class _Retryable(Exception):
    """A failure worth another try (rate limit, server error, timeout, malformed reply)."""


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ScoreCache:
    """text-hash → score in sqlite; each score is committed on arrival."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 500):  # stay under sqlite's bound-parameter limit
            chunk = unique[i:i + 500]
            rows = self._db.execute(
                f"SELECT key, score FROM scores WHERE key IN ({','.join('?' * len(chunk))})", chunk
            )
            out.update(rows.fetchall())
        return out

    def put(self, key: str, score: float) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO scores (key, score) VALUES (?, ?)", (key, score))

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class PerspectiveClient:
    """`score(texts)` → TOXICITY summary scores; one request per distinct uncached text."""

    def __init__(
        self, *, endpoint: str, api_key: str, cache_path: Path, queries_per_second: float = 1.0,
        max_retries: int = 8, timeout_s: float = 30.0, backoff_initial_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = f"{endpoint}?{urllib.parse.urlencode({'key': api_key})}"
        self.cache = ScoreCache(cache_path)
        self.interval_s = 1.0 / queries_per_second
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_initial_s = backoff_initial_s
        self._sleep, self._clock = sleep, clock
        self._next_slot = clock()

    def score(self, texts: Sequence[str]) -> list[float]:
        keys = [text_key(t) for t in texts]
        known = self.cache.get_many(keys)
        todo = {k: t for k, t in zip(keys, texts) if k not in known and t.strip()}
        for key, text in tqdm(todo.items(), desc="perspective", unit="text", leave=False):
            known[key] = self._score_one(text)
            self.cache.put(key, known[key])
        return [known[k] if t.strip() else 0.0 for k, t in zip(keys, texts)]

    def _score_one(self, text: str) -> float:
        wait = self.backoff_initial_s
        for attempt in range(self.max_retries + 1):
            try:
                return self._request(text)
            except _Retryable as exc:
                if attempt == self.max_retries:
                    raise StageError(f"Perspective API: giving up after {attempt + 1} attempts: {exc}") from None
                self._sleep(wait)
                wait = min(2 * wait, MAX_BACKOFF_S)
        raise AssertionError("unreachable")

    def _throttle(self) -> None:
        now = self._clock()
        if self._next_slot > now:
            self._sleep(self._next_slot - now)
        self._next_slot = max(now, self._next_slot) + self.interval_s

    def _request(self, text: str) -> float:
        body = json.dumps({
            "comment": {"text": text}, "requestedAttributes": {"TOXICITY": {}},
            "languages": ["en"], "doNotStore": True,
        }).encode()
        req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        self._throttle()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            if exc.code == 429 or exc.code >= 500:
                raise _Retryable(f"HTTP {exc.code}: {detail}") from None
            raise StageError(f"Perspective API: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        try:
            value = json.loads(raw)["attributeScores"]["TOXICITY"]["summaryScore"]["value"]
        except (ValueError, KeyError, TypeError) as exc:
            raise _Retryable(f"malformed reply ({type(exc).__name__}): {raw[:200]!r}") from None
        if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise _Retryable(f"malformed score {value!r}")
        return float(value)
