"""The `pretrain` section: optimisation of the OLMo model on the `mix` stage's tokens.

Defaults are the official OLMo-1B recipe (AdamW 4e-4, wd 0.1, betas 0.9/0.95, clip 1.0, cosine with
2000 warmup steps to 0.1×). The number of optimizer steps follows from the data: one pass over
`data.clean_tokens + toxic tokens` times `epochs`, at `global_batch_size × sequence_length` tokens a step.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import NOT_IN_ID, StrictModel


class PretrainSection(StrictModel):
    """OLMo pretraining hyperparameters (ai2-olmo TrainConfig optimizer/scheduler/batch fields)."""

    sequence_length: int = Field(2048, gt=0, description="Training sequence length, tokens.")
    global_batch_size: int = Field(2048, gt=0, description="Sequences per optimizer step, all devices.")
    device_microbatch_size: int = Field(
        8, gt=0, description="Sequences per forward pass per device (gradient accumulation).",
        json_schema_extra=NOT_IN_ID,
    )
    epochs: float = Field(1.0, gt=0, description="Passes over the mixture; sets the step count.")
    learning_rate: float = Field(4.0e-4, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    eps: float = Field(1.0e-8, gt=0, description="AdamW epsilon.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    scheduler: Literal["cosine_with_warmup", "linear_with_warmup", "constant"] = Field(
        "cosine_with_warmup", description="ai2-olmo scheduler name."
    )
    warmup_steps: int = Field(2000, ge=0, description="Linear warmup steps; must be fewer than the training steps (checked at compile time).")
    final_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final LR / peak LR (ai2-olmo alpha_f).")
    precision: Literal["fp32", "amp_bf16"] = Field(
        "amp_bf16", description="Training precision; CPU runs use fp32."
    )
    distributed_strategy: Literal["single", "ddp", "fsdp"] = Field(
        "fsdp", description="Process wrapping under torchrun; `single` only for 1 process."
    )
    checkpoint_interval_steps: int = Field(
        1000, gt=0, description="Save a resumable checkpoint every N steps.", json_schema_extra=NOT_IN_ID
    )
    checkpoint_format: Literal["full", "sharded"] = Field(
        "full",
        description="`full`: rank 0 gathers the whole model and optimizer state into one file (fine for 1 B); "
                    "`sharded`: every rank writes its own shards with torch.distributed.checkpoint, for models "
                    "one rank cannot gather. A run resumes from either format; the format changes no result.",
        json_schema_extra=NOT_IN_ID,
    )
    log_interval_steps: int = Field(10, gt=0, description="Log metrics every N steps.", json_schema_extra=NOT_IN_ID)
    data_workers: int = Field(0, ge=0, description="DataLoader workers.", json_schema_extra=NOT_IN_ID)
    wandb_project: str | None = Field(
        None, description="Log to Weights & Biases under this project; null = no network logging.",
        json_schema_extra=NOT_IN_ID,
    )
