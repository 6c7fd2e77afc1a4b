"""The shared score cache: hits and misses, scorer ids, concurrent writer processes, a killed writer."""
from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from compiler.errors import StageError
from compiler.fingerprint import fingerprint
from compiler.schema.scoring import ClassifierScorer, OfflineScorer, PerspectiveScorer
from runtime.scoring.cache import TextScoreCache, cached, scorer_id


def text_score(text: str) -> float:
    """A deterministic fake score, so any stored value can be checked against the text it belongs to."""
    return (sum(map(ord, text)) % 997) / 997


class CountingScorer:
    """Scores with `text_score`; records every batch it was asked to score; texts of 3 or more characters
    are 'long'."""

    def __init__(self, fail_after_calls: int | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_after_calls = fail_after_calls

    def long_texts(self, texts):
        return [len(t) >= 3 for t in texts]

    def score(self, texts):
        if self.fail_after_calls is not None and len(self.calls) == self.fail_after_calls:
            raise RuntimeError("scorer died")
        self.calls.append(list(texts))
        return [text_score(t) for t in texts]


def test_hits_misses_and_deduplication(tmp_path):
    cache = TextScoreCache(tmp_path / "scores.sqlite")
    inner = CountingScorer()
    scorer = cached(inner, OfflineScorer(), cache)
    texts = ["a", "bb", "a", "ccc"]
    assert scorer.score(texts) == [text_score(t) for t in texts]
    assert (scorer.hits, scorer.misses) == (0, 4)
    assert inner.calls == [["a", "bb", "ccc"]]          # the duplicate is scored once
    more = ["ccc", "dddd", "a"]
    assert scorer.score(more) == [text_score(t) for t in more]
    assert (scorer.hits, scorer.misses) == (2, 5)
    assert inner.calls[1:] == [["dddd"]]                # only the miss
    assert cache.long_flags(scorer.scorer_id, texts + more) == dict(enumerate(
        [False, False, False, True, True, True, False]))  # each text's flag, stored with its score
    assert len(cache) == 4


def test_a_second_process_pays_nothing(tmp_path):
    path = tmp_path / "scores.sqlite"
    texts = [f"text {i}" for i in range(50)]
    cached(CountingScorer(), OfflineScorer(), TextScoreCache(path)).score(texts)
    inner = CountingScorer()
    again = cached(inner, OfflineScorer(), TextScoreCache(path))
    assert again.score(texts) == [text_score(t) for t in texts]
    assert (again.hits, again.misses, inner.calls) == (50, 0, [])


def test_scorer_ids_never_share_entries(tmp_path):
    cache = TextScoreCache(tmp_path / "scores.sqlite")
    a = ClassifierScorer(path="clf", toxic_labels=["toxic"])
    b = ClassifierScorer(path="clf", toxic_labels=["toxic", "insult"])
    assert scorer_id(a) != scorer_id(b)
    cache.put_many(scorer_id(a), ["x", "y"], [0.25, 0.75])
    assert cache.get_many(scorer_id(a), ["y", "z", "x"]) == {0: 0.75, 2: 0.25}
    assert cache.get_many(scorer_id(b), ["x", "y"]) == {}
    inner = CountingScorer()
    assert cached(inner, b, cache).score(["x"]) == [text_score("x")]
    assert inner.calls == [["x"]]


def test_operational_fields_and_name_do_not_change_the_scorer_id_but_the_endpoint_does():
    base = ClassifierScorer(model="org/clf", revision="a" * 40, toxic_labels=["toxic"])
    assert scorer_id(base) == scorer_id(base.model_copy(update={"batch_size": 7}))
    assert scorer_id(base) == scorer_id(ClassifierScorer(
        model="org/clf", revision="a" * 40, toxic_labels=["toxic"], batch_size=7, name="renamed"))
    assert scorer_id(base) != scorer_id(ClassifierScorer(model="org/clf", revision="b" * 40,
                                                         toxic_labels=["toxic"]))
    perspective = PerspectiveScorer()
    assert scorer_id(perspective) == scorer_id(PerspectiveScorer(queries_per_second=10, max_retries=2))
    assert scorer_id(perspective) != scorer_id(PerspectiveScorer(endpoint="http://proxy/comments:analyze"))


def test_device_and_precision_key_model_scorers_only(tmp_path):
    """CPU-fp32 and GPU-bf16 scores of one classifier never share a key; a scorer without a model ignores it."""
    from compiler.schema.precision import Compute

    clf, gpu = ClassifierScorer(model="org/clf", revision="a" * 40, toxic_labels=["toxic"]), Compute(
        device="cuda", precision="bf16")
    assert scorer_id(clf, compute=gpu) != scorer_id(clf, compute=Compute())
    assert scorer_id(clf, compute=gpu) != scorer_id(clf, compute=Compute(device="cuda", precision="tf32"))
    assert scorer_id(clf) == scorer_id(clf, compute=Compute())          # unplaced model scorers run on CPU fp32
    assert scorer_id(OfflineScorer(), compute=gpu) == scorer_id(OfflineScorer())
    cache = TextScoreCache(tmp_path / "s.sqlite")
    cached(CountingScorer(), clf, cache, compute=gpu).score(["x"])
    again = CountingScorer()
    cached(again, clf, cache, compute=Compute()).score(["x"])
    assert again.calls == [["x"]]                                       # the GPU score is not the CPU one


def test_local_checkpoint_content_enters_the_id_through_the_stage_files(tmp_path):
    spec = ClassifierScorer(path="clf", toxic_labels=["toxic"])
    (tmp_path / "clf").mkdir()
    (tmp_path / "clf" / "model.safetensors").write_bytes(b"weights v1")
    first = scorer_id(spec, {"clf": fingerprint(tmp_path / "clf")})
    (tmp_path / "clf" / "model.safetensors").write_bytes(b"weights v2")
    assert scorer_id(spec, {"clf": fingerprint(tmp_path / "clf")}) != first
    assert scorer_id(spec) == scorer_id(spec.model_copy())   # without files: the spec alone


# Scorer ids computed before they were taken from the stage JSON's `files` (the scorer fingerprinted the
# files itself from the project root): a score cache written then must still be hit.
IDS_BEFORE = {
    "clf": "73a640989348c333e5e71ded57b0239607010ad6bdecbd4d7f3d79439e8e0560",
    "clf-gpu": "d488ec493875de55c39c06a08da5a31c0911f1c8dfe9590e8a52a034b9ea0d06",
    "clf-no-files": "08d0fc0970bc31627a84ca30614161ad861b666a720ca241dda2b5920a2b08c2",
    "lexicon": "35b200458678c43ce33ec88823e0f50f5f7738f4f5793f3f4b7ff745539de285",
    "missing": "2cc6d50ae75bb2533430cceb0d7158e888346afe0c27db77896f3a018da64d9e",
}


def test_scorer_ids_from_the_stage_files_equal_those_computed_before(tmp_path):
    """A local classifier folder and word list fingerprinted as the compiler does for a stage's `files`: the
    ids from those fingerprints are the ids the scorer once computed by hashing the same files itself."""
    from compiler.schema.precision import Compute
    from compiler.schema.scoring import LexiconScorer

    (tmp_path / "clf").mkdir()
    (tmp_path / "clf" / "model.safetensors").write_bytes(b"weights v1")
    (tmp_path / "clf" / "config.json").write_text('{"a": 1}')
    (tmp_path / "words.txt").write_text("bad\nworse\n")
    clf, lexicon = ClassifierScorer(path="clf", toxic_labels=["toxic"]), LexiconScorer(path="words.txt")
    files = {path: fingerprint(tmp_path / path) for path in ("clf", "words.txt")}
    assert scorer_id(clf, files) == IDS_BEFORE["clf"]
    assert scorer_id(clf, files, Compute(device="cuda", precision="bf16")) == IDS_BEFORE["clf-gpu"]
    assert scorer_id(clf) == IDS_BEFORE["clf-no-files"]
    assert scorer_id(lexicon, files) == IDS_BEFORE["lexicon"]
    assert scorer_id(ClassifierScorer(path="nope", toxic_labels=["toxic"]), files) == IDS_BEFORE["missing"]


def test_scores_are_stored_chunk_by_chunk(tmp_path):
    """A scorer that dies part-way leaves every finished chunk in the cache."""
    cache = TextScoreCache(tmp_path / "scores.sqlite")
    scorer = cached(CountingScorer(fail_after_calls=2), OfflineScorer(), cache, chunk_size=10)
    texts = [f"t{i}" for i in range(35)]
    with pytest.raises(RuntimeError, match="scorer died"):
        scorer.score(texts)
    assert cache.get_many(scorer.scorer_id, texts) == {i: text_score(texts[i]) for i in range(20)}


def test_non_finite_scores_are_refused(tmp_path):
    class NanScorer:
        def score(self, texts):
            return [float("nan")] * len(texts)

    cache = TextScoreCache(tmp_path / "scores.sqlite")
    with pytest.raises(StageError, match="non-finite"):
        cached(NanScorer(), OfflineScorer(), cache).score(["x"])
    assert len(cache) == 0


def _write_all(path: str, sid: str, texts: list[str], start: multiprocessing.Event, chunk: int) -> None:
    cache = TextScoreCache(Path(path))
    start.wait()
    for i in range(0, len(texts), chunk):
        part = texts[i:i + chunk]
        cache.put_many(sid, part, [text_score(t) for t in part])
        cache.get_many(sid, part)


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "scores.sqlite"
    shared = [f"shared {i}" for i in range(3000)]
    own = [[f"own {w} {i}" for i in range(500)] for w in range(2)]
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    workers = [
        ctx.Process(target=_write_all, args=(str(path), "sid", shared + own[0], start, 50)),
        ctx.Process(target=_write_all, args=(str(path), "sid", own[1] + shared[::-1], start, 37)),
    ]
    for w in workers:
        w.start()
    start.set()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    everything = shared + own[0] + own[1]
    cache = TextScoreCache(path)
    assert len(cache) == len(everything)
    assert cache.get_many("sid", everything) == {i: text_score(t) for i, t in enumerate(everything)}


def _write_forever(path: str, ready: multiprocessing.Event, chunk: int) -> None:
    cache = TextScoreCache(Path(path))
    for n in range(10**9):
        texts = [f"{n} {i}" for i in range(chunk)]
        cache.put_many("sid", texts, [text_score(t) for t in texts])
        ready.set()


def test_a_killed_writer_leaves_a_consistent_database(tmp_path):
    path = tmp_path / "scores.sqlite"
    chunk = 20_000                                       # long transactions: the kill lands inside one
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    writer = ctx.Process(target=_write_forever, args=(str(path), ready, chunk))
    writer.start()
    assert ready.wait(60)
    time.sleep(0.3)
    os.kill(writer.pid, signal.SIGKILL)
    writer.join(10)
    assert writer.exitcode == -signal.SIGKILL
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    cache = TextScoreCache(path)
    n = len(cache)
    assert n > 0 and n % chunk == 0                      # whole transactions only
    stored = [f"{k} {i}" for k in range(n // chunk) for i in range(chunk)]
    assert cache.get_many("sid", stored) == {i: text_score(t) for i, t in enumerate(stored)}
    cache.put_many("sid", ["after"], [0.5])              # and it is still writable
    assert cache.get_many("sid", ["after"]) == {0: 0.5}
