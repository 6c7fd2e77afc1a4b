"""`python -m runtime.launch --nodes N --procs-per-node P -- -m runtime <kind> --config <stage.json>`.

Starts a stage on the processes its resources ask for and owns the stop signals (runtime.preempt):

- 1 node, 1 process: the command itself (`python -m runtime …`, through `runtime.launch_worker`).
- 1 node, P processes: `torchrun --standalone --nproc-per-node=P`.
- N nodes: one `torchrun` per node, with a c10d rendezvous; `--rdzv-endpoint`/`--rdzv-id` name it
  (tests, other launchers), else SLURM does (below). Outside SLURM without them: an error.
- Inside a SLURM job (`SLURM_JOB_ID`), any layout: `srun --nodes=N --ntasks-per-node=1 --overlap` starts
  this module once per node (`--slurm-task`) in a step of its own (why: `plan`); with N > 1 each finds
  the rendezvous on the first host of `SLURM_JOB_NODELIST` (`scontrol show hostnames`), a port derived
  from `SLURM_JOB_ID`, and uses the job id as rendezvous id.

Why a parent process instead of `exec torchrun`: torchrun's agent dies on SIGUSR1 (not in its handled
signals) and on SIGTERM sends SIGTERM to its workers and SIGKILLs them 30 s later, saving or not; it
starts the workers in sessions of their own, so a signal to the launcher's process group (`kill`, a
stopping Snakemake) never reaches them; and it reports any worker failure as exit status 1 after a
traceback wall. So the agent runs with SIGTERM/SIGUSR1 ignored (and told to handle only SIGINT, SIGHUP,
SIGQUIT), and this process owns the workers (`runtime.launch_worker` is their side):

- every stage process starts through `runtime.launch_worker`, which registers its pid in a folder of
  this launcher's (rather than walking /proc for torchrun's children: a worker that has not registered
  yet finds the stop request there, and a stage's own helper processes are left to the stage). A stop
  signal here is forwarded to each registered worker (checked by pid and start time); the launcher
  then waits up to `--stop-grace-s` (`resources.<kind>.stop_grace_s`) for them to save and exit,
  SIGKILLs them after that, and exits 75 when they stopped (never 0 after a stop, unless the stage had
  already finished);
- nothing outlives it: the agent (or the single stage process) gets SIGKILL when this process dies
  (`PR_SET_PDEATHSIG`), the workers when the agent dies, and each worker watches this process and
  checks it again before publishing; this process itself gets SIGTERM, a stop, when its parent dies
  (Snakemake kills a job's shell, not the launcher: no orphaned launcher trains on and publishes);
- Ctrl-C (SIGINT) stops the stage the way SIGTERM does (its processes run in a process group of their
  own, so a terminal's or a group's signal reaches them only through this process); twice, it kills;
- it prints the stage's own closing message last (`error: …`, `preempted: …`, after torchrun's report)
  and exits with the stage's status (75, 1, 2), not torchrun's 1.

Every stage kind runs through it (compiler.workflow `Workflow.launcher`): 1 node × 1 process for all
but pretraining, so under SLURM each gets a step of its own and the same signal handling.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType

from compiler.errors import StageError
from runtime import launch_worker as worker
from runtime.preempt import PREEMPTED_EXIT, STOP_SIGNALS

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
WORKER = ["-m", "runtime.launch_worker"]
"""Every stage process runs its command through this (torchrun's `-m <module>` form too)."""
AGENT_SIGNALS = "SIGINT,SIGHUP,SIGQUIT"
"""What torchrun's agent may act on (its default adds SIGTERM): stop signals are the workers' business."""
RDZV_PORTS = (29500, 29500 + 20000)
"""Rendezvous ports are taken from this range by job id, so two jobs sharing a first node differ."""
DEFAULT_STOP_GRACE_S = 120
"""`resources.<kind>.stop_grace_s`'s default, for launches by hand (the rules always pass it). Not imported
from compiler.schema: that costs a second of startup, during which a stop signal would find no handler."""
POLL_S = 0.2
OWNED_SIGNALS = (*STOP_SIGNALS, signal.SIGINT)
"""Signals the launcher takes for the stage: the stop signals, and Ctrl-C, which stops the same way."""

Scontrol = Callable[[str], list[str]]


def standalone_argv(procs: int, command: Sequence[str]) -> list[str]:
    """One node: torchrun with its own local rendezvous."""
    return [*TORCHRUN, "--standalone", f"--nproc-per-node={procs}", f"--signals-to-handle={AGENT_SIGNALS}",
            *WORKER, *command]


def node_argv(nodes: int, procs: int, *, endpoint: str, run_id: str, is_host: bool,
              command: Sequence[str]) -> list[str]:
    """One node's torchrun of an `nodes`-node run: c10d rendezvous at `endpoint` (host:port), its store
    hosted by the node that says `is_host` (explicit: torch's guess from host names can fail both ways)."""
    return [*TORCHRUN, f"--nnodes={nodes}", f"--nproc-per-node={procs}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run_id}", f"--rdzv-conf=is_host={int(is_host)}",
            f"--signals-to-handle={AGENT_SIGNALS}", *WORKER, *command]


def srun_argv(nodes: int, procs: int, grace_s: int, command: Sequence[str]) -> list[str]:
    """The job's step that starts this module once per node. `--overlap`: the command may already run
    inside a step (the jobstep executor's `srun -n1`) that holds the CPUs and GPUs; without it the new
    step would wait for them forever. Without `--exact` the step gets every CPU and GPU of each node."""
    return ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--overlap",
            "--kill-on-bad-exit=1", sys.executable, "-m", "runtime.launch", f"--nodes={nodes}",
            f"--procs-per-node={procs}", f"--stop-grace-s={grace_s}", "--slurm-task", "--", *command]


