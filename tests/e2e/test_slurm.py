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
        cwd=root, capture_output=True, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "MIXSTEER_ALLOW_CPU": "1"})  # placeholder GPUs: run on CPU
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


GPU_KINDS = ("pretrain", "activations", "steer", "posttrain", "evaluate", "attack")
"""The demo's stages that would want a GPU on a cluster (the demo itself asks for none)."""


def test_demo_runs_to_the_end_as_slurm_jobs_gpu_stages_asking_for_gpus(workdir):
    """The whole demo through `profiles/slurm`, its model stages given one (fake) GPU each: every job a
    SLURM job that ends COMPLETED, GPU stages on the `gpu` partition asking for their GPU as gres, the
    rest on `cpu`; resources never enter a stage id, so the report is the demo's own."""
    spec = yaml.safe_load((workdir / "specs/demo.yaml").read_text())
    for kind in GPU_KINDS:
        spec["resources"][kind] = {**spec["resources"]["default"], **spec["resources"].get(kind, {}), "gpus": 1}
    (workdir / "specs/demo_gpu.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    log = _run(workdir, "--config", "spec=specs/demo_gpu.yaml")
    jobs = _jobs(log)
    assert {j["JobState"] for j in jobs.values()} == {"COMPLETED"}, {i: j["JobState"] for i, j in jobs.items()}
    by_rule = {i: re.match(r"rule_(.+?)(?:_wildcards_|$)", j.get("Comment", "")) for i, j in jobs.items()}
    assert all(by_rule.values()), {i: j.get("Comment") for i, j in jobs.items()}
    for i, job in jobs.items():
        asks_gpu = bool(re.search(r"gres[:/]gpu", job.get("TresPerJob", "") + job.get("TresPerNode", "")))
        assert asks_gpu == (by_rule[i].group(1) in GPU_KINDS), (by_rule[i].group(1), job.get("TresPerJob"))
        assert job["Partition"] == ("gpu" if asks_gpu else "cpu")
    submitted = {m.group(1) for m in by_rule.values()}
    assert set(GPU_KINDS) <= submitted and "report" in submitted
    assert list((workdir / "results" / "report").glob("*/stage.json"))
