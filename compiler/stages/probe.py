"""`probe`: Logistic probes per head and per layer; accuracies, directions, entanglement.
Its config, VERSION and plan; `runtime.probe` runs it."""
from __future__ import annotations

from typing import Literal

from compiler.planning import RunPlanning
from compiler.schema.base import StrictModel, same_as
from compiler.schema.probe import ProbeSection


VERSION = 3


class Config(StrictModel):
    validation_fraction: float = same_as(ProbeSection, "validation_fraction")
    split_seed: int = same_as(ProbeSection, "split_seed")
    recipe: Literal["li2023", "standardized"] = same_as(ProbeSection, "recipe", keep_default=True)
    implementation: Literal["compiled", "batched", "sklearn"] = same_as(ProbeSection, "implementation")
    l2_penalty: float = same_as(ProbeSection, "l2_penalty")
    max_iterations: int = same_as(ProbeSection, "max_iterations")
    accuracy_threshold: float = same_as(ProbeSection, "accuracy_threshold")
    gradient_tolerance: float = same_as(ProbeSection, "gradient_tolerance", keep_default=True)
    entanglement_heads: int = same_as(ProbeSection, "entanglement_heads", keep_default=True)
    min_attribute_examples: int = same_as(ProbeSection, "min_attribute_examples", keep_default=True)


def plan(run: RunPlanning) -> None:
    """Linear probes on every head of the run's activations."""
    p = run.spec.probe
    if "activations" not in run.roles:
        return
    run.roles["probe"] = run.add("probe", dict(
        validation_fraction=p.validation_fraction, split_seed=p.split_seed,
        recipe=p.recipe, implementation=p.implementation, l2_penalty=p.l2_penalty, max_iterations=p.max_iterations,
        accuracy_threshold=p.accuracy_threshold, gradient_tolerance=p.gradient_tolerance,
        entanglement_heads=p.entanglement_heads, min_attribute_examples=p.min_attribute_examples,
    ), {"activations": run.roles["activations"]})
