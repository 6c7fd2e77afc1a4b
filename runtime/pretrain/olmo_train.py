"""A plain, visible training loop over ai2-olmo's own parts, for 1 process or `torchrun` (CPU or GPUs).

Why not `olmo.train.Trainer`: it is CUDA-minded (hard-coded cuda device and NCCL, `autocast("cuda")`,
`torch.cuda.get_rng_state` in checkpoints, `torch.load` restores that fail on torch ≥ 2.6; STACK.md).
This loop uses the same `OLMo` model, `build_optimizer`, `build_scheduler`, `build_train_dataloader` and
`Optimizer.clip_grads_and_collect_metrics`, in the Trainer's order (loss = token-sum / batch tokens per
micro-batch, clip, then set LR/clip norm for the step, then `optim.step()`), so it reproduces its losses.

Everything is read from one loaded ai2-olmo `TrainConfig`; the device and process-group backend are
chosen at run time (NCCL on GPUs, gloo on CPU). Wrapping follows `distributed_strategy`: none
(1 process), DDP, or FSDP (`device_id=torch.device("cpu")` on CPU). Gradients are reduced across ranks
once a step, on the last micro-batch (`no_sync` before it, `accumulates_locally`): under DDP always, as
ai2-olmo does; under FSDP too where its parameters are fp32 (ai2-olmo's FSDP reduces every micro-batch;
docs/scaling.md has the bytes). Checkpoints (model, optimizer, step,
RNG states of every rank; `full` or `sharded`) are `runtime.pretrain.checkpoint`'s: `train` resumes from
the newest one that verifies, and the data loader restarts at the checkpoint's batch.

Preemption (`runtime.preempt`): SIGTERM/SIGUSR1 make every rank finish its current step, save that
step's checkpoint and raise `Preempted` (exit 75); the rerun resumes from it bit-identically.

Throughput (`runtime.pretrain.throughput`): every logged row carries this device's tokens/s over the last
`speed_monitor.window_size` steps and, on a GPU with a known peak, the MFU; `TrainResult` their means
over the run (since its last resume) and last windows.
"""
from __future__ import annotations

import json
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from olmo.config import DistributedStrategy, TrainConfig
from olmo.data import build_train_dataloader
from olmo.model import OLMo
from olmo.optim import build_optimizer, build_scheduler
from olmo.torch_util import move_to_device, seed_all
from torch.distributed.checkpoint.state_dict import get_model_state_dict
from tqdm import tqdm

from compiler.errors import StageError
from runtime.pretrain.checkpoint import (
    Format,
    full_state_options,
    load_checkpoint,
    save_checkpoint,
    usable_checkpoint,
)
from runtime.preempt import STOP_SIGNALS, StopSignals, resumed
from runtime.pretrain.process_group import Runtime
from runtime.pretrain.throughput import Throughput, peak_flops


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast is used only on GPUs that support it (CPU bf16 is slow and changes numerics)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


@dataclass
class TrainResult:
    """What the loop hands back; `state_dict` (full OLMo weights, on CPU) only on rank 0."""

    state_dict: dict[str, torch.Tensor] | None
    initial_loss: float
    final_loss: float
    steps: int
    tokens_trained: int
    tokens_per_second: float
    throughput: dict[str, float]
    n_params: int
    world_size_changes: list[dict[str, Any]]


# --- building -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Built:
    """The wrapped model and what is counted before FSDP flattens and shards it."""

    model: torch.nn.Module
    n_params: int
    flops_per_token: float  # training (forward + backward), ai2-olmo's count


def build_model(cfg: TrainConfig, rt: Runtime) -> Built:
    """OLMo initialised on CPU from `cfg.seed` (same weights for any world size), then wrapped."""
    seed_all(cfg.seed)
    model = OLMo(cfg.model)
    counted = dict(n_params=model.num_params(), flops_per_token=model.num_fwd_flops + model.num_bck_flops)
    return Built(model=_wrap(cfg, rt, model), **counted)


def _wrap(cfg: TrainConfig, rt: Runtime, model: OLMo) -> torch.nn.Module:
    strategy = cfg.distributed_strategy if rt.world_size > 1 else None
    if strategy is None:
        return model.to(rt.device)
    if strategy == DistributedStrategy.ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model.to(rt.device)
        ids = [rt.device.index] if rt.device.type == "cuda" else None
        return DDP(model, device_ids=ids, find_unused_parameters=cfg.ddp.find_unused_params)
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    return FSDP(
        model,
        sharding_strategy=cfg.fsdp.sharding_strategy,
        mixed_precision=cfg.fsdp_precision,
        auto_wrap_policy=model.get_fsdp_wrap_policy(cfg.fsdp.wrapping_strategy),
        use_orig_params=cfg.fsdp.use_orig_params,
        limit_all_gathers=True,
        device_id=rt.device,
    )


def autocast(cfg: TrainConfig, rt: Runtime):
    enabled = cfg.precision != "fp32"
    return torch.autocast(rt.device.type, dtype=cfg.autocast_precision, enabled=enabled)


