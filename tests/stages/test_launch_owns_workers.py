"""runtime.launch owns its workers, tested the way the world delivers the faults: real processes, a real
SIGTERM to the launcher's process group (torchrun's workers sit in sessions of their own), a SIGKILL of the
launcher with no warning, a stage's own error under torchrun's report, and a non-pretrain kind stopped
through the launcher alone.

Each launch runs as the rules run it (`python -m runtime.launch … -- -m runtime <kind> --config <json>`),
in a session of its own, its stderr in a file (a pipe nobody drains could block it).
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from test_pretrain import envelope, write_artifacts
from test_pretrain_preempt import MAX_STEPS, stage_json

from runtime.launch_worker import LAUNCHER_ENV, proc_stat


def launch(config: Path, kind: str = "pretrain", procs: int = 2, grace_s: int = 60) -> list[str]:
    return [sys.executable, "-m", "runtime.launch", "--nodes=1", f"--procs-per-node={procs}",
            f"--stop-grace-s={grace_s}", "--", "-m", "runtime", kind, "--config", str(config)]


def start(argv: list[str], log: Path) -> subprocess.Popen:
    """The launch in a session of its own; its temporary folder (left behind by a SIGKILL) under the test's."""
    with log.open("w") as err:
        return subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(log.parent)},
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)


