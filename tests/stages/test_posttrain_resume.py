"""`posttrain` resumes from the newest complete checkpoint: a run killed after a checkpoint, with newer
half-written ones next to it, and a run stopped by SIGTERM both end on the uninterrupted run's weights."""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Callable

import pytest
import torch
from test_posttrain import load, run_posttrain, sft_cfg
from transformers import Trainer

from runtime.posttrain import checkpoint_problem
from runtime.preempt import Preempted

STEPS = 6
"""Checkpoints every 2 steps (sft_cfg's save_steps)."""


class Killed(Exception):
    """What a SIGKILL looks like from inside the run: it never comes back."""


class StepSpy:
    """Counts the Trainer's training steps; runs `action` inside step `at` (1-based, counted per spy)."""

    def __init__(self, monkeypatch, at: int | None = None, action: Callable[[], None] | None = None) -> None:
        self.steps, self.at, self.action = 0, at, action
        real = Trainer.training_step

        def step(trainer, *args, **kwargs):
            self.steps += 1
            if self.steps == self.at:
                self.action()
            return real(trainer, *args, **kwargs)

        monkeypatch.setattr(Trainer, "training_step", step)


def checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("checkpoint-"))


def assert_same_weights(expected: Path, got: Path) -> None:
    """Bit-identical: the resumed run replays the same batches (data order and RNG state restored) through
    the same fp32 CPU kernels, so nothing may differ."""
    got_params = dict(load(got).named_parameters())
    for name, param in load(expected).named_parameters():
        assert torch.equal(got_params[name], param), f"{name} differs from the uninterrupted run"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model_dir) -> Path:
    """The model folder of a run that was never stopped, and its complete final checkpoint's folder."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    out, metrics = run_posttrain(tmp, tiny_model_dir, sft_cfg(tmp, max_steps=STEPS))
    assert metrics["steps"] == STEPS
    return tmp


def test_rerun_skips_half_written_checkpoints_and_ends_on_the_uninterrupted_weights(
        tmp_path, tiny_model_dir, uninterrupted, monkeypatch, capsys):
    cfg, work = sft_cfg(tmp_path, max_steps=STEPS), tmp_path / "work"

    def kill() -> None:
        raise Killed

    StepSpy(monkeypatch, at=3, action=kill)
    with pytest.raises(Killed):
        run_posttrain(tmp_path / "killed", tiny_model_dir, cfg, work)
    sft = work / "sft"
    assert checkpoints(sft) == ["checkpoint-2"]
    # two newer checkpoints killed mid-save: one before its trainer state, one in the middle of its weights
    shutil.copytree(sft / "checkpoint-2", sft / "checkpoint-4")
    (sft / "checkpoint-4" / "trainer_state.json").unlink()
    shutil.copytree(sft / "checkpoint-2", sft / "checkpoint-6")
    weights = sft / "checkpoint-6" / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    capsys.readouterr()

    spy = StepSpy(monkeypatch)
    out, metrics = run_posttrain(tmp_path / "rerun", tiny_model_dir, cfg, work)
    err = capsys.readouterr().err
    assert "posttrain: skipping half-written checkpoint-6: model.safetensors is" in err
    assert "posttrain: skipping half-written checkpoint-4: no trainer_state.json" in err
    assert "posttrain: resumed from checkpoint-2 (step 2 of 6)" in err
    assert spy.steps == STEPS - 2 and metrics["steps"] == STEPS
    assert checkpoints(work / "sft-incomplete") == ["checkpoint-4", "checkpoint-6"]  # out of the Trainer's way
    assert checkpoints(sft) == ["checkpoint-4", "checkpoint-6"]  # rewritten by the rerun, rotated to 2
    assert_same_weights(uninterrupted / "out" / "model", out / "model")


def test_sigterm_ends_the_step_with_a_checkpoint_and_the_rerun_resumes_there(
        tmp_path, tiny_model_dir, uninterrupted, monkeypatch, capsys):
    cfg, work = sft_cfg(tmp_path, max_steps=STEPS), tmp_path / "work"
    handler = signal.getsignal(signal.SIGTERM)
    spy = StepSpy(monkeypatch, at=3, action=lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(Preempted, match="posttrain: stopped on SIGTERM after saving checkpoint-3"):
        run_posttrain(tmp_path / "stopped", tiny_model_dir, cfg, work)
    assert spy.steps == 3, "the step in flight finished, no further one started"
    assert signal.getsignal(signal.SIGTERM) is handler
    assert checkpoint_problem(work / "sft" / "checkpoint-3") is None  # 3 is not a save_steps multiple
    assert not (tmp_path / "stopped" / "out").exists()
    capsys.readouterr()

    spy = StepSpy(monkeypatch)
    out, metrics = run_posttrain(tmp_path / "rerun", tiny_model_dir, cfg, work)
    assert "posttrain: resumed from checkpoint-3 (step 3 of 6)" in capsys.readouterr().err
    assert spy.steps == STEPS - 3 and metrics["steps"] == STEPS
    assert_same_weights(uninterrupted / "out" / "model", out / "model")


@pytest.mark.parametrize("piece", ["trainer_state.json", "model.safetensors", "optimizer.pt", "scheduler.pt",
                                   "rng_state.pth"])
def test_a_checkpoint_missing_or_cutting_short_any_piece_is_incomplete(tmp_path, uninterrupted, piece):
    final = uninterrupted / "work" / "sft" / f"checkpoint-{STEPS}"
    assert checkpoint_problem(final) is None
    missing = shutil.copytree(final, tmp_path / "missing")
    (missing / piece).unlink()
    assert checkpoint_problem(missing) == f"no {piece}"
    cut = shutil.copytree(final, tmp_path / "cut")
    os.truncate(cut / piece, (cut / piece).stat().st_size - 7)
    assert checkpoint_problem(cut) is not None
    assert piece in checkpoint_problem(cut)
