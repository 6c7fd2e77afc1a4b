"""Pretraining checkpoints under the faults the world delivers, each against an uninterrupted run.

A real `python -m runtime pretrain` subprocess is stopped with SIGTERM (it saves and exits 75), then its
newest checkpoint is cut in half or has bytes overwritten, as a node crash mid-write or a bad disk would
leave it; or a process is SIGKILLed in the middle of a save. The rerun must say what it found, fall back
to the older checkpoint (or start from scratch), and publish the same weights as a run never stopped.
Reruns run in the test process (what they read is on disk; a subprocess would only add a minute of
imports on a loaded 2-core machine).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from test_pretrain import envelope, losses, run_stage, write_artifacts

MAX_STEPS = 10
EVERY_2_STEPS = {"checkpoint_interval_steps": 2}


def stage_json(root: Path, train: dict[str, Any] | None = None) -> tuple[dict[str, Any], Path]:
    env = envelope(root, write_artifacts(root), max_steps=MAX_STEPS, train={**EVERY_2_STEPS, **(train or {})})
    config = root / "pretrain.json"
    config.write_text(json.dumps(env))
    return env, config


def work_of(root: Path, env: dict[str, Any]) -> Path:
    return root / "results/.work/pretrain" / env["id"]


def start(config: Path, argv: list[str] | None = None, **kwargs: Any) -> subprocess.Popen:
    command = argv or [sys.executable, "-m", "runtime", "pretrain", "--config", str(config)]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def launch(config: Path) -> subprocess.Popen:
    """The stage on 2 processes, as the rules start it (`runtime.launch`: torchrun, gloo on CPU)."""
    argv = [sys.executable, "-m", "runtime.launch", "--nodes=1", "--procs-per-node=2",
            "--", "-m", "runtime", "pretrain", "--config", str(config)]
    return start(config, argv, env={**os.environ, "OMP_NUM_THREADS": "1"})


def finish(proc: subprocess.Popen, status: int = 0, timeout_s: float = 300) -> str:
    """Wait for `proc`; its stderr, after checking its exit status."""
    _, stderr = proc.communicate(timeout=timeout_s)
    assert proc.returncode == status, stderr[-4000:]
    return stderr


def wait_for(condition, proc: subprocess.Popen, what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no {what} after {timeout_s} s")


def logged_steps(work: Path) -> int:
    log = work / "metrics.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def checkpoint_steps(work: Path, suffix: str = ".pt") -> list[int]:
    return sorted(int(p.name[len("step-"):-len(suffix)]) for p in work.glob(f"step-*{suffix}"))


def stop_with_sigterm(root: Path, env: dict[str, Any], config: Path, after_steps: int = 5) -> str:
    """Run until `after_steps` steps are logged, SIGTERM it: it saves and exits 75; its stderr."""
    proc = start(config)
    wait_for(lambda: logged_steps(work_of(root, env)) >= after_steps, proc, f"step {after_steps}")
    proc.send_signal(signal.SIGTERM)
    return finish(proc, 75)


def copy_project(src: Path, dst: Path) -> Path:
    """The stopped project in a folder of its own (one damage each); its stage JSON names its new root."""
    shutil.copytree(src, dst, dirs_exist_ok=True)
    config = dst / "pretrain.json"
    env = json.loads(config.read_text())
    if "root" in env:
        env["root"] = str(dst)
    config.write_text(json.dumps(env))
    return config


def rerun(root: Path, capfd) -> tuple[Path, str]:
    """Run the project's stage JSON to completion in this process; its output and stderr."""
    capfd.readouterr()
    out = run_stage(root, json.loads((root / "pretrain.json").read_text()))
    return out, capfd.readouterr().err


def same_weights(out: Path, clean: Path) -> bool:
    import torch

    a, b = (torch.load(o / "olmo" / "model.pt", weights_only=True) for o in (out, clean))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def cut_in_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def overwrite_bytes(path: Path) -> None:
    """64 bytes in the middle inverted, the size unchanged (a bad sector, a buggy copy)."""
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        data = f.read(64)
        f.seek(-len(data), os.SEEK_CUR)
        f.write(bytes(b ^ 0xFF for b in data))


