"""The `resources` section: what each stage kind asks of the scheduler (local or SLURM).

Never part of a stage id: resources change where and how fast, not what. `gpus × runtime_minutes` is
the cost estimate `mixsteer diff` and `plan` print for new instances.
"""
from __future__ import annotations

from pydantic import Field

from ..kinds import KIND_ORDER, NO_GPU_KINDS
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


class ResourcesSection(StrictModel):
    """Per stage kind; unnamed kinds get the defaults."""

    default: StageResources = Field(default_factory=StageResources)
    tokenizer: StageResources | None = None
    tokenize: StageResources | None = Field(
        None, description="Tokenizing one source into shared shards (`data.tokenize_workers` processes); unset = "
        "`mix`'s, which did this work before, else `default` with `gpus: 0`.")
    mix: StageResources | None = None
    pretrain: StageResources | None = None
    activations: StageResources | None = None
    probe: StageResources | None = Field(
        None, description="Probe fitting; unset = `default` with `gpus: 0` (only `implementation: batched` "
        "uses a GPU, and only when this asks for one).")
    steer: StageResources | None = None
    posttrain: StageResources | None = None
    evaluate: StageResources | None = None
    attack: StageResources | None = None
    score: StageResources | None = Field(
        None, description="Scoring jobs; unset = `default` with `gpus: 0` (never a GPU unless asked for).")
    toy: StageResources | None = None
    scorer_check: StageResources | None = Field(
        None, description="The scorer check; unset = `default` with `gpus: 0`.")
    report: StageResources | None = None

    def of(self, kind: str) -> StageResources:
        own = getattr(self, kind, None)  # a kind without its own field (yet) gets the default
        if own is None and kind == "tokenize":
            own = self.mix
        if own is not None:
            return own
        if kind in NO_GPU_KINDS:
            return self.derived("no_gpu_default", lambda: StageResources(**{**self.default.model_dump(), "gpus": 0}))
        return self.default
