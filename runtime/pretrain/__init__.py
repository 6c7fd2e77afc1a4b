"""`pretrain` stage: train an OLMo model with ai2-olmo on the `mix` tokens; export to HF.

Reads: model, pretrain sections, the mix (`manifest.json` → its `token_files`: shared `tokenize` shards
and the mix's own cut copies) and tokenizer (`tokenizer.json`, `info.json`) artifacts. Writes:
`olmo/config.yaml` (the ai2-olmo `TrainConfig` that built everything: it is saved, then loaded back and
only the loaded copy is used), `olmo/model.pt` (OLMo state dict), `model/` (HF `OlmoForCausalLM` +
tokenizer), `metrics.jsonl`.

One code path for 1 process (`python -m runtime pretrain`) and `torchrun` (gloo on CPU, NCCL + DDP or
FSDP + bf16 on GPUs): every rank calls `run`; only rank 0 (`is_rank_zero`) writes outputs. Checkpoints
(`pretrain.checkpoint_format`: `full` or `sharded`, see `runtime.pretrain.checkpoint`) go to `ctx.work`
and a rerun resumes from the newest one that verifies; `metrics.json`'s `world_size_changes` lists the
resumes on another world size (per-rank RNG not restored: not bit-identical to an uninterrupted run),
and `device_tokens_per_second_mean` / `_last_window` (and `mfu_…` on a GPU with a known peak) the
per-device throughput (`runtime.pretrain.throughput`). The schedule is the spec's, in this run's steps
(`PretrainSection.warmup_steps` / `decay_steps`). Data workers and pinned memory follow the resources (not
the id); `OLMO_SHARED_FS=1` makes one global rank write ai2-olmo's shared data-order file.
Its id changes with the model, vocabulary, pretrain section (less the NOT_IN_ID fields), step count and
seed.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from compiler.errors import StageError
from compiler.stages.pretrain import Config
from runtime.stage import StageContext

if TYPE_CHECKING:
    from olmo.config import TrainConfig


def is_rank_zero() -> bool:
    """Rank 0 of a `torchrun` launch (or the only process): the one that creates and publishes output."""
    return int(os.environ.get("RANK", "0")) == 0


def token_files(mix: Path) -> list[Path]:
    """The mix's token memmaps, in manifest order (paths in the manifest are relative to the mix folder)."""
    manifest = json.loads((mix / "manifest.json").read_text())
    files = [mix / f for f in manifest["token_files"]]
    missing = [str(f) for f in files if not f.is_file()]
    if not files or missing:
        raise StageError(f"pretrain: mix {mix} lists no token files or misses {missing}")
    return files


def build_train_config(cfg: Config, *, data_paths: list[Path], tokenizer_file: Path, save_folder: Path,
                       world_size: int, precision: str, run_name: str, data_workers: int = 0,
                       pin_memory: bool = False) -> "TrainConfig":
    """The full ai2-olmo TrainConfig: every model field explicit (ai2-olmo's defaults are GPT-2-like).

    The schedule is the spec's, in steps of this run (`PretrainSection.warmup_steps`/`decay_steps`);
    `data_workers` and `pin_memory` are the run's (`loader_settings`), not results."""
    from olmo.config import (
        DataConfig, DDPConfig, FSDPConfig, ModelConfig, OptimizerConfig, SchedulerConfig, SpeedMonitorConfig,
        TokenizerConfig, TrainConfig, WandbConfig,
    )

    t = cfg.train
    if t.sequence_length > cfg.model.max_sequence_length:
        raise StageError(f"pretrain.sequence_length {t.sequence_length} exceeds model.max_sequence_length "
                         f"{cfg.model.max_sequence_length}")
    if t.global_batch_size % world_size:
        raise StageError(f"pretrain.global_batch_size {t.global_batch_size} is not divisible by the "
                         f"{world_size} processes")
    if t.distributed_strategy == "single" and world_size > 1:
        raise StageError(f"distributed_strategy 'single' cannot run on {world_size} processes")
    if not float(cfg.model.rope_theta).is_integer():
        raise StageError(f"model.rope_theta {cfg.model.rope_theta}: ai2-olmo takes an integer RoPE base")
    device_batch = t.global_batch_size // world_size
    model = ModelConfig(
        **cfg.model.model_dump(exclude={"preset", "max_sequence_length", "rope_theta"}),
        rope_theta=int(cfg.model.rope_theta),
        max_sequence_length=t.sequence_length,  # ai2-olmo chunks the memmaps by this length
        vocab_size=cfg.vocab.vocab_size, embedding_size=cfg.vocab.embedding_size,
        eos_token_id=cfg.vocab.eos_token_id, pad_token_id=cfg.vocab.pad_token_id,
        layer_norm_eps=1e-5, block_group_size=1, alibi=False, flash_attention=False,
        multi_query_attention=False, embedding_layer_norm=False, scale_logits=False, norm_after=False,
        rope_full_precision=True, init_device="cpu", init_cutoff_factor=None, scale_emb_init=False,
        emb_init_std=None, precision=precision,
    )
    return TrainConfig(
        run_name=run_name,
        seed=cfg.seed,
        model=model,
        optimizer=OptimizerConfig(
            name="adamw", learning_rate=t.learning_rate, weight_decay=t.weight_decay, betas=t.betas,
            eps=t.eps, decay_norm_and_bias=False, decay_embeddings=False,
        ),
        scheduler=SchedulerConfig(
            name=t.scheduler, units="steps", t_warmup=t.warmup_steps(cfg.max_steps),
            t_max=t.decay_steps(cfg.max_steps), alpha_f=t.final_lr_ratio,
        ),
        data=DataConfig(
            paths=[str(p) for p in data_paths], memmap_dtype="uint16", pad_direction="right",
            num_workers=data_workers, drop_last=True, pin_memory=pin_memory,
            prefetch_factor=2 if data_workers else None,
            persistent_workers=False,  # workers copy the dataset; olmo_train.batches moves it between epochs
        ),
        tokenizer=TokenizerConfig(identifier=str(tokenizer_file)),
        save_folder=str(save_folder),
        save_overwrite=True,  # resume: the loader's train_data/ may exist from a failed run
        save_interval_unsharded=t.checkpoint_interval_steps,
        max_duration=str(cfg.max_steps),
        stop_at=cfg.max_steps,
        global_train_batch_size=t.global_batch_size,
        device_train_batch_size=device_batch,
        device_train_microbatch_size=min(t.device_microbatch_size, device_batch),
        max_grad_norm=t.max_grad_norm,
        precision=precision,
        distributed_strategy=None if world_size == 1 else t.distributed_strategy,
        fsdp=FSDPConfig(precision="mixed"),
        ddp=DDPConfig(),
        console_log_interval=t.log_interval_steps,
        speed_monitor=SpeedMonitorConfig(window_size=20),  # the official OLMo-1B window, in steps
        wandb=WandbConfig(project=t.wandb_project, name=run_name) if t.wandb_project else None,
    )


