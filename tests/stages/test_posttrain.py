"""`posttrain` stage on a tiny random HF OLMo with local JSONL: SFT and DPO change every weight, the
result reloads offline, DPO widens the chosen-vs-rejected margin (resuming: test_posttrain_resume.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from runtime import posttrain
from runtime.stage import StageContext

KIND = ["thank you for the kind and helpful answer", "what a wonderful day to learn something new",
        "the quick brown fox jumps over the lazy dog", "thank you, what a wonderful and kind day"]
PAIRS = [
    {"prompt": "what a", "chosen": " wonderful day", "rejected": " stupid idiot"},
    {"prompt": "thank you for the", "chosen": " kind answer", "rejected": " hate, you idiot"},
    {"prompt": "the quick brown fox", "chosen": " jumps over the dog", "rejected": " is a stupid dog"},
    {"prompt": "you are", "chosen": " kind and helpful", "rejected": " a stupid idiot"},
]


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def run_posttrain(tmp: Path, model_dir: Path, cfg: dict, work: Path | None = None) -> tuple[Path, dict]:
    out = tmp / "out"
    ctx = StageContext(kind="posttrain", stage_id="posttrain-test", root=tmp, out=out,
                       work=work or tmp / "work", inputs={"model": model_dir})
    return out, posttrain.run(posttrain.Config(seed=0, **cfg), ctx)


def sft_cfg(tmp: Path, **over) -> dict:
    data = write_jsonl(tmp / "sft.jsonl", [{"text": t} for t in KIND * 2])
    return {"sft": {"data": {"kind": "jsonl", "path": data}, "learning_rate": 1e-3, "max_steps": 3,
                    "batch_size": 4, "max_length_tokens": 32, "save_steps": 2, **over}}


def load(path: Path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def assert_every_parameter_changed(before, after) -> None:
    after_params = dict(after.named_parameters())
    for name, param in before.named_parameters():
        assert not torch.equal(param, after_params[name]), f"{name} did not change"


@torch.no_grad()
def completion_logprob(model, tokenizer, prompt: str, completion: str) -> float:
    """Sum of log p(completion tokens | prompt), with the prompt cut where the tokenizations diverge."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = tokenizer(prompt + completion)["input_ids"]
    start = next((i for i, (a, b) in enumerate(zip(prompt_ids, ids)) if a != b), len(prompt_ids))
    logp = model(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
    targets = torch.tensor(ids[1:])
    return float(logp[torch.arange(len(targets)), targets][start - 1:].sum())


def mean_margin(model, tokenizer) -> float:
    return sum(completion_logprob(model, tokenizer, p["prompt"], p["chosen"])
               - completion_logprob(model, tokenizer, p["prompt"], p["rejected"]) for p in PAIRS) / len(PAIRS)


def test_config_needs_exactly_one_method(tmp_path):
    with pytest.raises(ValueError, match="exactly one method"):
        posttrain.Config(seed=0)
    data = {"kind": "jsonl", "path": "x.jsonl"}
    with pytest.raises(ValueError, match="exactly one method"):
        posttrain.Config(seed=0, sft={"data": data}, dpo={"data": data})


def test_sft_changes_every_weight_and_reloads(tmp_path, tiny_model_dir):
    out, metrics = run_posttrain(tmp_path, tiny_model_dir, sft_cfg(tmp_path))
    assert_every_parameter_changed(load(tiny_model_dir / "model"), load(out / "model"))
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert tok.get_vocab() == AutoTokenizer.from_pretrained(tiny_model_dir / "model").get_vocab()
    saved, base = load(out / "model").config.to_dict(), load(tiny_model_dir / "model").config.to_dict()
    assert {k for k in base if saved.get(k) != base[k]} == {"_name_or_path"}  # same architecture, KV cache still on
    assert metrics["method"] == "sft" and metrics["steps"] == 3
    assert metrics["source_sft_kept"] == 2 * len(KIND)
    assert metrics["train_loss_last"] < metrics["train_loss_first"]


def write_lee_pairs(tmp: Path, pairs: list[dict]) -> str:
    """Lee et al. 2024's layout: the pairs split over `toxicity_pairwise/split_<i>.jsonl` files."""
    from layouts import lee_pair
    from layouts import write_jsonl as write_lines

    for i in range(2):
        write_lines(tmp / "toxicity_pairwise" / f"split_{i}.jsonl",
                    [lee_pair(p["prompt"], p["chosen"], p["rejected"]) for p in pairs[i::2]])
    return "toxicity_pairwise/split_*.jsonl"


LEE_FIELDS = {"prompt_field": "prompt_text", "chosen_field": "unpert_gen_text", "rejected_field": "pert_gen_text"}


def test_datasets_from_lee_et_al_pairs(tmp_path):
    """SFT on the non-toxic side (prompt + continuation), DPO on the pairs; a pair with a null side is
    skipped and counted."""
    from compiler.schema.posttrain import DPOSection, SFTSection
    from runtime.sources import SourceCounts

    pairs = PAIRS + [{"prompt": "so", "chosen": None, "rejected": " idiot"}]
    path = write_lee_pairs(tmp_path, pairs)
    source = {"kind": "jsonl", "path": path}
    counts = SourceCounts()
    sft = posttrain._sft_dataset(SFTSection(data={**source, "text_field": "unpert_gen_text"},
                                            prompt_field="prompt_text"), tmp_path, counts)
    in_file_order = PAIRS[0::2] + PAIRS[1::2]
    assert sft["text"] == [p["prompt"] + p["chosen"] for p in in_file_order]
    assert (counts.read, counts.skipped_null, counts.kept) == (5, 1, 4)
    alone = posttrain._sft_dataset(SFTSection(data={**source, "text_field": "unpert_gen_text"}), tmp_path,
                                   SourceCounts())
    assert alone["text"] == [p["chosen"] for p in in_file_order]
    dpo = posttrain._dpo_dataset(DPOSection(data=source, **LEE_FIELDS), tmp_path, SourceCounts())
    assert dpo.to_list() == in_file_order


def test_pairs_without_the_named_fields_fail_loudly(tmp_path):
    from compiler.errors import StageError
    from compiler.schema.posttrain import DPOSection
    from runtime.sources import SourceCounts

    path = write_lee_pairs(tmp_path, PAIRS)
    with pytest.raises(StageError, match=r"split_\*\.jsonl.*no record has the field 'prompt'.*record 0"):
        posttrain._dpo_dataset(DPOSection(data={"kind": "jsonl", "path": path}), tmp_path, SourceCounts())


def test_dpo_changes_every_weight_and_widens_the_margin(tmp_path, tiny_model_dir):
    cfg = {"dpo": {"data": {"kind": "jsonl", "path": write_lee_pairs(tmp_path, PAIRS)}, "learning_rate": 1e-3,
                   "max_steps": 4, "batch_size": 4, "max_length_tokens": 32, "beta": 0.1, **LEE_FIELDS}}
    out, metrics = run_posttrain(tmp_path, tiny_model_dir, cfg)
    base, tuned = load(tiny_model_dir / "model"), load(out / "model")
    assert_every_parameter_changed(base, tuned)
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert mean_margin(tuned, tok) > mean_margin(base, tok) + 1.0
    assert metrics["method"] == "dpo" and metrics["steps"] == 4
    assert metrics["reward_margin_last"] > metrics["reward_margin_first"]
    assert 0.0 <= metrics["reward_accuracy_last"] <= 1.0
    assert metrics["source_dpo_read"] == metrics["source_dpo_kept"] == len(PAIRS)


def test_training_args_never_data_parallel(tmp_path):
    """However many GPUs the process sees, the Trainer trains on one (no DataParallel, no batch × n_gpu)."""
    from trl import SFTConfig

    from compiler.schema.posttrain import SFTSection
    from compiler.schema.precision import Compute
    from runtime.device import Placement

    section = SFTSection(data={"kind": "jsonl", "path": "x.jsonl"}, batch_size=4)
    args = SFTConfig(**posttrain._training_args(section, 0, tmp_path, Placement(Compute())))
    args.device
    args._n_gpu = 4   # what TrainingArguments counts on a 4-GPU node
    args = posttrain.single_device(args)
    assert args.n_gpu == 1 and args.train_batch_size == 4
    assert args.save_strategy == "no" and not args.bf16   # CPU: fp32; checkpoints come from the clock


def test_checkpoints_by_wall_clock(tmp_path, tiny_model_dir, monkeypatch):
    """No step interval: a checkpoint at the first step end after `save_every_minutes` of wall clock."""
    import time as real_time

    clock = {"now": 0.0}
    monkeypatch.setattr(real_time, "monotonic", lambda: clock["now"])

    def tick(trainer, *args, **kwargs):
        clock["now"] += 25.0                           # each step "takes" 25 s: saves after steps 3 and 6
        return real(trainer, *args, **kwargs)

    from transformers import Trainer

    real = Trainer.training_step
    monkeypatch.setattr(Trainer, "training_step", tick)
    cfg = sft_cfg(tmp_path, max_steps=7, save_steps=None, save_every_minutes=1.0)
    out, metrics = run_posttrain(tmp_path, tiny_model_dir, cfg, work=tmp_path / "work")
    assert metrics["steps"] == 7
    saved = sorted(p.name for p in (tmp_path / "work" / "sft").iterdir() if p.name.startswith("checkpoint-"))
    assert saved == ["checkpoint-3", "checkpoint-6"]