def scontrol_hostnames(nodelist: str) -> list[str]:
    """`scontrol show hostnames <nodelist>`: SLURM's compressed node list (`gpu[01-04]`) expanded."""
    if shutil.which("scontrol") is None:
        raise StageError("launch: `scontrol` is not on PATH; it expands SLURM_JOB_NODELIST")
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
    if out.returncode != 0:
        raise StageError(f"launch: `scontrol show hostnames {nodelist}` failed: {out.stderr.strip()}")
    return out.stdout.split()


def slurm_rendezvous(env: Mapping[str, str], scontrol: Scontrol = scontrol_hostnames) -> tuple[str, str, bool]:
    """(endpoint host:port, rendezvous id, whether this node hosts it) in an srun task: the first node of
    the job (the step spans all of them: node 0 of the step), a port and id from the job id."""
    job_id, nodelist = env.get("SLURM_JOB_ID", ""), env.get("SLURM_JOB_NODELIST", "")
    node_id = env.get("SLURM_NODEID", "")
    if not job_id.isdigit() or not nodelist or not node_id.isdigit():
        raise StageError("launch: a multi-node run needs SLURM_JOB_ID, SLURM_JOB_NODELIST and SLURM_NODEID "
                         "(it runs inside a SLURM allocation, started by srun)")
    hosts = scontrol(nodelist)
    if not hosts:
        raise StageError(f"launch: SLURM_JOB_NODELIST {nodelist!r} names no host")
    low, high = RDZV_PORTS
    return f"{hosts[0]}:{low + int(job_id) % (high - low)}", job_id, node_id == "0"