def loader_settings(workers: int | None, threads_per_rank: int, on_gpu: bool) -> tuple[int, bool]:
    """DataLoader workers and pinning: the spec's count, or the threads left beside the training thread
    (at most 4: the memmap reader is cheap); pinned host memory only where batches go to a GPU."""
    n = min(4, max(0, threads_per_rank - 1)) if workers is None else workers
    return n, on_gpu


def run(cfg: Config, ctx: StageContext) -> dict:
    import torch
    from olmo.config import TrainConfig

    from runtime.pretrain import hf_export, olmo_train
    from runtime.pretrain.process_group import barrier, setup_runtime

    # Every rank's `ctx.work` is one folder on one file system: one global rank (not each node's local
    # rank 0) writes ai2-olmo's `global_indices.npy` there (olmo.torch_util.get_fs_local_rank).
    os.environ["OLMO_SHARED_FS"] = "1"
    rt = setup_runtime()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads_per_rank = max(1, ctx.threads // local_world)
    torch.set_num_threads(threads_per_rank)
    data_workers, pin_memory = loader_settings(cfg.train.data_workers, threads_per_rank, rt.device.type == "cuda")
    barrier()  # rank 0 has created ctx.out and ctx.work
    precision = cfg.train.precision
    if precision == "amp_bf16" and not olmo_train.bf16_supported(rt.device):
        print(f"pretrain: no bf16 on {rt.device.type}; training in fp32", file=sys.stderr)
        precision = "fp32"
    mix, tokenizer = ctx.input("mix"), ctx.input("tokenizer")
    built = build_train_config(
        cfg, data_paths=token_files(mix), tokenizer_file=tokenizer / "tokenizer.json",
        save_folder=ctx.work, world_size=rt.world_size, precision=precision, run_name=ctx.stage_id,
        data_workers=data_workers, pin_memory=pin_memory,
    )
    hf_export.check_representable(built.model)  # refuse before spending any compute
    config_path = ctx.out / "olmo" / "config.yaml"
    if rt.is_main:
        config_path.parent.mkdir(parents=True, exist_ok=True)
        built.save(config_path)
    barrier()
    train_cfg = TrainConfig.load(config_path)

    log_fn = None
    if train_cfg.wandb is not None and rt.is_main:
        import wandb

        wandb.init(project=train_cfg.wandb.project, name=train_cfg.wandb.name, config=train_cfg.asdict())
        log_fn = lambda row: wandb.log(row, step=row["step"])  # noqa: E731
    result = olmo_train.train(train_cfg, rt, max_steps=cfg.max_steps, work=ctx.work,
                              log_path=ctx.work / "metrics.jsonl",
                              checkpoint_format=cfg.train.checkpoint_format, log_fn=log_fn)
    if rt.is_main:
        torch.save(result.state_dict, ctx.out / "olmo" / "model.pt")
        hf_export.export(train_cfg.model, result.state_dict, tokenizer, ctx.out / "model")
        shutil.copyfile(ctx.work / "metrics.jsonl", ctx.out / "metrics.jsonl")
        if log_fn is not None:
            wandb.finish()
    barrier()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return {
        "initial_loss": result.initial_loss,
        "final_loss": result.final_loss,
        "steps": result.steps,
        "tokens_trained": result.tokens_trained,
        "tokens_per_second": result.tokens_per_second,
        **result.throughput,
        "n_params": result.n_params,
        "world_size_changes": result.world_size_changes,
    }
