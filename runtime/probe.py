"""`probe` stage: logistic probes per head and per layer; accuracies, directions, entanglement.

Reads: an activations artifact. Writes: `accuracy.json`, `directions.safetensors`, `heatmap.png`.
"""
from __future__ import annotations

from typing import Literal

from compiler.schema.base import StrictModel
from runtime.stage import NotImplementedStage, StageContext

VERSION = 1
"""Bump by hand whenever a change of this module changes results (it changes every id)."""


class Config(StrictModel):
    validation_fraction: float
    split_seed: int
    implementation: Literal["batched", "sklearn"]
    l2_penalty: float
    max_iterations: int
    accuracy_threshold: float


def run(cfg: Config, ctx: StageContext) -> dict:
    raise NotImplementedStage(
        "the probe stage is not implemented yet (issue 4); it writes no output"
    )
