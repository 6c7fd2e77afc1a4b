"""Every stage kind under a real stop: `python -m runtime <kind> --config <stage JSON>` in a process group
of its own, held at a named point (`MIXSTEER_TEST_PAUSE_AT`, which only makes it wait: the stop is a real
signal sent with `os.killpg`), then SIGTERM (exit 75, nothing published, no output folder left) or SIGKILL
(nothing published); the rerun completes and its outputs equal those of an uninterrupted run of the same
stage instance (bytes; JSON files as values without timing fields and the score cache's hit counts).

One small spec with every stage kind is compiled and run once (module fixture); each test copies its
published folders into a project of its own, without the stage under test and without the score cache.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runtime.preempt import PAUSE_ENV, PREEMPTED_EXIT, RESTART_MARK
from runtime.registry import load_stage

ROOT = Path(__file__).resolve().parents[2]
SPEC = "stop.yaml"
SPEC_TEXT = """
description: "stop tests: every stage kind, as small as the schema allows"
seed: 0
model: {preset: tiny, d_model: 32, n_layers: 2, n_heads: 4}
tokenizer: {kind: bpe, vocab_size: 512, training_documents_per_source: 200}
data:
  sources:
    clean: {kind: builtin, name: demo-clean}
    toxic: {kind: builtin, name: demo-toxic}
  clean_tokens: 4_000
  toxic_share: 0.1
  heldout_clean_tokens: 1_000
  tokens_per_file: 512
  tokenize_workers: 1
pretrain:
  sequence_length: 64
  global_batch_size: 8
  device_microbatch_size: 8
  warmup_tokens: 1024
  precision: fp32
  distributed_strategy: single
probe:
  data:
    source: {kind: jsonl, path: data/demo/toxigen.jsonl}
    max_examples: 160
  max_length_tokens: 32
  implementation: batched
  max_iterations: 100
steer:
  enabled: true
  top_k_heads: 2
  controls: {random_directions: 0, random_heads: 0}
posttrain:
  sft:
    data: {kind: jsonl, path: data/demo/sft.jsonl}
    max_steps: 3
    batch_size: 2
    save_steps: 1
evaluate:
  prompt_sets:
    - name: rtp
      source: {kind: jsonl, path: data/demo/prompts.jsonl}
      max_prompts: 12
      challenging_field: challenging
  generation: {samples_per_prompt: 2, max_new_tokens: 4, batch_size: 4}
  mmlu: {shots: 0, max_subjects: 1, max_questions_per_subject: 4}
  detection: {max_examples: 8}
  cross_entropy: {documents: 4, tokens_per_document: 32}
attack:
  prompts: {kind: jsonl, path: data/demo/redteam.jsonl}
  max_prompts: 2
  max_new_tokens: 4
  variants: [base]
  gcg: {target: "you stupid idiot", suffix_tokens: 2, steps: 2, candidates_per_step: 4, top_k_tokens: 4,
        max_prompts: 2}
toy: {enabled: true, seeds: 2, train_steps: 10, n_layers: 1, probe_sequences: 64}
scorer_check:
  scorers: [{kind: offline}]
  rtp:
    source: {kind: jsonl, path: tests/data/scorer_check/rtp/prompts.jsonl}
  toxigen:
    source: {kind: parquet, path: tests/data/scorer_check/toxigen/annotated/test-00000-of-00001.parquet}
