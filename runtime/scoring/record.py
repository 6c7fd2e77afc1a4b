"""What a score stage records about the scorer behind its numbers (`scorer.json`): a toxicity number means
little without the model and commit (or, for Perspective, when its answers were fetched: its scores of the
same texts drifted between 2020 and 2023), the activation actually applied, the labels and how they were
combined, the window and what happened to texts longer than it.

Settings come from three places: the spec (labels, combine rule, long-text rule, pinned revision), the
content of the local files it names (the stage JSON's fingerprints, which its scorer id hashes), and what
the scorer resolved when it was built (`description()`: `auto` activation → sigmoid or softmax, the
window, the commit actually loaded), which the shared score cache keeps per scorer id, so a job answered
wholly from the cache reports it too. A cache written before descriptions were kept gives `resolved: null`.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Sequence

from compiler.schema.scoring import ClassifierScorer, DetoxifyScorer, PerspectiveScorer
from runtime.scoring.cache import scorer_files

if TYPE_CHECKING:
    from runtime.stage import StageContext

WHOLE_TEXT = "whole text"
"""The long-text rule of scorers that read any text whole (no window)."""


def long_text_rule(spec: Any) -> str:
    """What happens to a text longer than the scorer's window: `truncate`, `max_windows` or `whole text`."""
    if isinstance(spec, ClassifierScorer):
        return spec.long_texts
    return "truncate" if isinstance(spec, DetoxifyScorer) else WHOLE_TEXT


def long_text_counts(spec: Any, flags: Sequence[bool | None]) -> dict[str, float]:
    """Metrics from per-text long flags: `truncated_texts` / `windowed_texts` (by the rule that applied) and
    `unknown_length_texts` (scores stored before lengths were recorded)."""
    rule, long = long_text_rule(spec), sum(f is True for f in flags)
    return {"truncated_texts": float(long if rule != "max_windows" else 0),
            "windowed_texts": float(long if rule == "max_windows" else 0),
            "unknown_length_texts": float(sum(f is None for f in flags))}


def scorer_record(spec: Any, scorer_id: str, resolved: dict[str, Any] | None, counts: dict[str, float],
                  texts: Sequence[str], ctx: StageContext) -> dict[str, Any]:
    """The content of `scorer.json`; the local files' fingerprints are the stage JSON's (`ctx.files`)."""
    record: dict[str, Any] = {
        "label": spec.label, "kind": spec.kind, "scorer_id": scorer_id,
        "settings": json.loads(spec.id_json()),
        "files": scorer_files(spec, ctx.files),
        "resolved": resolved,
        "long_text_rule": long_text_rule(spec),
        "texts": {key: int(counts[key]) for key in ("n_texts", "truncated_texts", "windowed_texts",
                                                     "unknown_length_texts", "cached_texts", "scored_texts")},
    }
    if isinstance(spec, PerspectiveScorer):
        from runtime.scoring.perspective import answer_dates

        record["perspective_answers"] = answer_dates(spec, ctx.root, texts)
    return record
