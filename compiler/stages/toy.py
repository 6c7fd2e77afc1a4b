"""`toy`: The paper's toy model of feature entanglement (Markov chains, 4-d residual).
Its config, VERSION and plan; `runtime.toy` runs it."""
from __future__ import annotations

from compiler.planning import RunPlanning
from compiler.schema.base import StrictModel, same_as
from compiler.schema.spec import Spec
from compiler.schema.toy import ToySection


VERSION = 2


class Config(StrictModel):
    toy: ToySection = same_as(Spec, "toy")


def plan(run: RunPlanning) -> None:
    """The toy model of feature entanglement, independent of everything else."""
    if run.spec.toy.enabled:
        run.roles["toy"] = run.add("toy", dict(toy=run.spec.toy), {})