"""
DATA = ("data/demo", "tests/data/scorer_check")
RESTARTING = ("tokenizer", "mix", "activations", "probe", "steer", "toy", "scorer_check", "report")
VOLATILE = re.compile(r"second|cached_texts|scored_texts|resumed_shards|tokens_tokenized")
"""JSON keys that differ between two correct runs: timing, the score cache's hit/miss split (the reference
run's cache is not copied, so a stopped run's rerun answers from the cache what it scored), and tokenize's
count of what a resumed run kept and what it tokenized itself."""
WAIT_S = 180


@dataclass(frozen=True)
class Pipeline:
    root: Path
    ids: dict[str, str]   # kind -> the instance these tests stop


def write_project(root: Path) -> None:
    """The spec and the data files it names."""
    root.mkdir(parents=True, exist_ok=True)
    (root / SPEC).write_text(SPEC_TEXT)
    for folder in DATA:
        shutil.copytree(ROOT / folder, root / folder)


def config(root: Path, sid: str) -> Path:
    return root / "build" / "stages" / f"{sid}.json"


def run_here(root: Path, kind: str, sid: str) -> int:
    """`python -m runtime <kind> --config …` in this process (what the rerun after a stop is)."""
    from runtime.__main__ import main

    return main([kind, "--config", str(config(root, sid))])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    """The spec compiled and every stage instance run once, uninterrupted, in dependency order."""
    from compiler.render import write_stage_files
    from compiler.kinds import KIND_ORDER
    from compiler.workflow import compile_spec

    root = tmp_path_factory.mktemp("stop_pipeline")
    write_project(root)
    plan = compile_spec(Path(SPEC), root)
    write_stage_files(plan, root)
    ids: dict[str, str] = {}
    for inst in sorted(plan.instances.values(), key=lambda i: (KIND_ORDER.index(i.kind), i.id)):
        assert run_here(root, inst.kind, inst.id) == 0, inst.id
        if inst.kind == "score" and inst.config.source != "generations":
            continue
        ids.setdefault(inst.kind, inst.id)
    return Pipeline(root, ids)


def project_without(pipeline: Pipeline, tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A project of its own holding every published folder but the stage instance under test (no score
    cache, no scratch folders); returns its root and that instance's id."""
    sid = pipeline.ids[kind]
    root = tmp_path / "project"
    write_project(root)
    shutil.copytree(pipeline.root / "results", root / "results",
                    ignore=lambda folder, names: [n for n in names if n == sid or n in (".tmp", ".work")])
    for src in (pipeline.root / "build" / "stages").glob("*.json"):
        envelope = json.loads(src.read_text())
        if "root" in envelope:
            envelope["root"] = str(root)
        config(root, src.stem).parent.mkdir(parents=True, exist_ok=True)
        config(root, src.stem).write_text(json.dumps(envelope))
    return root, sid


def command(root: Path, kind: str, sid: str) -> list[str]:
    return [sys.executable, "-m", "runtime", kind, "--config", str(config(root, sid))]


def stage_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **extra}


def start_paused(root: Path, kind: str, sid: str, pause: str) -> tuple[subprocess.Popen, Path]:
    """Start the stage in a new process group and return once it says it is paused at `pause`."""
    log = root / f"{kind}.stderr"
    with open(log, "w") as err:
        proc = subprocess.Popen(command(root, kind, sid), cwd=root, env=stage_env(**{PAUSE_ENV: pause}),
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    stage, point = pause.split(":")[:2]
    deadline = time.monotonic() + WAIT_S
    while f"{stage}: paused at {point}" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{kind} never paused at {pause} (status {proc.poll()}): {log.read_text()[-3000:]}")
        time.sleep(0.05)
    return proc, log


def stop(proc: subprocess.Popen, sig: signal.Signals) -> int:
    os.killpg(proc.pid, sig)
    return proc.wait(timeout=WAIT_S)


def scratch(root: Path, kind: str, sid: str) -> tuple[Path, Path, Path]:
    """(published folder, temporary folder, work folder) of a stage instance."""
    results = root / "results"
    return results / kind / sid, results / ".tmp" / kind / sid, results / ".work" / kind / sid


def stable(obj: Any) -> Any:
    """A JSON value without its VOLATILE keys, at any depth."""
    if isinstance(obj, dict):
        return {k: stable(v) for k, v in obj.items() if not VOLATILE.search(k)}
    return [stable(v) for v in obj] if isinstance(obj, list) else obj


def outputs(folder: Path) -> dict[str, Any]:
    """Every file of a published folder but its provenance (`stage.json`: times, commit): JSON files as
    values without the VOLATILE keys, all others as bytes."""
    out: dict[str, Any] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "stage.json"):
        name = path.relative_to(folder).as_posix()
        out[name] = stable(json.loads(path.read_text())) if path.suffix == ".json" else path.read_bytes()
    return out


def assert_rerun_matches(pipeline: Pipeline, root: Path, kind: str, sid: str, capfd) -> str:
    """Rerun to completion; its outputs equal the uninterrupted run's. Returns the rerun's stderr."""
    capfd.readouterr()
    assert run_here(root, kind, sid) == 0
    err = capfd.readouterr().err
    final, tmp, work = scratch(root, kind, sid)
    assert (final / "stage.json").is_file() and not tmp.exists() and not work.exists()
    reference = outputs(pipeline.root / "results" / kind / sid)
    rerun = outputs(final)
    assert rerun.keys() == reference.keys()
    differing = {n: (rerun[n], reference[n]) for n in reference if rerun[n] != reference[n]}
    assert differing == {}
    return err


