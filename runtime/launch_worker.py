"""`python -m runtime.launch_worker -m runtime <stage> --config …`: one stage process owned by `runtime.launch`.

The launcher starts every stage process through this module (directly, or through torchrun's agent, which
puts each worker in a session of its own). Here the process:

- dies with its owners: `PR_SET_PDEATHSIG` = SIGKILL when its parent (the launcher, or torchrun's agent,
  whose own parent-death signal is the launcher) dies, the same for the processes it forks, and a watchdog
  thread that SIGKILLs it once the launcher process is gone (the agent may outlive a SIGKILLed launcher
  for a moment; a worker whose parent died before the prctl took effect sees the launcher missing from
  its ancestors and ends at once). `exit_if_orphaned` is the last check before a stage publishes;
- takes the stop signals (SIGTERM, SIGUSR1) back from the launcher's "ignore" to their defaults: a stage
  that handles them (`runtime.preempt`) saves and exits 75, any other ends at once with nothing to keep;
- registers itself (`worker-<pid>.json`: pid, start time, rank) in the launcher's folder, so the launcher
  can signal it whatever session it is in; a stop the launcher asked for before the registration
  (`stop`, written before the launcher signals the registered workers) is applied right after it;
- records how the stage ended (`exit-<pid>.json`: status and the last message it wrote to stderr, i.e.
  its own `error: …` or `preempted: …` line), which the launcher prints last, after torchrun's report.

The folder is the launcher's own temporary one (node-local: each node's launcher owns the workers of its
node); its path and the launcher's pid and start time come in the environment.
"""
from __future__ import annotations

import ctypes
import json
import os
import runpy
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from runtime.preempt import STOP_SIGNALS

FOLDER_ENV = "MIXSTEER_LAUNCH_DIR"
LAUNCHER_ENV = "MIXSTEER_LAUNCHER"
"""`<pid>:<start time>` of the launcher (the start time tells it from a later process with its pid)."""
STOP_FILE = "stop"
WATCH_INTERVAL_S = 0.2
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Worker:
    pid: int
    start: int
    rank: int


@dataclass(frozen=True)
class WorkerExit:
    pid: int
    rank: int
    status: int
    message: str
    at: float


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks since boot) from /proc/<pid>/stat; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()   # after `pid (comm) `: state is field 3, start time 22
    return fields[0], int(fields[1]), int(fields[19])


def running(pid: int, start: int) -> bool:
    """Process `pid` is the one that started at `start` and has not exited (a zombie has)."""
    stat = proc_stat(pid)
    return stat is not None and stat[2] == start and stat[0] not in "ZX"


def set_parent_death_signal(sig: signal.Signals = signal.SIGKILL) -> None:
    """`sig` to this process when the thread that started it ends (Linux `prctl(PR_SET_PDEATHSIG)`)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")


def _write(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def registered(folder: Path) -> list[Worker]:
    return [Worker(**d) for p in sorted(folder.glob("worker-*.json")) if (d := _read(p)) is not None]


def exits(folder: Path) -> dict[int, WorkerExit]:
    return {d["pid"]: WorkerExit(**d) for p in sorted(folder.glob("exit-*.json")) if (d := _read(p)) is not None}


def request_stop(folder: Path, sig: int) -> None:
    _write(folder / STOP_FILE, {"signal": int(sig)})


def requested_stop(folder: Path) -> int | None:
    record = _read(folder / STOP_FILE)
    return None if record is None else int(record["signal"])


def launcher_of(environ: dict[str, str] | os._Environ = os.environ) -> tuple[int, int] | None:
    value = environ.get(LAUNCHER_ENV, "")
    if not value:
        return None
    pid, start = value.split(":")
    return int(pid), int(start)


def exit_if_orphaned() -> None:
    """SIGKILL this process if the launcher that owns it is gone: called before a stage publishes, so a
    stage whose launcher was killed never publishes (a no-op outside `runtime.launch`)."""
    launcher = launcher_of()
    if launcher is not None and not running(*launcher):
        os.kill(os.getpid(), signal.SIGKILL)


def ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1 and (stat := proc_stat(pid)) is not None:
        pid = stat[1]
        chain.append(pid)
    return chain


def watch_launcher(pid: int, start: int) -> None:
    """End this process (SIGKILL) as soon as the launcher is gone; at once if it is not among this
    process's ancestors any more (an owner died before the parent-death signal was set)."""
    if not running(pid, start) or pid not in ancestors(os.getpid()):
        os.kill(os.getpid(), signal.SIGKILL)

    def watch() -> None:
        while running(pid, start):
            time.sleep(WATCH_INTERVAL_S)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="launcher-watchdog", daemon=True).start()


class _Tail:
    """sys.stderr, remembering the last non-blank text written to it (the stage's closing message)."""

    def __init__(self, stream: TextIO):
        self.stream, self.last = stream, ""

    def write(self, text: str) -> int:
        if text.strip():
            self.last = text.strip()
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def run_command(argv: Sequence[str]) -> tuple[int, str]:
    """Run `-m module args…` or `script args…` as python would; (exit status, last stderr message)."""
    tail = _Tail(sys.stderr)
    sys.stderr = tail
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            runpy.run_path(argv[0], run_name="__main__")
        status = 0
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception:  # what python itself would print and exit 1 with
        traceback.print_exc()
        status = 1
    finally:
        sys.stderr = tail.stream
    return status, tail.last


def main(argv: Sequence[str]) -> int:
    launcher = launcher_of()
    if launcher is None or FOLDER_ENV not in os.environ or not argv:
        print("runtime.launch_worker runs only under `python -m runtime.launch`", file=sys.stderr)
        return 2
    folder = Path(os.environ[FOLDER_ENV])
    set_parent_death_signal()
    os.register_at_fork(after_in_child=set_parent_death_signal)   # a stage's forked helpers die with it
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    watch_launcher(*launcher)
    pid = os.getpid()
    _write(folder / f"worker-{pid}.json",
           asdict(Worker(pid, proc_stat(pid)[2], int(os.environ.get("RANK", "0")))))  # type: ignore[index]
    if (sig := requested_stop(folder)) is not None:
        os.kill(pid, sig)                                  # the default action: nothing started, nothing kept
    status, message = run_command(argv)
    _write(folder / f"exit-{pid}.json", asdict(WorkerExit(pid, int(os.environ.get("RANK", "0")), status, message,
                                                          time.time())))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
