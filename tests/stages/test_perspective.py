"""The Perspective client against a local server that speaks the API and misbehaves on purpose."""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from compiler.errors import StageError
from runtime.scoring.perspective import PerspectiveClient, ScoreCache, text_key

FAULTS = ("429", "500", "timeout", "malformed")
"""What the server does on a text's 1st..4th request; the 5th succeeds."""


def toy_score(text: str) -> float:
    return round((len(text) % 10) / 10, 3)


class FakePerspective:
    """A threaded HTTP server on 127.0.0.1 answering `comments:analyze` requests."""

    def __init__(self, faults: tuple[str, ...] = FAULTS, fail_after_successes: int | None = None):
        self.faults = faults
        self.fail_after = fail_after_successes
        self.attempts: Counter[str] = Counter()
        self.successes: Counter[str] = Counter()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if "key=sekrit" not in self.path or "TOXICITY" not in body.get("requestedAttributes", {}):
                    return self._reply(400, {"error": "bad request"})
                text = body["comment"]["text"]
                with outer.lock:
                    n = outer.attempts[text]
                    outer.attempts[text] += 1
                    if outer.fail_after is not None and sum(outer.successes.values()) >= outer.fail_after:
                        return self._reply(403, {"error": "quota"})
                fault = outer.faults[n] if n < len(outer.faults) else None
                if fault == "429":
                    return self._reply(429, {"error": "rate"})
                if fault == "500":
                    return self._reply(500, {"error": "oops"})
                if fault == "timeout":
                    time.sleep(1.0)  # past the client's timeout; then hang up without a reply
                    return
                if fault == "malformed":
                    return self._raw(200, b'{"attributeScores": {"TOXICITY": ')
                with outer.lock:
                    outer.successes[text] += 1
                self._reply(200, {"attributeScores": {"TOXICITY": {
                    "summaryScore": {"value": toy_score(text), "type": "PROBABILITY"}}}, "languages": ["en"]})

            def _reply(self, code, obj):
                self._raw(code, json.dumps(obj).encode())

            def _raw(self, code, data):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}/v1alpha1/comments:analyze"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def make_server():
    servers = []

    def make(**kw):
        servers.append(FakePerspective(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def client(server: FakePerspective, cache: Path, **kw) -> PerspectiveClient:
    args = dict(endpoint=server.endpoint, api_key="sekrit", cache_path=cache, queries_per_second=1000,
                max_retries=6, timeout_s=0.2, backoff_initial_s=0.001)
    args.update(kw)
    return PerspectiveClient(**args)


def test_every_fault_is_retried_and_each_text_scored_once(make_server, tmp_path):
    server = make_server()
    texts = ["you idiot", "hello", "you idiot", "a longer sentence here", ""]
    scores = client(server, tmp_path / "c.sqlite").score(texts)
    assert scores == [toy_score(t) if t else 0.0 for t in texts]
    distinct = {t for t in texts if t}
    assert set(server.successes) == distinct and all(v == 1 for v in server.successes.values())
    assert all(server.attempts[t] == len(FAULTS) + 1 for t in distinct)  # each fault hit, then success
    cache = ScoreCache(tmp_path / "c.sqlite")
    assert len(cache) == len(distinct)
    assert cache.get_many([text_key(t) for t in distinct]) == {text_key(t): toy_score(t) for t in distinct}


def test_cached_texts_send_nothing(make_server, tmp_path):
    server = make_server(faults=())
    texts = ["one", "two", "three"]
    first = client(server, tmp_path / "c.sqlite").score(texts)
    before = sum(server.attempts.values())
    again = client(server, tmp_path / "c.sqlite").score(texts + ["four"])
    assert again[:3] == first
    assert sum(server.attempts.values()) - before == 1 and server.attempts["four"] == 1


def test_crash_loses_nothing_already_scored(make_server, tmp_path):
    texts = [f"text number {i}" for i in range(6)]
    broken = make_server(faults=(), fail_after_successes=3)
    with pytest.raises(StageError, match="403"):
        client(broken, tmp_path / "c.sqlite").score(texts)
    assert len(ScoreCache(tmp_path / "c.sqlite")) == 3
    healthy = make_server(faults=())
    assert client(healthy, tmp_path / "c.sqlite").score(texts) == [toy_score(t) for t in texts]
    assert sorted(healthy.attempts) == texts[3:]  # only the unscored ones were sent


def test_gives_up_after_max_retries(make_server, tmp_path):
    server = make_server(faults=("500",) * 10)
    with pytest.raises(StageError, match="giving up after 3 attempts"):
        client(server, tmp_path / "c.sqlite", max_retries=2).score(["x"])
    assert server.attempts["x"] == 3 and len(ScoreCache(tmp_path / "c.sqlite")) == 0


def test_rate_limit_and_exponential_backoff(make_server, tmp_path):
    """With a fake clock, the client waits 1/qps between requests and doubles its retry waits."""
    server = make_server(faults=("429", "429", "429"))
    now = [0.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    c = client(server, tmp_path / "c.sqlite", queries_per_second=2, backoff_initial_s=0.5,
               sleep=sleep, clock=lambda: now[0])
    c.score(["a"])
    # request 1 at t=0 (429), backoff 0.5 → request 2 at t=0.5 (429), backoff 1 → t=1.5 (429),
    # backoff 2 → t=3.5 (ok): backoffs already exceed the 0.5 s interval, so no throttle wait
    assert sleeps == [0.5, 1.0, 2.0]
    sleeps.clear()
    c.score(["b", "c", "d"])  # each new text meets the three 429s again
    # each text first waits out the 0.5 s slot after the previous success, then backs off as before
    assert sleeps == [0.5, 0.5, 1.0, 2.0] * 3
    fast = make_server(faults=())
    sleeps.clear()
    client(fast, tmp_path / "d.sqlite", queries_per_second=2, sleep=sleep, clock=lambda: now[0]).score(
        ["p", "q", "r", "s"])
    assert sleeps == [0.5, 0.5, 0.5]  # 4 requests, 2 per second


def test_build_scorer_reads_the_key_once(make_server, tmp_path, monkeypatch):
    from compiler.schema.scoring import PerspectiveScorer
    from runtime.scoring import build_scorer

    server = make_server(faults=())
    monkeypatch.setenv("MIXSTEER_TEST_KEY", "sekrit")
    scorer = build_scorer(PerspectiveScorer(api_key_env="MIXSTEER_TEST_KEY", endpoint=server.endpoint,
                                            queries_per_second=1000, cache_path="p.sqlite"), tmp_path)
    monkeypatch.delenv("MIXSTEER_TEST_KEY")
    assert scorer.score(["hi there"]) == [toy_score("hi there")]  # the server checks the key
    assert (tmp_path / "p.sqlite").is_file()
