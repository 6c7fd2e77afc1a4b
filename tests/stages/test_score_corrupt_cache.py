"""Damaged score caches, as the world delivers them: a real `python -m runtime score` writes the shared cache,
then the file gets bytes overwritten in its middle (a bad disk, a stray write), is cut in half (a copy
or a disk that filled up) or is replaced by something that is not sqlite at all. The rerun must warn,
move the file aside, rescore and publish the same rows — never a traceback. The Perspective answer cache
is damaged the same ways under a real client: its texts are fetched again with a key, and without one the
run stops with the clear "needs a key" error. Old cache layouts are migrated with every row kept."""
from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.errors import StageError
from compiler.ids import stage_id
from compiler.stages import score as stage

ROOT = Path(__file__).resolve().parents[2]
WORDS = "you are a stupid idiot thank kind day moron shut up nice museum damn weather dog hello".split()
TEXTS = [" ".join(random.Random(i).choices(WORDS, k=8)) + f" #{i}" for i in range(600)]
"""Enough distinct texts for a cache file of ~25 pages, so the middle of the file is rows, not the header."""
EVALUATE = "evaluate-0123456789ab"


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "overwritten":       # 4 KiB of noise from the middle on, across page boundaries
        middle = len(data) // 2 + 123
        noise = random.Random(0).randbytes(4096)
        path.write_bytes(data[:middle] + noise + data[middle + len(noise):])
    elif how == "truncated":
        path.write_bytes(data[:len(data) // 2])
    else:                          # something else saved under the cache's name
        path.write_text('{"this": "is not a database"}\n' * 200)


def moved_aside(cache: Path) -> list[Path]:
    """The damaged copies moved aside beside `cache` (their -wal / -shm companions not counted)."""
    return [p for p in cache.parent.glob(f"{cache.name}.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]


def project(root: Path) -> Path:
    """A project with a published evaluate folder of TEXTS and a compiled score stage JSON over it."""
    folder = root / "results" / "evaluate" / EVALUATE
    folder.mkdir(parents=True)
    (folder / "generations.jsonl").write_text("".join(
        json.dumps({"set": "rtp", "prompt_index": i // 2, "sample": i % 2, "continuation": t}) + "\n"
        for i, t in enumerate(TEXTS)))
    (folder / "stage.json").write_text("{}")  # published
    config = {"scorer": {"kind": "offline"}, "source": "generations", "toxic_threshold": 0.5,
              "bootstrap": {"resamples": 50}}
    sid = stage_id("score", stage.VERSION, stage.Config.model_validate(config).id_json(), {"texts": EVALUATE})
    path = root / "build" / "stages" / f"{sid}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"kind": "score", "id": sid, "version": stage.VERSION, "config": config,
                                "inputs": {"texts": f"results/evaluate/{EVALUATE}"},
                                "output": f"results/score/{sid}", "resources": {"threads": 1}}))
    return path


def run_score(config: Path) -> tuple[list[dict], dict, str]:
    """The stage as Snakemake runs it; (rows, metrics, stderr) after checking it succeeded cleanly."""
    proc = subprocess.run([sys.executable, "-m", "runtime", "score", "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    out = config.parents[2] / "results" / "score" / config.stem
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    return rows, json.loads((out / "metrics.json").read_text()), proc.stderr


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, list[dict], dict]:
    """A project whose score stage ran once (a real process) and filled the shared cache: (stage JSON,
    rows, metrics)."""
    config = project(tmp_path_factory.mktemp("first"))
    rows, metrics, _ = run_score(config)
    cache = config.parents[2] / ".cache" / "scores.sqlite"
    assert metrics["scored_texts"] == len(TEXTS) and cache.stat().st_size > 20 * 4096
    assert not Path(f"{cache}-wal").exists()                 # the writer's exit folded its WAL into the file
    return config, rows, metrics


@pytest.mark.parametrize("how", ["overwritten", "truncated", "not_sqlite"])
def test_a_damaged_score_cache_is_moved_aside_and_rebuilt(first_run, tmp_path, how):
    import shutil

    from runtime.scoring.cache import TextScoreCache, scorer_id

    first, rows, metrics = first_run
    shutil.copytree(first.parents[2], tmp_path / "p")        # the same project, its cache then damaged
    config = tmp_path / "p" / first.relative_to(first.parents[2])
    shutil.rmtree(config.parents[2] / "results" / "score" / config.stem)   # and the stage run again
    cache = config.parents[2] / ".cache" / "scores.sqlite"
    damage(cache, how)

    again, again_metrics, stderr = run_score(config)
    assert again == rows
    assert again_metrics["scored_texts"] > 0                 # what was lost was scored again
    assert again_metrics | {"scored_texts": 0, "cached_texts": 0} == metrics | {"scored_texts": 0, "cached_texts": 0}
    [aside] = moved_aside(cache)
    assert "warning: the cache" in stderr and aside.name in stderr and "damaged" in stderr
    spec = stage.Config.model_validate(json.loads(config.read_text())["config"]).scorer
    with TextScoreCache(cache) as rebuilt:                   # the rebuilt cache serves the next job
        assert rebuilt.get_many(scorer_id(spec, {}), TEXTS) == \
            {i: r["score"] for i, r in enumerate(rows)}
    assert len(moved_aside(cache)) == 1                      # and is trusted: nothing moved again


def _open_and_store(path: str, worker: int, start, done) -> None:
    from runtime.scoring.cache import TextScoreCache

    start.wait()
    with TextScoreCache(Path(path)) as cache:
        texts = [f"worker {worker} text {i}" for i in range(200)]
        cache.put_many("sid", texts, [i / 200 for i in range(200)])
    done.put(worker)


def test_processes_meeting_the_same_damage_move_it_aside_once_and_lose_nothing(first_run, tmp_path):
    """Four processes open the same damaged cache at once: one file moved aside, one new file, and every
    process's scores in it (none of them wrote into a file another had moved away)."""
    import multiprocessing
    import shutil

    from runtime.scoring.cache import TextScoreCache

    cache = tmp_path / "scores.sqlite"
    shutil.copyfile(first_run[0].parents[2] / ".cache" / "scores.sqlite", cache)
    damage(cache, "not_sqlite")
    ctx = multiprocessing.get_context("fork")
    start, done = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_open_and_store, args=(str(cache), w, start, done)) for w in range(4)]
    for w in workers:
        w.start()
    start.set()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0] * 4
    assert len(moved_aside(cache)) == 1
    with TextScoreCache(cache) as rebuilt:
        for w in range(4):
            texts = [f"worker {w} text {i}" for i in range(200)]
            assert rebuilt.get_many("sid", texts) == {i: i / 200 for i in range(200)}


def test_a_score_changed_in_place_is_never_served(tmp_path):
    """sqlite keeps no checksums: a stored score changed in place reads back as a valid number. The row
    check catches it, and the file is rebuilt instead."""
    from runtime.scoring.cache import TextScoreCache, text_sha256

    path = tmp_path / "scores.sqlite"
    with TextScoreCache(path) as cache:
        cache.put_many("sid", ["a", "b"], [0.25, 0.75], [False, True])
    db = sqlite3.connect(path)
    db.execute("UPDATE scores SET score = 0.5 WHERE text_sha256 = ?", (text_sha256("b"),))
    db.commit()
    db.close()
    with TextScoreCache(path) as cache:
        assert cache.get_many("sid", ["a", "b"]) == {}      # nothing trusted from the damaged file
        assert len(moved_aside(path)) == 1


def test_a_layout_0_score_cache_keeps_its_rows(tmp_path):
    """A cache written before checks, long-text flags and descriptions: every score kept, flags unknown."""
    from runtime.scoring.cache import SCHEMA_VERSION, TextScoreCache, text_sha256

    path = tmp_path / "scores.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE scores (scorer_id TEXT NOT NULL, text_sha256 TEXT NOT NULL, score REAL NOT NULL, "
               "PRIMARY KEY (scorer_id, text_sha256)) WITHOUT ROWID")
    db.executemany("INSERT INTO scores VALUES ('sid', ?, ?)", [(text_sha256(t), s) for t, s in [("a", .1), ("b", .9)]])
    db.commit()
    db.close()
    with TextScoreCache(path) as cache:
        assert cache.get_many("sid", ["b", "a", "c"]) == {0: .9, 1: .1}
        assert cache.long_flags("sid", ["a", "b"]) == {0: None, 1: None} and cache.description("sid") is None
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert not list(tmp_path.glob("*.corrupt-*"))


