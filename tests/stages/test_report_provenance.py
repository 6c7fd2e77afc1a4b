"""Scorer provenance, from the score stage's `scorer.json` to the report's Scorers section.

Real score stages run on a tiny local classifier (max over windows, some texts longer than its window)
and on Perspective through a local fake of the API; a second stage over the same texts is answered wholly
from the cache (the scorer never built) and must still report what the scorer resolved. The report's
section must show model, activation applied, labels and combine rule, window, long-text rule with its
count, and for Perspective the dates its answers were fetched."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_classifier_scorer import save_classifier
from test_score import _generations, _run

from compiler.schema.report import ReportRow
from runtime.report import provenance
from runtime.stage import StageContext

LONG = "you are a stupid idiot and i hate the quick brown fox jumps over lazy dog"   # 16 words: > 7 tokens
TEXTS = ["thank you", LONG, "the dog", LONG + " thank you", "kind and helpful answer", "i hate you"]
CLASSIFIER = {"kind": "classifier", "path": "clf", "toxic_labels": ["toxic", "insult"], "combine": "max",
              "max_length_tokens": 7, "long_texts": "max_windows", "name": "tiny"}


def report_section(tmp_path: Path, score_ids: dict[str, str], scorers: list[str]) -> dict:
    inputs = {sid: tmp_path / sid for sid in score_ids.values()}
    ctx = StageContext(kind="report", stage_id="report-x", root=tmp_path, out=tmp_path, work=tmp_path / "w",
                       inputs=inputs)
    return provenance.section(ctx, [ReportRow(run="r", scores=score_ids)], scorers=scorers)


def test_classifier_provenance_survives_a_run_answered_from_the_cache(tmp_path, monkeypatch):
    import runtime.scoring

    save_classifier(tmp_path / "clf", ["neutral", "toxic", "insult"])
    texts = _generations(tmp_path / "evaluate", TEXTS)
    metrics, _ = _run(tmp_path, texts, "score-first", scorer=CLASSIFIER)
    assert (metrics["windowed_texts"], metrics["truncated_texts"], metrics["unknown_length_texts"]) == (2, 0, 0)
    first = json.loads((tmp_path / "score-first" / "scorer.json").read_text())
    assert first["resolved"] | {"transformers": None} == {
        "activation": "softmax", "max_length_tokens": 7, "long_texts": "max_windows", "window_overlap_tokens": 2,
        "model_type": "bert", "labels": ["neutral", "toxic", "insult"], "transformers": None}
    assert first["settings"]["toxic_labels"] == ["toxic", "insult"] and first["long_text_rule"] == "max_windows"
    assert first["files"]["clf"].startswith("dir:") and first["texts"]["n_texts"] == len(TEXTS)

    def never(*args):
        raise AssertionError("the scorer was built although every text is cached")

    monkeypatch.setattr(runtime.scoring, "build_scorer", never)
    again, _ = _run(tmp_path, texts, "score-again", scorer=CLASSIFIER)
    assert (again["scored_texts"], again["windowed_texts"]) == (0, 2)    # counted from the cache's flags
    second = json.loads((tmp_path / "score-again" / "scorer.json").read_text())
    assert second["resolved"] == first["resolved"] and second["scorer_id"] == first["scorer_id"]

    section = report_section(tmp_path, {"tiny": "score-first"}, ["tiny"])
    [row] = section["rows"]
    assert dict(zip(section["headers"], row)) == {
        "scorer": "tiny (primary)", "model / service": f"local folder clf (content {first['files']['clf']})",
        "activation": "softmax (auto)", "toxic labels (combine)": "toxic, insult (max)", "window": "7 tokens",
        "long texts": f"max_windows: 2 of {len(TEXTS)} windowed", "texts scored": str(len(TEXTS))}


@pytest.fixture
def server():
    from test_perspective import FakePerspective

    fake = FakePerspective(faults=())
    yield fake
    fake.close()


def test_perspective_provenance_dates_its_answers(tmp_path, monkeypatch, server):
    monkeypatch.setenv("MIXSTEER_TEST_KEY", "sekrit")
    spec = {"kind": "perspective", "endpoint": server.endpoint, "queries_per_second": 1000,
            "api_key_env": "MIXSTEER_TEST_KEY"}
    texts = _generations(tmp_path / "evaluate", TEXTS + ["   "])
    before = time.time()
    _run(tmp_path, texts, "score-p", scorer=spec)
    after = time.time()
    record = json.loads((tmp_path / "score-p" / "scorer.json").read_text())
    answers = record["perspective_answers"]
    assert before <= answers["first_fetched_unix"] <= answers["last_fetched_unix"] <= after
    assert (answers["dated_texts"], answers["undated_texts"], answers["absent_texts"], answers["blank_texts"]) == \
        (len(TEXTS), 0, 0, 1)
    assert record["resolved"]["endpoint"] == server.endpoint and record["long_text_rule"] == "whole text"

    section = report_section(tmp_path, {"perspective": "score-p"}, ["perspective"])
    [row] = section["rows"]
    assert row[1] == f"Perspective API, TOXICITY, {server.endpoint}" and row[5] == "read whole"
    day = time.strftime("%Y-%m-%d", time.gmtime(before))
    assert any(f"answers fetched {day} to" in note and f"for {len(TEXTS)} texts" in note and "drifted" in note
               for note in section["notes"])
