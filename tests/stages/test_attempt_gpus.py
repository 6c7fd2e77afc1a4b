"""`runtime.attempt --gpus N` on a local machine: concurrent jobs see different GPUs (`CUDA_VISIBLE_DEVICES`),
and a job that SLURM (or the user) already pinned keeps its GPUs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHOW = "import os, time; time.sleep(1.5); print('CVD=' + str(os.environ.get('CUDA_VISIBLE_DEVICES')))"


def fake_nvidia_smi(tmp_path: Path, gpus: int) -> dict[str, str]:
    """An environment whose `nvidia-smi -L` lists `gpus` GPUs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "nvidia-smi"
    tool.write_text("#!/bin/sh\n" + "".join(f"echo 'GPU {i}: Fake (UUID: GPU-{i})'\n" for i in range(gpus)))
    tool.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return {**env, "PATH": f"{bin_dir}:{env['PATH']}", "PYTHONPATH": str(ROOT)}


def attempt(tmp_path: Path, name: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runtime.attempt", "--log", f"logs/{name}.log", "--gpus", "1",
                             "--", sys.executable, "-c", SHOW], cwd=tmp_path, env=env)


def shown(tmp_path: Path, name: str) -> str:
    return next(line for line in (tmp_path / "logs" / f"{name}.log").read_text().splitlines()
                if line.startswith("CVD="))


def test_concurrent_local_jobs_get_different_gpus(tmp_path):
    env = fake_nvidia_smi(tmp_path, 2)
    jobs = {name: attempt(tmp_path, name, env) for name in ("a", "b")}
    assert all(job.wait(timeout=60) == 0 for job in jobs.values())
    assert {shown(tmp_path, name) for name in jobs} == {"CVD=0", "CVD=1"}
    assert (tmp_path / ".cache" / "gpu-slots").is_dir()      # the slot locks live under .cache/


def test_a_pinned_job_keeps_its_gpus(tmp_path):
    job = attempt(tmp_path, "pinned", {**fake_nvidia_smi(tmp_path, 2), "CUDA_VISIBLE_DEVICES": "5"})
    assert job.wait(timeout=60) == 0 and shown(tmp_path, "pinned") == "CVD=5"
