"""The `resources` section: what each stage kind asks of the scheduler (local or SLURM).

Never part of a stage id: resources change where and how fast, not what. `gpus × runtime_minutes` is
the cost estimate `mixsteer diff` and `plan` print for new instances.
"""
from __future__ import annotations

from pydantic import Field

from .base import StrictModel

STAGE_KINDS = (
    "tokenizer", "mix", "pretrain", "activations", "probe", "steer", "posttrain",
    "evaluate", "attack", "toy", "report",
)


class StageResources(StrictModel):
    """Scheduler request of one stage instance."""

    threads: int = Field(1, gt=0, description="CPU threads (Snakemake `threads`).")
    mem_mb: int = Field(4000, gt=0, description="Memory, MB.")
    gpus: int = Field(0, ge=0, description="GPUs per instance (pretrain runs torchrun with one process each).")
    nodes: int = Field(1, gt=0, description="Nodes (multi-node pretraining under SLURM).")
    processes_per_node: int | None = Field(
        None, gt=0, description="torchrun processes per node (pretrain); null = gpus, or 1 without GPUs."
    )
    runtime_minutes: int = Field(60, gt=0, description="Wall-clock limit and cost estimate, minutes.")

    @property
    def processes(self) -> int:
        return self.processes_per_node or max(1, self.gpus)

    @property
    def gpu_hours(self) -> float:
        return self.gpus * self.nodes * self.runtime_minutes / 60


class ResourcesSection(StrictModel):
    """Per stage kind; unnamed kinds get the defaults."""

    default: StageResources = Field(default_factory=StageResources)
    tokenizer: StageResources | None = None
    mix: StageResources | None = None
    pretrain: StageResources | None = None
    activations: StageResources | None = None
    probe: StageResources | None = None
    steer: StageResources | None = None
    posttrain: StageResources | None = None
    evaluate: StageResources | None = None
    attack: StageResources | None = None
    toy: StageResources | None = None
    report: StageResources | None = None

    def of(self, kind: str) -> StageResources:
        return getattr(self, kind) or self.default
