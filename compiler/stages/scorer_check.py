"""`scorer_check`: How far each scorer agrees with references no one here wrote.
Its config, VERSION and plan; `runtime.scorer_check` runs it."""
from __future__ import annotations

from compiler.planning import RunPlanning
from compiler.schema.base import StrictModel, same_as
from compiler.schema.evaluate import BootstrapSection
from compiler.schema.scorer_check import RTPCheck, ScorerCheckSection, ToxiGenCheck
from compiler.schema.scoring import OfflineScorer, ScorerSpec
from compiler.schema.spec import Spec


VERSION = 1


class Config(StrictModel):
    scorers: list[ScorerSpec] = same_as(ScorerCheckSection, "scorers",
                                        description="Scorers to check (the planner fills the default).")
    rtp: RTPCheck | None = same_as(ScorerCheckSection, "rtp", keep_default=True)
    toxigen: ToxiGenCheck | None = same_as(ScorerCheckSection, "toxigen", keep_default=True)
    threshold: float = same_as(ScorerCheckSection, "threshold", keep_default=True)
    bootstrap: BootstrapSection = same_as(ScorerCheckSection, "bootstrap", keep_default=True)


def checked_scorers(spec: Spec) -> list[ScorerSpec]:
    """The scorers to check: the section's own, else the evaluation's, else the offline scorer."""
    assert spec.scorer_check is not None
    if spec.scorer_check.scorers is not None:
        return list(spec.scorer_check.scorers)
    if spec.evaluate is not None:
        return list(spec.evaluate.scorers)
    return [OfflineScorer()]


def plan(run: RunPlanning) -> None:
    """One instance per run with a `scorer_check` section, no inputs: it needs no model, so it is planned
    whether or not the spec pretrains anything; runs of a sweep that do not touch the section share it."""
    section = run.spec.scorer_check
    if section is None:
        return
    run.roles["scorer_check"] = run.add("scorer_check", dict(
        scorers=checked_scorers(run.spec), rtp=section.rtp, toxigen=section.toxigen,
        threshold=section.threshold, bootstrap=section.bootstrap,
    ), {})
