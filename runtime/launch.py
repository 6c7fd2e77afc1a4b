"""`python -m runtime.launch --nodes N --procs-per-node P -- -m runtime pretrain --config <stage.json>`.

Starts a stage on the processes its resources ask for and owns the stop signals (runtime.preempt):

- 1 node, 1 process: the command itself (`python -m runtime …`).
- 1 node, P processes: `torchrun --standalone --nproc-per-node=P`.
- N nodes: one `torchrun` per node, with a c10d rendezvous; `--rdzv-endpoint`/`--rdzv-id` name it
  (tests, other launchers), else SLURM does (below). Outside SLURM without them: an error.
- Inside a SLURM job (`SLURM_JOB_ID`), any layout: `srun --nodes=N --ntasks-per-node=1 --overlap` starts
  this module once per node (`--slurm-task`) in a step of its own (why: `plan`); with N > 1 each finds
  the rendezvous on the first host of `SLURM_JOB_NODELIST` (`scontrol show hostnames`), a port derived
  from `SLURM_JOB_ID`, and uses the job id as rendezvous id.

Why a parent process instead of `exec torchrun`: SLURM signals every process of a step. torchrun's agent
dies on SIGUSR1 (not in its handled signals) and on SIGTERM sends SIGTERM to its workers and SIGKILLs
them 30 s later, saving or not; either ends the step and SLURM kills the saving workers. So the agent runs
with SIGTERM/SIGUSR1 ignored (and told to handle only SIGINT, SIGHUP, SIGQUIT); the workers, which get
the signal from SLURM themselves, finish their step, save and exit with status 75, and this process,
which waits for torchrun, exits 75 after a stop signal (torchrun itself reports any worker failure as 1).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

from compiler.errors import StageError
from runtime.preempt import PREEMPTED_EXIT, STOP_SIGNALS

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
AGENT_SIGNALS = "SIGINT,SIGHUP,SIGQUIT"
"""What torchrun's agent may act on (its default adds SIGTERM): stop signals are the workers' business."""
RDZV_PORTS = (29500, 29500 + 20000)
"""Rendezvous ports are taken from this range by job id, so two jobs sharing a first node differ."""

Scontrol = Callable[[str], list[str]]


def standalone_argv(procs: int, command: Sequence[str]) -> list[str]:
    """One node: torchrun with its own local rendezvous."""
    return [*TORCHRUN, "--standalone", f"--nproc-per-node={procs}", f"--signals-to-handle={AGENT_SIGNALS}",
            *command]


def node_argv(nodes: int, procs: int, *, endpoint: str, run_id: str, is_host: bool,
              command: Sequence[str]) -> list[str]:
    """One node's torchrun of an `nodes`-node run: c10d rendezvous at `endpoint` (host:port), its store
    hosted by the node that says `is_host` (explicit: torch's guess from host names can fail both ways)."""
    return [*TORCHRUN, f"--nnodes={nodes}", f"--nproc-per-node={procs}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run_id}", f"--rdzv-conf=is_host={int(is_host)}",
            f"--signals-to-handle={AGENT_SIGNALS}", *command]


def srun_argv(nodes: int, procs: int, command: Sequence[str]) -> list[str]:
    """The job's step that starts this module once per node. `--overlap`: the command may already run
    inside a step (the jobstep executor's `srun -n1`) that holds the CPUs and GPUs; without it the new
    step would wait for them forever. Without `--exact` the step gets every CPU and GPU of each node."""
    return ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--overlap",
            "--kill-on-bad-exit=1", sys.executable, "-m", "runtime.launch", f"--nodes={nodes}",
            f"--procs-per-node={procs}", "--slurm-task", "--", *command]


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
        return srun_argv(args.nodes, args.procs_per_node, command)
    if args.nodes == 1:
        return [sys.executable, *command] if args.procs_per_node == 1 else standalone_argv(args.procs_per_node,
                                                                                            command)
    if args.rdzv_endpoint:
        return node_argv(args.nodes, args.procs_per_node, endpoint=args.rdzv_endpoint,
                         run_id=args.rdzv_id or "mixsteer", is_host=args.rdzv_host, command=command)
    if args.slurm_task:
        endpoint, run_id, is_host = slurm_rendezvous(env, scontrol)
        return node_argv(args.nodes, args.procs_per_node, endpoint=endpoint, run_id=run_id, is_host=is_host,
                         command=command)
    raise StageError(f"launch: {args.nodes} nodes need a SLURM allocation (snakemake --profile "
                     "profiles/slurm); outside SLURM set `resources.pretrain.nodes: 1`")


def run_owning_stop_signals(argv: list[str]) -> int:
    """Run `argv` with SIGTERM/SIGUSR1 ignored in it (the workers install their own handlers); exit 75
    when it failed after this process got a stop signal."""
    received: list[int] = []
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        proc = subprocess.Popen(argv)  # inherits the ignored dispositions
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda signum, frame: received.append(signum))
        status = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received and status != 0:
        print(f"launch: stopped on {signal.Signals(received[0]).name}; run it again to resume "
              f"(exit status {PREEMPTED_EXIT})", file=sys.stderr, flush=True)
        return PREEMPTED_EXIT
    return status


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m runtime.launch", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--procs-per-node", type=int, required=True)
    parser.add_argument("--rdzv-endpoint", default="", help="host:port of the c10d rendezvous (else SLURM's)")
    parser.add_argument("--rdzv-id", default="", help="rendezvous id shared by the nodes (else SLURM_JOB_ID)")
    parser.add_argument("--rdzv-host", action="store_true", help="this node hosts the rendezvous store")
    parser.add_argument("--slurm-task", action="store_true", help="internal: this is srun's task on a node")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the python arguments")
    args = parser.parse_args(argv)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not args.command:
        parser.error("no command after --")
    if args.nodes < 1 or args.procs_per_node < 1:
        parser.error("--nodes and --procs-per-node must be at least 1")
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
    return run_owning_stop_signals(command)


if __name__ == "__main__":
    sys.exit(main())
