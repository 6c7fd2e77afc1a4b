"""The `resources` section: what each stage kind asks of the scheduler (local or SLURM).

Never part of a stage id: resources change where and how fast, not what. `gpus × runtime_minutes` is
the cost estimate `mixsteer diff` and `plan` print for new instances.
"""
from __future__ import annotations

from pydantic import Field, create_model

from ..kinds import KINDS, kind_named
from .base import StrictModel

class StageResources(StrictModel):
    """Scheduler request of one stage instance."""

    threads: int = Field(1, gt=0, description="CPU threads (Snakemake `threads`).")
    mem_mb: int = Field(4000, gt=0, description="Memory, MB.")
    gpus: int = Field(0, ge=0, description="GPUs per instance (pretrain runs torchrun with one process each). "
                      "A stage asking for GPUs fails where CUDA is missing (`MIXSTEER_ALLOW_CPU=1`: runs on CPU); "
                      "a model stage's `compute` (in its id) is CUDA with `precision.cuda` when > 0, else CPU fp32.")
    nodes: int = Field(1, gt=0, description="Nodes (multi-node pretraining under SLURM).")
    processes_per_node: int | None = Field(
        None, gt=0, description="torchrun processes per node (pretrain); null = gpus, or 1 without GPUs."
    )
    runtime_minutes: int = Field(60, gt=0, description="Wall-clock limit and cost estimate, minutes.")
    stop_grace_s: int = Field(
        120, gt=0, description="Seconds a stopped stage (SIGTERM/SIGUSR1) gets to save and exit before its launcher "
        "kills it; size it for one checkpoint save (SLURM's KillWait, or `--signal=USR1@<s>`, should leave as much).")

    @property
    def processes(self) -> int:
        return self.processes_per_node or max(1, self.gpus)

    @property
    def gpu_hours(self) -> float:
        return self.gpus * self.nodes * self.runtime_minutes / 60


class _Resources(StrictModel):
    """Per stage kind; unnamed kinds get the defaults."""

    default: StageResources = Field(default_factory=StageResources)

    def of(self, kind: str) -> StageResources:
        row = kind_named(kind)
        own = getattr(self, kind)
        if own is None and row.resources_from is not None:
            own = getattr(self, row.resources_from)
        if own is not None:
            return own
        if not row.gpu_by_default:
            return self.derived("no_gpu_default", lambda: StageResources(**{**self.default.model_dump(), "gpus": 0}))
        return self.default


ResourcesSection = create_model(
    "ResourcesSection", __base__=_Resources, __module__=__name__, __doc__=_Resources.__doc__,
    **{k.name: (StageResources | None, Field(None, description=k.resources_note)) for k in KINDS})
"""One optional field per kind of `compiler.kinds.KINDS`, in its order, after `default`."""
