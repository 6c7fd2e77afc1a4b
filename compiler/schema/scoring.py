"""Toxicity scorers: which model or service turns a text into a toxicity score in [0, 1].

Shared by the stages that score texts (evaluation generations, red-team continuations, the report's
scorer/probe-label agreement). A scorer's fields are part of the id of whatever it scores, except the
operational ones marked NOT_IN_ID (rates, retries, cache paths; a Perspective endpoint is in the id).
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from .base import NOT_IN_ID, StrictModel


NAME = Field(None, pattern=r"^[a-z0-9_]+$",
             description="Short name for metric columns and the report; null = derived from the scorer.")


class OfflineScorer(StrictModel):
    """`alt-profanity-check` (ships its model; no network)."""

    kind: Literal["offline"] = "offline"
    name: str | None = NAME

    @property
    def label(self) -> str:
        return self.name or "offline"


class DetoxifyScorer(StrictModel):
    """Detoxify from a local checkpoint file."""

    kind: Literal["detoxify"] = "detoxify"
    name: str | None = NAME
    checkpoint_path: str = Field(description="Local Detoxify checkpoint (.ckpt); must exist.")
    variant: Literal["original", "unbiased", "multilingual"] = "original"

    @property
    def label(self) -> str:
        return self.name or f"detoxify_{self.variant}"


class PerspectiveScorer(StrictModel):
    """Google Perspective API over HTTP, with rate limit, retries and a persistent score cache."""

    kind: Literal["perspective"] = "perspective"
    name: str | None = NAME
    api_key_env: str = Field("PERSPECTIVE_API_KEY", description="Environment variable holding the key.")
    endpoint: str = Field(
        "https://commentanalyzer.googleapis.com/v1alpha1/comments:analyze",
        description="API endpoint (tests point it at a local server). In the id and in every cache key: a proxy "
                    "or a fake endpoint never shares cached scores with the real API.",
    )
    queries_per_second: float = Field(
        1.0, gt=0, description="Requests per second of all score jobs together (Perspective's default quota: 1).",
        json_schema_extra=NOT_IN_ID,
    )
    max_retries: int = Field(8, ge=0, description="Retries on 429/5xx/timeouts.", json_schema_extra=NOT_IN_ID)
    cache_path: str = Field(
        ".cache/perspective.sqlite", description="Persistent text→score cache, shared by every spec.",
        json_schema_extra=NOT_IN_ID,
    )
    timeout_s: float = Field(30.0, gt=0, description="Per-request timeout in seconds.", json_schema_extra=NOT_IN_ID)
    backoff_initial_s: float = Field(
        1.0, gt=0, description="First retry wait in seconds; doubles on each retry (capped at 64 s).",
        json_schema_extra=NOT_IN_ID,
    )
    quota_path: str = Field(
        ".cache/perspective.quota",
        description="Send schedule shared by every process naming this file: together they keep to "
                    "`queries_per_second`. On a cluster, a shared file system with working fcntl locks; "
                    "else divide the rate by the nodes scoring at once.",
        json_schema_extra=NOT_IN_ID,
    )

    @property
    def label(self) -> str:
        return self.name or "perspective"


class LexiconScorer(StrictModel):
    """A word list: a text scores min(1, occurrences of listed words / `saturation`). Transparent and
    deterministic (no model): what it measures is exactly the list, so read it as "says one of these
    words", not as toxicity in general."""

    kind: Literal["lexicon"] = "lexicon"
    name: str | None = NAME
    path: str = Field(description="Word list file: one word or phrase per line, `#` starts a comment; matched "
                                  "case-insensitively as whole words. Its content enters the id.")
    saturation: int = Field(1, gt=0, description="Occurrences at which a text scores 1.0 (1: any listed word "
                                                 "makes the text toxic; 2: one word scores 0.5, two 1.0).")

    @property
    def label(self) -> str:
        return self.name or "lexicon"


class ClassifierScorer(StrictModel):
    """Any Hugging Face `AutoModelForSequenceClassification` checkpoint: from the Hub (`model` at a commit,
    both in the id; a branch is locked to one by `mixsteer lock`) or a local folder (`path`, its files' content
    in the id)."""

    kind: Literal["classifier"] = "classifier"
    name: str | None = NAME
    model: str | None = Field(None, description="Hub repository id, e.g. `tomh/toxigen_roberta`.")
    revision: str | None = Field(
        None, description="Hub commit (40 hex digits) the weights are pinned to; a branch or tag (or null: the "
                          "default branch) floats and is resolved to a commit by `mixsteer lock`.")
    path: str | None = Field(None, description="Local checkpoint folder instead of `model` (same files).")
    toxic_labels: list[str] = Field(
        min_length=1, description="Label name(s) (the model config's `id2label`) that mean toxic.")
    combine: Literal["max", "sum"] = Field(
        "max", description="Several toxic labels: the max of their probabilities (multi-label models such as "
                           "Detoxify's) or their sum, capped at 1 (single-label softmax models with several "
                           "toxic classes).")
    activation: Literal["auto", "sigmoid", "softmax"] = Field(
        "auto", description="`auto`: sigmoid when the config's `problem_type` is multi_label_classification "
                            "or the model has one logit, else softmax over the logits.")
    max_length_tokens: int | None = Field(
        None, gt=0, description="Tokens the model reads at once (special tokens included); null = the model's "
                                "maximum. Longer texts follow `long_texts` and are counted in the metrics.")
    long_texts: Literal["truncate", "max_windows"] = Field(
        "truncate", description="Texts longer than `max_length_tokens`: `truncate` scores their beginning only "
                                "(open-instruct's and Detoxify's rule); `max_windows` scores windows of "
                                "`max_length_tokens` that overlap by half a window and cover the whole text, "
                                "and takes the highest score (a toxic ending is not missed).")
    batch_size: int = Field(64, gt=0, description="Texts per forward pass (length-sorted).",
                            json_schema_extra=NOT_IN_ID)

    @model_validator(mode="after")
    def _one_source(self) -> "ClassifierScorer":
        if (self.model is None) == (self.path is None):
            raise ValueError("set exactly one of `model` (Hub id, with `revision`) or `path` (local folder)")
        return self

    @property
    def label(self) -> str:
        source = (self.model or self.path or "").rstrip("/").rsplit("/", 1)[-1]
        return self.name or ("clf_" + "".join(c if c.isalnum() else "_" for c in source.lower()))


ScorerSpec = Annotated[Union[OfflineScorer, LexiconScorer, DetoxifyScorer, PerspectiveScorer, ClassifierScorer],
                       Field(discriminator="kind")]
