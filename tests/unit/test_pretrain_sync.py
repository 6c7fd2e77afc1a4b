"""Which wrappings skip the gradient reduction on all but the last micro-batch (runtime.pretrain.olmo_train)."""
from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("world_size, strategy, precision, expected", [
    (1, None, "fp32", False),          # nothing to reduce
    (2, "ddp", "amp_bf16", True),      # DDP's gradients are its fp32 parameters'
    (2, "ddp", "fp32", True),
    (2, "fsdp", "fp32", True),         # fp32 parameters: local fp32 sums, one reduce
    (2, "fsdp", "amp_bf16", False),    # bf16 parameters: local sums would be bf16, so reduce every pass
])
def test_accumulates_locally(world_size, strategy, precision, expected):
    from olmo.config import DistributedStrategy, FSDPConfig, TrainConfig

    from runtime.pretrain.olmo_train import accumulates_locally
    from runtime.pretrain.process_group import Runtime

    cfg = TrainConfig(precision=precision, fsdp=FSDPConfig(precision="mixed"),
                      distributed_strategy=DistributedStrategy(strategy) if strategy else None)
    rt = Runtime(device=torch.device("cpu"), rank=0, local_rank=0, world_size=world_size)
    assert accumulates_locally(cfg, rt) is expected
