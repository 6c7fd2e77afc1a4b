"""The runtime's stage kinds, from the one table of kinds (`compiler.kinds`; no discovery magic): each
kind's compiler-side definition (`VERSION`, `Config`) joined with its runtime implementation (`run`, and
optionally `RESTART` and `is_rank_zero`). Modules import torch lazily."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from compiler.kinds import KINDS, kind_named

STAGES: dict[str, str] = {k.name: k.implementation for k in KINDS}


@dataclass(frozen=True)
class Stage:
    """The stage face `runtime.stage.execute` runs (the names a stage module has always exposed)."""

    kind: str
    VERSION: int
    Config: type
    run: Callable[[Any, Any], dict | None]
    RESTART: str | None = None
    """Why a stopped run starts over (`runtime.preempt.stage_stops`); None: it resumes."""
    is_rank_zero: Callable[[], bool] = lambda: True
    """Whether this process writes the stage's outputs (ranks of a torchrun job: only rank 0)."""


def load_stage(kind: str) -> Stage:
    row = kind_named(kind)
    definition, implementation = row.stage(), importlib.import_module(row.implementation)
    optional = {name: getattr(implementation, name) for name in ("RESTART", "is_rank_zero")
                if hasattr(implementation, name)}
    return Stage(kind, definition.VERSION, definition.Config, implementation.run, **optional)
