"""One request rate shared by every process on a machine (or a cluster with a shared file system).

A rate limit kept in each process's memory lets N score jobs running at once send N times the allowed
rate, and the service answers with a storm of 429s. Here the schedule lives in a tiny file: under an
exclusive `fcntl` lock, a caller reads the next free send time, takes that slot, writes slot + 1/rate back
and sleeps until its slot outside the lock. A 429 pushes the shared next free time past its wait, so
every process slows down, not only the one that was refused. Requests already scheduled when the push
lands (at most one per process) still go.

Why a file and not a Snakemake global resource: a resource (`--resources perspective=1`) caps how many
jobs run at once, not how fast they send, and binds only the jobs of one Snakemake invocation; the file
caps the rate of every process that names it — parallel jobs, two Snakemake runs at once, a manual rerun.

Times are wall-clock seconds (`time.time()`), comparable across processes and nodes. On a multi-node
cluster the file must sit on a shared file system whose `fcntl` locks work across nodes (NFSv4, Lustre
mounted with `flock`); otherwise each node keeps its own schedule and the rate must be divided by the
number of nodes that score at once.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


class SharedRateLimit:
    """Send slots 1/`queries_per_second` apart, shared by every process using the same `path`."""

    def __init__(self, path: Path, queries_per_second: float, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.interval_s = 1.0 / queries_per_second
        self._clock = clock

    def reserve(self) -> float:
        """Take the next free slot; returns its start time (the caller sleeps until then)."""
        def take(next_free: float) -> tuple[float, float]:
            slot = max(self._clock(), next_free)
            return slot, slot + self.interval_s

        return self._update(take)

    def hold_off(self, until: float) -> None:
        """No process sends before `until` (a 429's Retry-After or backoff, for everyone)."""
        self._update(lambda next_free: (None, max(next_free, until)))

    def next_free(self) -> float:
        """The earliest time a new reservation could start (for tests and progress messages)."""
        return self._update(lambda next_free: (next_free, next_free))

    def _update(self, step: Callable[[float], tuple[T, float]]) -> T:
        """Run `step(next_free) -> (result, new next_free)` under the file's exclusive lock."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, 64, 0).strip()
            try:
                next_free = float(raw) if raw else 0.0
            except ValueError:  # a torn or foreign file: start a fresh schedule
                next_free = 0.0
            result, new = step(next_free)
            data = repr(float(new)).encode()
            os.pwrite(fd, data.ljust(32), 0)  # fixed width: no truncate needed, one write
            return result
        finally:
            os.close(fd)  # closing releases the lock (also when the process is killed)
