"""The report's rows: one per run and evaluated model variant, what the report tabulates and plots and what
`mixsteer results` reads (`runtime.results`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .plan import RunPlan, StageInstance


def report_rows(rp: RunPlan, instances: dict[str, StageInstance]) -> list[dict[str, Any]]:
    """One row per evaluated model variant of a run: what the report tabulates and plots.

    `variant` is one of `VARIANT_ORDER`; a control row also names `control` and `control_seed`; ITI rows
    (real and controls) carry their `steer` id, `alpha`, `positions` and `top_k_heads`, other rows None."""
    spec = rp.spec
    common = {
        "run": rp.name, "axes": rp.axes, "seed": spec.seed,
        "toxic_share": spec.data.toxic_share if spec.data else None,
        "pretrain": rp.roles.get("pretrain"), "mix": rp.roles.get("mix"), "probe": rp.roles.get("probe"),
        "toy": rp.roles.get("toy"),
    }
    no_steer = {"steer": None, "alpha": None, "positions": None, "top_k_heads": None,
                "control": None, "control_seed": None}
    rows = []
    for role, sid in rp.roles.items():
        if not role.startswith("evaluate/"):
            continue
        variant = role.split("/", 1)[1]
        kind, _, draw = variant.partition("/")
        steer = dict(no_steer)
        if kind.startswith("iti"):
            control = kind[len("iti_"):] if kind.startswith("iti_") else None
            steer_id = rp.roles["steer" if control is None else f"steer/{control}/{draw}"]
            s = instances[steer_id].config
            steer = {"steer": steer_id, "alpha": s.alpha, "positions": s.positions, "top_k_heads": s.top_k_heads,
                     "control": s.control, "control_seed": s.control_seed}
        rows.append({**common, **steer, "variant": kind, "evaluate": sid, "scores": _scores(rp, "evaluate", variant),
                     "attack": rp.roles.get(f"attack/{variant}"), "attack_scores": _scores(rp, "attack", variant)})
    if not rows:
        rows.append({**common, **no_steer, "variant": None, "evaluate": None, "scores": {}, "attack": None,
                     "attack_scores": {}})
    return rows


def _scores(rp: RunPlan, texts_kind: str, variant: str) -> dict[str, str]:
    """{scorer label: score id} of one evaluate or attack instance, in `evaluate.scorers` order (the
    primary first); empty when there is none."""
    if rp.spec.evaluate is None or f"{texts_kind}/{variant}" not in rp.roles:
        return {}
    return {s.label: rp.roles[f"score/{s.label}/{texts_kind}/{variant}"] for s in rp.spec.evaluate.scorers}
