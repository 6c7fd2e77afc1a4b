"""`posttrain`: SFT or DPO with TRL on a model folder.
Its config, VERSION and plan; `runtime.posttrain` runs it."""
from __future__ import annotations

from pydantic import model_validator

from compiler.planning import RunPlanning, Variant
from compiler.schema.base import StrictModel, same_as
from compiler.schema.posttrain import DPOSection, SFTSection
from compiler.schema.precision import Compute, compute_field
from compiler.schema.spec import Spec


VERSION = 3


class Config(StrictModel):
    sft: SFTSection | None = None
    dpo: DPOSection | None = None
    seed: int = same_as(Spec, "seed")
    compute: Compute = compute_field()

    @model_validator(mode="after")
    def _exactly_one_method(self) -> "Config":
        if (self.sft is None) == (self.dpo is None):
            raise ValueError("a posttrain stage trains exactly one method: set `sft` or `dpo`, not both")
        return self


def plan(run: RunPlanning) -> None:
    """SFT and DPO of the pretrained model (variants `sft`, `dpo`), and the prompting baseline (variant
    `prompting`: the pretrained model with an instruction prefix, no instance of its own)."""
    if "pretrain" not in run.roles:
        return
    spec = run.spec
    for method in ("sft", "dpo"):
        section = getattr(spec.posttrain, method)
        if section is not None and section.enabled:
            sid = run.roles[f"posttrain/{method}"] = run.add(
                "posttrain", {method: section, "seed": spec.seed}, {"model": run.roles["pretrain"]})
            run.variants[method] = Variant(sid)
    if spec.posttrain.prompting.enabled:
        run.variants["prompting"] = Variant(run.roles["pretrain"], spec.posttrain.prompting.prefix)
