"""`evaluate`: Generations, detection, MMLU, cross-entropy and KL for one model (no scoring).
Its config, VERSION and plan; `runtime.evaluate` runs it."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from compiler.planning import RunPlanning
from compiler.schema.base import StrictModel, same_as
from compiler.schema.evaluate import (BootstrapSection, CrossEntropySection, DetectionSection, EvaluateSection,
                                      GenerationSection, MMLUSection, PromptSet)
from compiler.schema.precision import Compute, compute_field
from compiler.schema.probe import LabelledData
from compiler.schema.spec import Spec


VERSION = 5


class Config(StrictModel):
    """The evaluate section's measuring fields (its `scorers` and `toxic_threshold` belong to `score`)."""

    prompt_sets: list[PromptSet] = same_as(EvaluateSection, "prompt_sets")
    generation: GenerationSection = same_as(EvaluateSection, "generation")
    mmlu: MMLUSection = same_as(EvaluateSection, "mmlu")
    detection: DetectionSection = same_as(EvaluateSection, "detection")
    cross_entropy: CrossEntropySection = same_as(EvaluateSection, "cross_entropy")
    bootstrap: BootstrapSection = same_as(EvaluateSection, "bootstrap")
    prefix: str | None = Field(None, description="Prompting baseline: text prepended to every prompt.")
    seed: int = same_as(Spec, "seed")
    compute: Compute = compute_field()
    detection_data: LabelledData | None = Field(
        None, description="Labelled data for detection when `detection.data` is null "
        "(the compiler passes the probe data).",
    )


def section_fields(ev: EvaluateSection) -> dict[str, Any]:
    """The Config fields an evaluate section gives (the planner adds prefix, seed and detection data)."""
    return dict(prompt_sets=ev.prompt_sets, generation=ev.generation, mmlu=ev.mmlu, detection=ev.detection,
                cross_entropy=ev.cross_entropy, bootstrap=ev.bootstrap)


def plan(run: RunPlanning) -> None:
    """One instance per model variant (controls included): roles `evaluate/<variant>`."""
    spec, ev = run.spec, run.spec.evaluate
    if ev is None:
        return
    detection_data = spec.probe.data if ev.detection.data is None and spec.probe is not None else None
    for variant, v in run.variants_in_order():
        inputs = {"model": v.model, "mix": run.roles["mix"]}
        if variant not in ("base", "prompting") and ev.cross_entropy.kl_to_base:
            inputs["base"] = run.roles["pretrain"]
        run.roles[f"evaluate/{variant}"] = run.add("evaluate", dict(
            **section_fields(ev), prefix=v.prefix, detection_data=detection_data, seed=spec.seed,
        ), inputs)
