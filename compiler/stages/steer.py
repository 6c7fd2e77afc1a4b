"""`steer`: ITI on the probe's top-K heads (or a seeded control draw), plus a mechanistic check.
Its config, VERSION and plan; `runtime.steer` runs it."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from compiler.planning import RunPlanning, Variant
from compiler.schema.base import NOT_IN_ID, StrictModel, same_as
from compiler.schema.precision import Compute, compute_field
from compiler.schema.spec import Spec
from compiler.schema.steer import SteerSection


VERSION = 3


class Config(StrictModel):
    top_k_heads: int = same_as(SteerSection, "top_k_heads")
    direction: Literal["mass_mean", "probe_weight"] = same_as(SteerSection, "direction")
    alpha: float = same_as(SteerSection, "alpha")
    positions: Literal["all", "last"] = same_as(SteerSection, "positions")
    control: Literal["random_direction", "random_heads"] | None = None
    control_seed: int | None = Field(None, ge=0, description="Draw number of a control (0, 1, …).")
    seed: int | None = same_as(Spec, "seed", default=None, description="Run seed; only a control draws from it.")
    batch_size: int = Field(16, gt=0, json_schema_extra=NOT_IN_ID)
    compute: Compute = compute_field()

    @model_validator(mode="after")
    def _control_is_seeded(self) -> "Config":
        if (self.control is None) != (self.control_seed is None) or (self.control is None) != (self.seed is None):
            raise ValueError("control, control_seed and seed go together (all set for a control, none otherwise)")
        return self


def plan(run: RunPlanning) -> None:
    """The ITI model and its control draws: roles `steer` and `steer/<control>/<n>`, model variants `iti`
    and `iti_<control>/<n>`. Controls are drawn only at the alphas `steer.controls.alphas` names (all if
    unset)."""
    s = run.spec.steer
    if "probe" not in run.roles or not s.enabled:
        return
    inputs = {"model": run.roles["pretrain"], "probe": run.roles["probe"], "activations": run.roles["activations"]}
    common = dict(top_k_heads=s.top_k_heads, direction=s.direction, alpha=s.alpha, positions=s.positions)
    run.roles["steer"] = run.add("steer", common, inputs)
    run.variants["iti"] = Variant(run.roles["steer"])
    if s.controls.alphas is not None and s.alpha not in s.controls.alphas:
        return
    for control, draws in (("random_direction", s.controls.random_directions),
                           ("random_heads", s.controls.random_heads)):
        for n in range(draws):
            sid = run.roles[f"steer/{control}/{n}"] = run.add(
                "steer", dict(common, control=control, control_seed=n, seed=run.spec.seed), inputs)
            run.variants[f"iti_{control}/{n}"] = Variant(sid)