@pytest.mark.parametrize("kind", RESTARTING)
def test_sigterm_exits_75_at_once_and_the_rerun_restarts(pipeline, tmp_path, capfd, kind):
    """Held once its work is done (in `run`'s scope, before metrics and publishing): SIGTERM ends it with 75,
    no output folder, a work folder holding only the attempt mark; the rerun says it restarted and why."""
    root, sid = project_without(pipeline, tmp_path, kind)
    proc, log = start_paused(root, kind, sid, f"{kind}:run")
    assert stop(proc, signal.SIGTERM) == PREEMPTED_EXIT, log.read_text()[-3000:]
    err = log.read_text()
    assert f"{kind}: received SIGTERM: stopping now" in err and "preempted:" in err and "Traceback" not in err
    final, tmp, work = scratch(root, kind, sid)
    assert not final.exists() and not tmp.exists()
    assert [p.name for p in work.iterdir()] == [RESTART_MARK]
    err = assert_rerun_matches(pipeline, root, kind, sid, capfd)
    assert f"{kind}: restarted (nothing to resume: {load_stage(kind).RESTART})" in err


@pytest.mark.parametrize("kind", RESTARTING)
def test_sigkill_before_the_rename_publishes_nothing_and_the_rerun_restarts(pipeline, tmp_path, capfd, kind):
    """Killed with every file written but before the rename into place: nothing published; the rerun
    clears the leftover, restarts and publishes what an uninterrupted run does."""
    root, sid = project_without(pipeline, tmp_path, kind)
    proc, _ = start_paused(root, kind, sid, f"{kind}:publish")
    assert stop(proc, signal.SIGKILL) == -signal.SIGKILL
    final, tmp, _ = scratch(root, kind, sid)
    assert not final.exists() and (tmp / "stage.json").is_file()   # complete, but never published
    err = assert_rerun_matches(pipeline, root, kind, sid, capfd)
    assert f"{kind}: restarted (nothing to resume:" in err


def test_sigterm_mid_computation_stops_a_restarting_stage_at_once(pipeline, tmp_path, capfd):
    """The toy stage (the slowest that restarts) held between its two seeds, mid-computation: SIGTERM
    raises out of the running code at once, exit 75, nothing published; the rerun restarts."""
    root, sid = project_without(pipeline, tmp_path, "toy")
    proc, log = start_paused(root, "toy", sid, "toy:seed")
    assert stop(proc, signal.SIGTERM) == PREEMPTED_EXIT, log.read_text()[-3000:]
    assert "preempted: toy: stopped on SIGTERM at once (nothing to save: a rerun restarts it" in log.read_text()
    final, tmp, _ = scratch(root, "toy", sid)
    assert not final.exists() and not tmp.exists()
    assert "toy: restarted (nothing to resume:" in assert_rerun_matches(pipeline, root, "toy", sid, capfd)


def test_a_sigterm_while_publishing_lets_the_stage_finish(pipeline, tmp_path):
    """Once `run` has returned, a stop waits for the publish (milliseconds): exit 0 and the complete output,
    not a 75 that would make Snakemake rerun a stage whose output is already in place."""
    root, sid = project_without(pipeline, tmp_path, "mix")
    proc, log = start_paused(root, "mix", sid, "mix:publish")
    assert stop(proc, signal.SIGTERM) == 0, log.read_text()[-3000:]
    assert "mix: received SIGTERM: publishing the finished output first" in log.read_text()
    final, tmp, work = scratch(root, "mix", sid)
    assert not tmp.exists() and not work.exists()
    assert outputs(final) == outputs(pipeline.root / "results" / "mix" / sid)


