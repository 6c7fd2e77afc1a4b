"""Preemption is not failure (runtime/attempt.py): a stage that stops with exit 75 is resumed (locally) or
requeued (SLURM) without using a Snakemake retry, real failures fail at once, and every attempt's log stays.

Real processes throughout: Snakemake on the rules the real template renders, a stand-in stage that exits
75 once (as a preempted stage does), real signals to a real process group, and a stand-in `scontrol` on
PATH for the SLURM branch (no SLURM here; tests/slurm runs the real one).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from compiler.render import render_rules
from runtime.attempt import HEADER

ROOT = Path(__file__).resolve().parents[2]
SID = "toy-0123456789ab"
STAND_IN = """\
import os, pathlib, signal, sys, time
mode, marker = sys.argv[1], pathlib.Path(sys.argv[2])
print("stand-in stage, mode", mode, flush=True)
if mode == "fail":
    print("a real bug", flush=True); sys.exit(1)
if mode == "wait":                                   # stops on SIGTERM like a stage: save, exit 75
    got = []
    signal.signal(signal.SIGTERM, lambda *a: (got.append(1), print("stop signal received", flush=True)))
    marker.touch()
    for _ in range(600):
        time.sleep(0.1)
        if got:
            time.sleep(1.0); print("stopped, state saved", flush=True); sys.exit(75)
    sys.exit(3)
if not marker.exists():                              # first attempt: preempted
    marker.touch(); print("preempted at step 3", flush=True); sys.exit(75)
out = pathlib.Path("results/toy/{sid}"); out.mkdir(parents=True, exist_ok=True)
(out / "stage.json").write_text("{{}}"); print("resumed from step 3, published", flush=True)
""".format(sid=SID)


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def attempt(tmp_path: Path, mode: str, **extra: str) -> subprocess.Popen:
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    return subprocess.Popen([sys.executable, "-m", "runtime.attempt", "--log", str(tmp_path / "job.log"), "--",
                             sys.executable, str(tmp_path / "stand_in.py"), mode, str(tmp_path / "marker")],
                            cwd=tmp_path, env=env(**extra), start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def attempts(log: Path) -> list[str]:
    """Each attempt's own log, in order; the rule's log must link to the newest."""
    stem = log.name.removesuffix(".log")
    files = sorted(log.parent.glob(f"{stem}.attempt-*.log"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    assert log.is_symlink() and log.resolve() == files[-1].resolve()
    texts = [p.read_text() for p in files]
    assert all(t.startswith(f"{HEADER} {n}:") for n, t in enumerate(texts, 1))
    return texts


def snakemake_project(tmp_path: Path, mode: str) -> Path:
    """A project whose one rule is the real template's `toy` rule; the stand-in plays the stage."""
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    stand_in = f"{sys.executable} {tmp_path / 'stand_in.py'} {mode} {tmp_path / 'marker'}"
    rules = tmp_path / "rules.smk"
    rules.write_text(render_rules(["toy"], ["t"], rules))
    (tmp_path / "Snakefile").write_text(textwrap.dedent(f"""\
        class Plan:                        # what the generated rules look up in MIXSTEER
            def inputs_of(self, wildcards): return []
            def kind_launcher(self, kind): return {stand_in!r} + " #"
            def launcher(self, sid): return {stand_in!r} + " #"
            def resource(self, sid, name): return 1
        MIXSTEER = Plan()
        include: "rules.smk"
        rule all:
            default_target: True
            input: "results/toy/{SID}/stage.json"
        """))
    return tmp_path


def snakemake(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--retries", "0", "--nolock"],
                          cwd=project, env=env(), capture_output=True, text=True, timeout=300)


