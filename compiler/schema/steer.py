"""The `steer` section: inference-time intervention (ITI, Li et al. 2023).

Top-K heads by probe validation accuracy (the probe's `head_ranking`); per head a unit direction
(mass-mean or probe weight); the shift alpha × sigma × direction (sigma = std of the activations projected
on the direction) is added to the head's output, signed to lower toxicity.
Paper [likely]: K = 30, mass-mean, alpha 4 / 8 / 12. Original ITI code: K = 48, alpha 15, probe weights.
Positions: honest_llama's generation code shifts the last position of every forward call (the prompt's
last token, then each generated token) [sure]; its pyvene version shifts every position [sure];
which one the paper's numbers used is [open]. `last` needs a run-time hook; `all` folds into the o_proj
bias (a normal checkpoint, no run-time cost).
Controls [ours, not in the paper]: random unit directions on the same heads at the same α·σ, and random
heads with their own directions, each an evaluated model variant, to tell "ITI lowers toxicity" from
"any shift of this size damages the model".
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import StrictModel


class SteerControls(StrictModel):
    """Seeded control interventions; each draw is one more steered and evaluated model (not attacked)."""

    random_directions: int = Field(
        0, ge=0, description="Draws of the same top-K heads with random unit directions at the same α·σ.")
    random_heads: int = Field(
        0, ge=0, description="Draws of K heads picked uniformly from all probed heads, each with its own "
                             "direction and σ.")
    alphas: list[float] | None = Field(
        None, description="Draw controls only for runs whose `steer.alpha` is listed (e.g. the strongest of "
                          "an α sweep, where an effect is largest); null = at every α. [ours]")


class SteerSection(StrictModel):
    """ITI settings; sweep `steer.alpha` for weak/medium/strong steering."""

    enabled: bool = Field(True, description="Produce an ITI-steered model for each run.")
    top_k_heads: int = Field(30, gt=0, description="Heads to steer, by probe validation accuracy.")
    direction: Literal["mass_mean", "probe_weight"] = Field(
        "mass_mean", description="Steering direction per head."
    )
    alpha: float = Field(8.0, ge=0, description="Strength in units of the projected std; 0 = no-op.")
    positions: Literal["all", "last"] = Field(
        "last", description="Shift the last position of each forward call (the prompt's last token and "
                            "every generated token, as honest_llama generates; a run-time hook) or every "
                            "position (folded into the o_proj bias, free at run time). Paper: [open].")
    controls: SteerControls = Field(
        default_factory=SteerControls, description="Random-direction and random-head control draws.")
