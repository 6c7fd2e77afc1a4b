"""The `posttrain` section: the other detoxifiers — prompting, SFT and DPO (TRL).

Prompting is not a training stage: the evaluation stage prepends the prefix at generation time, and the
report lists it beside the trained detoxifiers. SFT and DPO data and hyperparameters are [open] in the
paper; the defaults are TRL's, scaled down. The natural public data [likely: the closest to the paper's
unstated choice] are the toxicity pairs of Lee et al. 2024 ("A Mechanistic Understanding of Alignment
Algorithms"; split JSONL files): DPO with `prompt_field: prompt_text`, `chosen_field: unpert_gen_text`
(the non-toxic continuation), `rejected_field: pert_gen_text` (the toxic one) [sure: their code's
mapping]; SFT on the non-toxic side of the same pairs, `prompt_field: prompt_text` with
`data.text_field: unpert_gen_text`. Every field is a dotted path into the source's records.
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
    save_every_minutes: float = Field(
        30.0, gt=0, description="Wall-clock minutes between resume checkpoints (a 1B model's checkpoint with "
        "optimizer state is ~14 GB: a step count would save every few minutes on a GPU). A stop signal "
        "always saves.", json_schema_extra=NOT_IN_ID)
    save_steps: int | None = Field(
        None, gt=0, description="Also checkpoint every this many steps; null = by time only (tests set it "
        "to check resuming).", json_schema_extra=NOT_IN_ID)


class SFTSection(_TrainerSection):
    """Supervised fine-tuning on non-toxic texts (TRL `SFTTrainer`, the whole text is trained on)."""

    data: TextSourceSpec = Field(description="Non-toxic texts, in the source's `text_field` (Lee et al. pairs: "
                                 "`unpert_gen_text`).")
    prompt_field: str | None = Field(
        None, description="Record field holding a prompt the text continues; the example is prompt + text, "
        "joined as they are (Lee et al. pairs: `prompt_text`). Null = the text alone.",
    )


class DPOSection(_TrainerSection):
    """Direct preference optimisation (TRL `DPOTrainer`) on prompt/chosen/rejected pairs."""

    data: TextSourceSpec = Field(description="Preference pairs: one record holds a prompt and its two continuations.")
    beta: float = Field(0.1, gt=0, description="DPO temperature beta.")
    prompt_field: str = Field("prompt", description="Record field holding the prompt, plain text (Lee et al. "
                              "pairs: `prompt_text`).")
    chosen_field: str = Field(
        "chosen", description="Record field holding the preferred (non-toxic) continuation of the prompt (Lee et "
        "al. pairs: `unpert_gen_text`)."
    )
    rejected_field: str = Field(
        "rejected", description="Record field holding the dispreferred (toxic) continuation of the prompt (Lee "
        "et al. pairs: `pert_gen_text`)."
    )


class PosttrainSection(StrictModel):
    """The non-ITI detoxifiers."""

    prompting: PromptingSection = Field(default_factory=PromptingSection)
    sft: SFTSection | None = Field(None, description="SFT detoxifier; null = none.")
    dpo: DPOSection | None = Field(None, description="DPO detoxifier; null = none.")
