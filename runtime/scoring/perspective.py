"""Perspective API client: a rate shared by every process, retries with backoff, a persistent score cache.

Scoring thousands of generations takes hours at the default quota (1 query/s), and requests fail now and
then, so every score is written to an sqlite cache (key: the endpoint and the sha256 of the text, with
the time it was fetched) the moment it arrives: a rerun, or a run after a crash or a kill, sends nothing
already scored. The cache is in WAL mode with a busy timeout, so score jobs running at once share it,
and it lives under the project's `.cache/`, so every spec shares it too. The API key is needed only when
a text is missing from the cache: a spec whose texts were all scored before scores offline, with no key.
A damaged cache is moved aside and rebuilt (`runtime.scoring.sqlite_cache`): its texts are fetched again
if a key is set, else the run stops with the "needs a key" error. Perspective's scores of the same text
drifted between 2020 and 2023 (Pozzobon et al. 2023), so `answer_dates` reports when the answers a stage
used were fetched.

The request rate is one schedule for all processes (`runtime.scoring.quota`): N jobs together send at
`queries_per_second`, not N times it. 429s wait for Retry-After (else exponential backoff) and push that
wait onto the shared schedule; 5xx, timeouts, dropped connections and malformed replies are retried with
exponential backoff in the failing process only; any other HTTP error (bad key, bad request) stops the
run at once. Blank texts score 0 without a request (the API rejects empty comments).
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from compiler.errors import StageError
from compiler.schema.scoring import PerspectiveScorer
from runtime.scoring.quota import SharedRateLimit
from runtime.scoring.sqlite_cache import DamagedCache, Layout, SqliteCacheFile, row_check

MAX_BACKOFF_S = 64.0
MAX_RETRY_AFTER_S = 600.0
"""A longer Retry-After (a daily quota spent) is waited in 10-minute steps, one retry each."""
BUSY_TIMEOUT_S = 60.0
"""How long a cache write waits for another process's write to finish."""


