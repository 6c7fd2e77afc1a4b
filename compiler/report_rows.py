"""The report's rows: one per run and evaluated model variant, what the report tabulates and plots and what
`mixsteer results` reads (`runtime.results`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .schema.report import STEER_FIELDS, ReportRow, is_iti

if TYPE_CHECKING:
    from .planning import RunPlan, StageInstance


def report_rows(rp: RunPlan, instances: dict[str, StageInstance]) -> list[ReportRow]:
    """One row per evaluated model variant of a run: what the report tabulates and plots.

    `variant` is one of `VARIANT_ORDER`; ITI rows (real and controls) carry their `steer` id, its settings
    and `control`, other rows None; a run that evaluates nothing gets one row without a variant."""
    spec = rp.spec
    common = dict(run=rp.name, axes=rp.axes, seed=spec.seed, toxic_share=spec.data.toxic_share if spec.data else None,
                  pretrain=rp.roles.get("pretrain"), mix=rp.roles.get("mix"), probe=rp.roles.get("probe"),
                  toy=rp.roles.get("toy"))
    rows = []
    for role, sid in rp.roles.items():
        if not role.startswith("evaluate/"):
            continue
        variant = role.split("/", 1)[1]
        kind, _, draw = variant.partition("/")
        steer = {}
        if is_iti(kind):
            control = kind[len("iti_"):] if kind.startswith("iti_") else None
            steer_id = rp.roles["steer" if control is None else f"steer/{control}/{draw}"]
            settings = instances[steer_id].config
            steer = {name: getattr(settings, name) for name in (*STEER_FIELDS, "control")} | {"steer": steer_id}
        rows.append(ReportRow(**common, **steer, variant=kind, evaluate=sid, scores=_scores(rp, "evaluate", variant),
                              attack=rp.roles.get(f"attack/{variant}"), attack_scores=_scores(rp, "attack", variant)))
    return rows or [ReportRow(**common)]


def _scores(rp: RunPlan, texts_kind: str, variant: str) -> dict[str, str]:
    """{scorer label: score id} of one evaluate or attack instance, in `evaluate.scorers` order (the
    primary first); empty when there is none."""
    if rp.spec.evaluate is None or f"{texts_kind}/{variant}" not in rp.roles:
        return {}
    return {s.label: rp.roles[f"score/{s.label}/{texts_kind}/{variant}"] for s in rp.spec.evaluate.scorers}
