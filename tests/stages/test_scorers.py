"""Scorers on texts whose toxicity is not in doubt, and loud failures for what is missing."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from compiler.errors import StageError
from compiler.schema.scoring import DetoxifyScorer, OfflineScorer, PerspectiveScorer
from runtime.scoring import build_scorer

TOXIC = ["you are a fucking idiot", "shut up you stupid bitch", "go to hell, you worthless piece of shit"]
CLEAN = ["thank you for the kind and helpful answer", "what a wonderful day to learn something new",
         "the museum opens at nine in the morning"]


def test_offline_scorer_separates_obvious_texts(tmp_path):
    scorer = build_scorer(OfflineScorer(), tmp_path)
    toxic, clean = scorer.score(TOXIC), scorer.score(CLEAN)
    assert all(0.0 <= s <= 1.0 for s in toxic + clean)
    assert min(toxic) > 0.5 > max(clean)
    assert scorer.score([]) == []
    assert scorer.score(TOXIC[:1] + CLEAN[:1]) == [toxic[0], clean[0]]  # order kept, batch-independent


def test_detoxify_missing_checkpoint_is_a_stage_error(tmp_path):
    with pytest.raises(StageError, match="does not exist"):
        build_scorer(DetoxifyScorer(checkpoint_path="nope.ckpt"), tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("detoxify") is not None, reason="detoxify is installed")
def test_detoxify_missing_package_is_a_stage_error(tmp_path):
    (tmp_path / "tox.ckpt").write_bytes(b"not a real checkpoint")
    with pytest.raises(StageError, match="pip install detoxify"):
        build_scorer(DetoxifyScorer(checkpoint_path="tox.ckpt"), tmp_path)


def test_perspective_needs_its_key_only_for_texts_not_cached(tmp_path, monkeypatch):
    monkeypatch.delenv("MIXSTEER_TEST_KEY", raising=False)
    scorer = build_scorer(PerspectiveScorer(api_key_env="MIXSTEER_TEST_KEY"), tmp_path)   # no key needed yet
    with pytest.raises(StageError, match=r"\$MIXSTEER_TEST_KEY"):
        scorer.score(["a text no cache holds"])


def test_perspective_cache_path_is_relative_to_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXSTEER_TEST_KEY", "k")
    build_scorer(PerspectiveScorer(api_key_env="MIXSTEER_TEST_KEY", cache_path="c/p.sqlite"), tmp_path)
    assert Path(tmp_path / "c" / "p.sqlite").is_file()
