"""The Perspective client against a local server that speaks the API and misbehaves on purpose.

Covers each failure the real service shows (429 with and without Retry-After, 5xx, timeouts, bodies that are
not JSON, cut short, or lack the score), the rate that several processes share, and a scoring process
killed mid-way then rerun.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from compiler.errors import StageError
from compiler.schema.scoring import PerspectiveScorer
from runtime.scoring.perspective import (
    MAX_RETRY_AFTER_S, PerspectiveAnswerCache, PerspectiveClient, perspective_scorer, retry_after_s, text_key,
)
from runtime.scoring.quota import SharedRateLimit
from tests.conftest import ROOT

FAULTS = ("429", "500", "503", "timeout", "malformed", "html", "no-score", "bad-value")
"""What the server does on a text's 1st..8th request; the 9th succeeds."""


def toy_score(text: str) -> float:
    return round((len(text) % 10) / 10, 3)


class FakePerspective:
    """A threaded HTTP server on 127.0.0.1 answering `comments:analyze` requests.

    `faults[n]` is the answer to a text's n-th request; `by_request[i]` overrides it for the i-th request
    overall; "hang" holds a request without answering until the server closes. Every request is logged
    with its wall-clock arrival time, text and outcome.
    """

    def __init__(self, faults: tuple[str, ...] = FAULTS, *, fail_after_successes: int | None = None,
                 by_request: dict[int, str] | None = None):
        self.faults = faults
        self.fail_after = fail_after_successes
        self.by_request = dict(by_request or {})
        self.attempts: Counter[str] = Counter()
        self.successes: Counter[str] = Counter()
        self.log: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()
        self.hung = threading.Event()
        self.closing = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                arrived = time.time()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if "key=sekrit" not in self.path or "TOXICITY" not in body.get("requestedAttributes", {}):
                    return self._reply(400, {"error": "bad request"})
                text = body["comment"]["text"]
                with outer.lock:
                    n = outer.attempts[text]
                    outer.attempts[text] += 1
                    fault = outer.by_request.get(len(outer.log))
                    if fault is None and n < len(outer.faults):
                        fault = outer.faults[n]
                    if outer.fail_after is not None and sum(outer.successes.values()) >= outer.fail_after:
                        fault = "403"
                    outer.log.append((arrived, text, fault or "ok"))
                    if fault is None:
                        outer.successes[text] += 1
                if fault is None:
                    return self._reply(200, {"attributeScores": {"TOXICITY": {
                        "summaryScore": {"value": toy_score(text), "type": "PROBABILITY"}}}, "languages": ["en"]})
                if fault.startswith("429"):
                    after = fault.partition(":")[2]
                    return self._reply(429, {"error": "rate"}, {"Retry-After": after} if after else {})
                if fault in ("403", "500", "503"):
                    return self._reply(int(fault), {"error": fault})
                if fault == "timeout":
                    outer.closing.wait(1.0)  # past the client's timeout; then hang up without a reply
                    return
                if fault == "hang":
                    outer.hung.set()
                    outer.closing.wait(30)
                    return
                return self._raw(200, {
                    "malformed": b'{"attributeScores": {"TOXICITY": ',
                    "html": b"<html><body>502 Bad Gateway</body></html>",
                    "no-score": b'{"attributeScores": {"TOXICITY": {"spanScores": []}}}',
                    "bad-value": b'{"attributeScores": {"TOXICITY": {"summaryScore": {"value": "high"}}}}',
                }[fault])

            def _reply(self, code, obj, headers=None):
                self._raw(code, json.dumps(obj).encode(), headers)

            def _raw(self, code, data, headers=None):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}/v1alpha1/comments:analyze"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def make_server():
    servers = []

    def make(*args, **kw):
        servers.append(FakePerspective(*args, **kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def client(server: FakePerspective, cache: Path, **kw) -> PerspectiveClient:
    args = dict(endpoint=server.endpoint, api_key="sekrit", cache_path=cache, quota_path=cache.with_suffix(".quota"),
                queries_per_second=1000, max_retries=len(FAULTS), timeout_s=0.2, backoff_initial_s=0.001)
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
    cache = PerspectiveAnswerCache(tmp_path / "c.sqlite")
    assert len(cache) == len(distinct)
    assert cache.get_many(server.endpoint, [text_key(t) for t in distinct]) == \
        {text_key(t): toy_score(t) for t in distinct}


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
    assert len(PerspectiveAnswerCache(tmp_path / "c.sqlite")) == 3
    broken.fail_after, before = None, Counter(broken.attempts)   # the service recovers
    assert client(broken, tmp_path / "c.sqlite").score(texts) == [toy_score(t) for t in texts]
    assert sorted((broken.attempts - before).elements()) == texts[3:]  # only the unscored ones were sent


@pytest.mark.parametrize("fault", ["429", "503", "timeout", "malformed", "no-score"])
def test_gives_up_after_max_retries(make_server, tmp_path, fault):
    server = make_server(faults=(fault,) * 10)
    with pytest.raises(StageError, match=r"giving up after 3 attempts .* a rerun sends only the rest"):
        client(server, tmp_path / "c.sqlite", max_retries=2).score(["x"])
    assert server.attempts["x"] == 3 and len(PerspectiveAnswerCache(tmp_path / "c.sqlite")) == 0


class FakeTime:
    """A clock that only moves when slept on; records the sleeps."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now, self.sleeps = start, []

    def sleep(self, s: float) -> None:
        self.sleeps.append(round(s, 9))
        self.now += s

    def clock(self) -> float:
        return self.now


def test_rate_limit_and_exponential_backoff(make_server, tmp_path):
    """With a fake clock, the client waits 1/qps between requests and doubles its retry waits."""
    server = make_server(faults=("429", "429", "429"))
    t = FakeTime()
    c = client(server, tmp_path / "c.sqlite", queries_per_second=2, backoff_initial_s=0.5,
               sleep=t.sleep, clock=t.clock)
    c.score(["a"])
    # request 1 at t=0 (429), backoff 0.5 → request 2 at t=0.5 (429), backoff 1 → t=1.5 (429),
    # backoff 2 → t=3.5 (ok): backoffs already exceed the 0.5 s interval, so no throttle wait
    assert t.sleeps == [0.5, 1.0, 2.0]
    t.sleeps.clear()
    c.score(["b", "c", "d"])  # each new text meets the three 429s again
    # each text first waits out the 0.5 s slot after the previous success, then backs off as before
    assert t.sleeps == [0.5, 0.5, 1.0, 2.0] * 3
    fast = make_server(faults=())
    t.sleeps.clear()
    client(fast, tmp_path / "d.sqlite", queries_per_second=2, sleep=t.sleep, clock=t.clock).score(
        ["p", "q", "r", "s"])
    assert t.sleeps == [0.5, 0.5, 0.5]  # 4 requests, 2 per second


def test_retry_after_is_waited_and_holds_off_every_process(make_server, tmp_path):
    """A 429's Retry-After replaces the backoff and moves the shared schedule, which any other process
    (another limiter on the same file) sees while this one waits."""
    server = make_server(faults=("429:3", "429"))
    t = FakeTime()
    quota = tmp_path / "shared.quota"
    seen_by_others: list[float] = []

    def sleep(s: float) -> None:
        seen_by_others.append(SharedRateLimit(quota, 1000, t.clock).next_free() - t.now)
        t.sleep(s)

    c = client(server, tmp_path / "c.sqlite", quota_path=quota, backoff_initial_s=0.25, sleep=sleep, clock=t.clock)
    assert c.score(["a"]) == [toy_score("a")]
    # Retry-After 3 s, then (no header) the backoff, doubled once: 0.5 s
    assert t.sleeps == [3.0, 0.5]
    assert seen_by_others[0] >= 3.0  # any other process's next slot is ≥ 3 s away too


def test_retry_after_header_forms():
    now = 1_700_000_000.0
    assert retry_after_s("5", now) == 5.0
    assert retry_after_s(formatdate(now + 7, usegmt=True), now) == pytest.approx(7.0)
    assert retry_after_s(formatdate(now - 60, usegmt=True), now) == 0.0  # a date in the past: go now
    assert retry_after_s(str(10 * MAX_RETRY_AFTER_S), now) == MAX_RETRY_AFTER_S
    assert retry_after_s(None, now) is None and retry_after_s("soon", now) is None


def test_shared_rate_limit_spaces_slots_across_instances(tmp_path):
    now = [100.0]
    a, b = (SharedRateLimit(tmp_path / "q", 4, lambda: now[0]) for _ in range(2))
    assert [a.reserve(), b.reserve(), a.reserve()] == [100.0, 100.25, 100.5]
    b.hold_off(110.0)
    assert a.reserve() == 110.0
    now[0] = 200.0  # an idle stretch: the schedule does not bank unused slots
    assert b.reserve() == 200.0
    (tmp_path / "q").write_bytes(b"garbage")
    assert a.reserve() == 200.0  # an unreadable file restarts the schedule instead of failing


def test_cached_texts_score_with_no_key(make_server, tmp_path, monkeypatch):
    """A spec whose texts are all cached needs neither a key nor the network; a miss names the count."""
    server = make_server(faults=())
    texts = ["first text", "second text", "first text", ""]
    monkeypatch.setenv("MIXSTEER_TEST_KEY", "sekrit")
    spec = PerspectiveScorer(api_key_env="MIXSTEER_TEST_KEY", endpoint=server.endpoint, queries_per_second=1000,
                             cache_path="c/p.sqlite", quota_path="c/p.quota")
    expected = perspective_scorer(spec, tmp_path).score(texts)
    assert (tmp_path / "c" / "p.sqlite").is_file() and (tmp_path / "c" / "p.quota").is_file()
    sent = sum(server.attempts.values())
    monkeypatch.delenv("MIXSTEER_TEST_KEY")
    offline = perspective_scorer(spec, tmp_path)
    assert offline.score(texts) == expected and offline.long_texts(texts) == [False] * len(texts)
    assert sum(server.attempts.values()) == sent
    with pytest.raises(StageError, match=r"2 distinct text\(s\) are not in the cache .*\$MIXSTEER_TEST_KEY"):
        offline.score(texts + ["a new text", "another new text", "a new text"])
    proxy = perspective_scorer(spec.model_copy(update={"endpoint": "http://127.0.0.1:9/proxy"}), tmp_path)
    with pytest.raises(StageError, match=r"2 distinct text\(s\) are not in the cache"):   # no answer shared
        proxy.score(texts)


CHILD = """
import json, sys
from pathlib import Path
from runtime.scoring.perspective import PerspectiveClient
a = json.loads(sys.argv[1])
c = PerspectiveClient(endpoint=a["endpoint"], api_key="sekrit", cache_path=Path(a["cache"]),
                      quota_path=Path(a["quota"]), queries_per_second=a["qps"], max_retries=3, timeout_s=10.0,
                      backoff_initial_s=0.01)
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps(c.score(a["texts"])), flush=True)
"""


def start_scorer(server: FakePerspective, tmp_path: Path, texts: list[str], qps: float) -> subprocess.Popen:
    """A scoring process sharing `tmp_path`'s cache and quota file; it waits for a line on stdin to start."""
    args = dict(endpoint=server.endpoint, cache=str(tmp_path / "p.sqlite"), quota=str(tmp_path / "p.quota"),
                qps=qps, texts=texts)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def go(proc: subprocess.Popen) -> None:
    proc.stdin.write("\n")
    proc.stdin.flush()


def finish(proc: subprocess.Popen) -> list[float]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out)


