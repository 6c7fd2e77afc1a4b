"""pretrain stage: ai2-olmo training on tiny memmaps (loss falls, torchrun parity, resume) + HF export."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import ROOT, TOKENIZER_TEXTS, build_tiny_tokenizer

TINY_MODEL = dict(preset="tiny", d_model=32, n_heads=4, n_layers=2, mlp_ratio=4, max_sequence_length=64)
TINY_TRAIN = dict(
    sequence_length=32, global_batch_size=8, device_microbatch_size=2, learning_rate=3e-3,
    warmup_tokens=512, precision="fp32", distributed_strategy="ddp", checkpoint_interval_steps=4,
    log_interval_steps=1,
)


def write_artifacts(root: Path, *, n_documents: int = 400, seed: int = 0) -> dict[str, str]:
    """`tokenizer` and `mix` artifact folders under `root`, in the formats of runtime/ARTIFACTS.md."""
    tok = build_tiny_tokenizer()
    tok_dir, mix_dir = root / "results/tokenizer/t", root / "results/mix/m"
    (mix_dir / "tokens").mkdir(parents=True)
    tok_dir.mkdir(parents=True)
    tok.save(str(tok_dir / "tokenizer.json"))
    info = dict(identifier="bpe-300", vocab_size=tok.get_vocab_size(), embedding_size=384,
                eos_token_id=0, pad_token_id=1)
    (tok_dir / "info.json").write_text(json.dumps(info))
    rng = np.random.default_rng(seed)
    ids: list[int] = []
    for i in rng.integers(0, len(TOKENIZER_TEXTS), n_documents):
        ids += tok.encode(TOKENIZER_TEXTS[i]).ids + [info["eos_token_id"]]
    half = len(ids) // 2
    files = []
    for k, part in enumerate((ids[:half], ids[half:])):
        name = f"tokens/part-{k:05d}.npy"
        mm = np.memmap(mix_dir / name, dtype=np.uint16, mode="w+", shape=(len(part),))
        mm[:] = part
        mm.flush()
        files.append(name)
    (mix_dir / "manifest.json").write_text(json.dumps({"token_files": files}))
    for published in (tok_dir, mix_dir):       # the runtime reads only published inputs
        (published / "stage.json").write_text("{}")
    return {"tokenizer": "results/tokenizer/t", "mix": "results/mix/m"}


def envelope(root: Path, inputs: dict[str, str], *, max_steps: int = 12, seed: int = 0,
             model: dict[str, Any] | None = None, train: dict[str, Any] | None = None) -> dict[str, Any]:
    """A stage JSON as the compiler writes it, with the content id of its config (the runtime checks it)."""
    from compiler.ids import stage_id
    from runtime.registry import load_stage

    pretrain = load_stage("pretrain")
    info = json.loads((root / inputs["tokenizer"] / "info.json").read_text())
    config = dict(model=model or TINY_MODEL, vocab=info, train={**TINY_TRAIN, **(train or {})},
                  max_steps=max_steps, seed=seed)
    try:
        sid = stage_id("pretrain", pretrain.VERSION, pretrain.Config.model_validate(config).id_json(),
                       {k: Path(v).name for k, v in inputs.items()})
    except ValueError:                       # a config the stage refuses: the test expects that refusal
        sid = "pretrain-invalid"
    return {"kind": "pretrain", "id": sid, "version": pretrain.VERSION, "config": config, "inputs": inputs,
            "output": f"results/pretrain/{sid}", "root": str(root), "resources": {"threads": 1}}


def run_stage(root: Path, env: dict[str, Any]) -> Path:
    from runtime.registry import load_stage
    from runtime.stage import execute

    pretrain = load_stage("pretrain")
    return execute(env, pretrain, rank_zero=pretrain.is_rank_zero)


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """One uninterrupted 12-step CPU run; shared by the tests that compare against it."""
    root = tmp_path_factory.mktemp("pretrain")
    inputs = write_artifacts(root)
    return root, inputs, run_stage(root, envelope(root, inputs))


def test_training_lowers_loss_and_writes_the_contract(uninterrupted):
    import torch
    from olmo.config import TrainConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, _, out = uninterrupted
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 12 and metrics["tokens_trained"] == 12 * 8 * 32
    assert metrics["final_loss"] < metrics["initial_loss"] - 0.5, metrics
    assert metrics["tokens_per_second"] > 0 and metrics["n_params"] > 0
    # per-device throughput, windowed, and its run mean; no MFU on a CPU (no peak to divide by)
    assert metrics["device_tokens_per_second_mean"] > 0 and metrics["device_tokens_per_second_last_window"] > 0
    assert not any(k.startswith("mfu") for k in metrics)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_second", "device_tokens_per_second"} <= rows[0].keys()
    # one process: its device rate is the whole job's, up to the window
    assert metrics["device_tokens_per_second_mean"] == pytest.approx(metrics["tokens_per_second"], rel=1e-6)
    assert os.environ["OLMO_SHARED_FS"] == "1"  # one global rank writes ai2-olmo's shared data order
    # the saved ai2-olmo config is the one that built the run
    loaded = TrainConfig.load(out / "olmo" / "config.yaml")
    assert loaded.model.d_model == 32 and loaded.model.embedding_size == 384
    assert loaded.optimizer.name == "adamw" and loaded.optimizer.learning_rate == 3e-3
    # the HF export loads offline and matches the OLMo weights in olmo/model.pt
    hf = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert tok.eos_token_id == 0 and tok.pad_token_id == 1
    sd = torch.load(out / "olmo" / "model.pt", weights_only=True)
    assert torch.equal(hf.model.embed_tokens.weight, sd["transformer.wte.weight"])
    assert not (root / "results/.work/pretrain/pretrain-test").exists()  # checkpoints removed after success


def test_resume_after_crash_reaches_the_same_loss(uninterrupted, tmp_path, monkeypatch):
    """Crash right after the step-8 checkpoint; the rerun resumes from it and ends where the clean run did."""
    from runtime.pretrain import olmo_train

    _, _, clean_out = uninterrupted
    root = tmp_path                          # the same instance as the clean run, in a project of its own
    inputs = write_artifacts(root)
    env = envelope(root, inputs)
    work = root / "results/.work/pretrain" / env["id"]
    real_save = olmo_train.save_checkpoint
    saved_steps: list[int] = []

    def save_then_crash(work, step, *args, **kwargs):
        real_save(work, step, *args, **kwargs)
        saved_steps.append(step)
        if step == 8:
            raise RuntimeError("injected crash")

    monkeypatch.setattr(olmo_train, "save_checkpoint", save_then_crash)
    with pytest.raises(RuntimeError, match="injected crash"):
        run_stage(root, env)
    assert saved_steps == [4, 8]
    assert (work / "step-00000008.pt").exists()
    assert not (root / env["output"]).exists()

    monkeypatch.setattr(olmo_train, "save_checkpoint", real_save)
    resumed_from: list[int] = []
    real_load = olmo_train.load_checkpoint
    monkeypatch.setattr(olmo_train, "load_checkpoint",
                        lambda *a, **k: resumed_from.append(real_load(*a, **k)) or resumed_from[-1])
    out = run_stage(root, env)
    assert [r.step for r in resumed_from] == [8]
    assert losses(out) == losses(clean_out)  # bit-identical: same seed, data position, RNG and states
    clean = json.loads((clean_out / "metrics.json").read_text())
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["final_loss"] == clean["final_loss"] and resumed["initial_loss"] == clean["initial_loss"]


def test_unexportable_architecture_is_refused_before_training(tmp_path):
    from compiler.errors import StageError

    inputs = write_artifacts(tmp_path, n_documents=50)
    env = envelope(tmp_path, inputs, model={**TINY_MODEL, "layer_norm_with_affine": True})
    with pytest.raises(StageError, match="layer_norm_with_affine"):
        run_stage(tmp_path, env)
    assert not list((tmp_path / "results/.work/pretrain" / env["id"]).glob("step-*.pt"))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_torchrun_matches_one_process(uninterrupted, strategy, tmp_path):
    """`torchrun --standalone --nproc-per-node=2` (via runtime.launch) over gloo follows the 1-process curve.

    Both runs see the same global batches (rank r reads indices r::2 of each batch), start from the same
    CPU init and average gradients over ranks, so they agree up to float summation order: each step's
    loss within 1e-4 relative (observed: identical to all digits on this CPU).
    """
    _, _, clean_out = uninterrupted
    root = tmp_path                # the process layout is not in the id: a project of its own
    inputs = write_artifacts(root)
    env = envelope(root, inputs, train={"distributed_strategy": strategy})
    config = root / f"{strategy}.json"
    config.write_text(json.dumps(env))
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.launch", "--nodes=1", "--procs-per-node=2",  # the rules' launcher
         "--", "-m", "runtime", "pretrain", "--config", str(config)],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = root / env["output"]
    assert np.allclose(losses(out), losses(clean_out), rtol=1e-4, atol=0)
    import torch

    two, one = (torch.load(o / "olmo" / "model.pt", weights_only=True) for o in (out, clean_out))
    assert two.keys() == one.keys()
    assert all(torch.allclose(two[k], one[k], atol=1e-5) for k in one)
