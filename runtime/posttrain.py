"""`posttrain` stage: SFT or DPO with TRL on a model folder.

Reads: a model folder (`model/`) and the method's dataset through the source's reader (`runtime.sources`:
dotted fields, cleaning, filters, sampling). SFT: one text per record, `prompt_field` + `text_field` when
a prompt field is set; DPO: `prompt_field` / `chosen_field` / `rejected_field`, plain text: no chat
template ships with the tokenizer, so TRL tokenizes prompt + completion. A record with any of these
fields absent, null or empty is skipped and counted. Writes: `model/` (HF checkpoint + the input's
tokenizer files). Metrics: steps, first/last loss (DPO: reward margin and accuracy) and the reader's
counts, `source_sft_<count>` or `source_dpo_<count>`. Its id changes with the method's section (data,
hyperparameters), the seed and `compute` (CUDA: bf16 autocast or TF32 over fp32 weights; CPU: fp32). It
trains on one device: never `DataParallel` over several visible GPUs (`single_device`).

Resuming: the Trainer writes `checkpoint-N/` folders to `ctx.work/<method>/` every `save_every_minutes` of
wall clock (`save_every`; and every `save_steps` when set), in place, not atomically. A rerun resumes
from the newest *complete* one (trainer state, weights whose safetensors header matches the file's size,
optimizer, scheduler and RNG state all readable); newer half-written
ones are reported and moved to `ctx.work/<method>-incomplete/`, out of reach of the Trainer's checkpoint
rotation. On SIGTERM / SIGUSR1 (`runtime.preempt`) the current step ends with a checkpoint, training
stops and the stage raises `Preempted`: the rerun resumes from that step, on the same weights.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compiler.errors import StageError
from compiler.schema.posttrain import DPOSection, SFTSection
from compiler.stages.posttrain import Config
from runtime.artifacts import load_causal_lm, load_tokenizer, safetensors_problem, save_model_folder
from runtime.preempt import StopSignals, resumed
from runtime.stage import StageContext

if TYPE_CHECKING:
    from runtime.device import Placement
    from runtime.sources import SourceCounts


def run(cfg: Config, ctx: StageContext) -> dict:
    with StopSignals("posttrain") as stop:
        return _posttrain(cfg, ctx, stop)


def _posttrain(cfg: Config, ctx: StageContext, stop: StopSignals) -> dict:
    import torch

    from runtime.sources import SourceCounts

    from runtime.device import place

    torch.set_num_threads(ctx.threads)
    placement = place(cfg.compute, "posttrain")
    counts = SourceCounts()
    method = "sft" if cfg.sft is not None else "dpo"
    section = cfg.sft or cfg.dpo
    model_dir = ctx.input("model") / "model"
    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, dtype=torch.float32)
    use_cache = model.config.use_cache  # the Trainer turns the KV cache off; generation wants it back
    output_dir = ctx.work / method
    args = _training_args(section, cfg.seed, output_dir, placement)

    if method == "sft":
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(
            model=model, processing_class=tokenizer, train_dataset=_sft_dataset(section, ctx.root, counts),
            args=single_device(SFTConfig(**args, dataset_text_field="text", packing=False)),
        )
    else:
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(
            model=model, processing_class=tokenizer, train_dataset=_dpo_dataset(section, ctx.root, counts),
            args=single_device(DPOConfig(**args, beta=section.beta)),
        )
    stop_check = stop_on_signal(stop)
    trainer.add_callback(stop_check)
    trainer.add_callback(save_every(section.save_every_minutes * 60))
    trainer.train(resume_from_checkpoint=_resume_from(output_dir))
    if stop_check.stopped_at is not None:
        stop.stop(f"checkpoint-{stop_check.stopped_at} in {output_dir}")
    trainer.model.config.use_cache = use_cache
    save_model_folder(trainer.model, model_dir, ctx.out / "model")
    return {"method": method, "steps": trainer.state.global_step, "computed_in": placement.compute.label,
            **_log_metrics(trainer.state.log_history),
            **counts.metrics(method)}


def _training_args(section: SFTSection | DPOSection, seed: int, output_dir: Path,
                   placement: Placement) -> dict[str, Any]:
    """TrainingArguments shared by SFT and DPO: fp32 weights; on CUDA bf16 autocast or TF32 matmuls as the
    precision policy says (`runtime.device`), on CPU fp32. Checkpoints by time (`save_every`), and every
    `save_steps` when set."""
    cuda = placement.compute.device == "cuda"
    return dict(
        output_dir=str(output_dir), seed=seed, data_seed=seed,
        learning_rate=section.learning_rate, num_train_epochs=section.epochs,
        max_steps=section.max_steps or -1, per_device_train_batch_size=section.batch_size,
        max_length=section.max_length_tokens,
        **({"save_strategy": "steps", "save_steps": section.save_steps} if section.save_steps else
           {"save_strategy": "no"}), save_total_limit=2, logging_steps=1, report_to="none", disable_tqdm=False,
        use_cpu=not cuda, bf16=placement.autocast_bf16, tf32=(placement.compute.precision == "tf32") if cuda else None,
        activation_checkpointing=False, dataloader_num_workers=0,
    )


def single_device(args: Any) -> Any:
    """`args` restricted to one device: the Trainer wraps the model in `DataParallel` (and multiplies the
    batch by the GPU count) whenever it sees several GPUs in one process; a posttrain job trains on one."""
    args.device  # resolves the device and counts the visible GPUs (TrainingArguments._setup_devices)
    args._n_gpu = min(args._n_gpu, 1)
    return args


def save_every(seconds: float) -> Any:
    """A TrainerCallback that asks for a checkpoint at the first step end `seconds` after the last one
    (or the start): checkpoints by wall clock, whatever a step costs."""
    import time

    from transformers import TrainerCallback

    class SaveEvery(TrainerCallback):
        last = time.monotonic()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self.last = time.monotonic()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if time.monotonic() - self.last >= seconds:
                control.should_save = True
            return control

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self.last = time.monotonic()

    return SaveEvery()


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


def stop_on_signal(stop: StopSignals) -> Any:
    """A TrainerCallback: once any rank got a stop signal, the step ends with a checkpoint and training
    stops; `stopped_at` is then the step saved (None while training runs to its end)."""
    from transformers import TrainerCallback

    class StopOnSignal(TrainerCallback):
        stopped_at: int | None = None

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if stop.agreed() and state.global_step < state.max_steps:
                control.should_save = control.should_training_stop = True
                self.stopped_at = state.global_step
            return control

    return StopOnSignal()


def _resume_from(output_dir: Path) -> str | None:
    """The newest complete checkpoint (logged as the one resumed from); None to start afresh."""
    checkpoint = newest_complete_checkpoint(output_dir)
    if checkpoint is None:
        return None
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    resumed("posttrain", f"{checkpoint.name} (step {state['global_step']} of {state['max_steps']})")
    return str(checkpoint)


def _checkpoint_step(folder: Path) -> int | None:
    prefix, _, step = folder.name.partition("-")
    return int(step) if prefix == "checkpoint" and step.isdigit() and folder.is_dir() else None


def newest_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest `checkpoint-N/` the Trainer can resume from. Newer incomplete ones (a kill mid-save) are
    reported and moved to `<output_dir>-incomplete/`, so neither the resume nor the Trainer's rotation of
    old checkpoints trips on them."""
    if not output_dir.is_dir():
        return None
    steps = {f: step for f in output_dir.iterdir() if (step := _checkpoint_step(f)) is not None}
    for folder in sorted(steps, key=steps.__getitem__, reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        aside = output_dir.with_name(f"{output_dir.name}-incomplete") / folder.name
        print(f"posttrain: skipping half-written {folder.name}: {problem} (moved to {aside})",
              file=sys.stderr, flush=True)
        shutil.rmtree(aside, ignore_errors=True)
        aside.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(aside)
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why the Trainer could not resume from `folder` (the first missing or unreadable piece), or None."""
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json"
    try:
        if not {"global_step", "max_steps"} <= json.loads(state.read_text()).keys():
            return "trainer_state.json lacks global_step / max_steps"
    except (ValueError, AttributeError):
        return "trainer_state.json is not a JSON object"
    problem = _weights_problem(folder)
    if problem is not None:
        return problem
    rng = sorted(folder.glob("rng_state*.pth"))
    if not rng:
        return "no rng_state.pth"
    for path in [folder / "optimizer.pt", folder / "scheduler.pt", *rng]:
        if not path.is_file():
            return f"no {path.name}"
        if not _complete_zip(path):
            return f"{path.name} is truncated"
    return None


def _weights_problem(folder: Path) -> str | None:
    """The model's safetensors file, or every shard its index names, complete."""
    index = folder / "model.safetensors.index.json"
    shards = ["model.safetensors"]
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            return f"{index.name} is unreadable"
    for name in shards:
        if not (folder / name).is_file():
            return f"no {name}"
        problem = safetensors_problem(folder / name)
        if problem is not None:
            return f"{name} is unreadable ({problem})"
    return None


def _complete_zip(path: Path) -> bool:
    """`torch.save` writes a zip archive whose directory comes last: a cut-off file has none."""
    import zipfile

    try:
        with zipfile.ZipFile(path):
            return True
    except (zipfile.BadZipFile, OSError):
        return False


def _log_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """First and last logged training loss, and for DPO the last reward margin and accuracy."""
    steps = [entry for entry in log_history if "loss" in entry]
    out = {"train_loss_first": steps[0]["loss"], "train_loss_last": steps[-1]["loss"]}
    for key, name in (("rewards/margins", "reward_margin"), ("rewards/accuracies", "reward_accuracy")):
        logged = [entry[key] for entry in steps if key in entry]
        if logged:
            out[f"{name}_first"], out[f"{name}_last"] = logged[0], logged[-1]
    return out