def plan(args: argparse.Namespace, env: Mapping[str, str], scontrol: Scontrol = scontrol_hostnames) -> list[str]:
    """The argv to run for these launch arguments in this environment.

    Under SLURM the stage always runs in a job step of its own whose task is this module: SLURM signals
    every process of a step, Snakemake's jobstep process (the task of the step it runs the rule in) and
    the rule's shell die on SIGTERM/SIGUSR1, and slurmstepd SIGKILLs what is left in a step once its
    task is gone; a step of our own keeps the saving workers alive until the job ends (KillWait)."""
    command = args.command
    if "SLURM_JOB_ID" in env and not (args.slurm_task or args.rdzv_endpoint):
        return srun_argv(args.nodes, args.procs_per_node, args.stop_grace_s, command)
    if args.nodes == 1:
        return ([sys.executable, *WORKER, *command] if args.procs_per_node == 1
                else standalone_argv(args.procs_per_node, command))
    if args.rdzv_endpoint:
        return node_argv(args.nodes, args.procs_per_node, endpoint=args.rdzv_endpoint,
                         run_id=args.rdzv_id or "mixsteer", is_host=args.rdzv_host, command=command)
    if args.slurm_task:
        endpoint, run_id, is_host = slurm_rendezvous(env, scontrol)
        return node_argv(args.nodes, args.procs_per_node, endpoint=endpoint, run_id=run_id, is_host=is_host,
                         command=command)
    raise StageError(f"launch: {args.nodes} nodes need a SLURM allocation (snakemake --profile "
                     "profiles/slurm); outside SLURM set `resources.pretrain.nodes: 1`")


class Owner:
    """The stage processes of one launch: their folder (`runtime.launch_worker`), the stop signals this
    process got and how long it still waits for the workers to save."""

    def __init__(self, folder: Path, grace_s: int):
        self.folder, self.grace_s = folder, grace_s
        self.received: list[signal.Signals] = []
        self.deadline: float | None = None

    def on_stop(self, signum: int, frame: FrameType | None) -> None:
        """Forward a stop signal to every worker (SIGINT as SIGTERM); the first one starts the grace
        period, a second SIGINT (Ctrl-C twice) ends it at once."""
        sig = signal.Signals(signum)
        if sig == signal.SIGINT and signal.SIGINT in self.received:
            print("launch: SIGINT again: killing the stage now", file=sys.stderr, flush=True)
            self.deadline = time.monotonic()
        elif not self.received:
            self.deadline = time.monotonic() + self.grace_s
            print(f"launch: received {sig.name}: forwarded to the stage, which has {self.grace_s} s to save "
                  "and exit", file=sys.stderr, flush=True)
        self.received.append(sig)
        forward = signal.SIGTERM if sig == signal.SIGINT else sig
        worker.request_stop(self.folder, forward)   # before the signals: a worker registering now sees it
        self.signal_workers(forward)

    def signal_workers(self, sig: signal.Signals) -> None:
        """`sig` to every registered worker still running (a SIGKILL also to those that said they ended)."""
        ended = worker.exits(self.folder) if sig != signal.SIGKILL else {}
        for w in worker.registered(self.folder):
            if w.pid not in ended and worker.running(w.pid, w.start):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, sig)

    def wait(self, proc: subprocess.Popen) -> tuple[int, bool]:
        """(exit status of `proc`, whether the grace period ran out and everything was SIGKILLed)."""
        while True:
            try:
                return proc.wait(timeout=POLL_S), False
            except subprocess.TimeoutExpired:
                if self.deadline is not None and time.monotonic() > self.deadline:
                    self.signal_workers(signal.SIGKILL)
                    proc.kill()
                    return proc.wait(), True

    def outcome(self, status: int, killed: bool, echo: bool) -> int:
        """The exit status of the launch, its closing message printed last: a stage's own failure first
        (the earliest, if several ranks failed), then a grace period that ran out, then a stop."""
        ended = worker.exits(self.folder)
        failed = sorted((e for e in ended.values() if e.status not in (0, PREEMPTED_EXIT)), key=lambda e: e.at)
        stopped = sorted((e for e in ended.values() if e.status == PREEMPTED_EXIT), key=lambda e: e.rank)
        name = self.received[0].name if self.received else ""
        if failed:
            return closing(failed[0].message, failed[0].status, echo)
        if killed:
            return closing(f"launch: the stage had not exited {self.grace_s} s after {name} (or SIGINT came twice) "
                           "and was killed; raise `resources.<kind>.stop_grace_s` if its save takes longer", 1, True)
        if stopped:
            return closing(stopped[0].message, PREEMPTED_EXIT, echo)
        if status == 0:
            if self.received:
                print(f"launch: the stage had finished when {name} came", file=sys.stderr, flush=True)
            return 0
        if self.received:
            return closing(f"launch: stopped on {name} before the stage saved anything; run it again "
                           f"(exit status {PREEMPTED_EXIT})", PREEMPTED_EXIT, True)
        silent = sorted(w.rank for w in worker.registered(self.folder) if w.pid not in ended)
        code = status if status > 0 else 128 - status
        return closing(f"launch: the stage ended with status {code}"
                       + (f"; rank(s) {silent} ended without a status (killed by a signal?)" if silent else ""),
                       code, True)


