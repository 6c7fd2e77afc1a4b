"""The `toy` stage as the compiler plans it: its config (what enters its content id) and VERSION.
The runtime implements it (`runtime.toy`), reading this config from the stage JSON."""
from __future__ import annotations

from compiler.planning import RunPlanning
from compiler.schema.base import StrictModel, same_as
from compiler.schema.spec import Spec
from compiler.schema.toy import ToySection


VERSION = 2
"""Bump by hand whenever a change of `runtime.toy` changes results (it changes every id)."""


class Config(StrictModel):
    toy: ToySection = same_as(Spec, "toy")


def plan(run: RunPlanning) -> None:
    """The toy model of feature entanglement, independent of everything else."""
    if run.spec.toy.enabled:
        run.roles["toy"] = run.add("toy", dict(toy=run.spec.toy), {})