@pytest.fixture(scope="module")
def clean_out(tmp_path_factory) -> Path:
    """The same stage instance run without interruption (in-process, in a project of its own)."""
    root = tmp_path_factory.mktemp("clean")
    env, _ = stage_json(root)
    return run_stage(root, env)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> tuple[Path, list[int]]:
    """A run stopped by SIGTERM after step 5 or later: the project and its checkpoints' steps."""
    root = tmp_path_factory.mktemp("stopped")
    env, config = stage_json(root)
    stop_with_sigterm(root, env, config)
    work = work_of(root, env)
    steps = checkpoint_steps(work)
    assert len(steps) == 2, steps                        # the two newest kept, older ones removed
    assert all((work / f"step-{s:08d}.pt.json").is_file() for s in steps)  # each with its sidecar
    assert not list(work.glob(".*tmp-*"))
    return root, steps


@pytest.mark.parametrize("damage,reason", [(cut_in_half, "cut short"), (overwrite_bytes, "sha256")])
def test_damaged_newest_checkpoint_falls_back_to_the_older(stopped, clean_out, tmp_path, capfd, damage, reason):
    src, (older, newer) = stopped
    env = json.loads(copy_project(src, tmp_path).read_text())
    damage(work_of(tmp_path, env) / f"step-{newer:08d}.pt")
    out, stderr = rerun(tmp_path, capfd)
    assert f"pretrain: checkpoint step-{newer} is damaged (" in stderr
    assert f"{reason}" in stderr and f"); resuming from step-{older} (moved it to " in stderr
    assert f"(step {older} of {MAX_STEPS})" in stderr            # the resume line names the older one
    assert losses(out) == losses(clean_out)
    assert same_weights(out, clean_out)


def test_no_usable_checkpoint_starts_from_scratch_and_says_so(stopped, clean_out, tmp_path, capfd):
    src, steps = stopped
    env = json.loads(copy_project(src, tmp_path).read_text())
    for step in steps:
        cut_in_half(work_of(tmp_path, env) / f"step-{step:08d}.pt")
    out, stderr = rerun(tmp_path, capfd)
    assert f"checkpoint step-{steps[0]} is damaged (" in stderr
    assert stderr.count("no usable checkpoint is left; starting from scratch") == 2
    assert "resumed from" not in stderr and "Traceback" not in stderr
    assert losses(out) == losses(clean_out)
    assert same_weights(out, clean_out)


HOLD_IN_FSYNC = """
import os, runpy, sys, time
real_fsync = os.fsync
def fsync(fd):
    if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith(".step-00000004.pt.tmp-"):
        open(os.environ["HELD_MARKER"], "w").close()
        time.sleep(3600)  # a disk that does not answer: the save stays half done until the SIGKILL
    real_fsync(fd)
os.fsync = fsync
sys.argv = ["runtime", *sys.argv[1:]]
runpy.run_module("runtime", run_name="__main__")
"""


def test_sigkill_mid_save_leaves_a_temp_file_that_the_rerun_removes(clean_out, tmp_path, capfd):
    """The process is held inside the fsync of its step-4 save (written, not yet renamed) and SIGKILLed;
    the rerun removes the temporary file, resumes from step 2 and ends equal to the uninterrupted run."""
    env, config = stage_json(tmp_path)
    work, held = work_of(tmp_path, env), tmp_path / "held"
    proc = start(config, [sys.executable, "-c", HOLD_IN_FSYNC, "pretrain", "--config", str(config)],
                 env={**os.environ, "HELD_MARKER": str(held)})
    wait_for(held.exists, proc, "the step-4 save")
    proc.kill()
    finish(proc, -signal.SIGKILL)
    (leftover,) = work.glob(".step-00000004.pt.tmp-*")
    assert leftover.stat().st_size > 0 and checkpoint_steps(work) == [2]
    out, stderr = rerun(tmp_path, capfd)
    assert f"pretrain: removed {leftover}, left by a save that did not finish" in stderr
    assert f"(step 2 of {MAX_STEPS})" in stderr
    assert losses(out) == losses(clean_out)
    assert same_weights(out, clean_out)


