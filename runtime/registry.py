"""The runtime implementation of every stage kind, from the one table of kinds (`compiler.kinds`; no
discovery magic). Modules import torch lazily."""
from __future__ import annotations

import importlib
from types import ModuleType

from compiler.kinds import KINDS

STAGES: dict[str, str] = {k.name: k.module for k in KINDS}


def load_stage(kind: str) -> ModuleType:
    """The stage module: exposes VERSION, Config and run(cfg, ctx)."""
    return importlib.import_module(STAGES[kind])
