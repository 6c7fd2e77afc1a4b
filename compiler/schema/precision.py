"""The `precision` section: in what number format model stages compute, on a GPU and on the CPU.

One policy for the whole spec (not per stage): a precision change is a deliberate, spec-wide choice (it
reruns every model stage), and one field keeps every stage of a run in the same numbers. The planner turns
the policy and a stage kind's `resources.<kind>.gpus` into that stage's `Compute` (device type +
precision), which sits in the stage config and therefore in its id: a CPU-fp32 and a GPU-bf16 result of
the same stage never share an id. `runtime.device` turns a `Compute` into a torch device and dtype.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import StrictModel

Precision = Literal["fp32", "tf32", "bf16"]
"""`bf16`: bfloat16 weights and activations (inference) or bf16 autocast over fp32 weights (training);
`tf32`: fp32 tensors with TF32 matrix multiplies (fp32 accumulation, ~8x faster than full fp32 on
A100/H100); `fp32`: full fp32, TF32 off."""


class PrecisionSection(StrictModel):
    """Number format of every model stage (activations, steer, posttrain, evaluate, attack, score's
    classifiers). CPU stages always compute in fp32 (bf16 matmuls are slow on most CPUs, and the CPU
    tests pin fp32 results)."""

    cuda: Precision = Field(
        "bf16", description="On CUDA: `bf16` (default: a GCG step on a 1B model at fp32 is several times "
        "slower), `tf32` (fp32 tensors, TF32 matmuls) or `fp32` (TF32 off).")

    def compute(self, gpus: int) -> "Compute":
        """The compute of a stage that asks for `gpus` GPUs: CUDA in this policy's format, else CPU fp32."""
        return Compute(device="cuda", precision=self.cuda) if gpus > 0 else Compute()


class Compute(StrictModel):
    """Where one stage instance computes and in what format: a field of each model stage's config (so in
    its id), filled by the planner from `precision` and the stage's `resources.<kind>.gpus`."""

    device: Literal["cpu", "cuda"] = Field("cpu", description="Device type the stage runs on.")
    precision: Precision = Field("fp32", description="Number format (`precision.cuda` on CUDA; fp32 on CPU).")

    @model_validator(mode="after")
    def _cpu_is_fp32(self) -> "Compute":
        if self.device == "cpu" and self.precision != "fp32":
            raise ValueError(f"CPU stages compute in fp32, not {self.precision}")
        return self

    @property
    def label(self) -> str:
        """`cpu-fp32`, `cuda-bf16`, …: what score cache keys and manifests record."""
        return f"{self.device}-{self.precision}"


def compute_field() -> Any:
    """The `compute` field of a model stage's config; the planner always fills it (CPU fp32 when built by hand)."""
    return Field(default_factory=Compute, description="Device type and precision (planned from `precision` and "
                 "`resources.<kind>.gpus`; `runtime.device`).")
