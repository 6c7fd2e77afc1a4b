"""Toxicity scorers: which model or service turns a text into a toxicity score in [0, 1].

Shared by the stages that score texts (evaluation generations, red-team continuations, the report's
scorer/probe-label agreement). A scorer's fields are part of the id of whatever it scores, except the
operational ones marked NOT_IN_ID (endpoints, rates, cache paths).
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from .base import NOT_IN_ID, StrictModel


class OfflineScorer(StrictModel):
    """`alt-profanity-check` (ships its model; no network)."""

    kind: Literal["offline"] = "offline"


class DetoxifyScorer(StrictModel):
    """Detoxify from a local checkpoint file."""

    kind: Literal["detoxify"] = "detoxify"
    checkpoint_path: str = Field(description="Local Detoxify checkpoint (.ckpt); must exist.")
    variant: Literal["original", "unbiased", "multilingual"] = "original"


class PerspectiveScorer(StrictModel):
    """Google Perspective API over HTTP, with rate limit, retries and a persistent score cache."""

    kind: Literal["perspective"] = "perspective"
    api_key_env: str = Field("PERSPECTIVE_API_KEY", description="Environment variable holding the key.")
    endpoint: str = Field(
        "https://commentanalyzer.googleapis.com/v1alpha1/comments:analyze",
        description="API endpoint (tests point it at a local server).", json_schema_extra=NOT_IN_ID,
    )
    queries_per_second: float = Field(1.0, gt=0, description="Client-side rate limit.", json_schema_extra=NOT_IN_ID)
    max_retries: int = Field(8, ge=0, description="Retries on 429/5xx/timeouts.", json_schema_extra=NOT_IN_ID)
    cache_path: str = Field(
        ".cache/perspective.sqlite", description="Persistent text→score cache.", json_schema_extra=NOT_IN_ID
    )
    timeout_s: float = Field(30.0, gt=0, description="Per-request timeout in seconds.", json_schema_extra=NOT_IN_ID)
    backoff_initial_s: float = Field(
        1.0, gt=0, description="First retry wait in seconds; doubles on each retry (capped at 64 s).",
        json_schema_extra=NOT_IN_ID,
    )


ScorerSpec = Annotated[Union[OfflineScorer, DetoxifyScorer, PerspectiveScorer], Field(discriminator="kind")]
