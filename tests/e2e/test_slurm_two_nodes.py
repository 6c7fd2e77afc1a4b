"""Pretraining across two SLURM nodes (slow; skipped unless the cluster of `tests/slurm/start_two_nodes.sh`
is up: two slurmd in network and UTS namespaces of their own, run as root).

The spec (tests/slurm/two_nodes.yaml) asks `resources.pretrain: {nodes: 2, gpus: 1}`; its tokenizer and
mix run locally first (seconds, not SLURM's minutes of polling), then `snakemake --profile profiles/slurm`
submits the pretrain rule as one two-node SLURM job. What is checked is seen from outside the job: the
stage's processes in /proc (rank, the UTS host name `socket.gethostname()` returns in them, the network
namespace, the GPUs SLURM gave them), the job's record in `scontrol`, srun's report of each node's exit
status, and the published files.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "tests" / "slurm" / "two_nodes.yaml"
NODES = ("mxs-node1", "mxs-node2")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "MIXSTEER_ALLOW_CPU": "1"}  # the gres GPUs are placeholder devices: stages asking for them run on CPU
SLURM_ARGS = ("--profile", "profiles/slurm", "--slurm-status-command", "squeue",
              "--slurm-init-seconds-before-status-checks", "5")


def _cluster_up() -> bool:
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = dict(line.split() for line in out.stdout.splitlines() if len(line.split()) == 2)
    return out.returncode == 0 and all(states.get(n, "down").startswith(("idle", "mix", "alloc")) for n in NODES)


pytestmark = pytest.mark.slow


class Project:
    """A copy of the project with the spec's upstream stages done; the pretrain instance's paths."""

    def __init__(self, root: Path):
        from compiler.workflow import Workflow

        self.root = root
        wf = Workflow.load([root / "specs/two_nodes.yaml"], root)
        by_kind = {i.kind: i for i in wf.instances.values()}
        self.pretrain = by_kind["pretrain"]
        self.upstream = [f"{by_kind[k].output}/stage.json" for k in ("tokenizer", "mix")]
        self.out = root / self.pretrain.output
        self.target = f"{self.pretrain.output}/stage.json"
        self.work = root / "results/.work/pretrain" / self.pretrain.id

    def snakemake(self, *args: str, **popen) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "snakemake", "--config", "spec=specs/two_nodes.yaml", *args],
                                cwd=self.root, env=ENV, text=True, **popen)

    def set_aside(self, name: str) -> Path:
        """Move the published output out of results/ (the next run publishes the same id again)."""
        kept = self.root / name
        shutil.move(self.out, kept)
        return kept


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    """Asked only by selected tests: collecting this module asks SLURM nothing (sinfo can wait 10 s)."""
    if os.geteuid() != 0 or not _cluster_up():
        pytest.skip("no two-node SLURM (sudo tests/slurm/start_two_nodes.sh) or not root")
    root = tmp_path_factory.mktemp("two_nodes")
    for item in ("Snakefile", "data", "profiles"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, root / item)
    (root / "specs").mkdir()
    shutil.copy(SPEC, root / "specs/two_nodes.yaml")
    proj = Project(root)
    run = proj.snakemake("--cores", "2", "--", *proj.upstream, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log, _ = run.communicate(timeout=600)
    assert run.returncode == 0, log[-3000:]
    return proj


@pytest.fixture(scope="module")
def one_process(project) -> Path:
    """The pretrain instance on one process, outside SLURM (its output set aside)."""
    config = f"build/stages/{project.pretrain.id}.json"
    run = subprocess.run([sys.executable, "-m", "runtime", "pretrain", "--config", config], cwd=project.root,
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return project.set_aside("one_process")


class Sampler:
    """Polls in the background while a run goes on: `probe()` every 0.1 s until stopped."""

    def __init__(self, probe: Callable[[], None]):
        self.probe, self.done = probe, threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.done.is_set():
            self.probe()
            time.sleep(0.1)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        self.probe()


def stage_workers(project: Project, seen: dict[int, dict[str, str]]) -> None:
    """Record each running training process of this project's pretrain instance: its RANK, the host name
    it sees (its UTS namespace), its network namespace and the GPUs SLURM gave its step."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) in seen:
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if f"build/stages/{project.pretrain.id}.json".encode() not in cmd or \
                    Path(f"/proc/{pid}/cwd").resolve() != project.root.resolve():
                continue
            env = dict(kv.decode().split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                       if b"=" in kv)
            if "RANK" not in env:        # the launcher and torchrun's agent, not a training process
                continue
            host = subprocess.run(["nsenter", f"--uts=/proc/{pid}/ns/uts", "hostname"], capture_output=True,
                                  text=True, check=True).stdout.strip()
            seen[int(pid)] = {"rank": env["RANK"], "host": host, "net": os.readlink(f"/proc/{pid}/ns/net"),
                              "gpus": env.get("CUDA_VISIBLE_DEVICES", ""), "node": env.get("SLURMD_NODENAME", "")}
        except (OSError, subprocess.CalledProcessError, ValueError):
            continue                     # ended meanwhile