JITTER_S = 0.05
"""Allowed delay between a request's slot and its arrival at the server (process scheduling on a busy
machine). Slots 1/q apart, each arriving up to J late, put at most q·(1 + 2J) + 1 requests in any
one-second window: 23 at q = 20, where three processes with a quota each would send about 60."""


def test_processes_share_one_rate(make_server, tmp_path):
    """Three processes scoring at once keep to the one configured rate together, and a 429 with
    Retry-After stops all of them, not only the process that received it."""
    qps, per_process, hold = 20.0, 20, 1.0
    retry_after_request = 20
    server = make_server(faults=(), by_request={retry_after_request: f"429:{hold:g}"})
    batches = [[f"process {p} text {i}" for i in range(per_process)] for p in range(3)]
    procs = [start_scorer(server, tmp_path, texts, qps) for texts in batches]
    for proc in procs:
        go(proc)
    results = [finish(proc) for proc in procs]

    assert results == [[toy_score(t) for t in texts] for texts in batches]
    every = [t for texts in batches for t in texts]
    assert set(server.successes) == set(every) and set(server.successes.values()) == {1}
    assert len(PerspectiveAnswerCache(tmp_path / "p.sqlite")) == len(every)  # three concurrent writers, nothing lost

    times = sorted(arrived for arrived, _, _ in server.log)
    busiest = max(sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times))
    assert busiest <= qps * (1 + 2 * JITTER_S) + 1, f"{busiest} requests within one second at {qps:g}/s"
    span = [(min(a for a, text, _ in server.log if text in b), max(a for a, text, _ in server.log if text in b))
            for b in batches]
    assert max(s for s, _ in span) < min(e for _, e in span)  # the three really ran at the same time

    refused_at = server.log[retry_after_request][0]
    during_hold = [a for a, _, _ in server.log if refused_at < a < refused_at + hold - 0.05]
    assert len(during_hold) <= len(procs) - 1  # only requests already scheduled (≤ 1 per other process)


