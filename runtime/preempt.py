"""Preemption: a stage asked to stop finishes its current step, saves, and exits with `PREEMPTED_EXIT`.

SLURM ends a job with SIGTERM (time limit, preemption; SIGKILL follows after the cluster's `KillWait` or
`GraceTime`), and sends SIGUSR1 first when the job asked with `--signal=USR1@<seconds>`. A stage that can
resume installs `StopSignals` around its loop, checks `stop.requested()` (or `stop.agreed()` under
`torchrun`, so every rank stops after the same step) at the end of each step, saves its checkpoint
atomically and raises `Preempted`. `python -m runtime` turns that into exit status 75 (EX_TEMPFAIL):
nothing is published, the work folder keeps the checkpoint, and Snakemake's `retries` (or a SLURM
requeue) reruns the job, which resumes and says so with `resumed`.
"""
from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Any

from compiler.errors import MixsteerError

PREEMPTED_EXIT = 75
"""EX_TEMPFAIL: the stage stopped on request after saving; run it again to resume."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(MixsteerError):
    """Raised after a stage saved its state on a stop signal; the message says where it stopped."""


class StopSignals:
    """Context manager: while inside, SIGTERM/SIGUSR1 set a flag instead of killing the process.

    The first signal is reported on stderr; the previous handlers come back on exit. Outside the main
    thread (signals cannot be caught there) it installs nothing and `requested()` stays False.
    """

    def __init__(self, stage: str, signals: tuple[signal.Signals, ...] = STOP_SIGNALS):
        self.stage, self.signals = stage, signals
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
            print(f"{self.stage}: received {self.received.name}: finishing the current step, then saving",
                  file=sys.stderr, flush=True)

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
        """This process got a stop signal."""
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
