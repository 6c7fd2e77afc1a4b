"""The `attack` stage stopped by SIGTERM in the middle of a GCG prompt, and then killed while writing a
row, resumes on the rerun and writes the same attacks.jsonl as an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from test_gcg import PROMPTS, SUFFIX_TOKENS, TARGET, one_thread, planted_dir  # noqa: F401 (fixtures)

from compiler.errors import StageError
from runtime.preempt import Preempted
from runtime.stage import StageContext

ATTACK = {"prompts": {"kind": "jsonl", "path": "redteam.jsonl", "text_field": "goal"}, "max_new_tokens": 12,
          "judge": "toxicity", "gcg": {"target": TARGET, "suffix_tokens": SUFFIX_TOKENS, "steps": 20,
                                       "candidates_per_step": 4, "top_k_tokens": 64, "max_prompts": 3}}


class GradientSpy:
    """Counts GCG steps (one suffix gradient each); sends SIGTERM to this process during step `sigterm_at`."""

    def __init__(self, monkeypatch, sigterm_at: int | None = None) -> None:
        import runtime.attack.gcg as gcg

        self.steps, real = 0, gcg.suffix_gradient

        def gradient(*args, **kwargs):
            self.steps += 1
            if self.steps == sigterm_at:
                os.kill(os.getpid(), signal.SIGTERM)
            return real(*args, **kwargs)

        monkeypatch.setattr(gcg, "suffix_gradient", gradient)


def run_attack(root: Path, out_name: str, model_dir: Path) -> tuple[dict, Path]:
    """The stage on PROMPTS; every run under `root` shares one work folder (as reruns of one stage id do)."""
    from runtime import attack as stage

    root.mkdir(exist_ok=True)
    (root / "redteam.jsonl").write_text("".join(json.dumps({"goal": p}) + "\n" for p in PROMPTS))
    out = root / out_name
    out.mkdir()
    ctx = StageContext(kind="attack", stage_id="attack-test", root=root, out=out, work=root / "work",
                       inputs={"model": model_dir}, threads=1)
    return stage.run(stage.Config.model_validate({"attack": ATTACK, "seed": 0}), ctx), out / "attacks.jsonl"


def test_stopped_and_torn_attack_resumes_to_the_uninterrupted_rows(tmp_path, planted_dir, monkeypatch, capsys):
    whole_spy = GradientSpy(monkeypatch)
    whole_metrics, whole = run_attack(tmp_path / "whole", "out", planted_dir)
    steps = [r["steps_run"] for r in map(json.loads, whole.read_text().splitlines()) if r["attack"] == "gcg"]
    assert whole_spy.steps == sum(steps) and steps[1] > 2, "prompt 1 must still be searching after its step 2"

    root = tmp_path / "interrupted"
    spy = GradientSpy(monkeypatch, sigterm_at=steps[0] + 2)
    with pytest.raises(Preempted, match=r"attack: stopped on SIGTERM after saving GCG prompt 1 at step 2 \(1 of 3"):
        run_attack(root, "stopped", planted_dir)
    assert spy.steps == steps[0] + 2, "the step in flight finished, no further one started"
    work = root / "work"
    assert len((work / "gcg_rows.jsonl").read_text().splitlines()) == 1
    assert json.loads((work / "gcg_state.json").read_text())["prompt_index"] == 1
    with open(work / "gcg_rows.jsonl", "a") as f:  # a later run killed while writing prompt 1's row
        f.write('{"attack": "gcg", "prompt_index": 1, "prom')
    capsys.readouterr()

    spy = GradientSpy(monkeypatch)
    metrics, resumed = run_attack(root, "resumed", planted_dir)
    err = capsys.readouterr().err
    assert "attack: ignoring the torn last line of" in err
    assert "attack: resumed from 1 of 3 GCG prompts, prompt 1 at step 2" in err
    assert spy.steps == sum(steps) - steps[0] - 2
    assert resumed.read_bytes() == whole.read_bytes() and metrics == whole_metrics
    assert not (work / "gcg_state.json").exists()


def test_finished_rows_that_are_not_this_stages_are_refused(tmp_path):
    from runtime.attack import GCGProgress, RedTeamPrompt

    prompts = [RedTeamPrompt(p, TARGET) for p in PROMPTS]
    progress = GCGProgress(tmp_path)
    progress.append({"attack": "gcg", "prompt_index": 0, "prompt": PROMPTS[0]})
    assert progress.finished(prompts) == [{"attack": "gcg", "prompt_index": 0, "prompt": PROMPTS[0]}]
    progress.append({"attack": "gcg", "prompt_index": 1, "prompt": "another prompt"})
    with pytest.raises(StageError, match=r"gcg_rows.jsonl:2 is not the GCG row of prompt 1 .* delete"):
        progress.finished(prompts)
    (tmp_path / "gcg_rows.jsonl").write_text('{"attack": "gcg", "prompt_index": 0, "prompt": "x"\n')
    with pytest.raises(StageError, match=r"gcg_rows.jsonl:1 is not the GCG row of prompt 0"):
        progress.finished(prompts)