def closing(message: str, status: int, echo: bool) -> int:
    """Print `message` (if `echo`: a stage's own message, already printed above torchrun's report)."""
    if echo and message:
        print(message, file=sys.stderr, flush=True)
    return status


def owned_child(parent: int) -> Callable[[], None]:
    """The child's setup before exec (in a process group of its own, so that a signal to this launcher's
    group, a terminal's Ctrl-C included, reaches the stage only through this launcher): SIGKILL when this
    launcher dies (and at once if it already did), stop signals ignored (torchrun's agent must not act on
    them; launch_worker restores them)."""
    def setup() -> None:
        os.setpgid(0, 0)
        worker.set_parent_death_signal()
        if os.getppid() != parent:
            os._exit(1)
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    return setup


def run_owning_workers(argv: list[str], grace_s: int, *, echo: bool) -> int:
    """Run `argv` (whose stage processes run `runtime.launch_worker`) as the owner of its workers."""
    folder = Path(tempfile.mkdtemp(prefix="mixsteer-launch-"))
    owner, me = Owner(folder, grace_s), os.getpid()
    env = {**os.environ, worker.FOLDER_ENV: str(folder),
           worker.LAUNCHER_ENV: f"{me}:{worker.proc_stat(me)[2]}"}  # type: ignore[index]
    previous = {sig: signal.signal(sig, owner.on_stop) for sig in OWNED_SIGNALS}
    parent = os.getppid()
    worker.set_parent_death_signal(signal.SIGTERM)   # whoever started this is gone: stop as on SIGTERM
    if os.getppid() != parent:
        os.kill(me, signal.SIGTERM)
    try:
        proc = subprocess.Popen(argv, env=env, preexec_fn=owned_child(me))
        status, killed = owner.wait(proc)
        return owner.outcome(status, killed, echo)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        owner.signal_workers(signal.SIGKILL)  # none is left when torchrun ended normally; none may outlive this
        shutil.rmtree(folder, ignore_errors=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m runtime.launch", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--procs-per-node", type=int, required=True)
    parser.add_argument("--rdzv-endpoint", default="", help="host:port of the c10d rendezvous (else SLURM's)")
    parser.add_argument("--rdzv-id", default="", help="rendezvous id shared by the nodes (else SLURM_JOB_ID)")
    parser.add_argument("--rdzv-host", action="store_true", help="this node hosts the rendezvous store")
    parser.add_argument("--stop-grace-s", type=int, default=DEFAULT_STOP_GRACE_S,
                        help="seconds the stage gets to save and exit after a stop signal")
    parser.add_argument("--slurm-task", action="store_true", help="internal: this is srun's task on a node")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the python arguments")
    args = parser.parse_args(argv)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not args.command:
        parser.error("no command after --")
    if min(args.nodes, args.procs_per_node, args.stop_grace_s) < 1:
        parser.error("--nodes, --procs-per-node and --stop-grace-s must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        command = plan(args, os.environ)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if command[0] == "srun":  # srun forwards signals to its tasks, which own them
        os.execvp("srun", command)
    return run_owning_workers(command, args.stop_grace_s, echo=command[:len(TORCHRUN)] == TORCHRUN)


if __name__ == "__main__":
    sys.exit(main())
