"""runtime.launch: the argv each layout runs (SLURM from a fake environment and a fake `scontrol`), and the
launcher string the rules get from `Workflow.launcher`."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from compiler.errors import StageError
from compiler.planning import StageInstance
from compiler.schema.resources import StageResources
from compiler.workflow import Workflow
from runtime import launch

COMMAND = ["-m", "runtime", "pretrain", "--config", "build/stages/pretrain-0123456789ab.json"]
SLURM_ENV = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_NODEID": "0"}


def fake_scontrol(expected: str, hosts: list[str]):
    calls: list[str] = []

    def scontrol(nodelist: str) -> list[str]:
        calls.append(nodelist)
        assert nodelist == expected
        return hosts
    scontrol.calls = calls  # type: ignore[attr-defined]
    return scontrol


def planned(argv: list[str], env: dict[str, str], scontrol=None) -> list[str]:
    return launch.plan(launch.parse_args([*argv, "--", *COMMAND]), env, scontrol or fake_scontrol("", []))


def flags(argv: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in argv if a.startswith("--") and "=" in a)


def test_one_process_runs_the_command_itself():
    assert planned(["--nodes=1", "--procs-per-node=1"], {}) == [sys.executable, *launch.WORKER, *COMMAND]


def test_one_node_is_a_standalone_torchrun_that_leaves_stop_signals_to_the_workers():
    argv = planned(["--nodes=1", "--procs-per-node=8"], {})
    assert argv[:3] == launch.TORCHRUN and argv[-len(COMMAND):] == COMMAND
    assert "--standalone" in argv and flags(argv)["--nproc-per-node"] == "8"
    handled = flags(argv)["--signals-to-handle"].split(",")
    assert "SIGTERM" not in handled and "SIGUSR1" not in handled


@pytest.mark.parametrize("nodes, procs", [(4, 8), (1, 8), (1, 1)])
def test_in_a_slurm_job_the_stage_gets_a_step_of_its_own_with_one_task_per_node(nodes, procs):
    argv = planned([f"--nodes={nodes}", f"--procs-per-node={procs}"], SLURM_ENV)
    assert argv[0] == "srun"
    f = flags(argv[:argv.index(sys.executable)])
    assert (f["--nodes"], f["--ntasks"], f["--ntasks-per-node"]) == (str(nodes), str(nodes), "1")
    assert "--overlap" in argv                  # may run inside the jobstep executor's own step
    task = launch.parse_args(argv[argv.index("runtime.launch") + 1:])
    assert (task.nodes, task.procs_per_node, task.slurm_task, task.command) == (nodes, procs, True, COMMAND)
    assert task.stop_grace_s == launch.DEFAULT_STOP_GRACE_S     # the grace travels to each node's task


def test_the_slurm_task_of_one_node_runs_torchrun_or_the_command_there():
    assert planned(["--nodes=1", "--procs-per-node=1", "--slurm-task"], SLURM_ENV) == [sys.executable, *launch.WORKER,
                                                                                     *COMMAND]
    assert "--standalone" in planned(["--nodes=1", "--procs-per-node=2", "--slurm-task"], SLURM_ENV)


def test_each_slurm_task_starts_torchrun_at_the_first_node_of_the_job():
    scontrol = fake_scontrol("gpu[07-08]", ["gpu07", "gpu08"])
    argv = planned(["--nodes=2", "--procs-per-node=8", "--slurm-task"], SLURM_ENV, scontrol)
    assert scontrol.calls == ["gpu[07-08]"]
    f = flags(argv)
    host, port = f["--rdzv-endpoint"].split(":")
    assert host == "gpu07" and launch.RDZV_PORTS[0] <= int(port) < launch.RDZV_PORTS[1]
    assert (f["--nnodes"], f["--nproc-per-node"], f["--rdzv-backend"], f["--rdzv-id"]) == ("2", "8", "c10d", "4242")
    assert f["--rdzv-conf"] == "is_host=1"      # node 0 of the step hosts the store
    assert "--standalone" not in argv and argv[-len(COMMAND):] == COMMAND
    # every node computes the same endpoint; another job gets another port
    assert planned(["--nodes=2", "--procs-per-node=8", "--slurm-task"], SLURM_ENV, scontrol) == argv
    other = planned(["--nodes=2", "--procs-per-node=8", "--slurm-task"], {**SLURM_ENV, "SLURM_JOB_ID": "4243"},
                    scontrol)
    assert flags(other)["--rdzv-endpoint"] != f["--rdzv-endpoint"]
    second = planned(["--nodes=2", "--procs-per-node=8", "--slurm-task"], {**SLURM_ENV, "SLURM_NODEID": "1"},
                     scontrol)
    assert flags(second)["--rdzv-endpoint"] == f["--rdzv-endpoint"] and flags(second)["--rdzv-conf"] == "is_host=0"


def test_multi_node_outside_slurm_is_a_clear_error():
    with pytest.raises(StageError, match="2 nodes need a SLURM allocation"):
        planned(["--nodes=2", "--procs-per-node=1"], {})
    with pytest.raises(StageError, match="SLURM_JOB_NODELIST"):     # srun's task without the job's nodes
        planned(["--nodes=2", "--procs-per-node=1", "--slurm-task"], {"SLURM_JOB_ID": "7"})


def test_an_explicit_rendezvous_needs_no_slurm():
    argv = planned(["--nodes=2", "--procs-per-node=1", "--rdzv-endpoint=localhost:29400", "--rdzv-id=r1",
                    "--rdzv-host"], {})
    assert (flags(argv)["--rdzv-endpoint"], flags(argv)["--rdzv-id"]) == ("localhost:29400", "r1")
    assert flags(argv)["--rdzv-conf"] == "is_host=1"


def test_bad_counts_are_refused():
    with pytest.raises(SystemExit):
        launch.parse_args(["--nodes=0", "--procs-per-node=1", "--", *COMMAND])


def workflow_with(kind: str, **resources) -> Workflow:
    inst = StageInstance(kind, f"{kind}-0123456789ab", 1, None, {},  # type: ignore[arg-type]
                         StageResources(**resources), {})
    return Workflow(Path("/project"), [], {inst.id: inst}, Path("/project/build/x/rules.smk"))


@pytest.mark.parametrize("resources, expected", [
    (dict(gpus=0), ["--nodes=1", "--procs-per-node=1"]),
    (dict(gpus=1), ["--nodes=1", "--procs-per-node=1"]),
    (dict(gpus=8), ["--nodes=1", "--procs-per-node=8"]),
    (dict(gpus=8, nodes=4), ["--nodes=4", "--procs-per-node=8"]),
    (dict(gpus=8, nodes=2, processes_per_node=4), ["--nodes=2", "--procs-per-node=4"]),
])
def test_workflow_launcher_holds_only_integers_from_resources(resources, expected):
    launcher = workflow_with("pretrain", **resources).launcher("pretrain-0123456789ab")
    assert shlex.split(launcher) == [sys.executable, "-m", "runtime.launch", *expected, "--stop-grace-s=120", "--"]


def test_other_kinds_run_one_process_through_the_launcher_whatever_their_resources():
    launcher = workflow_with("evaluate", gpus=8, nodes=2, stop_grace_s=300).launcher("evaluate-0123456789ab")
    assert shlex.split(launcher) == [sys.executable, "-m", "runtime.launch", "--nodes=1", "--procs-per-node=1",
                                     "--stop-grace-s=300", "--"]


def test_the_launchers_default_grace_is_the_schemas():
    assert launch.DEFAULT_STOP_GRACE_S == StageResources().stop_grace_s