# --- the step -------------------------------------------------------------------------------------

def accumulates_locally(cfg: TrainConfig, rt: Runtime) -> bool:
    """Whether micro-batches before the last skip the gradient reduction (`no_sync`).

    DDP: yes, its gradients are the fp32 parameters'. FSDP: only with fp32 parameters; with bf16 ones
    (ai2-olmo's "mixed"/"pure" under amp_bf16) torch's FSDP would sum the unsharded gradients in bf16
    until the reduce, so it reduces every micro-batch in fp32, as ai2-olmo does."""
    if rt.world_size == 1 or cfg.distributed_strategy is None:
        return False
    if cfg.distributed_strategy == DistributedStrategy.ddp:
        return True
    precision = cfg.fsdp_precision
    return precision is None or precision.param_dtype in (None, torch.float32)


def train_batch(cfg: TrainConfig, rt: Runtime, dist_model: torch.nn.Module,
                batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Forward/backward over micro-batches; returns this rank's mean token cross-entropy (detached)."""
    input_ids = batch["input_ids"].to(rt.device)
    batch_tokens = input_ids[:, 1:].numel()
    micro_batches = input_ids.split(cfg.device_train_microbatch_size)
    local = accumulates_locally(cfg, rt)
    loss_sum = torch.zeros((), device=rt.device)
    for i, ids in enumerate(micro_batches):
        sync = dist_model.no_sync if local and i < len(micro_batches) - 1 else nullcontext
        with sync():
            with autocast(cfg, rt):
                logits = dist_model(input_ids=ids).logits
                loss = F.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.size(-1)).float(), ids[:, 1:].reshape(-1),
                    reduction="sum",
                ) / batch_tokens
            loss.backward()
        loss_sum += loss.detach()
    return loss_sum


def train_step(cfg: TrainConfig, rt: Runtime, dist_model: torch.nn.Module, optim, scheduler,
               batch: dict[str, torch.Tensor], step: int, max_steps: int) -> dict[str, float]:
    """One optimizer step, in the order of `olmo.train.Trainer.train_step`."""
    optim.zero_grad(set_to_none=True)
    loss = train_batch(cfg, rt, dist_model, move_to_device(batch, rt.device))
    if dist.is_initialized():
        dist.all_reduce(loss)
        loss /= rt.world_size
    optim_metrics = optim.clip_grads_and_collect_metrics(
        step, collect_param_metrics=False,
        process_group=getattr(dist_model, "process_group", None), device=rt.device,
    )
    lr = scheduler.get_lr(cfg.optimizer.learning_rate, step, max_steps)
    for group in optim.param_groups:
        group["lr"] = lr
        group["max_grad_norm"] = scheduler.get_max_grad_norm(cfg.max_grad_norm, step, max_steps)
        group["max_grad_norm_ratio"] = scheduler.get_max_grad_norm(cfg.max_grad_norm_ratio, step, max_steps)
    optim.step()
    loss_value = loss.item()
    if not np.isfinite(loss_value):
        raise StageError(f"pretrain: non-finite loss {loss_value} at step {step}")
    return {"loss": loss_value, "lr": lr, "grad_norm": optim_metrics["total_grad_norm"].item()}


# --- data -----------------------------------------------------------------------------------------

def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker init: leave stop signals to the training process. SLURM signals every process of
    the job, and torch's worker handler dies on a SIGTERM, which fails the step that was to be saved."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def batches(cfg: TrainConfig, start_step: int, max_steps: int) -> Iterator[dict[str, torch.Tensor]]:
    """Batches for steps start_step+1 … max_steps: epoch-wise reshuffles, restart mid-epoch exactly."""
    loader = build_train_dataloader(cfg)
    loader.worker_init_fn = ignore_stop_signals
    dataset = loader.dataset
    steps_per_epoch = len(dataset.dataset) // cfg.global_train_batch_size  # drop_last
    if steps_per_epoch == 0:
        raise StageError(
            f"pretrain: the mix holds {len(dataset.dataset)} sequences of {cfg.model.max_sequence_length} "
            f"tokens, fewer than one global batch ({cfg.global_train_batch_size})"
        )
    step = start_step
    while step < max_steps:
        epoch, position = divmod(step, steps_per_epoch)
        if epoch != dataset.epoch:
            dataset.reshuffle(epoch)
        dataset.start_index = position * cfg.global_train_batch_size
        for batch in loader:
            yield batch
            step += 1
            if step >= max_steps or step % steps_per_epoch == 0:
                break


# --- the loop -------------------------------------------------------------------------------------

def is_logged(step: int, log_every: int, max_steps: int) -> bool:
    """The steps metrics.jsonl keeps: the first, every `log_every`-th and the last."""
    return step == 1 or step % log_every == 0 or step == max_steps


