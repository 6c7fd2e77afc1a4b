"""`activations` stage: per-head attention outputs and residual streams on labelled texts.

Reads: a model folder, labelled probe data. Writes: `activations.safetensors`, `examples.jsonl`.
Cached per (model, data, position) so several probe configs reuse it.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from compiler.schema.base import NOT_IN_ID
from compiler.schema.probe import LabelledData

from compiler.schema.base import StrictModel
from runtime.stage import NotImplementedStage, StageContext

VERSION = 1
"""Bump by hand whenever a change of this module changes results (it changes every id)."""


class Config(StrictModel):
    data: LabelledData
    token_position: Literal["last", "mean"]
    max_length_tokens: int
    layers: list[int]
    batch_size: int = Field(32, json_schema_extra=NOT_IN_ID)


def run(cfg: Config, ctx: StageContext) -> dict:
    raise NotImplementedStage(
        "the activations stage is not implemented yet (issue 4); it writes no output"
    )
