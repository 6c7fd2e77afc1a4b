"""Perspective API client: a rate shared by every process, retries with backoff, a persistent score cache.

Scoring thousands of generations takes hours at the default quota (1 query/s), and requests fail now and
then, so every score is written to an sqlite cache (key: sha256 of the text) the moment it arrives: a
rerun, or a run after a crash or a kill, sends nothing already scored. The cache is in WAL mode with a
busy timeout, so score jobs running at once share it, and it lives under the project's `.cache/`, so
every spec shares it too. The API key is needed only when a text is missing from the cache: a spec whose
texts were all scored before scores offline, with no key.

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
from typing import Callable, Sequence

from tqdm.auto import tqdm

from compiler.errors import StageError
from compiler.schema.scoring import PerspectiveScorer
from runtime.scoring.quota import SharedRateLimit

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


class ScoreCache:
    """text-hash → score in sqlite; each score is committed on arrival; safe with concurrent writers."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses no commit
        with self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL NOT NULL)")

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

    truncated = 0  # Perspective scores whole texts (it rejects over-long ones with a 400)

    def __init__(
        self, *, endpoint: str, api_key: str | None, cache_path: Path, quota_path: Path,
        queries_per_second: float = 1.0, max_retries: int = 8, timeout_s: float = 30.0,
        backoff_initial_s: float = 1.0, api_key_env: str = "PERSPECTIVE_API_KEY",
        sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint = endpoint
        self.api_key, self.api_key_env = api_key, api_key_env
        self.cache = ScoreCache(cache_path)
        self.quota = SharedRateLimit(quota_path, queries_per_second, clock)
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_initial_s = backoff_initial_s
        self._sleep, self._clock = sleep, clock

    def score(self, texts: Sequence[str]) -> list[float]:
        keys = [text_key(t) for t in texts]
        known = self.cache.get_many(keys)
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
            stored = self.cache.get_many([key]).get(key)
            if stored is not None:
                return stored
            try:
                value = self._request(text)
                self.cache.put(key, value)
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
