"""Every stage kind, once, in pipeline order: its name, the runtime module that implements it (a dotted
path, imported by `runtime.registry` only: the compiler never imports the runtime), and whether an unset
`resources.<kind>` section means no GPU. The rule order (`KIND_ORDER`), the resources section's kinds and
the runtime registry all come from this table.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageKind:
    name: str
    module: str
    gpu_by_default: bool = True
    """False: an unset `resources.<kind>` means `default` without GPUs (CPU work by nature)."""


KINDS: tuple[StageKind, ...] = (
    StageKind("tokenizer", "runtime.tokenizer"),
    StageKind("tokenize", "runtime.tokenize", gpu_by_default=False),       # tokenizing is CPU work
    StageKind("mix", "runtime.mix"),
    StageKind("pretrain", "runtime.pretrain"),
    StageKind("activations", "runtime.activations"),
    StageKind("probe", "runtime.probe", gpu_by_default=False),            # the default `compiled` fit: CPU cores
    StageKind("steer", "runtime.steer"),
    StageKind("posttrain", "runtime.posttrain"),
    StageKind("evaluate", "runtime.evaluate"),
    StageKind("attack", "runtime.attack"),
    StageKind("score", "runtime.score", gpu_by_default=False),            # an API client or a CPU classifier
    StageKind("toy", "runtime.toy"),
    StageKind("scorer_check", "runtime.scorer_check", gpu_by_default=False),
    StageKind("report", "runtime.report"),
)

KIND_ORDER: tuple[str, ...] = tuple(k.name for k in KINDS)
"""Stage kinds in pipeline order (rules are rendered in it; a kind's inputs come from earlier kinds)."""
NO_GPU_KINDS: tuple[str, ...] = tuple(k.name for k in KINDS if not k.gpu_by_default)