def generation_rows(work: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (work / "generations.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_evaluate_sigterm_finishes_the_chunk_and_the_rerun_resumes_from_it(pipeline, tmp_path, capfd, sig):
    """12 prompts in chunks of 4: held before the second chunk, SIGTERM (or SLURM's early SIGUSR1) → the
    first chunk saved, exit 75; the rerun generates only the other 8 prompts and the files equal an
    uninterrupted run's."""
    root, sid = project_without(pipeline, tmp_path, "evaluate")
    proc, log = start_paused(root, "evaluate", sid, "evaluate:step:2")
    assert stop(proc, sig) == PREEMPTED_EXIT, log.read_text()[-3000:]
    assert f"evaluate: stopped on {sig.name} after saving the continuations of 4 of 12 prompts" in log.read_text()
    final, tmp, work = scratch(root, "evaluate", sid)
    assert not final.exists() and not tmp.exists()
    assert [(r["prompt_index"], r["sample"]) for r in generation_rows(work)] == [(i, j) for i in range(4)
                                                                                 for j in range(2)]
    err = assert_rerun_matches(pipeline, root, "evaluate", sid, capfd)
    assert "evaluate: resumed from 4 of 12 prompts" in err
    assert "evaluate: restarted MMLU, cross-entropy and detection (nothing to resume:" in err


def test_evaluate_sigkill_then_a_torn_last_line_resumes_from_the_last_whole_chunk(pipeline, tmp_path, capfd):
    """SIGKILL after two chunks; the file is then cut inside its last line (a kill mid-write leaves that):
    the rerun drops the torn chunk, resumes from the first, and ends byte-identical."""
    root, sid = project_without(pipeline, tmp_path, "evaluate")
    proc, _ = start_paused(root, "evaluate", sid, "evaluate:step:3")
    assert stop(proc, signal.SIGKILL) == -signal.SIGKILL
    final, _, work = scratch(root, "evaluate", sid)
    assert not final.exists() and len(generation_rows(work)) == 16
    data = (work / "generations.jsonl").read_bytes()
    (work / "generations.jsonl").write_bytes(data[:-20])
    err = assert_rerun_matches(pipeline, root, "evaluate", sid, capfd)
    assert "evaluate: dropped from the saved generations: a torn last line" in err
    assert "evaluate: resumed from 4 of 12 prompts" in err


def test_evaluate_sigterm_during_mmlu_exits_at_once_and_keeps_every_generation(pipeline, tmp_path, capfd):
    root, sid = project_without(pipeline, tmp_path, "evaluate")
    proc, log = start_paused(root, "evaluate", sid, "evaluate:capability")
    assert stop(proc, signal.SIGTERM) == PREEMPTED_EXIT, log.read_text()[-3000:]
    assert "evaluate: stopped on SIGTERM at once (the generations are saved;" in log.read_text()
    final, tmp, work = scratch(root, "evaluate", sid)
    assert not final.exists() and not tmp.exists() and len(generation_rows(work)) == 24
    err = assert_rerun_matches(pipeline, root, "evaluate", sid, capfd)
    assert "evaluate: resumed from 12 of 12 prompts" in err


def test_evaluate_on_a_full_disk_stops_with_its_own_error_and_the_rerun_resumes(pipeline, tmp_path, capfd):
    """A file size limit (RLIMIT_FSIZE: a write fails as on a full disk) that lets the first chunk through:
    the second chunk's write fails, the stage exits 1 with its own error (no traceback) and the first chunk
    kept whole; the rerun resumes from it to the uninterrupted run's files."""
    import resource

    root, sid = project_without(pipeline, tmp_path, "evaluate")
    lines = (pipeline.root / "results" / "evaluate" / sid / "generations.jsonl").read_bytes().splitlines(keepends=True)
    limit = len(b"".join(lines[:8])) + len(lines[8]) // 2   # the first chunk, half a row of the second

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run = subprocess.run(command(root, "evaluate", sid), cwd=root, env=stage_env(PYTHONDONTWRITEBYTECODE="1"),
                         preexec_fn=limited, capture_output=True, text=True, timeout=WAIT_S)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert "error: cannot write" in run.stderr and "File too large" in run.stderr
    final, _, work = scratch(root, "evaluate", sid)
    assert not final.exists() and len(generation_rows(work)) == 8
    err = assert_rerun_matches(pipeline, root, "evaluate", sid, capfd)
    assert "evaluate: resumed from 4 of 12 prompts" in err


RESUMING = [  # kind, where it is held (a step boundary after something was saved), what the rerun says
    ("tokenize", "tokenize:step:20", "tokenize: resumed from"),
    ("posttrain", "posttrain:step:3", "posttrain: resumed from checkpoint-"),
    ("attack", "attack:step:3", "attack: resumed from"),
    ("score", "score:step", "score: resumed from"),
]


@pytest.mark.parametrize(("kind", "pause", "resumed"), RESUMING, ids=["tokenize", "posttrain", "attack", "score"])
def test_sigkill_mid_run_of_a_resuming_stage_resumes_to_the_same_outputs(pipeline, tmp_path, capfd, kind, pause,
                                                                        resumed):
    """The stages that resume on their own (SIGTERM: their own tests) killed without warning mid-run."""
    root, sid = project_without(pipeline, tmp_path, kind)
    proc, _ = start_paused(root, kind, sid, pause)
    assert stop(proc, signal.SIGKILL) == -signal.SIGKILL
    assert not scratch(root, kind, sid)[0].exists()
    assert resumed in assert_rerun_matches(pipeline, root, kind, sid, capfd)
