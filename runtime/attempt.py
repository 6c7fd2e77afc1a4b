"""`python -m runtime.attempt --log <file> -- <command…>`: one Snakemake job, where a preemption is not a failure.

A stage stopped by a signal saves its state and exits 75 (`runtime.preempt`). Snakemake cannot tell that
from a bug: its `retries` count both, and it has no per-exit-code retry. So every rule runs its stage
through this wrapper, which decides what an exit 75 means:
- under SLURM (`SLURM_JOB_ID`), it asks SLURM to requeue this very job (`scontrol requeue <id>`): the job
  goes back to the queue under the same id, the executor plugin keeps waiting on it (REQUEUED/PENDING is
  "still running" to it), no Snakemake retry is used, and the next run resumes from the checkpoint. Only
  a RUNNING (early `--signal`, `scancel --signal`) or PREEMPTED job: a cancelled one (`scancel`, Snakemake's
  own cancel on Ctrl-C) stays down, and a TIMEOUT one is resubmitted by Snakemake's retry.
  Needs a requeueable job (`--slurm-requeue`, see profiles/slurm); if the requeue is refused the exit 75
  stands and Snakemake's one retry (profiles/slurm) resubmits it.
- elsewhere, if the stop was aimed at this job (this wrapper got the signal too: Ctrl-C, `kill` of the
  job's process group, Snakemake shutting down), the job ends with 75 and a rerun resumes; if only the
  stage's own process was signalled (something preempted the stage, not the run), the stage is run again
  here at once, at most `LOCAL_RESUMES` times in a row.
Every attempt writes a log of its own beside the rule's, `logs/<kind>/<id>.attempt-<n>.log` (a header, the
stage's output, how it ended), and the rule's `log:` file becomes a link to the newest one. Snakemake removes
the rule's log when a job starts (a requeued SLURM job starts again), never these, so no attempt's log is
lost. Other exit codes pass through unchanged: real failures fail fast. With `--gpus N` on a local run (no
`CUDA_VISIBLE_DEVICES` set yet), every attempt sees N GPUs that no other local job holds
(`runtime.device.gpu_slots`).
"""
from __future__ import annotations

import argparse
import datetime
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import IO

from runtime.device import GPU_SLOTS_DIR, gpu_slots
from runtime.preempt import PREEMPTED_EXIT

FORWARDED = (signal.SIGTERM, signal.SIGUSR1)
"""Passed on to the stage when sent to this process (a stage takes a repeated one as the same stop)."""
NOTED = (*FORWARDED, signal.SIGINT, signal.SIGHUP)
"""Mean "this job was asked to stop". SIGINT and SIGHUP come from the terminal to the whole process group,
so the stage has them already; passing a second SIGINT on would tell runtime.launch to kill at once."""
HEADER = "=== mixsteer attempt"
LOCAL_RESUMES = 10
"""Consecutive exit-75 reruns in place without a stop aimed at the job (a safety bound, not a budget)."""
REQUEUE_STATES = ("RUNNING", "PREEMPTED")
REQUEUE_STATES_WHY = ("a cancelled job stays down, and a job past its time limit is TIMEOUT to the executor "
                      "plugin, which resubmits it itself: a requeue would run it twice")


class Forwarder:
    """While a command runs, stop signals sent to this process are remembered, and passed on to it."""

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.received: signal.Signals | None = None

    def __enter__(self) -> "Forwarder":
        self._previous = {sig: signal.signal(sig, self._handle) for sig in NOTED}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = self.received or signal.Signals(signum)
        if signum in FORWARDED and self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)   # also fine if the group signal reached it: stages stop once


def attempt_log(log: Path) -> tuple[int, IO[str]]:
    """The next attempt's number and its own log file, opened for writing (never an earlier attempt's);
    the rule's `log` is pointed at it."""
    stem = log.name.removesuffix(".log")
    n = 1 + len(list(log.parent.glob(f"{stem}.attempt-*.log")))
    while True:
        path = log.with_name(f"{stem}.attempt-{n}.log")
        try:
            out = open(path, "x", encoding="utf-8")
            break
        except FileExistsError:
            n += 1
    link = log.with_name(f".{log.name}.link-{os.getpid()}")
    link.unlink(missing_ok=True)
    link.symlink_to(path.name)
    os.replace(link, log)
    return n, out


def note(out: IO[str], text: str) -> None:
    out.write(f"{text}\n")
    out.flush()


def run_once(command: list[str], log: Path, forward: Forwarder, env: dict[str, str] | None = None) -> int:
    """One attempt of `command`, its stdout and stderr in the attempt's own log after a header."""
    n, out = attempt_log(log)
    job = os.environ.get("SLURM_JOB_ID")
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with out:
        note(out, f"{HEADER} {n}: {when} on {socket.gethostname()}" + (f", SLURM job {job}" if job else "") + " ===")
        if env:
            note(out, " ".join(f"{k}={v}" for k, v in env.items()))
        forward.child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, **env} if env else None)
        code = forward.child.wait()
        note(out, f"=== attempt {n} ended with exit {code}" + (" (stopped, state saved)" if code == PREEMPTED_EXIT else "")
             + " ===")
    return code


def requeue(job: str, log: Path) -> None:
    """Put SLURM job `job` back in the queue if it is in a `REQUEUE_STATES` state; says what happened in `log`."""
    with open(log, "a", encoding="utf-8") as out:
        try:
            shown = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=60)
            state = next((f.split("=", 1)[1] for f in shown.stdout.split() if f.startswith("JobState=")), "UNKNOWN")
            if state not in REQUEUE_STATES:
                note(out, f"=== SLURM job {job} is {state}: not requeued ({REQUEUE_STATES_WHY}) ===")
                return
            done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            note(out, f"=== could not requeue SLURM job {job}: {exc} ===")
            return
        if done.returncode == 0:
            note(out, f"=== SLURM job {job} requeued: it resumes when it runs again (no Snakemake retry used) ===")
        else:
            note(out, f"=== SLURM refused to requeue job {job} ({done.stderr.strip()}); the job ends with exit "
                      f"{PREEMPTED_EXIT} (is it requeueable? profiles/slurm sets slurm-requeue) ===")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.attempt", description=__doc__.splitlines()[0])
    parser.add_argument("--log", required=True, type=Path, help="the rule's log file (made a link to the attempt's own)")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs the job asks for (runtime.device.gpu_slots)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the stage command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command after --")
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with Forwarder() as forward, gpu_slots(args.gpus, Path(GPU_SLOTS_DIR), os.environ) as env:
        for _ in range(1 + LOCAL_RESUMES):
            code = run_once(command, args.log, forward, env)
            if code != PREEMPTED_EXIT:
                return code
            job = os.environ.get("SLURM_JOB_ID")
            if job:
                requeue(job, args.log)
                return code
            if forward.received is not None:   # the job itself was asked to stop
                return code
    return code


if __name__ == "__main__":
    sys.exit(main())
