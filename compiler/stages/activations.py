"""`activations`: Per-head attention outputs and residual streams on labelled texts.
Its config, VERSION and plan; `runtime.activations` runs it."""
from __future__ import annotations

from typing import Literal

from compiler.planning import RunPlanning
from compiler.schema.base import StrictModel, same_as
from compiler.schema.precision import Compute, compute_field
from compiler.schema.probe import LabelledData, ProbeSection


VERSION = 3


class Config(StrictModel):
    data: LabelledData = same_as(ProbeSection, "data")
    token_position: Literal["last", "mean"] = same_as(ProbeSection, "token_position")
    max_length_tokens: int = same_as(ProbeSection, "max_length_tokens")
    layers: list[int] = same_as(ProbeSection, "layers", description="Model layers to record, sorted (the "
                                "planner fills null with every layer).")
    batch_size: int = same_as(ProbeSection, "batch_size", keep_default=True)
    compute: Compute = compute_field()


def plan(run: RunPlanning) -> None:
    """Head activations of the pretrained model on the probe's labelled texts (with a `probe` section)."""
    p = run.spec.probe
    if p is None or "pretrain" not in run.roles:
        return
    layers = sorted(p.layers) if p.layers is not None else list(range(run.spec.model.n_layers))
    run.roles["activations"] = run.add("activations", dict(
        data=p.data, token_position=p.token_position, max_length_tokens=p.max_length_tokens,
        layers=layers, batch_size=p.batch_size,
    ), {"model": run.roles["pretrain"]})
