"""runtime.pretrain.throughput: windowed per-device tokens/s and MFU, as ai2-olmo's SpeedMonitor defines them."""
from __future__ import annotations

import pytest
import torch

from runtime.pretrain.throughput import PEAK_FLOPS, Throughput, peak_flops


def test_rate_covers_only_the_last_window_of_steps():
    meter = Throughput(window=2, device_tokens_per_step=1000, flops_per_token=6.0, peak=None)
    assert meter.tokens_per_second() == 0.0
    for seconds in (10.0, 1.0, 3.0):      # the slow first step falls out of a 2-step window
        meter.record(seconds)
    assert meter.tokens_per_second() == pytest.approx(2 * 1000 / (1.0 + 3.0))


def test_mfu_is_model_flops_over_the_peak_and_absent_without_one():
    meter = Throughput(window=4, device_tokens_per_step=500, flops_per_token=1e9, peak=2e12)
    meter.record(0.5)
    rate = 500 / 0.5
    assert meter.metrics() == {"device_tokens_per_second": pytest.approx(rate),
                               "mfu": pytest.approx(rate * 1e9 / 2e12)}
    no_peak = Throughput(window=4, device_tokens_per_step=500, flops_per_token=1e9, peak=None)
    no_peak.record(0.5)
    assert no_peak.mfu() is None and "mfu" not in no_peak.metrics()


def test_cpu_has_no_peak_and_every_gpu_entry_has_both_precisions():
    assert peak_flops(torch.device("cpu"), "fp32") is None
    fragments = {fragment for fragment, _ in PEAK_FLOPS}
    assert all((f, p) in PEAK_FLOPS for f in fragments for p in ("amp_bf16", "fp32"))
    assert all(PEAK_FLOPS[(f, "amp_bf16")] > PEAK_FLOPS[(f, "fp32")] for f in fragments)


def test_a_window_of_no_steps_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        Throughput(window=0, device_tokens_per_step=1, flops_per_token=1.0, peak=None)
