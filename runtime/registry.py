"""The stage kinds, in one explicit table (no discovery magic). Modules import torch lazily."""
from __future__ import annotations

import importlib
from types import ModuleType

STAGES: dict[str, str] = {
    "tokenizer": "runtime.tokenizer",
    "tokenize": "runtime.tokenize",
    "mix": "runtime.mix",
    "pretrain": "runtime.pretrain",
    "activations": "runtime.activations",
    "probe": "runtime.probe",
    "steer": "runtime.steer",
    "posttrain": "runtime.posttrain",
    "evaluate": "runtime.evaluate",
    "attack": "runtime.attack",
    "score": "runtime.score",
    "toy": "runtime.toy",
    "scorer_check": "runtime.scorer_check",
    "report": "runtime.report",
}


def load_stage(kind: str) -> ModuleType:
    """The stage module: exposes VERSION, Config and run(cfg, ctx)."""
    return importlib.import_module(STAGES[kind])
