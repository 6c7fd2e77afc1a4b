"""The SLURM plugin's resources of a generated rule (`compiler.slurm`): a value where every instance of a
kind asks the same (Snakemake calls a function once per job), a function of the wildcards where they differ,
and the same answer either way."""
from types import SimpleNamespace

from compiler.slurm import gpu_gres, own_step_mpi, slurm_partition

CONFIG = {"slurm_gpu_partition": "gpu", "slurm_cpu_partition": "cpu"}
GPUS = {"a": 0, "b": 2}


def per_instance(wildcards) -> int:
    return GPUS[wildcards.id]


def test_constant_requests_are_values_and_varying_ones_functions_that_agree():
    for sid, gpus in GPUS.items():
        wildcards = SimpleNamespace(id=sid)
        for resource, arg in ((slurm_partition, (CONFIG,)), (gpu_gres, ()), (own_step_mpi, ())):
            constant, varying = resource(*arg, gpus), resource(*arg, per_instance)
            assert isinstance(constant, str) and callable(varying)
            assert varying(wildcards) == constant
    assert slurm_partition(CONFIG, 0) == "cpu" and slurm_partition(CONFIG, 1) == "gpu"
    assert slurm_partition({}, 1) == ""  # the cluster chooses
