"""Preemption: a stage asked to stop finishes its current step, saves, and exits with `PREEMPTED_EXIT`.

SLURM ends a job with SIGTERM (time limit, preemption; SIGKILL follows after the cluster's `KillWait` or
`GraceTime`), and sends SIGUSR1 first when the job asked with `--signal=USR1@<seconds>`. A stage that can
resume installs `StopSignals` around its loop, checks `stop.requested()` (or `stop.agreed()` under
`torchrun`, so every rank stops after the same step) at the end of each step, saves its checkpoint
atomically and raises `Preempted`. `python -m runtime` turns that into exit status 75 (EX_TEMPFAIL):
nothing is published, the work folder keeps the checkpoint, and Snakemake's `retries` (or a SLURM
requeue) reruns the job, which resumes and says so with `resumed`.

A stage with nothing worth saving mid-run declares `RESTART = "<why a rerun from scratch is cheap>"` and
saves nothing: `stage_stops` (around its `run` in `runtime.stage.execute`) makes a stop signal raise
`Preempted` at once, removes the unpublished output folder, and the next attempt logs
`<stage>: restarted (nothing to resume: <why>)`. Once `run` has returned, a stop waits for the publish
(milliseconds) and the job ends complete.

Tests stop a stage at a named point with `MIXSTEER_TEST_PAUSE_AT=<stage>:<point>[:<n>]` (`pause_point`,
the one place that reads it): the stage says `<stage>: paused at <point>` on stderr and waits for a stop
signal, so a test signals it at a known point of its run. Points: `step` (each `StopSignals.requested()`
call: a resuming stage's step boundary), `run` (after `run` returned, before metrics are written),
`publish` (everything written, before the rename into place), `published` (after it, before the process
exits: Snakemake has not yet recorded the job as finished), and stage-specific ones (evaluate's
`capability`, toy's `seed`).
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from compiler.errors import MixsteerError

PREEMPTED_EXIT = 75
"""EX_TEMPFAIL: the stage stopped on request after saving; run it again to resume."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

PAUSE_ENV = "MIXSTEER_TEST_PAUSE_AT"
"""Test hook: `<stage>:<point>[:<n>]` makes the n-th arrival (default 1st) at that point wait for a stop signal."""
PAUSE_LIMIT_S = 300.0
"""A paused stage goes on by itself after this long (a test that never signals must not hang forever)."""
RESTART_MARK = "attempt"
"""File in a restarting stage's work folder: an earlier attempt of this stage instance began."""
_arrivals: Counter[tuple[str, str]] = Counter()


class Preempted(MixsteerError):
    """Raised after a stage saved its state on a stop signal; the message says where it stopped."""


class StopSignals:
    """Context manager: while inside, SIGTERM/SIGUSR1 set a flag instead of killing the process.

    The first signal is reported on stderr (`doing` says what happens next); the previous handlers come
    back on exit. Inside `interrupting(why)` a signal raises `Preempted` at once instead. Outside the main
    thread (signals cannot be caught there) it installs nothing and `requested()` stays False.
    """

    def __init__(self, stage: str, signals: tuple[signal.Signals, ...] = STOP_SIGNALS, *,
                 doing: str = "finishing the current step, then saving"):
        self.stage, self.signals, self.doing = stage, signals, doing
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._restart_why: str | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
            doing = "stopping now" if self._restart_why is not None else self.doing
            print(f"{self.stage}: received {self.received.name}: {doing}", file=sys.stderr, flush=True)
        if self._restart_why is not None:
            self._stop_now()

    def _stop_now(self) -> None:
        why, self._restart_why = self._restart_why, None   # one raise, even if a second signal follows
        raise Preempted(f"{self.stage}: stopped on {self.received.name} at once ({why}); "
                        f"run it again (exit status {PREEMPTED_EXIT})")

    @contextmanager
    def interrupting(self, why: str) -> Iterator["StopSignals"]:
        """While inside, a stop signal (or one already received) raises `Preempted` at once: for work that
        keeps no state, which a rerun redoes because that is cheap (`why` says so)."""
        self._restart_why = why
        try:
            if self.received is not None:
                self._stop_now()
            yield self
        finally:
            self._restart_why = None

    def __enter__(self) -> "StopSignals":
        try:
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread
            self._previous.clear()
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def requested(self) -> bool:
        """This process got a stop signal (the `step` pause point of tests: see `pause_point`)."""
        pause_point(self.stage, "step", self)
        return self.received is not None

    def agreed(self) -> bool:
        """Any rank of the process group got a stop signal (a collective: every rank must call it at the
        same point, e.g. after each optimizer step); without a process group, `requested()`."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.requested()
        import torch

        flag = torch.tensor([1 if self.requested() else 0], dtype=torch.int32,
                            device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def stop(self, where: str) -> None:
        """Raise `Preempted` (call after the state is saved); `where` says what a rerun resumes from."""
        name = self.received.name if self.received is not None else "a stop request"
        raise Preempted(f"{self.stage}: stopped on {name} after saving {where}; "
                        f"run it again to resume (exit status {PREEMPTED_EXIT})")


def resumed(stage: str, what: str) -> None:
    """The one log line every resuming stage writes: `<stage>: resumed from <what>`."""
    print(f"{stage}: resumed from {what}", file=sys.stderr, flush=True)


def pause_point(stage: str, point: str, stop: StopSignals | None = None) -> None:
    """Test hook (`PAUSE_ENV`, read here only): at the chosen arrival, say `<stage>: paused at <point>` and
    wait until `stop` has a signal (inside `interrupting`, the signal raises `Preempted` from the wait; with
    no handler installed, it ends the process as it would anyway)."""
    target = os.environ.get(PAUSE_ENV)
    if not target or not target.startswith(f"{stage}:{point}"):
        return
    name, _, nth = target[len(stage) + 1:].partition(":")
    if name != point:
        return
    _arrivals[stage, point] += 1
    if _arrivals[stage, point] != (int(nth) if nth else 1):
        return
    print(f"{stage}: paused at {point} ({PAUSE_ENV})", file=sys.stderr, flush=True)
    deadline = time.monotonic() + PAUSE_LIMIT_S
    while time.monotonic() < deadline and (stop is None or stop.received is None):
        time.sleep(0.01)


@contextmanager
def stage_stops(kind: str, restart_why: str | None, tmp: Path, work: Path) -> Iterator[None]:
    """Stop handling around a stage's `run` (`runtime.stage.execute`): a stop raises `Preempted` at once,
    except inside a resuming stage's own `StopSignals`, which finishes its step and saves first. A stage
    declaring `restart_why` (its `RESTART`) also says, when an earlier attempt began, that it restarted.
    A stopped attempt leaves no output folder (the work folder keeps what a resume needs)."""
    try:
        if restart_why is not None:
            mark = work / RESTART_MARK
            if mark.exists():
                print(f"{kind}: restarted (nothing to resume: {restart_why})", file=sys.stderr, flush=True)
            work.mkdir(parents=True, exist_ok=True)
            mark.touch()
        why = (f"nothing to save: a rerun restarts it, {restart_why}" if restart_why is not None
               else "between its steps: a rerun resumes from its last save")
        with StopSignals(kind) as stop, stop.interrupting(why):
            yield
            pause_point(kind, "run", stop)
    except Preempted:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