def test_a_preempted_stage_resumes_in_the_same_job_without_a_retry(tmp_path):
    """Through Snakemake and the real template, with `--retries 0`: exit 75 once, then 0: the job succeeds,
    and the log holds both attempts, the preempted one first."""
    r = snakemake(snakemake_project(tmp_path, "preempt"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "results/toy" / SID / "stage.json").is_file()
    first, second = attempts(tmp_path / "logs/toy" / f"{SID}.log")
    assert "preempted at step 3" in first and "ended with exit 75 (stopped, state saved)" in first
    assert "resumed from step 3, published" in second and "ended with exit 0" in second


def test_a_real_failure_fails_at_once_and_its_log_is_kept(tmp_path):
    """A job that was preempted before (its attempt log beside the rule's log, which Snakemake removes when
    the job starts again) then fails for real: one attempt, not rerun, and the earlier attempt's log kept."""
    project = snakemake_project(tmp_path, "fail")
    (project / "logs/toy").mkdir(parents=True)
    (project / "logs/toy" / f"{SID}.attempt-1.log").write_text(f"{HEADER} 1: earlier ===\npreempted at step 9\n")
    (project / "logs/toy" / f"{SID}.log").symlink_to(f"{SID}.attempt-1.log")
    r = snakemake(project)
    assert r.returncode != 0
    earlier, failed = attempts(project / "logs/toy" / f"{SID}.log")
    assert "preempted at step 9" in earlier
    assert "a real bug" in failed and "ended with exit 1" in failed


def test_a_stop_aimed_at_the_job_ends_it_with_75_and_no_rerun(tmp_path):
    """SIGTERM to the job's process group (Ctrl-C, `kill`, Snakemake stopping): the stage saves, the job ends."""
    proc = attempt(tmp_path, "wait")
    deadline = time.monotonic() + 60
    while not (tmp_path / "marker").exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else "slow"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 75
    (only,) = attempts(tmp_path / "job.log")
    assert "stopped, state saved" in only and "ended with exit 75" in only


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP])
def test_a_terminal_signal_to_the_group_stops_the_job_once(tmp_path, sig):
    """Ctrl-C or a hangup reaches the whole group: the wrapper waits for the stage's save and does not pass
    a second one on (runtime.launch takes a second SIGINT as "kill now")."""
    (tmp_path / "stand_in.py").write_text(STAND_IN.replace("signal.SIGTERM, lambda", f"signal.{sig.name}, lambda"))
    proc = subprocess.Popen([sys.executable, "-m", "runtime.attempt", "--log", str(tmp_path / "job.log"), "--",
                             sys.executable, str(tmp_path / "stand_in.py"), "wait", str(tmp_path / "marker")],
                            cwd=tmp_path, env=env(), start_new_session=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "marker").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    assert proc.wait(timeout=60) == 75
    (only,) = attempts(tmp_path / "job.log")
    assert only.count("stop signal received") == 1 and "stopped, state saved" in only


def test_a_signal_to_the_wrapper_alone_reaches_the_stage(tmp_path):
    proc = attempt(tmp_path, "wait")
    deadline = time.monotonic() + 60
    while not (tmp_path / "marker").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)                        # the wrapper's pid only: it forwards
    assert proc.wait(timeout=60) == 75
    assert "stopped, state saved" in (tmp_path / "job.log").read_text()


@pytest.mark.parametrize("state, requeued", [("RUNNING", True), ("PREEMPTED", True), ("CANCELLED", False),
                                             ("TIMEOUT", False)])
def test_under_slurm_exit_75_requeues_the_same_job(tmp_path, state, requeued):
    """Exit 75 in a SLURM job: `scontrol requeue <job>` (the job keeps its id; the plugin waits on), not a
    rerun here and not a failure Snakemake retries; a cancelled job stays down, a timed-out one is the plugin's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n"
                                      f"[ \"$1\" = show ] && echo 'JobId=4242 JobName=x JobState={state} Reason=None'\n"
                                      "exit 0\n")
    (bin_dir / "scontrol").chmod(0o755)
    proc = attempt(tmp_path, "preempt", SLURM_JOB_ID="4242", PATH=f"{bin_dir}:{os.environ['PATH']}")
    assert proc.wait(timeout=60) == 75
    lines = calls.read_text().splitlines()
    assert lines[0] == "show job -o 4242"
    assert (lines[1:] == ["requeue 4242"]) is requeued
    (only,) = attempts(tmp_path / "job.log")                # not rerun in place: SLURM runs it again
    assert ("4242 requeued: it resumes" in only) is requeued and (f"is {state}: not requeued" in only) is not requeued