def slurm_job(job_id: str) -> dict[str, str]:
    shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=True)
    return dict(f.split("=", 1) for f in shown.stdout.split() if "=" in f)


def job_ids(log: str) -> list[str]:
    return re.findall(r"submitted with SLURM jobid (\d+)", log)


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_nodes(project, one_process) -> tuple[Path, dict[int, dict[str, str]], dict[str, str]]:
    """The pretrain rule through `profiles/slurm` on both nodes, uninterrupted: (its output set aside, the
    training processes seen, its SLURM job record)."""
    workers: dict[int, dict[str, str]] = {}
    with Sampler(lambda: stage_workers(project, workers)):
        run = project.snakemake(*SLURM_ARGS, "--", project.target, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        log, _ = run.communicate(timeout=900)
    assert run.returncode == 0, log[-4000:]
    (job,) = job_ids(log)
    return project.set_aside("two_nodes"), workers, slurm_job(job)


def test_pretraining_spans_both_nodes_one_gpu_each_and_matches_one_process(two_nodes, one_process):
    """Rank 0 and rank 1 ran in the two nodes' namespaces (host names `mxs-node1`, `mxs-node2`), each seeing
    the one GPU of its node (`--gres=gpu:1` per node: not both GPUs of one node), in one COMPLETED job
    over both nodes; the losses are one process's (1e-4 relative, as tests/stages/test_rendezvous.py)."""
    out, workers, job = two_nodes
    by_rank = {w["rank"]: w for w in workers.values()}
    assert sorted(by_rank) == ["0", "1"] and len(workers) == 2, workers
    assert {w["host"] for w in workers.values()} == set(NODES), workers
    assert all(w["host"] == w["node"] for w in workers.values()), workers   # slurmd's node name = its host
    assert len({w["net"] for w in workers.values()}) == 2, workers          # two network stacks
    assert [w["gpus"] for w in workers.values()] == ["0", "0"], workers     # one GPU on each node
    assert job["JobState"] == "COMPLETED" and job["NumNodes"] == "2", job
    assert job.get("TresPerNode") == "gres:gpu:1", job
    assert (out / "stage.json").is_file()
    assert np.allclose(losses(out), losses(one_process), rtol=1e-4, atol=0)


def test_usr1_mid_run_stops_both_nodes_with_75_and_the_rerun_resumes_bit_identical(project, two_nodes):
    """`scancel --signal=USR1` once 3 steps are logged: on each node srun reports the stage's launcher
    exited 75 (saved, preempted), the same SLURM job is requeued and COMPLETES, its rerun says
    `resumed from` the stop-time checkpoint (the only one: no periodic save in 43 steps), and the final
    model.pt and losses equal the uninterrupted two-node run's exactly."""
    import torch

    uninterrupted = two_nodes[0]
    with open(project.root / "snakemake-usr1.log", "w+") as out:
        run = project.snakemake(*SLURM_ARGS, "--", project.target, stdout=out, stderr=subprocess.STDOUT)
        try:
            metrics, deadline = project.work / "metrics.jsonl", time.monotonic() + 600
            while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
                assert run.poll() is None and time.monotonic() < deadline, "no third step logged"
                time.sleep(0.05)
            out.flush()
            first = job_ids((project.root / "snakemake-usr1.log").read_text())[-1]
            subprocess.run(["scancel", "--signal=USR1", first], check=True)
            run.wait(timeout=900)
        finally:
            if run.poll() is None:
                run.terminate()          # Snakemake cancels its SLURM jobs
                run.wait(timeout=120)
        out.seek(0)
        log = out.read()
    assert run.returncode == 0, log[-4000:]
    # each attempt's own log (runtime.attempt); the uninterrupted run's attempt neither stopped nor resumed
    texts = [p.read_text(errors="replace") for p in (project.root / "logs/pretrain").glob("*.attempt-*.log")]
    exit_75 = re.compile(r"srun: error: (\S+): task \d+: Exited with exit code 75")
    assert {m.group(1) for t in texts for m in exit_75.finditer(t)} == set(NODES), texts
    (stopped,) = [t for t in texts if exit_75.search(t)]
    assert "received SIGUSR1" in stopped and "preempted" in stopped
    (resumed,) = [m for t in texts for m in re.finditer(r"pretrain: resumed from \S+/step-(\d+)\.pt", t)]
    assert 3 <= int(resumed.group(1)) < 43
    job = slurm_job(first)                           # requeued in place (profiles/slurm), not resubmitted
    assert job_ids(log) == [first] and job["JobState"] == "COMPLETED" and int(job["Restarts"]) >= 1, job
    assert losses(project.out) == losses(uninterrupted)
    resumed_model, clean = (torch.load(o / "olmo" / "model.pt", weights_only=True) for o in (project.out, uninterrupted))
    assert resumed_model.keys() == clean.keys()
    assert all(torch.equal(resumed_model[k], clean[k]) for k in clean)
