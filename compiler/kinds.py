"""Every stage kind, once, in pipeline order. A row is all the project knows about a kind beyond its two
modules: the compiler side `compiler.stages.<kind>` (`VERSION`, `Config`, `plan`) and the runtime side
`runtime.<kind>` (`run`), both named here as dotted paths and imported lazily (the compiler never imports
the runtime; `runtime.registry` does). The rule order (`KIND_ORDER`), the planner's order, the resources
section's fields, their no-GPU defaults and the report's metric columns all come from this table.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Literal


@dataclass(frozen=True)
class StageKind:
    name: str
    gpu_by_default: bool = True
    """False: an unset `resources.<kind>` means `default` without GPUs (CPU work by nature)."""
    resources_from: str | None = None
    """An unset `resources.<kind>` takes this kind's section when that is set (work that moved between kinds)."""
    resources_note: str | None = None
    """The description of `resources.<kind>` where its default needs saying."""
    torchrun: bool = False
    """Runs as `resources.<kind>.processes` torchrun processes per node on `nodes` nodes (else one process)."""
    metrics_rank: int | None = None
    """Where this kind's `metrics.json` columns stand in the report's table (None: it has none there)."""
    scope: Literal["run", "spec"] = "run"
    """`run`: planned for each run of a spec (`plan(run)`); `spec`: once over all runs (the report)."""
    definition: str = ""
    """The compiler-side module (`VERSION`, `Config`, `plan`); default `compiler.stages.<name>`."""
    implementation: str = ""
    """The runtime module (`run(cfg, ctx)`, optional `RESTART`); default `runtime.<name>`."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "definition", self.definition or f"compiler.stages.{self.name}")
        object.__setattr__(self, "implementation", self.implementation or f"runtime.{self.name}")

    def stage(self) -> ModuleType:
        """The compiler-side module of this kind."""
        return importlib.import_module(self.definition)


KINDS: tuple[StageKind, ...] = (
    StageKind("tokenizer"),
    StageKind("tokenize", gpu_by_default=False, resources_from="mix", resources_note=(
        "Tokenizing one source into shared shards (`data.tokenize_workers` processes); unset = `mix`'s, which "
        "did this work before, else `default` with `gpus: 0`.")),
    StageKind("mix", metrics_rank=5),
    StageKind("pretrain", torchrun=True, metrics_rank=4),
    StageKind("activations"),
    StageKind("probe", gpu_by_default=False, metrics_rank=3, resources_note=(
        "Probe fitting; unset = `default` with `gpus: 0` (only `implementation: batched` uses a GPU, and only "
        "when this asks for one).")),
    StageKind("steer", metrics_rank=1),
    StageKind("posttrain"),
    StageKind("evaluate", metrics_rank=0),
    StageKind("attack", metrics_rank=2),
    StageKind("score", gpu_by_default=False, resources_note=(
        "Scoring jobs; unset = `default` with `gpus: 0` (never a GPU unless asked for).")),
    StageKind("toy", metrics_rank=6),
    StageKind("scorer_check", gpu_by_default=False, resources_note="The scorer check; unset = `default` with `gpus: 0`."),
    StageKind("report", scope="spec"),
)

KIND_ORDER: tuple[str, ...] = tuple(k.name for k in KINDS)
"""Stage kinds in pipeline order (rules are rendered in it; a kind's inputs come from earlier kinds)."""


def kind_named(name: str) -> StageKind:
    """The table's row of one kind (KeyError for a kind the table does not hold)."""
    for kind in KINDS:
        if kind.name == name:
            return kind
    raise KeyError(f"no stage kind {name!r} (compiler.kinds.KINDS holds {', '.join(KIND_ORDER)})")
