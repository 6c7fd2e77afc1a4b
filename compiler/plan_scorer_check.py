"""Plan the `scorer_check` stage: one instance per run with a `scorer_check` section, no inputs.

It needs no model, so it is planned whether or not the spec pretrains anything; runs of a sweep that do
not touch the section share the instance (same config, same id).
"""
from __future__ import annotations

from typing import Any

from .schema import Spec
from .schema.scoring import OfflineScorer, ScorerSpec


def checked_scorers(spec: Spec) -> list[ScorerSpec]:
    """The scorers to check: the section's own, else the evaluation's, else the offline scorer."""
    assert spec.scorer_check is not None
    if spec.scorer_check.scorers is not None:
        return list(spec.scorer_check.scorers)
    if spec.evaluate is not None:
        return list(spec.evaluate.scorers)
    return [OfflineScorer()]


def plan_scorer_check(b: Any, spec: Spec) -> dict[str, str]:
    """The `scorer_check` role (empty without the section); `b` is the planner's instance builder."""
    section = spec.scorer_check
    if section is None:
        return {}
    return {"scorer_check": b.add("scorer_check", dict(
        scorers=checked_scorers(spec), rtp=section.rtp, toxigen=section.toxigen,
        threshold=section.threshold, bootstrap=section.bootstrap,
    ), {}, spec)}
