"""The `pretrain` section: optimisation of the OLMo model on the `mix` stage's tokens.

Defaults are the official OLMo-1B recipe where it carries over (AdamW 4e-4, wd 0.1, betas 0.9/0.95, clip
1.0, cosine to 0.1×, ai2-olmo's AdamW eps) [sure]. The number of optimizer steps follows from the data: one
pass over `data.clean_tokens + toxic tokens` times `epochs`, at `global_batch_size × sequence_length` tokens
a step, so runs of different toxic shares have different lengths.

The schedule is stated relative to that length, never copied in steps: the official 2,000 warmup steps are
0.27 % of OLMo-1B's 739,328 steps but a third of a 5,000-step run. Warmup is a fraction of the run
(`warmup_fraction`, the default) or a token count (`warmup_tokens`); the decay ends at `decay_fraction` of
the run. `warmup_steps(max_steps)` and `decay_steps(max_steps)` turn them into ai2-olmo's `t_warmup` and
`t_max`: one definition for the planner's checks and the runtime.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

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
    eps: float = Field(
        1.0e-5, gt=0, description="AdamW epsilon. Default: ai2-olmo's own (0.6.0), which the official OLMo-1B "
                                  "config (it sets none) resolves to [likely]; torch's default is 1e-8.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    scheduler: Literal["cosine_with_warmup", "linear_with_warmup", "constant"] = Field(
        "cosine_with_warmup", description="ai2-olmo scheduler name."
    )
    warmup_fraction: float | None = Field(
        0.01, ge=0, lt=1,
        description="Linear warmup as a fraction of the run's optimizer steps (rounded to the nearest step): "
                    "the same share of every run whatever its token count. Default 1 % (Pythia's choice; "
                    "the official OLMo-1B's 2,000 of 739,328 steps is 0.27 %) [open]. Null when "
                    "`warmup_tokens` is set.")
    warmup_tokens: int | None = Field(
        None, ge=0,
        description="Linear warmup as a token count instead (rounded to whole steps): the same tokens for every "
                    "run. Setting it sets `warmup_fraction` to null.")
    decay_fraction: float = Field(
        1.0, gt=0, le=1,
        description="The learning rate reaches `final_lr_ratio` × peak at this fraction of the run (ai2-olmo "
                    "`t_max`) and stays there; 1.0 = every run ends fully decayed [likely].")
    final_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final LR / peak LR (ai2-olmo alpha_f).")
    precision: Literal["fp32", "amp_bf16"] = Field(
        "amp_bf16", description="Training precision; CPU runs use fp32."
    )
    distributed_strategy: Literal["single", "ddp", "fsdp"] = Field(
        "ddp",
        description="Process wrapping under torchrun; `single` only for 1 process. `ddp` (default: a 1 B model "
                    "with its AdamW state fits one 80 GB GPU) reduces gradients once a step; `fsdp` shards "
                    "parameters for models that do not fit. DDP skips the gradient sync on all but the last "
                    "micro-batch, FSDP only with fp32 parameters (docs/scaling.md).")
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
    data_workers: int | None = Field(
        None, ge=0,
        description="DataLoader worker processes per rank; null = the stage's CPU threads per rank minus the "
                    "training thread, at most 4. Memory is pinned on GPUs.", json_schema_extra=NOT_IN_ID)
    wandb_project: str | None = Field(
        None, description="Log to Weights & Biases under this project; null = no network logging.",
        json_schema_extra=NOT_IN_ID,
    )

    @model_validator(mode="before")
    @classmethod
    def _warmup_tokens_replace_fraction(cls, data: Any) -> Any:
        """`warmup_tokens` given without `warmup_fraction`: the fraction's default gives way."""
        if isinstance(data, dict) and data.get("warmup_tokens") is not None and "warmup_fraction" not in data:
            return {**data, "warmup_fraction": None}
        return data

    @model_validator(mode="after")
    def _one_warmup(self) -> "PretrainSection":
        if (self.warmup_fraction is None) == (self.warmup_tokens is None):
            raise ValueError("set exactly one of warmup_fraction and warmup_tokens (over a base spec that "
                             "sets the other, set that one to null)")
        return self

    @property
    def tokens_per_step(self) -> int:
        """Tokens in one optimizer step, all devices."""
        return self.global_batch_size * self.sequence_length

    def warmup_steps(self, max_steps: int) -> int:
        """ai2-olmo `t_warmup` for a run of `max_steps` optimizer steps."""
        if self.warmup_tokens is not None:
            return round(self.warmup_tokens / self.tokens_per_step)
        assert self.warmup_fraction is not None
        return round(self.warmup_fraction * max_steps)

    def decay_steps(self, max_steps: int) -> int:
        """ai2-olmo `t_max`: the step at which the decay reaches `final_lr_ratio`."""
        return round(self.decay_fraction * max_steps)
