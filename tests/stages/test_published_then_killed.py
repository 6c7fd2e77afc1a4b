"""Snakemake SIGKILLed around a stage's publish, as a lost login shell or an OOM killer delivers it: to
Snakemake's whole process group, with no warning. The stage is held at a named point
(`MIXSTEER_TEST_PAUSE_AT`: it only waits there; the kill is real), then what the README says to do next:
`snakemake --unlock` and the same plain `snakemake` command.

- Killed after the rename into place, before Snakemake saw the job end (`published`): Snakemake's own record
  still says incomplete, yet the finished folder is kept, not deleted and run again.
- Killed just before the rename (`publish`): nothing was published, and the rerun runs the stage.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.preempt import PAUSE_ENV
from tests.stages.test_stop_stages import SPEC, write_project

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 180


def project(root: Path) -> str:
    """The stop tests' small spec with the repository's Snakefile and profiles; the tokenizer stage's id."""
    from compiler.workflow import compile_spec

    write_project(root)
    shutil.copy(ROOT / "Snakefile", root)
    shutil.copytree(ROOT / "profiles", root / "profiles")
    plan = compile_spec(Path(SPEC), root)
    return next(i.id for i in plan.instances.values() if i.kind == "tokenizer")


def snakemake(root: Path, target: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Snakemake as a terminal starts it: a session of its own, the jobs in its process group."""
    return subprocess.Popen([sys.executable, "-m", "snakemake", target, "--cores", "1", "--config", f"spec={SPEC}"],
                            cwd=root, start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_pause(root: Path, sid: str, point: str, run: subprocess.Popen) -> None:
    log = root / "logs" / "tokenizer" / f"{sid}.log"
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if log.exists() and f"paused at {point} (" in log.read_text(errors="replace"):
            return
        if run.poll() is not None:
            pytest.fail(f"snakemake ended before the stage paused at {point}:\n{run.stdout.read()[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"the stage did not pause at {point} within {WAIT_S} s")


def survivors(root: Path) -> list[int]:
    """Processes still running in the project folder (the killed Snakemake's jobs must not outlive it)."""
    alive = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "cwd") == str(root):
                alive.append(int(proc.name))
        except OSError:
            continue
    return alive


@pytest.mark.parametrize("point, reruns", [("published", False), ("publish", True)])
def test_snakemake_killed_around_a_publish_keeps_a_finished_folder_and_reruns_an_unfinished_one(
        tmp_path, point, reruns):
    root = tmp_path / "project"
    sid = project(root)
    target = f"results/tokenizer/{sid}/stage.json"
    run = snakemake(root, target, {PAUSE_ENV: f"tokenizer:{point}"})
    try:
        wait_for_pause(root, sid, point, run)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        try:
            os.killpg(run.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while survivors(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not survivors(root), "a process of the killed run outlived it"
    assert any((root / ".snakemake" / "incomplete").rglob("*")), "Snakemake had not recorded the job as ended"
    published = root / target
    assert published.exists() is not reruns
    before = published.stat() if published.exists() else None

    unlock = subprocess.run([sys.executable, "-m", "snakemake", "--unlock", "--config", f"spec={SPEC}"], cwd=root,
                            capture_output=True, text=True)   # the README's step after a SIGKILLed Snakemake
    assert unlock.returncode == 0, unlock.stdout[-2000:] + unlock.stderr[-2000:]
    rerun = snakemake(root, target)
    out, _ = rerun.communicate(timeout=WAIT_S)
    assert rerun.returncode == 0, out[-4000:]
    after = published.stat()
    if reruns:
        assert "rule tokenizer:" in out, out[-2000:]
    else:
        assert "Nothing to be done" in out, out[-2000:]
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
