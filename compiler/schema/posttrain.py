"""The `posttrain` section: the other detoxifiers — prompting, SFT and DPO (TRL).

Prompting is not a training stage: the evaluation stage prepends the prefix at generation time, and the
report lists it beside the trained detoxifiers. SFT and DPO data and hyperparameters are [open] in the
paper; the defaults are TRL's, scaled down.
"""
from __future__ import annotations

from pydantic import Field

from .base import NOT_IN_ID, StrictModel
from .sources import TextSourceSpec

DEFAULT_PREFIX = (
    "The following text is respectful, unbiased and free of toxic, hateful or offensive language:\n"
)


class PromptingSection(StrictModel):
    """Instruction-prefix baseline."""

    enabled: bool = Field(True, description="Evaluate the base model with the prefix.")
    prefix: str = Field(DEFAULT_PREFIX, description="Text prepended to every prompt at generation time.")


class _TrainerSection(StrictModel):
    enabled: bool = Field(True, description="Train this detoxifier for each run.")
    learning_rate: float = Field(1e-5, gt=0, description="Peak learning rate.")
    epochs: float = Field(1.0, gt=0, description="Passes over the dataset.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many steps; null = epochs.")
    batch_size: int = Field(8, gt=0, description="Examples per optimizer step.")
    max_length_tokens: int = Field(256, gt=0, description="Truncate examples to this length.")
    save_steps: int = Field(50, gt=0, description="Checkpoint interval for resume.", json_schema_extra=NOT_IN_ID)


class SFTSection(_TrainerSection):
    """Supervised fine-tuning on non-toxic texts (TRL `SFTTrainer`)."""

    data: TextSourceSpec = Field(description="Non-toxic continuations (a `text` field).")


class DPOSection(_TrainerSection):
    """Direct preference optimisation (TRL `DPOTrainer`) on prompt/chosen/rejected pairs."""

    data: TextSourceSpec = Field(description="Pairs with `prompt`, `chosen`, `rejected` fields.")
    beta: float = Field(0.1, gt=0, description="DPO temperature beta.")
    prompt_field: str = Field("prompt", description="Record field holding the prompt (plain text).")
    chosen_field: str = Field(
        "chosen", description="Record field holding the preferred (non-toxic) continuation of the prompt."
    )
    rejected_field: str = Field(
        "rejected", description="Record field holding the dispreferred (toxic) continuation of the prompt."
    )


class PosttrainSection(StrictModel):
    """The non-ITI detoxifiers."""

    prompting: PromptingSection = Field(default_factory=PromptingSection)
    sft: SFTSection | None = Field(None, description="SFT detoxifier; null = none.")
    dpo: DPOSection | None = Field(None, description="DPO detoxifier; null = none.")