def _read_log(path: Path, up_to_step: int, log_every: int, max_steps: int) -> list[dict[str, Any]]:
    """The logged rows up to the checkpoint's step; the extra row a preempted run wrote for its last
    step is dropped unless that step is on the schedule, so a resumed log equals an uninterrupted one."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().split("\n") if line.strip()]
    return [r for r in rows if r["step"] <= up_to_step and is_logged(r["step"], log_every, max_steps)]


def _append_row(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def train(cfg: TrainConfig, rt: Runtime, *, max_steps: int, work: Path, log_path: Path,
          checkpoint_format: Format = "full",
          log_fn: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train `max_steps` optimizer steps, resuming from the newest usable checkpoint in `work`.

    `log_path` (a JSON-lines file, one row per logged step) lives in `work` so it survives a crash.
    A stop signal (SIGTERM, SIGUSR1) ends the run after the current step with that step saved and
    `Preempted` raised; no signal changes any result.
    """
    with StopSignals("pretrain") as stop:
        return _train(cfg, rt, stop, max_steps=max_steps, work=work, log_path=log_path,
                      checkpoint_format=checkpoint_format, log_fn=log_fn)


def _train(cfg: TrainConfig, rt: Runtime, stop: StopSignals, *, max_steps: int, work: Path, log_path: Path,
           checkpoint_format: Format, log_fn: Callable[[dict[str, Any]], None] | None) -> TrainResult:
    built = build_model(cfg, rt)
    dist_model = built.model
    optim = build_optimizer(cfg, dist_model)
    scheduler = build_scheduler(cfg)
    interval, log_every = cfg.save_interval_unsharded, cfg.console_log_interval
    start_step, changes = 0, []
    if (ckpt := usable_checkpoint(work, rt)) is not None:
        restored = load_checkpoint(ckpt, dist_model, optim, rt)
        start_step, changes = restored.step, restored.world_size_changes
        if rt.is_main:
            resumed("pretrain", f"{ckpt.path} (step {start_step} of {max_steps})")

    def save(step: int) -> None:
        save_checkpoint(work, step, dist_model, optim, rt, fmt=checkpoint_format, world_size_changes=changes)
    rows = _read_log(log_path, start_step, log_every, max_steps)
    if rt.is_main:
        log_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokens_per_step = cfg.global_train_batch_size * cfg.model.max_sequence_length
    device_tokens = cfg.device_train_batch_size * cfg.model.max_sequence_length
    window = Throughput(cfg.speed_monitor.window_size, device_tokens, built.flops_per_token,
                        peak_flops(rt.device, str(cfg.precision)))
    whole = Throughput(max_steps, device_tokens, built.flops_per_token, window.peak)  # the run (since a resume)

    dist_model.train()
    bar = tqdm(total=max_steps, initial=start_step, desc="pretrain", unit="step", disable=not rt.is_main)
    step, seconds, tokens_s = start_step, 0.0, 0.0
    tic = time.perf_counter()
    for batch in batches(cfg, start_step, max_steps):
        step += 1
        metrics = train_step(cfg, rt, dist_model, optim, scheduler, batch, step, max_steps)
        step_seconds = time.perf_counter() - tic
        seconds += step_seconds
        window.record(step_seconds)
        whole.record(step_seconds)
        tokens_s = (step - start_step) * tokens_per_step / seconds
        row = {"step": step, **metrics, "tokens_per_second": tokens_s, **window.metrics(),
               "tokens": step * tokens_per_step}
        logged = is_logged(step, log_every, max_steps)
        if rt.is_main and logged:
            _append_row(log_path, row)
            rows.append(row)
            if log_fn is not None:
                log_fn(row)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s_device=f"{row['device_tokens_per_second']:,.0f}",
                        **({"mfu": f"{row['mfu']:.1%}"} if "mfu" in row else {}), refresh=False)
        bar.update()
        saved = step % interval == 0 and step < max_steps
        if saved:
            save(step)
        if step < max_steps and stop.agreed():  # a collective: every rank, after every step but the last
            if rt.is_main and not logged:
                _append_row(log_path, row)  # where it stopped, for whoever reads the log; resume drops it
            if not saved:
                save(step)
            bar.close()
            stop.stop(f"the checkpoint of step {step} of {max_steps} in {work}")
        tic = time.perf_counter()
    bar.close()
    if step != max_steps:
        raise StageError(f"pretrain: data ran out at step {step} of {max_steps}")

    model_sd = get_model_state_dict(dist_model, options=full_state_options(rt))
    rows = _read_log(log_path, max_steps, log_every, max_steps) if rt.is_main else rows
    return TrainResult(
        state_dict=model_sd if rt.is_main else None,
        initial_loss=rows[0]["loss"] if rows else float("nan"),
        final_loss=rows[-1]["loss"] if rows else float("nan"),
        steps=step,
        tokens_trained=step * tokens_per_step,
        tokens_per_second=tokens_s,
        throughput={**{f"{k}_mean": v for k, v in whole.metrics().items()},
                    **{f"{k}_last_window": v for k, v in window.metrics().items()}},
        n_params=built.n_params,
        world_size_changes=changes,
    )
