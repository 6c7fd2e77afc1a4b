"""The SLURM path on a real SLURM (slow; skipped unless `sinfo` answers, e.g. after
`sudo tests/slurm/start_slurm.sh`): `snakemake --profile profiles/slurm` submits every stage as a SLURM
job that ends COMPLETED, CPU-only stages to the `cpu` partition, and GPU stages to `gpu` with a GPU
request the executor plugin accepts (no `--gres` in `slurm_extra`)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _slurm_answers() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [pytest.mark.slow, pytest.mark.skipif(not _slurm_answers(), reason="no SLURM (sinfo does not answer)")]


def _run(root: Path, *args: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "--slurm-status-command", "squeue", *args],
        cwd=root, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-4000:]
    return run.stdout + run.stderr


def _jobs(log: str) -> dict[str, dict[str, str]]:
    """SLURM job id → `scontrol show job` fields, for every job the run submitted (finished jobs stay
    visible for the cluster's MinJobAge)."""
    ids = re.findall(r"submitted with SLURM jobid (\d+)", log)
    assert ids, log[-2000:]
    jobs = {}
    for i in ids:
        shown = subprocess.run(["scontrol", "-o", "show", "job", i], capture_output=True, text=True, check=True).stdout
        jobs[i] = dict(f.split("=", 1) for f in shown.split() if "=" in f)
    return jobs


@pytest.fixture
def workdir(tmp_path):
    for item in ("Snakefile", "specs", "data", "profiles"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, tmp_path / item)
    return tmp_path


def test_toy_spec_runs_as_slurm_jobs_on_the_cpu_partition(workdir):
    jobs = _jobs(_run(workdir, "--config", "spec=specs/toy.yaml"))
    assert {j["JobState"] for j in jobs.values()} == {"COMPLETED"}
    assert {j["Partition"] for j in jobs.values()} == {"cpu"}


def test_demo_pretraining_asks_for_its_gpus_on_the_gpu_partition(workdir):
    """The demo's pretraining given one (fake) GPU per run; resources never change stage ids or results."""
    spec = yaml.safe_load((workdir / "specs/demo.yaml").read_text())
    spec["resources"]["pretrain"].update(gpus=1, processes_per_node=1)
    (workdir / "specs/demo_gpu.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    jobs = _jobs(_run(workdir, "--config", "spec=specs/demo_gpu.yaml", "--until", "pretrain"))
    assert {j["JobState"] for j in jobs.values()} == {"COMPLETED"}
    gpu_jobs = [j for j in jobs.values() if re.search(r"gres[:/]gpu", j.get("TresPerJob", "") + j.get("TresPerNode", ""))]
    assert gpu_jobs and {j["Partition"] for j in gpu_jobs} == {"gpu"}
    assert {j["Partition"] for j in jobs.values() if j not in gpu_jobs} == {"cpu"}