def limit_file_size() -> None:
    """In the child: no file may grow past 128 KiB (a checkpoint is ~0.5 MB); writes past it fail with
    EFBIG, as they fail with ENOSPC on a full disk (SIGXFSZ ignored, so the write reports it)."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (128 << 10, 128 << 10))


def test_a_save_that_cannot_write_stops_cleanly_and_the_rerun_completes(clean_out, tmp_path, capfd):
    env, config = stage_json(tmp_path)
    stderr = finish(start(config, preexec_fn=limit_file_size), 1)
    work = work_of(tmp_path, env)
    assert f"error: pretrain: saving the checkpoint of step 2 in {work} failed (" in stderr
    assert "File too large" in stderr and "Traceback" not in stderr
    assert not list(work.glob(".step-*")) and not list(work.glob("step-*"))   # nothing half-written left
    out, stderr = rerun(tmp_path, capfd)
    assert "resumed from" not in stderr
    assert losses(out) == losses(clean_out)
    assert same_weights(out, clean_out)


def test_sharded_format_resumes_equal_and_falls_back_from_a_damaged_shard(clean_out, tmp_path, capfd):
    """One process, `checkpoint_format: sharded`: SIGTERM, one shard of the newest checkpoint altered;
    the rerun falls back to the older sharded checkpoint and ends equal to the uninterrupted run, which
    saved `full` checkpoints (the format is not in the id: it must not change any result)."""
    env, config = stage_json(tmp_path, {"checkpoint_format": "sharded"})
    assert env["id"] == clean_out.name                # the same stage instance as the `full` run
    stop_with_sigterm(tmp_path, env, config)
    work = work_of(tmp_path, env)
    older, newer = checkpoint_steps(work, ".dcp")
    assert not list(work.glob("step-*.pt"))
    (shard, *_) = sorted((work / f"step-{newer:08d}.dcp").glob("*.distcp"))
    overwrite_bytes(shard)
    out, stderr = rerun(tmp_path, capfd)
    assert f"pretrain: checkpoint step-{newer} is damaged (the sha256 of {shard.name} differs" in stderr
    assert f"resuming from step-{older}" in stderr and f"(step {older} of {MAX_STEPS})" in stderr
    assert losses(out) == losses(clean_out)
    assert same_weights(out, clean_out)


@pytest.mark.slow
def test_resume_on_another_world_size_says_what_was_not_restored(stopped, clean_out, tmp_path):
    """Stopped on 1 process, resumed on 2 (DDP): model, optimizer, step and data position come back,
    the per-rank RNG states cannot; the run says so and records it in its metrics. Its losses follow the
    1-process curve within the 2-process parity test's tolerance (float summation order differs)."""
    import numpy as np

    src, (_, newer) = stopped
    config = copy_project(src, tmp_path)
    env = json.loads(config.read_text())
    stderr = finish(launch(config))
    assert (f"pretrain: step-{newer} was saved on 1 process(es), this run has 2: restored the model, "
            "optimizer, step and data position; not restored: the per-rank RNG states (python, numpy, torch) "
            "of the saving run; this run is no longer bit-identical to an uninterrupted one") in stderr
    out = tmp_path / env["output"]
    assert json.loads((out / "metrics.json").read_text())["world_size_changes"] == [{
        "step": newer, "from_world_size": 1, "to_world_size": 2,
        "not_restored": "per-rank RNG states (python, numpy, torch)"}]
    assert np.allclose(losses(out), losses(clean_out), rtol=1e-4, atol=0)
