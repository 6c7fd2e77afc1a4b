"""Resources of a generated rule in the form snakemake-executor-plugin-slurm reads (the rules file calls
these; Snakemake's lint wants functions outside the rules file). Values are ints or strings, or functions of
the wildcards when instances of one stage kind differ."""
from __future__ import annotations

from typing import Any, Callable

Value = int | Callable[[Any], int]


def _at(value: Value, wildcards: Any) -> int:
    return value(wildcards) if callable(value) else value


def gpu_gres(gpus: Value) -> str | Callable[[Any], str]:
    """`gres` of a job asking `gpus` GPUs on each of its nodes: "gpu:<gpus>" (`--gres` counts per node), ""
    without GPUs. Not the plugin's `gpu` (`--gpus`, the whole job's count): SLURM may split a job's count
    unevenly over its nodes, and the jobstep plugin passes it to its `srun -n1`, a one-node step that then
    wants every GPU on one node (refused when a node has fewer). A step that names no GPUs gets all of its
    job's GPUs on its nodes."""
    def gres(count: int) -> str:
        return f"gpu:{count}" if count else ""
    return (lambda wildcards: gres(_at(gpus, wildcards))) if callable(gpus) else gres(gpus)


def own_step_mpi(nodes: Value) -> str | Callable[[Any], str]:
    """`mpi` of a rule whose command starts its own job step on every node (runtime.launch). Present at
    all, it makes the jobstep plugin run the command in the job's batch step instead of inside its own
    `srun -n1` step, whose environment names one node (a nested srun then refuses a second node) and
    whose processes die on the stop signal a launcher step should own. "srun" with several nodes; ""
    on one node, where the submit plugin would refuse `mpi` with a single task."""
    def mpi(count: int) -> str:
        return "srun" if count > 1 else ""
    return (lambda wildcards: mpi(_at(nodes, wildcards))) if callable(nodes) else mpi(nodes)


def slurm_partition(config: dict[str, Any], gpus: Value) -> str | Callable[[Any], str]:
    """The partition of a job asking `gpus` GPUs: the workflow config's `slurm_gpu_partition` or
    `slurm_cpu_partition` (profiles/slurm/partitions.yaml); "" leaves the choice to the cluster. A string
    where every instance of the kind asks the same (Snakemake evaluates a function once per job)."""
    def partition(count: int) -> str:
        return str(config.get("slurm_gpu_partition" if count else "slurm_cpu_partition", ""))
    return (lambda wildcards: partition(_at(gpus, wildcards))) if callable(gpus) else partition(gpus)
