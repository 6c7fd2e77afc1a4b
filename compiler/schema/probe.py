"""The `probe` section: how linearly separable toxicity is inside each model (per head, per layer).

Two stages read it: `activations` (model × labelled data → cached per-head and residual activations)
and `probe` (activations → logistic probes, accuracies, directions). Changing only probe fitting
parameters reuses the cached activations.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import NOT_IN_ID, StrictModel
from .sources import TextSourceSpec


class LabelledData(StrictModel):
    """ToxiGen-style labelled texts: text, a toxicity label or score, optional attributes."""

    source: TextSourceSpec = Field(description="Where the texts are (HF: `skg/toxigen-data`, `annotated`).")
    label_field: str = Field("label", description="Binary label (0/1) or a score binarised by the threshold.")
    label_threshold: float | None = Field(
        None, description="If set, label = score >= threshold (ToxiGen human score 1–5: 2.5). [open]"
    )
    attribute_fields: list[str] = Field(
        default_factory=list,
        description="Other labelled attributes (e.g. `target_group`) whose directions are compared "
        "with the toxicity direction (entanglement).",
    )
    max_examples: int | None = Field(None, gt=0, description="Use at most this many examples.")


class ProbeSection(StrictModel):
    """Linear probes on every attention head's output and every layer's residual stream."""

    data: LabelledData = Field(description="Labelled probe data (paper: 8,960 human-annotated ToxiGen).")
    token_position: Literal["last", "mean"] = Field("last", description="Which token's activation to probe.")
    max_length_tokens: int = Field(128, gt=0, description="Truncate texts to this many tokens.")
    layers: list[int] | None = Field(
        None, description="Model layers to probe (0-based; any subset, in any order); null = all. Every probe "
        "output names the model layer of each row (`layers`), and `head_ranking` is in model layers."
    )
    validation_fraction: float = Field(0.2, gt=0, lt=1, description="Held-out share (paper 4:1 → 0.2).")
    recipe: Literal["li2023", "standardized"] = Field(
        "li2023", description="How probes, directions and σ are computed. `li2023`: Li et al.'s ITI recipe as "
        "honest_llama's `train_probes`/`get_com_directions` code does it [sure: the code; that the paper used "
        "it: likely]: one L2 logistic regression per head (sklearn defaults, C = 1) on the RAW, unscaled head "
        "activations of the train split, heads ranked by validation accuracy; `mass_mean` = mean(toxic) − "
        "mean(non-toxic) over train AND validation rows; σ = std (ddof 0) of all rows projected on each unit "
        "direction. `standardized`: probes on StandardScaler features; mass-mean and σ over the train rows "
        "(the behaviour before `recipe` existed). Residual-stream probes follow the same recipe."
    )
    split_seed: int = Field(0, ge=0, description="Seed of the grouped train/validation split.")
    implementation: Literal["compiled", "batched", "sklearn"] = Field(
        "compiled", description="`compiled`: numba L-BFGS per head, heads in parallel over CPU cores (the "
        "CPU path); `batched`: all heads at once as torch tensors, on a GPU when there is one; "
        "`sklearn`: scikit-learn's LogisticRegression per head (heads spread over joblib workers), the "
        "reference. All three minimise the same objective of the chosen `recipe`."
    )
    l2_penalty: float = Field(1.0, gt=0, description="Inverse of sklearn's C: L2 strength (C = 1/l2).")
    max_iterations: int = Field(1000, gt=0, description="Optimizer iterations per probe.")
    accuracy_threshold: float = Field(
        0.6, gt=0, lt=1, description="Report the number of heads with validation accuracy above this."
    )
    gradient_tolerance: float = Field(
        1e-6, gt=0, description="Stop fitting a probe once max |gradient of its mean loss| is below this "
        "(passed to scikit-learn as `tol`; the fast paths test it in standardised coordinates). honest_llama "
        "keeps sklearn's default 1e-4, a looser stop of the same optimisation: 1e-6 reaches the optimum "
        "that both approximate, so every implementation agrees with it."
    )
    entanglement_heads: int = Field(
        10, gt=0, description="Entanglement (|cos| toxicity vs attribute directions) is averaged over this "
        "many best heads."
    )
    min_attribute_examples: int = Field(
        10, gt=0, description="Attribute values with fewer training examples (with or without the value) "
        "get no direction."
    )
    batch_size: int = Field(32, gt=0, description="Texts per forward pass.", json_schema_extra=NOT_IN_ID)

    @model_validator(mode="after")
    def _layers_unique(self) -> "ProbeSection":
        if self.layers is not None and len(set(self.layers)) != len(self.layers):
            raise ValueError("probe.layers has duplicates")
        return self
