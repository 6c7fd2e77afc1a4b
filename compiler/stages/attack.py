"""`attack`: Red-teaming one model with plain red-team prompts and GCG adversarial suffixes.
Its config, VERSION and plan; `runtime.attack` runs it."""
from __future__ import annotations

from compiler.planning import RunPlanning
from compiler.schema.attack import AttackSection
from compiler.schema.base import StrictModel, same_as
from compiler.schema.precision import Compute, compute_field
from compiler.schema.spec import Spec


VERSION = 5


class Config(StrictModel):
    attack: AttackSection
    seed: int = same_as(Spec, "seed")
    compute: Compute = compute_field()


def plan(run: RunPlanning) -> None:
    """Red-teaming of each evaluated variant `attack.variants` names (never a control): roles
    `attack/<variant>`."""
    a = run.spec.attack
    if a is None or not a.enabled:
        return
    for variant, v in run.variants_in_order():
        if variant in a.variants and f"evaluate/{variant}" in run.roles:
            run.roles[f"attack/{variant}"] = run.add("attack", dict(attack=a, seed=run.spec.seed), {"model": v.model})