def finish(proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> tuple[int, str]:
    try:
        return proc.wait(timeout=timeout_s), log.read_text()
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the launch did not end in {timeout_s} s: {log.read_text()[-3000:]}")


def wait_for(ready, proc: subprocess.Popen, log: Path, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            pytest.fail(f"the launch ended (status {proc.returncode}) before {what}: {log.read_text()[-3000:]}")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"no {what} after {timeout_s} s: {log.read_text()[-3000:]}")


def rows(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def owned_by(launcher: int) -> dict[int, int]:
    """{pid: start time} of every process whose environment names `launcher` as its launcher (torchrun's
    agent, the workers and whatever they started), found in /proc, not through the launcher's own records."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"{LAUNCHER_ENV}={launcher}:".encode() in environ and (stat := proc_stat(int(entry.name))) is not None:
            found[int(entry.name)] = stat[2]
    return found


def alive(processes: dict[int, int]) -> list[int]:
    """Those still running (same pid and start time, not a zombie)."""
    return [pid for pid, start in processes.items()
            if (stat := proc_stat(pid)) is not None and stat[2] == start and stat[0] not in "ZX"]


def alive_after(processes: dict[int, int], seconds: float) -> list[int]:
    """Those still running `seconds` from now, or as soon as none is (a SIGKILLed process takes a moment)."""
    deadline = time.monotonic() + seconds
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(processes)


def last_line(stderr: str) -> str:
    return stderr.rstrip().splitlines()[-1]


def test_sigterm_to_the_launchers_process_group_reaches_both_workers_which_save_and_resume(tmp_path):
    env, config = stage_json(tmp_path)
    work = tmp_path / "results/.work/pretrain" / env["id"]
    log = tmp_path / "stopped.log"
    proc = start(launch(config), log)
    wait_for(lambda: rows(work / "metrics.jsonl") >= 3, proc, log, "step 3")
    os.killpg(proc.pid, signal.SIGTERM)           # what kill, a stopping Snakemake send; not the workers' group
    status, stderr = finish(proc, log)
    assert status == 75, stderr[-3000:]
    assert stderr.count("pretrain: received SIGTERM") == 2      # both ranks got it, through the launcher
    assert last_line(stderr).startswith("preempted: pretrain: stopped on SIGTERM after saving")
    (checkpoint,) = work.glob("step-*.pt")
    stopped_at = int(checkpoint.stem.split("-")[1])
    assert 3 <= stopped_at < MAX_STEPS
    assert not (tmp_path / env["output"]).exists()

    log = tmp_path / "rerun.log"
    status, stderr = finish(start(launch(config), log), log)
    assert status == 0, stderr[-3000:]
    assert f"pretrain: resumed from {checkpoint} (step {stopped_at} of {MAX_STEPS})" in stderr
    out = tmp_path / env["output"]
    assert (out / "stage.json").is_file()
    assert [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()] == \
        list(range(1, MAX_STEPS + 1))


def test_a_sigkilled_launcher_leaves_no_worker_and_nothing_is_published(tmp_path):
    env, config = stage_json(tmp_path)
    metrics = tmp_path / "results/.work/pretrain" / env["id"] / "metrics.jsonl"
    log = tmp_path / "killed.log"
    proc = start(launch(config), log)
    wait_for(lambda: rows(metrics) >= 1, proc, log, "step 1")
    first = time.monotonic()
    wait_for(lambda: rows(metrics) >= 3, proc, log, "step 3")
    step_s = (time.monotonic() - first) / 2
    owned = owned_by(proc.pid)
    assert len(owned) >= 3, owned                  # torchrun's agent and two workers
    proc.kill()                                    # the launcher alone, no warning
    proc.wait()
    assert alive_after(owned, 5) == []
    logged = rows(metrics)
    time.sleep(max(2.0, (MAX_STEPS - logged) * step_s))   # as long as the rest of the run would have taken
    assert rows(metrics) == logged
    assert not (tmp_path / env["output"]).exists()


@pytest.mark.parametrize("case", ["finished output", "wrong kind"])
def test_the_stages_own_error_comes_last_with_its_status(tmp_path, case):
    env = envelope(tmp_path, write_artifacts(tmp_path), max_steps=2)
    config = tmp_path / "pretrain.json"
    config.write_text(json.dumps(env))
    if case == "finished output":               # StageError at publishing, on rank 0: exit status 1
        out = tmp_path / env["output"]
        out.mkdir(parents=True)
        (out / "stage.json").write_text("{}")
        argv, status, message = launch(config), 1, "already complete; refusing to overwrite"
    else:                                       # the stage's usage error, on both ranks: exit status 2
        argv, status, message = launch(config, kind="probe"), 2, "is a pretrain stage, not probe"
    log = tmp_path / "failed.log"
    got, stderr = finish(start(argv, log), log)
    assert got == status, stderr[-3000:]
    assert "ChildFailedError" in stderr          # torchrun's report is there, above the stage's message
    assert "error: " in last_line(stderr) and message in last_line(stderr)


@pytest.mark.parametrize(("how", "workers"), [("SIGTERM to the launcher", 2), ("Ctrl-C to the launcher's group", 1)])
def test_a_tokenize_stage_stopped_through_the_launcher_saves_and_exits_75(tmp_path, how, workers):
    """With 2 workers the stage's forked tokenizer pool must die on the pool's own SIGTERM (not wait for a step)."""
    """A kind other than pretraining, one process, in a process group of its own: the SIGTERM to the
    launcher's pid, or a terminal's SIGINT to the launcher's group, reaches it only through the launcher."""
    from compiler.ids import stage_id
    from compiler.schema.data import BPETokenizer, TokenizerInfo
    from runtime.registry import load_stage
    from runtime.stage import execute

    tokenizer, tokenize = load_stage("tokenizer"), load_stage("tokenize")
    bpe = BPETokenizer(vocab_size=512, training_documents_per_source=300)
    tok_cfg = tokenizer.Config(tokenizer=bpe, info=TokenizerInfo.of(bpe),
                               sources={"clean": {"kind": "builtin", "name": "demo-clean"}})
    tok_id = stage_id("tokenizer", tokenizer.VERSION, tok_cfg.id_json(), {})
    execute({"kind": "tokenizer", "id": tok_id, "version": tokenizer.VERSION, "config": tok_cfg.model_dump(mode="json"),
             "inputs": {}, "output": f"results/tokenizer/{tok_id}", "root": str(tmp_path)}, tokenizer)
    words = "the quick brown fox jumps over a lazy dog while you are kind and helpful".split()
    (tmp_path / "corpus.jsonl").write_text("".join(
        json.dumps({"text": " ".join(words[(i + j) % len(words)] for j in range(40))}) + "\n" for i in range(100_000)))
    cfg = tokenize.Config(source={"kind": "jsonl", "path": "corpus.jsonl"}, tokenizer=TokenizerInfo.of(bpe),
                          fills=None, tokens_per_file=4096, tokenize_workers=workers)
    inputs = {"tokenizer": f"results/tokenizer/{tok_id}"}
    sid = stage_id("tokenize", tokenize.VERSION, cfg.id_json(), {"tokenizer": tok_id})
    config = tmp_path / "tokenize.json"
    config.write_text(json.dumps({"kind": "tokenize", "id": sid, "version": tokenize.VERSION,
                                  "config": cfg.model_dump(mode="json"), "inputs": inputs,
                                  "output": f"results/tokenize/{sid}", "root": str(tmp_path),
                                  "resources": {"threads": 1}}))
    work = tmp_path / "results/.work/tokenize" / sid
    log = tmp_path / "tokenize.log"
    proc = start(launch(config, kind="tokenize", procs=1), log)
    wait_for(lambda: (work / "progress.json").exists(), proc, log, "a finished shard")
    if how == "SIGTERM to the launcher":
        os.kill(proc.pid, signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    status, stderr = finish(proc, log)
    assert status == 75, stderr[-3000:]
    assert "tokenize: received SIGTERM" in stderr
    assert last_line(stderr).startswith("preempted: tokenize: stopped on SIGTERM after saving")
    assert json.loads((work / "progress.json").read_text())["shards"]
    assert not (tmp_path / "results/tokenize" / sid).exists()


SLEEPER = """import os, signal, sys, time
if sys.argv[2] == "ignore-stop":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(os.path.join(sys.argv[1], "ready-" + os.environ.get("RANK", "0")), "w").close()
time.sleep(300)
"""


def sleeper(tmp_path: Path, procs: int, mode: str, grace_s: int = 60) -> tuple[subprocess.Popen, Path]:
    """A launch of a script that says it is ready and sleeps (ignoring SIGTERM in `ignore-stop` mode)."""
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    log = tmp_path / "sleeper.log"
    proc = start([sys.executable, "-m", "runtime.launch", "--nodes=1", f"--procs-per-node={procs}",
                  f"--stop-grace-s={grace_s}", "--", str(script), str(tmp_path), mode], log)
    wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == procs, proc, log, "ready workers")
    return proc, log


@pytest.mark.parametrize("how", ["grace period over", "Ctrl-C twice"])
def test_a_stage_that_does_not_stop_is_killed_after_its_grace_period_or_a_second_ctrl_c(tmp_path, how):
    proc, log = sleeper(tmp_path, 1, "ignore-stop", grace_s=1 if how == "grace period over" else 600)
    owned = owned_by(proc.pid)
    if how == "grace period over":
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
        wait_for(lambda: "forwarded to the stage" in log.read_text(), proc, log, "the first SIGINT forwarded")
        os.killpg(proc.pid, signal.SIGINT)
    status, stderr = finish(proc, log, timeout_s=30)
    assert status == 1
    assert "had not exited" in last_line(stderr) and "was killed" in last_line(stderr)
    assert owned and alive_after(owned, 5) == []


def test_torchruns_agent_sigkilled_takes_its_workers_and_the_launcher_says_so(tmp_path):
    proc, log = sleeper(tmp_path, 2, "sleep")
    owned = owned_by(proc.pid)
    (agent,) = [pid for pid in owned if proc_stat(pid)[1] == proc.pid]  # type: ignore[index]
    os.kill(agent, signal.SIGKILL)
    status, stderr = finish(proc, log, timeout_s=30)
    assert status == 128 + signal.SIGKILL
    assert "rank(s) [0, 1] ended without a status" in last_line(stderr)
    assert len(owned) == 3 and alive_after(owned, 5) == []


def test_a_launcher_whose_parent_is_killed_stops_the_stage(tmp_path):
    """Snakemake kills a job's shell, not its children: the launcher under it takes that as a stop."""
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    log = tmp_path / "orphan.log"
    argv = [sys.executable, "-m", "runtime.launch", "--nodes=1", "--procs-per-node=1", "--",
            str(script), str(tmp_path), "sleep"]
    shell = start(["bash", "-c", f"{shlex.join(argv)}; true"], log)     # `; true`: bash stays the parent
    wait_for(lambda: list(tmp_path.glob("ready-*")), shell, log, "a ready worker")
    (launcher,) = [pid for pid in owned_by_parent(shell.pid) if b"runtime.launch" in cmdline(pid)]
    owned = {**owned_by(launcher), launcher: proc_stat(launcher)[2]}  # type: ignore[index]
    shell.kill()
    shell.wait()
    assert alive_after(owned, 10) == []
    assert "launch: received SIGTERM" in log.read_text()
    assert "launch: stopped on SIGTERM before the stage saved anything" in log.read_text()


def owned_by_parent(parent: int) -> list[int]:
    return [int(e.name) for e in Path("/proc").iterdir()
            if e.name.isdigit() and (stat := proc_stat(int(e.name))) is not None and stat[1] == parent]


def cmdline(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""
