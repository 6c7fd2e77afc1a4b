"""The `score` stage stopped by SIGTERM between chunks: the cache keeps what was scored, and the rerun
scores only the rest and writes the same rows and metrics as an uninterrupted run."""
from __future__ import annotations

import os
import signal

import pytest
from test_score import TEXTS, CountingScorer, _generations, _run

from runtime import score as stage
from runtime.preempt import Preempted

CHUNK = 3
"""Texts per chunk here: TEXTS (8) make chunks of 3, 3 and 2."""


class SigtermScorer(CountingScorer):
    """A counting scorer that sends SIGTERM to this process while scoring its `at`-th chunk."""

    def __init__(self, inner, at: int | None) -> None:
        super().__init__(inner)
        self.at = at

    def score(self, texts):
        if self.calls + 1 == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().score(texts)


def test_sigterm_stops_between_chunks_and_the_rerun_scores_only_the_rest(tmp_path, monkeypatch, capsys):
    import runtime.scoring
    import runtime.scoring.texts

    real, built = runtime.scoring.build_scorer, []

    def build(spec, root, placement=None):  # the second job (the first to be stopped) gets SIGTERM in its second chunk
        built.append(SigtermScorer(real(spec, root, placement), at=2 if len(built) == 1 else None))
        return built[-1]

    monkeypatch.setattr(runtime.scoring, "build_scorer", build)
    monkeypatch.setattr(runtime.scoring.texts, "PROGRESS_CHUNK", CHUNK)
    texts = _generations(tmp_path / "evaluate")
    for root in ("whole", "stopped"):
        (tmp_path / root).mkdir()  # separate projects: separate score caches
    whole_metrics, whole_rows = _run(tmp_path / "whole", texts, "out")

    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted, match=r"score: stopped on SIGTERM after saving the scores of 6 of 8 texts"):
        _run(tmp_path / "stopped", texts, "first")
    assert built[1].calls == 2 and signal.getsignal(signal.SIGTERM) is handler
    capsys.readouterr()

    metrics, rows = _run(tmp_path / "stopped", texts, "second")
    assert "score: resumed from 6 of 8 texts already scored" in capsys.readouterr().err
    assert built[2].texts == len(set(TEXTS[6:]))  # only what the stopped job had not scored
    assert rows == whole_rows
    assert (metrics["cached_texts"], metrics["scored_texts"]) == (6, 2)
    assert metrics | {"cached_texts": 0, "scored_texts": 8} == whole_metrics
