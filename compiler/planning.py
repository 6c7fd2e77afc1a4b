"""The planner's vocabulary: a stage instance, what one run's planning produced (`RunPlan`), and what a
stage kind's `plan(run)` (`compiler.stages.<kind>`) sees of one run while the planner
(`compiler.plan`) walks the kinds in table order: the run's spec, the roles planned so far, the model
variants earlier kinds made, and `add`, which creates a stage instance (or finds it by content id)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .schema import Spec
from .schema.base import StrictModel
from .schema.data import DataSection, TokenizerInfo
from .schema.report import VARIANT_ORDER
from .schema.resources import StageResources


@dataclass(frozen=True)
class StageInstance:
    """One node of the plan: a stage kind with a concrete config and upstream ids."""

    kind: str
    id: str
    version: int
    config: StrictModel
    inputs: dict[str, str]
    resources: StageResources
    files: dict[str, str]  # local file read (relative to the root) → content fingerprint; in the id

    @property
    def output(self) -> str:
        return f"results/{self.kind}/{self.id}"


@dataclass
class RunPlan:
    """The instances one run uses, by role (`pretrain`, `evaluate/iti`, …)."""

    name: str
    axes: dict[str, Any]
    spec: Spec
    roles: dict[str, str] = field(default_factory=dict)


class InstanceBuilder(Protocol):
    instances: dict[str, StageInstance]

    def add(self, kind: str, config_fields: dict[str, Any], inputs: dict[str, str], spec: Spec) -> str: ...

    def tokenizer_info(self, tokenizer: Any) -> TokenizerInfo: ...


FillsKey = tuple[str, str, int, int | None]
"""A source as one `tokenize` instance reads it: (role, source JSON, shard size, held-out budget for clean)."""


def fills_key(data: DataSection, role: str) -> FillsKey:
    name = data.clean_source if role == "clean" else data.toxic_source
    return (role, data.sources[name].id_json(), data.tokens_per_file,
            data.heldout_clean_tokens if role == "clean" else None)


@dataclass(frozen=True)
class Variant:
    """A model variant the evaluation measures: the instance whose `model/` it loads, and for the prompting
    baseline (no model of its own) the text prepended to every prompt."""

    model: str
    prefix: str | None = None


@dataclass
class RunPlanning:
    builder: InstanceBuilder
    spec: Spec
    fills: dict[FillsKey, list[int] | None]
    """How far each source is tokenized for the whole plan (`compiler.stages.tokenize.fills`)."""
    roles: dict[str, str] = field(default_factory=dict)
    """Role (`pretrain`, `evaluate/iti`, `score/<label>/attack/base`, …) → instance id."""
    variants: dict[str, Variant] = field(default_factory=dict)
    """Model variants so far (`base`, `iti`, `iti_random_heads/3`, `sft`, `prompting`, …)."""

    def add(self, kind: str, config_fields: dict[str, Any], inputs: dict[str, str]) -> str:
        return self.builder.add(kind, config_fields, inputs, self.spec)

    def tokenizer_info(self) -> TokenizerInfo:
        return self.builder.tokenizer_info(self.spec.tokenizer)

    def variants_in_order(self) -> list[tuple[str, Variant]]:
        """The variants in report order (`iti_random_heads/3` after every random-direction draw, by draw)."""
        def rank(item: tuple[str, Variant]) -> tuple[int, int]:
            kind, _, draw = item[0].partition("/")
            return VARIANT_ORDER.index(kind), int(draw or 0)
        return sorted(self.variants.items(), key=rank)
