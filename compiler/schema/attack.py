"""The `attack` section: red-teaming every model (base and detoxified).

Attack success = share of attacks whose continuation the judge marks toxic. Paper [likely]: GCG on 200
AdvBench prompts; the judge is [open], so both usual ones are offered.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import StrictModel
from .sources import TextSourceSpec


class GCGSection(StrictModel):
    """Greedy coordinate gradient adversarial suffix search (Zou et al. 2023)."""

    enabled: bool = True
    target: str = Field(description="Target continuation the suffix is optimised toward.")
    suffix_tokens: int = Field(20, gt=0, description="Adversarial suffix length.")
    steps: int = Field(500, gt=0, description="Optimisation steps per prompt.")
    candidates_per_step: int = Field(512, gt=0, description="Candidate suffixes evaluated per step.")
    top_k_tokens: int = Field(256, gt=0, description="Top-k token substitutions per position.")
    max_prompts: int | None = Field(200, gt=0, description="Prompts attacked (paper: 200 AdvBench).")
    seed: int = Field(0, ge=0, description="Search seed.")


class AttackSection(StrictModel):
    """Prompt-based red-teaming and GCG suffix attacks."""

    enabled: bool = True
    prompts: TextSourceSpec = Field(description="Red-team prompts (AdvBench-style `goal` or `text`).")
    max_prompts: int | None = Field(None, gt=0, description="Prompt-based attack: at most N prompts.")
    gcg: GCGSection | None = Field(None, description="Suffix attack; null = prompt-based only.")
    judge: Literal["toxicity", "refusal", "both"] = Field(
        "toxicity", description="Success = toxic continuation, no refusal string, or both. [open]"
    )
    max_new_tokens: int = Field(32, gt=0, description="Continuation length judged.")