def test_two_jobs_over_the_same_texts_pay_once(make_server, tmp_path):
    """Two processes scoring the same texts at once: each checks the cache after waiting for its slot,
    so a text the other stored meanwhile is not sent again. (A duplicate would need one request and its
    commit to take longer than the 100 ms between slots.)"""
    texts = [f"shared text {i}" for i in range(10)]
    server = make_server(faults=())
    procs = [start_scorer(server, tmp_path, texts, qps=10) for _ in range(2)]
    for proc in procs:
        go(proc)
    assert [finish(proc) for proc in procs] == [[toy_score(t) for t in texts]] * 2
    assert dict(server.attempts) == {t: 1 for t in texts}


def test_killed_scorer_reruns_without_loss_or_double_count(make_server, tmp_path):
    """SIGKILL while a request is in flight (the server holds it), then rerun: every text answered before
    the kill is in the cache; the rerun sends only the texts not answered, so every text is requested
    exactly once overall except the one in flight at the kill, which is requested exactly twice (once
    unanswered, once by the rerun); the final scores are complete."""
    texts = [f"text {i:02d} to score" for i in range(30)]
    in_flight = 12
    server = make_server(faults=(), by_request={in_flight: "hang"})
    proc = start_scorer(server, tmp_path, texts, qps=50)
    go(proc)
    assert server.hung.wait(30), "the scorer never reached the held request"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL

    answered = [text for _, text, outcome in server.log if outcome == "ok"]
    assert answered == texts[:in_flight]
    cached = PerspectiveAnswerCache(tmp_path / "p.sqlite").get_many(server.endpoint, [text_key(t) for t in texts])
    assert set(cached) == {text_key(t) for t in answered}  # nothing answered was lost

    rerun = start_scorer(server, tmp_path, texts, qps=50)
    go(rerun)
    assert finish(rerun) == [toy_score(t) for t in texts]
    assert server.attempts[texts[in_flight]] == 2
    assert all(server.attempts[t] == 1 for t in texts if t != texts[in_flight])
    assert all(server.successes[t] == 1 for t in texts)
    assert len(PerspectiveAnswerCache(tmp_path / "p.sqlite")) == len(texts)


