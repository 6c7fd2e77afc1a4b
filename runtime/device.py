"""The one place that decides where a stage computes and in what dtype, and that refuses silent fallbacks.

A model stage's config carries a `Compute` (`compiler.schema.precision`: device type + precision, from the
spec's `precision` policy and the stage's `resources.<kind>.gpus`), so its id says how it was computed.
`place(compute, kind)` turns it into a torch device and dtype and sets TF32 to match; model loading sites
pass `placement.load_kwargs()` to `from_pretrained` and move the model to `placement.device`.

No silent fallback: a stage whose resources ask for GPUs and that sees no CUDA fails with a `StageError`
(`require_cuda`; `runtime.stage.execute` checks it for every stage, pretraining included), rather than
running for days on CPU. One opt-out, `MIXSTEER_ALLOW_CPU=1`, for clusters whose GPUs are placeholders
(tests/slurm): the stage then computes on CPU in fp32 and says so on stderr and in its metrics
(`computed_in`, the label of what ran), while its id still names the planned compute.

One GPU set per local job: `gpu_slots` (used by `runtime.attempt`, which wraps every job) gives a local job
`CUDA_VISIBLE_DEVICES` naming as many free GPUs as its resources ask, so local jobs neither share cuda:0
nor see (and `DataParallel` over) every GPU; under SLURM the gres allocation has set it already.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from compiler.errors import StageError
from compiler.schema.precision import Compute

if TYPE_CHECKING:
    import torch

ALLOW_CPU_ENV = "MIXSTEER_ALLOW_CPU"
"""Set to 1 to run a stage that asks for GPUs on CPU when CUDA is missing (fake-GPU test clusters)."""
DTYPES = {"fp32": "float32", "tf32": "float32", "bf16": "bfloat16"}
"""Tensor dtype of each precision: tf32 keeps fp32 tensors and changes only the matmul kernels."""


def cpu_allowed() -> bool:
    return os.environ.get(ALLOW_CPU_ENV) == "1"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def require_cuda(gpus: int, kind: str) -> bool:
    """Whether a stage asking for `gpus` GPUs may go on: True when it needs none or CUDA is there, False
    when CUDA is missing and `MIXSTEER_ALLOW_CPU=1` lets it run on CPU; else a `StageError`."""
    if gpus <= 0 or cuda_available():
        return True
    if cpu_allowed():
        print(f"{kind}: asked for {gpus} GPU(s) but CUDA is not available; running on CPU in fp32 "
              f"because {ALLOW_CPU_ENV}=1", file=sys.stderr, flush=True)
        return False
    raise StageError(
        f"{kind}: its resources ask for {gpus} GPU(s) but CUDA is not available here (no GPU visible, or a "
        f"CPU-only torch); refusing to run on CPU instead. Run it where a GPU is, set resources.{kind}.gpus: 0 "
        f"to plan it for CPU, or set {ALLOW_CPU_ENV}=1 to run it on CPU anyway (fake-GPU test clusters)")


def require_resources(resources: Mapping[str, Any], kind: str) -> bool:
    """`require_cuda` for a stage JSON's `resources` (what `runtime.stage.execute` checks for every stage)."""
    return require_cuda(int(resources.get("gpus", 0) or 0), kind)


@dataclass(frozen=True)
class Placement:
    """The device and dtype a stage computes in (what actually ran: CPU fp32 under the opt-out)."""

    compute: Compute

    @property
    def device(self) -> "torch.device":
        import torch

        return torch.device(self.compute.device)

    @property
    def dtype(self) -> "torch.dtype":
        import torch

        return getattr(torch, DTYPES[self.compute.precision])

    @property
    def autocast_bf16(self) -> bool:
        """Training keeps fp32 weights and autocasts to bf16 (the Trainer's `bf16=True`)."""
        return self.compute.precision == "bf16"

    def autocast(self) -> Any:
        """Autocast to bf16 where the policy says bf16 (a stage whose weights must stay in their stored
        dtype, e.g. steer, which saves the checkpoint it computes on); a no-op otherwise."""
        import torch

        return torch.autocast(self.compute.device, dtype=torch.bfloat16, enabled=self.autocast_bf16)

    def load_kwargs(self) -> dict[str, Any]:
        """`from_pretrained` keyword arguments: the weights in this placement's dtype."""
        return {"dtype": self.dtype}


def place(compute: Compute, kind: str) -> Placement:
    """`compute` as it will run here: checked against CUDA (`require_cuda`), TF32 switched on only for
    `tf32`. Call before the model loads."""
    import torch

    if compute.device == "cuda" and not require_cuda(1, kind):
        compute = Compute()
    if compute.device == "cuda":
        tf32 = compute.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    return Placement(compute)


GPU_SLOTS_DIR = ".cache/gpu-slots"
"""Lock files of the local GPU slots, relative to the project root (one `<index>.lock` per GPU)."""
CLAIM_POLL_S = 5.0
"""Seconds between tries while every GPU slot a job needs is taken by other local jobs."""


def visible_gpu_count() -> int:
    """GPUs of this machine by `nvidia-smi -L` (no CUDA context, no torch import); 0 without the tool."""
    import subprocess

    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in listed.stdout.splitlines()) if listed.returncode == 0 else 0


@contextmanager
def gpu_slots(count: int, slots_dir: Path, env: Mapping[str, str], total: int | None = None,
              poll_s: float = CLAIM_POLL_S) -> Iterator[dict[str, str]]:
    """The environment additions of a local job asking `count` GPUs: `CUDA_VISIBLE_DEVICES` naming GPUs that
    no other local job holds, held (by `flock` on `<slots_dir>/<index>.lock`) until the block ends. Without
    it every local job would land on cuda:0 and a job would see every GPU. Nothing when the job asks none,
    when `env` already sets `CUDA_VISIBLE_DEVICES` (SLURM's gres, or the user's choice) or the machine has
    no GPU (`require_cuda` then decides). Waits while fewer than `count` slots are free; claims all of
    them at once under one mutex, so two jobs never each hold half of what they need."""
    import fcntl
    import time

    total = visible_gpu_count() if total is None and count > 0 and "CUDA_VISIBLE_DEVICES" not in env else total
    if count <= 0 or "CUDA_VISIBLE_DEVICES" in env or not total:
        yield {}
        return
    if count > total:
        raise StageError(f"this job asks for {count} GPUs but this machine has {total}")
    slots_dir.mkdir(parents=True, exist_ok=True)
    held: list[tuple[int, Any]] = []
    while True:
        with open(slots_dir / "claim.lock", "w") as mutex:
            fcntl.flock(mutex, fcntl.LOCK_EX)
            for index in range(total):
                slot = open(slots_dir / f"{index}.lock", "w")
                try:
                    fcntl.flock(slot, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    slot.close()
                    continue
                held.append((index, slot))
                if len(held) == count:
                    break
            if len(held) == count:
                break
            for _, slot in held:
                slot.close()
            held.clear()
        time.sleep(poll_s)
    try:
        yield {"CUDA_VISIBLE_DEVICES": ",".join(str(index) for index, _ in held)}
    finally:
        for _, slot in held:
            slot.close()
