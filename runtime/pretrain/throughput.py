"""Pretraining throughput as ai2-olmo's `SpeedMonitor` reports it: tokens per second per device over a
window of recent steps, and model FLOPs utilisation (MFU) against the device's peak.

Why windowed and per device: a cumulative whole-job rate hides a slowdown (a straggler node, a full disk)
for hours, and a 12-hour budget can only be checked against a per-GPU rate (docs/scaling.md). Model FLOPs
per token are ai2-olmo's own (`OLMo.num_fwd_flops + num_bck_flops`: 6 N plus the attention term), so the
figure is comparable with ai2-olmo's logs. MFU needs a peak: a table of dense peaks by device and
precision; on a CPU or an unknown GPU there is none and MFU is left out rather than guessed.
"""
from __future__ import annotations

from collections import deque

import torch

PEAK_FLOPS: dict[tuple[str, str], float] = {
    # (device name fragment, precision) → dense peak FLOP/s, vendor datasheets (no sparsity).
    # The first fragment found in the device name wins: "H100 PCIe" and "H100 NVL" before "H100".
    ("H100 PCIe", "amp_bf16"): 756e12,
    ("H100 PCIe", "fp32"): 51.2e12,
    ("H100 NVL", "amp_bf16"): 835e12,
    ("H100 NVL", "fp32"): 60e12,
    ("H100", "amp_bf16"): 989.4e12,  # SXM
    ("H100", "fp32"): 66.9e12,       # torch leaves TF32 off: fp32 runs at the fp32 peak (STACK.md)
    ("H200", "amp_bf16"): 989.4e12,
    ("H200", "fp32"): 66.9e12,
    ("A100", "amp_bf16"): 312e12,
    ("A100", "fp32"): 19.5e12,
}


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak FLOP/s at `precision` ("amp_bf16" or "fp32"); None on CPU or an unknown GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for (fragment, p), peak in PEAK_FLOPS.items() if fragment in name and p == precision), None)


class Throughput:
    """Tokens/s of one device over the last `window` steps, and the MFU they imply.

    `flops_per_token` is the model's training FLOPs per token (forward + backward); `peak` the device's
    peak FLOP/s or None (then `mfu` is None)."""

    def __init__(self, window: int, device_tokens_per_step: int, flops_per_token: float, peak: float | None):
        if window < 1:
            raise ValueError(f"throughput window must be at least 1 step, got {window}")
        self.device_tokens_per_step = device_tokens_per_step
        self.flops_per_token = flops_per_token
        self.peak = peak
        self._seconds: deque[float] = deque(maxlen=window)

    def record(self, step_seconds: float) -> None:
        """One step's wall time (data loading and the optimizer step included, checkpoint saves not)."""
        self._seconds.append(step_seconds)

    def tokens_per_second(self) -> float:
        """Device tokens/s over the window (0 before the first step)."""
        seconds = sum(self._seconds)
        return len(self._seconds) * self.device_tokens_per_step / seconds if seconds > 0 else 0.0

    def mfu(self) -> float | None:
        """Model FLOPs utilisation over the window, in [0, 1]; None without a known peak."""
        if self.peak is None:
            return None
        return self.tokens_per_second() * self.flops_per_token / self.peak

    def metrics(self) -> dict[str, float]:
        """The row fields: `device_tokens_per_second`, and `mfu` where a peak is known."""
        out = {"device_tokens_per_second": self.tokens_per_second()}
        if (mfu := self.mfu()) is not None:
            out["mfu"] = mfu
        return out