def test_validate_warns_that_perspective_is_ending(project, capsys, monkeypatch):
    """A Perspective scorer is valid (exit 0) but `mixsteer validate` warns, at its line, that the
    service is ending and points to the open classifiers and `scorer-check`."""
    import compiler.plan
    from runtime.cli import build_parser
    from compiler.validate import load_spec, warnings_of

    spec = project("p.yaml", project.minimal + "  scorers:\n    - kind: offline\n    - kind: perspective\n")
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), 1) if "kind: perspective" in text)
    [warning] = warnings_of(load_spec(spec, project.root))
    assert (warning.line, warning.path) == (line, "evaluate.scorers[1]")
    assert warning.message.startswith("warning:") and "2026-12-31" in warning.message
    assert "kind: classifier" in warning.message and "mixsteer scorer-check" in warning.message
    assert warnings_of(load_spec(project("q.yaml", project.minimal), project.root)) == []

    # the command prints it and still succeeds (planning is another test's business)
    monkeypatch.setattr(compiler.plan, "build_plan", lambda *a: SimpleNamespace(instances={}))
    args = build_parser().parse_args(["--root", str(project.root), "validate", str(spec)])
    assert args.func(args, project.root) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ok  ") and f"p.yaml:{line}:" in err and str(warning).split(": ", 1)[1] in err
    args = build_parser().parse_args(["--root", str(project.root), "validate", "--json", str(spec)])
    assert args.func(args, project.root) == 0
    assert json.loads(capsys.readouterr().out)[0]["warnings"] == [vars(warning)]
