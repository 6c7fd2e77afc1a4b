"""`posttrain` stage: SFT or DPO with TRL on a model folder.

Reads: a model folder (`model/`) and the method's dataset through the source's reader (`runtime.sources`:
dotted fields, cleaning, filters, sampling). SFT: one text per record, `prompt_field` + `text_field` when
a prompt field is set; DPO: `prompt_field` / `chosen_field` / `rejected_field`, plain text: no chat
template ships with the tokenizer, so TRL tokenizes prompt + completion. A record with any of these
fields absent, null or empty is skipped and counted. Writes: `model/` (HF checkpoint + the input's
tokenizer files). Metrics: steps, first/last loss (DPO: reward margin and accuracy) and the reader's
counts, `source_sft_<count>` or `source_dpo_<count>`. Checkpoints go to `ctx.work/<method>/`
every `save_steps`; a rerun after a kill resumes from the last one. Its id changes with the method's
section (data, hyperparameters) and the seed.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import model_validator

from compiler.errors import StageError
from compiler.schema.base import StrictModel
from compiler.schema.posttrain import DPOSection, SFTSection
from runtime.stage import StageContext

if TYPE_CHECKING:
    from runtime.sources import SourceCounts

VERSION = 2
"""Bump by hand whenever a change of this module changes results (it changes every id)."""

WEIGHT_FILES = ("config.json", "generation_config.json", "model.safetensors",
                "model.safetensors.index.json", "pytorch_model.bin")
"""Files of the input model folder that `save_pretrained` rewrites; every other file is copied."""


class Config(StrictModel):
    sft: SFTSection | None = None
    dpo: DPOSection | None = None
    seed: int

    @model_validator(mode="after")
    def _exactly_one_method(self) -> "Config":
        if (self.sft is None) == (self.dpo is None):
            raise ValueError("a posttrain stage trains exactly one method: set `sft` or `dpo`, not both")
        return self


def run(cfg: Config, ctx: StageContext) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime.sources import SourceCounts

    torch.set_num_threads(ctx.threads)
    counts = SourceCounts()
    method = "sft" if cfg.sft is not None else "dpo"
    section = cfg.sft or cfg.dpo
    model_dir = ctx.input("model") / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    use_cache = model.config.use_cache  # the Trainer turns the KV cache off; generation wants it back
    output_dir = ctx.work / method
    args = _training_args(section, cfg.seed, output_dir)

    if method == "sft":
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(
            model=model, processing_class=tokenizer, train_dataset=_sft_dataset(section, ctx.root, counts),
            args=SFTConfig(**args, dataset_text_field="text", packing=False),
        )
    else:
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(
            model=model, processing_class=tokenizer, train_dataset=_dpo_dataset(section, ctx.root, counts),
            args=DPOConfig(**args, beta=section.beta),
        )
    trainer.train(resume_from_checkpoint=_last_checkpoint(output_dir))
    trainer.model.config.use_cache = use_cache
    save_model_folder(trainer.model, model_dir, ctx.out / "model")
    return {"method": method, "steps": trainer.state.global_step, **_log_metrics(trainer.state.log_history),
            **counts.metrics(method)}


def _training_args(section: SFTSection | DPOSection, seed: int, output_dir: Path) -> dict[str, Any]:
    """TrainingArguments shared by SFT and DPO; fp32 weights, bf16 autocast only on a bf16 GPU."""
    import torch

    gpu = torch.cuda.is_available()
    return dict(
        output_dir=str(output_dir), seed=seed, data_seed=seed,
        learning_rate=section.learning_rate, num_train_epochs=section.epochs,
        max_steps=section.max_steps or -1, per_device_train_batch_size=section.batch_size,
        max_length=section.max_length_tokens,
        save_strategy="steps", save_steps=section.save_steps, save_total_limit=2,
        logging_steps=1, report_to="none", disable_tqdm=False,
        use_cpu=not gpu, bf16=gpu and torch.cuda.is_bf16_supported(),
        activation_checkpointing=False, dataloader_num_workers=0,
    )


def _sft_dataset(section: SFTSection, root: Path, counts: SourceCounts):
    """One `text` per record: the record's `text_field`, after its `prompt_field` when one is set (the
    completion trained on as the continuation of its prompt, e.g. Lee et al.'s `prompt_text` +
    `unpert_gen_text`)."""
    from datasets import Dataset

    from runtime.sources import field_value

    text_field = getattr(section.data, "text_field", "text")  # a memmap has none: iter_records rejects it
    fields = ((section.prompt_field,) if section.prompt_field else ()) + (text_field,)
    records = _records(section.data, root, counts, fields)
    return Dataset.from_list([{"text": "".join(field_value(r, f) for f in fields)} for r in records])


def _dpo_dataset(section: DPOSection, root: Path, counts: SourceCounts):
    """TRL's `prompt`, `chosen`, `rejected` columns from the section's fields (dotted paths)."""
    from datasets import Dataset

    from runtime.sources import field_value

    fields = {"prompt": section.prompt_field, "chosen": section.chosen_field, "rejected": section.rejected_field}
    records = _records(section.data, root, counts, tuple(fields.values()))
    return Dataset.from_list([{name: field_value(r, f) for name, f in fields.items()} for r in records])


def _records(source: Any, root: Path, counts: SourceCounts, text_fields: tuple[str, ...]) -> list[dict]:
    """Every record of the source whose text fields all hold text (cleaned as the source asks; a record
    with one absent, null or empty is skipped and counted), at least one."""
    from runtime.sources import describe, iter_records

    records = list(iter_records(source, root, counts, text_fields=text_fields))
    if not records:
        raise StageError(f"{describe(source)}: no record has text in every field of {list(text_fields)}")
    return records


def _last_checkpoint(output_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None


def save_model_folder(model: Any, model_dir: Path, out: Path) -> None:
    """`model` in HF format plus every non-weight file of `model_dir` (the tokenizer), byte for byte."""
    import shutil

    out.mkdir(parents=True)
    for f in model_dir.iterdir():
        if f.is_file() and f.name not in WEIGHT_FILES:
            shutil.copy2(f, out / f.name)
    model.save_pretrained(out)


def _log_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """First and last logged training loss, and for DPO the last reward margin and accuracy."""
    steps = [entry for entry in log_history if "loss" in entry]
    out = {"train_loss_first": steps[0]["loss"], "train_loss_last": steps[-1]["loss"]}
    for key, name in (("rewards/margins", "reward_margin"), ("rewards/accuracies", "reward_accuracy")):
        logged = [entry[key] for entry in steps if key in entry]
        if logged:
            out[f"{name}_first"], out[f"{name}_last"] = logged[0], logged[-1]
    return out
