"""The whole spec: one YAML document, one section per stage, plus `extends:` and `sweep:`.

`extends` and `sweep` are compile-time only (see `compiler.resolve`): after resolution every run is a
plain `Spec` with concrete values, which is what the planner turns into stage instances.
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from .attack import AttackSection
from .base import StrictModel
from .data import DataSection, TokenizerSection, BPETokenizer
from .evaluate import EvaluateSection
from .model import ModelSection
from .posttrain import PosttrainSection
from .precision import PrecisionSection
from .pretrain import PretrainSection
from .probe import ProbeSection
from .report import ReportSection
from .resources import ResourcesSection
from .scorer_check import ScorerCheckSection
from .steer import SteerSection
from .toy import ToySection


class SweepSection(StrictModel):
    """Runs = cartesian product of `grid` axes × lock-step `zip` axes, over dotted spec paths."""

    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="Cartesian axes, e.g. `data.toxic_share: [0, 0.1]`."
    )
    zip: dict[str, list[Any]] = Field(
        default_factory=dict, description="Lock-step axes; all lists must have the same length."
    )


class Spec(StrictModel):
    """A mixsteer experiment."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Spec name (default: file stem).")
    description: str = Field("", description="One line on what the experiment asks.")
    seed: int = Field(0, ge=0, description="Seed for data order, initialisation and sampling.")
    model: ModelSection = Field(default_factory=ModelSection, description='OLMo architecture (preset + overrides).')
    tokenizer: TokenizerSection = Field(default_factory=BPETokenizer, description="`olmo` or `bpe`.")
    data: DataSection | None = Field(None, description="Pretraining mixture; null = no pretraining.")
    pretrain: PretrainSection = Field(default_factory=PretrainSection, description='Pretraining optimisation (OLMo-1B recipe defaults).')
    probe: ProbeSection | None = Field(None, description="Per-head probing; null = none.")
    steer: SteerSection = Field(default_factory=lambda: SteerSection(enabled=False), description='ITI steering; off unless enabled.')
    posttrain: PosttrainSection = Field(default_factory=PosttrainSection, description='Prompting, SFT and DPO detoxifiers.')
    evaluate: EvaluateSection | None = Field(None, description="Evaluation; null = none.")
    attack: AttackSection | None = Field(None, description="Red-teaming; null = none.")
    toy: ToySection = Field(default_factory=ToySection, description='Toy feature-entanglement experiment; off unless enabled.')
    scorer_check: ScorerCheckSection | None = Field(
        None, description="Agreement of scorers with Perspective's RTP scores and ToxiGen's human labels; null = none.")
    report: ReportSection = Field(default_factory=ReportSection, description='Report page settings.')
    resources: ResourcesSection = Field(default_factory=ResourcesSection, description='Scheduler requests per stage kind (never in ids).')
    precision: PrecisionSection = Field(
        default_factory=PrecisionSection, description="Number format of model stages on CUDA (CPU: fp32); with "
        "`resources.<kind>.gpus` it decides each model stage's `compute`, which is in its id.")
    sweep: SweepSection = Field(default_factory=SweepSection, description='Grid and zip axes over dotted spec paths.')