# ---- the Perspective answer cache, under a real client and a local fake of the API ----

@pytest.fixture
def server():
    from test_perspective import FakePerspective

    fake = FakePerspective(faults=())
    yield fake
    fake.close()


@pytest.mark.parametrize("how", ["overwritten", "truncated", "not_sqlite"])
def test_a_damaged_perspective_cache_is_refetched_with_a_key_and_needs_one_without(server, tmp_path, how, capsys):
    from test_perspective import client, toy_score

    path = tmp_path / "p.sqlite"
    texts = TEXTS[:400]
    assert client(server, path).score(texts) == [toy_score(t) for t in texts]
    db = sqlite3.connect(path)               # fold the WAL into the file, as the last writer's exit does
    assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    db.close()
    damage(path, how)
    with pytest.raises(StageError, match=r"not in the cache .* needs an API key in \$PERSPECTIVE_API_KEY"):
        client(server, path, api_key=None).score(texts)
    assert "warning: the cache" in capsys.readouterr().err
    sent = sum(server.attempts.values())
    assert client(server, path).score(texts) == [toy_score(t) for t in texts]
    assert sum(server.attempts.values()) - sent == len(texts)   # every answer fetched again, once
    assert len(moved_aside(path)) == 1


def test_a_layout_0_perspective_cache_keeps_its_answers_undated(tmp_path):
    """Answers cached before endpoints and fetch times were kept: served under the default endpoint, and
    `answer_dates` says their date is unknown; answers fetched now are dated."""
    from compiler.schema.scoring import PerspectiveScorer
    from runtime.scoring.perspective import PerspectiveAnswerCache, answer_dates, text_key

    path = tmp_path / ".cache" / "perspective.sqlite"
    path.parent.mkdir()
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE scores (key TEXT PRIMARY KEY, score REAL NOT NULL)")
    db.executemany("INSERT INTO scores VALUES (?, ?)", [(text_key("old one"), .3), (text_key("old two"), .6)])
    db.commit()
    db.close()
    spec = PerspectiveScorer()
    cache = PerspectiveAnswerCache(path)
    assert cache.get_many(spec.endpoint, [text_key("old one"), text_key("old two")]) == \
        {text_key("old one"): .3, text_key("old two"): .6}
    assert cache.get_many("http://proxy/comments:analyze", [text_key("old one")]) == {}
    cache.put(spec.endpoint, text_key("new"), .9, fetched_at=1_700_000_000.0)
    cache.close()
    assert answer_dates(spec, tmp_path, ["old one", "old two", "new", "never fetched", "  "]) == {
        "first_fetched_unix": 1_700_000_000.0, "last_fetched_unix": 1_700_000_000.0, "dated_texts": 1,
        "undated_texts": 2, "absent_texts": 1, "blank_texts": 1}


@pytest.mark.parametrize("opener", ["TextScoreCache", "PerspectiveAnswerCache"])
def test_a_cache_of_a_newer_layout_stops_the_run_and_is_kept(tmp_path, opener):
    """A file a newer mixsteer wrote is neither read nor moved aside: the error says to update mixsteer."""
    from runtime.scoring import cache, perspective

    module = cache if opener == "TextScoreCache" else perspective
    path, newer = tmp_path / "cache.sqlite", module.LAYOUT.version + 1
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {newer}")
    db.close()
    with pytest.raises(StageError, match=f"{path} was written by a newer mixsteer .*update mixsteer"):
        getattr(module, opener)(path)
    assert not list(tmp_path.glob("*.corrupt-*"))
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == newer
