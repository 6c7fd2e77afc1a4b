"""The `steer` section: inference-time intervention (ITI, Li et al. 2023).

Top-K heads by probe validation accuracy; per head a unit direction (mass-mean or probe weight); the
shift alpha × sigma × direction (sigma = std of activations projected on the direction) is added to the
head's output, signed to lower toxicity, folded into the o_proj bias of a normal HF checkpoint.
Paper [likely]: K = 30, mass-mean, alpha 4 / 8 / 12. Original ITI code: K = 48, alpha 15, probe weights.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import StrictModel


class SteerSection(StrictModel):
    """ITI settings; sweep `steer.alpha` for weak/medium/strong steering."""

    enabled: bool = Field(True, description="Produce an ITI-steered model for each run.")
    top_k_heads: int = Field(30, gt=0, description="Heads to steer, by probe validation accuracy.")
    direction: Literal["mass_mean", "probe_weight"] = Field(
        "mass_mean", description="Steering direction per head."
    )
    alpha: float = Field(8.0, ge=0, description="Strength in units of the projected std; 0 = no-op.")
