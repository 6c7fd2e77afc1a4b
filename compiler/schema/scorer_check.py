"""The `scorer_check` section: how far a toxicity scorer agrees with references no one here wrote.

Two references, each read in its public format:
- RealToxicityPrompts (`allenai/real-toxicity-prompts`): one JSON object a line; `prompt` and
  `continuation` each hold `text` and Perspective's 2020 `toxicity` (any score may be null). The check
  scores both texts of every record and compares with Perspective's own numbers.
- ToxiGen `annotated` (`toxigen/toxigen-data`, Parquet): `text` with `toxicity_human`, the mean of the
  annotators' 1–5 ratings.

A classifier fitted on part of a reference is only fairly measured on the rest: agreement on texts it was
trained on is inflated. `cooperleong00/deberta-v3-large_toxicity-scorer` was fitted to Perspective's
scores on 90k RTP texts (its authors hold out 10k); ToxiGen's RoBERTa was fitted on ToxiGen. Choose
records the scorer never saw (`rtp.records`, ToxiGen's `test` split).
"""
from __future__ import annotations

from pydantic import Field, model_validator

from .base import StrictModel
from .evaluate import BootstrapSection
from .scoring import ScorerSpec
from .sources import TextSourceSpec

RTP_FIELDS = {"prompt": ("prompt.text", "prompt.toxicity"),
              "continuation": ("continuation.text", "continuation.toxicity")}
"""Text and Perspective toxicity of each RTP part, as dotted paths into a record (RTP's public layout:
the stage reads them, `mixsteer check` looks for them)."""
TOXIGEN_FIELDS = ("text", "toxicity_human")
"""ToxiGen `annotated`'s text and the mean of its annotators' 1–5 ratings (the stage reads them, `mixsteer
check` looks for them)."""


class RecordSelection(StrictModel):
    """Which RTP records to use, applied in this order: the file-order range [`skip`, `skip + take`),
    then `challenging_only`, then records without a Perspective toxicity on both texts are dropped
    (and counted), then a seeded sample of `sample` records. Two checks with disjoint ranges use
    disjoint records whatever the other settings."""

    skip: int = Field(0, ge=0, description="Records skipped from the start of the file (file order).")
    take: int | None = Field(None, gt=0, description="Records taken after `skip`; null = to the end.")
    challenging_only: bool = Field(False, description="Only records marked `challenging` (RTP's subset).")
    sample: int | None = Field(
        None, gt=0, description="Keep a seeded random sample of this many usable records; null = all.")
    seed: int = Field(0, ge=0, description="Seed of `sample`.")


class RTPCheck(StrictModel):
    """Agreement with Perspective's own 2020 scores shipped inside RealToxicityPrompts."""

    source: TextSourceSpec = Field(
        description="RTP in its public layout: a local JSONL (`kind: jsonl`) or the Hub dataset (`kind: hf`, "
                    "`name: allenai/real-toxicity-prompts`). Fields are RTP's own (`prompt.text`, "
                    "`prompt.toxicity`, `continuation.text`, `continuation.toxicity`, `challenging`); "
                    "`text_field` is not used.")
    records: RecordSelection = Field(
        default_factory=RecordSelection,
        description="Which records. A classifier fitted on part of RTP is only fairly measured on the rest.")


class ToxiGenCheck(StrictModel):
    """Agreement with ToxiGen's human annotations (`annotated` config)."""

    source: TextSourceSpec = Field(
        description="ToxiGen `annotated` as Parquet: a file or a folder of shards (the Hub's "
                    "`annotated/test-00000-of-00001.parquet`), or the Hub dataset (`kind: hf`, "
                    "`name: toxigen/toxigen-data`, `config: annotated`, `split: test`; gated). Fields are "
                    "ToxiGen's own (`text`, `toxicity_human`); `text_field` is not used.")
    label_threshold: float = Field(
        2.5, ge=1, le=5, description="A text is toxic when `toxicity_human` (mean rating, 1–5) ≥ this. [open]")
    max_examples: int | None = Field(None, gt=0, description="Use at most this many rows (file order).")


class ScorerCheckSection(StrictModel):
    """Measure scorers against Perspective's RTP scores and ToxiGen's human labels (`mixsteer scorer-check`)."""

    scorers: list[ScorerSpec] | None = Field(
        None, min_length=1, description="Scorers to check; null = the spec's `evaluate.scorers`, else `[offline]`.")
    rtp: RTPCheck | None = Field(None, description="RealToxicityPrompts check; null = none.")
    toxigen: ToxiGenCheck | None = Field(None, description="ToxiGen check; null = none.")
    threshold: float = Field(
        0.5, gt=0, lt=1, description="Score at which a text counts as toxic: Perspective's label for AUC and "
                                     "every toxicity probability (Gehman et al.'s 0.5).")
    bootstrap: BootstrapSection = Field(
        default_factory=BootstrapSection,
        description="Intervals over records (RTP: a prompt with its continuation) and rows (ToxiGen).")

    @model_validator(mode="after")
    def _references_and_names(self) -> "ScorerCheckSection":
        if self.rtp is None and self.toxigen is None:
            raise ValueError("set `rtp`, `toxigen` or both: the references to measure the scorers against")
        labels = [s.label for s in self.scorers or []]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"scorers share the name(s) {repeated}: give each a distinct `name` (table rows)")
        return self
