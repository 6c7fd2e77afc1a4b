"""Resources of a generated rule in the form snakemake-executor-plugin-slurm reads (the rules file calls
these; Snakemake's lint wants functions outside the rules file). Values are ints, or functions of the
wildcards when instances of one stage kind differ."""
from __future__ import annotations

from typing import Any, Callable

Value = int | Callable[[Any], int]


def _at(value: Value, wildcards: Any) -> int:
    return value(wildcards) if callable(value) else value


def job_gpus(gpus: Value, nodes: Value) -> Value:
    """GPUs of the whole job (`--gpus` counts every node): the spec's per-node `gpus` times `nodes`."""
    if callable(gpus) or callable(nodes):
        return lambda wildcards: _at(gpus, wildcards) * _at(nodes, wildcards)
    return gpus * nodes


def slurm_partition(config: dict[str, Any], gpus: Value) -> Callable[[Any], str]:
    """The partition of a job asking `gpus` GPUs: the workflow config's `slurm_gpu_partition` or
    `slurm_cpu_partition` (profiles/slurm/partitions.yaml); "" leaves the choice to the cluster."""
    def partition(wildcards: Any) -> str:
        return str(config.get("slurm_gpu_partition" if _at(gpus, wildcards) else "slurm_cpu_partition", ""))
    return partition