class _Retryable(Exception):
    """A failure worth another try (rate limit, server error, timeout, malformed reply)."""

    def __init__(self, message: str, *, rate_limited: bool = False, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.rate_limited = rate_limited
        self.retry_after_s = retry_after_s


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def retry_after_s(value: str | None, now: float) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from `now` (wall clock); None if absent
    or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


SCHEMA_VERSION = 1
"""`PRAGMA user_version` of the answer cache. 0: `scores(key, score)`, with neither the endpoint nor the
time of each answer; migrated on open, every row kept under the default endpoint (the only one a real run
could use) with its fetch time unknown (NULL)."""
DEFAULT_ENDPOINT = PerspectiveScorer.model_fields["endpoint"].default


def _upgrade(db: sqlite3.Connection) -> None:
    """Create the answers table, or migrate a layout-0 cache."""
    db.execute("CREATE TABLE IF NOT EXISTS answers (endpoint TEXT NOT NULL, text_sha256 TEXT NOT NULL, "
               "score REAL NOT NULL, fetched_at REAL, crc INTEGER NOT NULL, "
               "PRIMARY KEY (endpoint, text_sha256)) WITHOUT ROWID")
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'scores'").fetchone():
        rows = db.execute("SELECT key, score FROM scores").fetchall()
        db.executemany("INSERT OR IGNORE INTO answers VALUES (?, ?, ?, NULL, ?)",
                       [(DEFAULT_ENDPOINT, key, score, row_check(DEFAULT_ENDPOINT, key, score, None))
                        for key, score in rows])
        db.execute("DROP TABLE scores")


LAYOUT = Layout("Perspective cache", SCHEMA_VERSION, _upgrade)


class PerspectiveAnswerCache:
    """(endpoint, text hash) → Perspective's TOXICITY score and when it was fetched; each answer committed on
    arrival; safe with concurrent writers; a damaged file is moved aside and rebuilt."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = SqliteCacheFile(path, LAYOUT, BUSY_TIMEOUT_S)

    def answers(self, endpoint: str, keys: Sequence[str]) -> dict[str, tuple[float, float | None]]:
        """{key: (score, fetched_at unix seconds or None if unknown)} of the stored answers, each checked."""
        unique = list(dict.fromkeys(keys))

        def query(db: sqlite3.Connection) -> dict[str, tuple[float, float | None]]:
            out: dict[str, tuple[float, float | None]] = {}
            for i in range(0, len(unique), 500):  # stay under sqlite's bound-parameter limit
                chunk = unique[i:i + 500]
                rows = db.execute(f"SELECT text_sha256, score, fetched_at, crc FROM answers WHERE endpoint = ? "
                                  f"AND text_sha256 IN ({','.join('?' * len(chunk))})", [endpoint, *chunk])
                for key, score, fetched_at, crc in rows:
                    if crc != row_check(endpoint, key, score, fetched_at):
                        raise DamagedCache("a stored answer fails its checksum")
                    out[key] = (score, fetched_at)
            return out

        return self._file.read(query)

    def get_many(self, endpoint: str, keys: Sequence[str]) -> dict[str, float]:
        return {key: score for key, (score, _) in self.answers(endpoint, keys).items()}

    def put(self, endpoint: str, key: str, score: float, fetched_at: float) -> None:
        row = (endpoint, key, float(score), float(fetched_at))
        self._file.write(lambda db: db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)",
                                               (*row, row_check(*row))))

    def __len__(self) -> int:
        return self._file.read(lambda db: db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        self._file.close()


class PerspectiveClient:
    """`score(texts)` → TOXICITY summary scores; one request per distinct uncached text."""

    def __init__(
        self, *, endpoint: str, api_key: str | None, cache_path: Path, quota_path: Path,
        queries_per_second: float = 1.0, max_retries: int = 8, timeout_s: float = 30.0,
        backoff_initial_s: float = 1.0, api_key_env: str = "PERSPECTIVE_API_KEY",
        sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint = endpoint
        self.api_key, self.api_key_env = api_key, api_key_env
        self.cache = PerspectiveAnswerCache(cache_path)
        self.quota = SharedRateLimit(quota_path, queries_per_second, clock)
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_initial_s = backoff_initial_s
        self._sleep, self._clock = sleep, clock

    def long_texts(self, texts: Sequence[str]) -> list[bool]:
        return [False] * len(texts)  # Perspective scores whole texts (it rejects over-long ones with a 400)

    def description(self) -> dict[str, Any]:
        return {"api": "Perspective comments:analyze", "endpoint": self.endpoint, "attribute": "TOXICITY",
                "languages": ["en"], "long_texts": "whole text"}

    def score(self, texts: Sequence[str]) -> list[float]:
        keys = [text_key(t) for t in texts]
        known = self.cache.get_many(self.endpoint, keys)
        todo = {k: t for k, t in zip(keys, texts) if k not in known and t.strip()}
        if todo and not self.api_key:
            raise StageError(
                f"scorer kind `perspective`: {len(todo)} distinct text(s) are not in the cache {self.cache.path}, "
                f"and scoring them needs an API key in ${self.api_key_env}")
        for key, text in tqdm(todo.items(), desc="perspective", unit="text", leave=False):
            known[key] = self._score_one(key, text)
        return [known[k] if t.strip() else 0.0 for k, t in zip(keys, texts)]

    def _score_one(self, key: str, text: str) -> float:
        """Fetch and store one score; a text another job stored while this one waited for its slot is
        taken from the cache instead (two jobs over the same texts then pay for each text once)."""
        backoff = self.backoff_initial_s
        for attempt in range(1, self.max_retries + 2):
            self._wait_for_slot()
            stored = self.cache.get_many(self.endpoint, [key]).get(key)
            if stored is not None:
                return stored
            try:
                value = self._request(text)
                self.cache.put(self.endpoint, key, value, self._clock())
                return value
            except _Retryable as exc:
                if attempt > self.max_retries:
                    raise StageError(
                        f"Perspective API: giving up after {attempt} attempts ({exc}); the scores received so "
                        f"far are kept in {self.cache.path}, and a rerun sends only the rest") from None
                wait = exc.retry_after_s if exc.retry_after_s is not None else backoff
                if exc.rate_limited:
                    self.quota.hold_off(self._clock() + wait)  # every process waits, not only this one
                else:
                    self._sleep(wait)
                backoff = min(2 * backoff, MAX_BACKOFF_S)
        raise AssertionError("unreachable")

    def _wait_for_slot(self) -> None:
        delay = self.quota.reserve() - self._clock()
        if delay > 0:
            self._sleep(delay)

    def _request(self, text: str) -> float:
        body = json.dumps({
            "comment": {"text": text}, "requestedAttributes": {"TOXICITY": {}},
            "languages": ["en"], "doNotStore": True,
        }).encode()
        url = f"{self.endpoint}?{urllib.parse.urlencode({'key': self.api_key})}"
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            if exc.code == 429:
                raise _Retryable(f"HTTP 429: {detail}", rate_limited=True,
                                 retry_after_s=retry_after_s(exc.headers.get("Retry-After"), self._clock())) from None
            if exc.code >= 500:
                raise _Retryable(f"HTTP {exc.code}: {detail}") from None
            raise StageError(f"Perspective API: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        try:
            value = json.loads(raw)["attributeScores"]["TOXICITY"]["summaryScore"]["value"]
        except (ValueError, KeyError, TypeError) as exc:
            raise _Retryable(f"malformed reply ({type(exc).__name__}): {raw[:200]!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise _Retryable(f"malformed score {value!r}")
        return float(value)


def perspective_scorer(spec: PerspectiveScorer, root: Path) -> PerspectiveClient:
    """The client a spec names, paths relative to the project `root`. The key is read here but required
    only when a text is missing from the cache."""
    def at_root(path: str) -> Path:
        return Path(path) if Path(path).is_absolute() else root / path

    return PerspectiveClient(
        endpoint=spec.endpoint, api_key=os.environ.get(spec.api_key_env) or None, api_key_env=spec.api_key_env,
        cache_path=at_root(spec.cache_path), quota_path=at_root(spec.quota_path),
        queries_per_second=spec.queries_per_second, max_retries=spec.max_retries, timeout_s=spec.timeout_s,
        backoff_initial_s=spec.backoff_initial_s,
    )


def answer_dates(spec: PerspectiveScorer, root: Path, texts: Sequence[str]) -> dict[str, Any]:
    """When the answers for `texts` (distinct, non-blank) held in the spec's cache were fetched: the first
    and last fetch (unix seconds, null if none is dated) and how many texts are dated, undated (stored
    before fetch times were kept) or absent (blank texts score 0 unasked; others were answered from the
    shared score cache after this cache was lost)."""
    path = Path(spec.cache_path) if Path(spec.cache_path).is_absolute() else root / spec.cache_path
    keys = list(dict.fromkeys(text_key(t) for t in texts if t.strip()))
    cache = PerspectiveAnswerCache(path)
    try:
        found = cache.answers(spec.endpoint, keys)
    finally:
        cache.close()
    dates = [at for _, at in found.values() if at is not None]
    return {"first_fetched_unix": min(dates, default=None), "last_fetched_unix": max(dates, default=None),
            "dated_texts": len(dates), "undated_texts": len(found) - len(dates),
            "absent_texts": len(keys) - len(found), "blank_texts": len({t for t in texts if not t.strip()})}
