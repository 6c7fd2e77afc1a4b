"""pretrain under a stop signal: finish the step, save it, exit 75; the rerun resumes and ends bit-identical.

The CPU stage runs as `python -m runtime pretrain` in a subprocess (as Snakemake runs it); the signal is
sent once a few steps are in its log. The only checkpoint is the one the signal causes (the periodic
interval is longer than the run), so a correct resume proves the stop-time save.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from test_pretrain import envelope, losses, run_stage, write_artifacts

MAX_STEPS = 40
NO_PERIODIC_CHECKPOINT = {"checkpoint_interval_steps": 1000}


def stage_json(root: Path) -> tuple[dict[str, Any], Path]:
    env = envelope(root, write_artifacts(root), max_steps=MAX_STEPS, train=NO_PERIODIC_CHECKPOINT)
    config = root / "pretrain.json"
    config.write_text(json.dumps(env))
    return env, config


def start(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runtime", "pretrain", "--config", str(config)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_logged_steps(log: Path, n: int, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    """Until the run's metrics.jsonl (in the work folder: rows appear as steps end) holds `n` rows."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before step {n}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"no step {n} in {log} after {timeout_s} s")


@pytest.fixture(scope="module")
def clean_out(tmp_path_factory) -> Path:
    """The same stage instance run without interruption (in a project of its own)."""
    root = tmp_path_factory.mktemp("clean")
    env, _ = stage_json(root)
    return run_stage(root, env)


def stop_mid_run(root: Path, sig: signal.Signals) -> tuple[dict[str, Any], Path, Path, int]:
    """Start the run, send `sig` after step 3, check the stop contract; (envelope, stage JSON, checkpoint,
    step it stopped after)."""
    env, config = stage_json(root)
    work = root / "results/.work/pretrain" / env["id"]
    proc = start(config)
    wait_for_logged_steps(work / "metrics.jsonl", 3, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 75, stderr[-3000:]
    assert f"received {sig.name}" in stderr and "preempted" in stderr
    assert not (root / env["output"]).exists()              # nothing published
    (checkpoint,) = work.glob("step-*.pt")                  # the stop-time save, the only one
    stopped_at = int(checkpoint.stem.split("-")[1])
    assert 3 <= stopped_at < MAX_STEPS
    assert f"step {stopped_at} of {MAX_STEPS}" in stderr
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == stopped_at
    return env, config, checkpoint, stopped_at


def test_sigterm_saves_and_the_rerun_resumes_bit_identical(clean_out, tmp_path):
    import torch

    env, config, checkpoint, stopped_at = stop_mid_run(tmp_path, signal.SIGTERM)
    proc = start(config)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    assert f"pretrain: resumed from {checkpoint} (step {stopped_at} of {MAX_STEPS})" in stderr
    out = tmp_path / env["output"]
    assert losses(out) == losses(clean_out)
    resumed, clean = (torch.load(o / "olmo" / "model.pt", weights_only=True) for o in (out, clean_out))
    assert resumed.keys() == clean.keys()
    assert all(torch.equal(resumed[k], clean[k]) for k in clean)


def test_sigusr1_early_warning_stops_the_same_way(tmp_path):
    """SLURM's `--signal=USR1@<s>`: the same finish-save-exit 75 (the resume is SIGTERM's test)."""
    stop_mid_run(tmp_path, signal.SIGUSR1)
