"""runtime.device: a stage that asks for GPUs fails without CUDA unless MIXSTEER_ALLOW_CPU=1; placements
give the dtype of their precision; local jobs get GPU slots of their own."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from compiler.errors import StageError
from compiler.schema.precision import Compute, PrecisionSection
from runtime import device
from runtime.device import ALLOW_CPU_ENV, gpu_slots, place, require_resources

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")


def test_gpus_asked_without_cuda_fail_with_the_way_out(monkeypatch):
    monkeypatch.delenv(ALLOW_CPU_ENV, raising=False)
    with pytest.raises(StageError, match=r"evaluate: its resources ask for 1 GPU.*MIXSTEER_ALLOW_CPU=1"):
        require_resources({"gpus": 1}, "evaluate")
    with pytest.raises(StageError, match="CUDA is not available"):
        place(Compute(device="cuda", precision="bf16"), "attack")
    assert require_resources({"gpus": 0}, "evaluate") and require_resources({}, "mix")


def test_opt_out_runs_a_gpu_stage_on_cpu_in_fp32(monkeypatch, capsys):
    monkeypatch.setenv(ALLOW_CPU_ENV, "1")
    assert require_resources({"gpus": 2}, "pretrain") is False
    placement = place(Compute(device="cuda", precision="bf16"), "attack")
    assert placement.compute.label == "cpu-fp32"
    assert placement.device == torch.device("cpu") and placement.dtype == torch.float32
    assert "MIXSTEER_ALLOW_CPU=1" in capsys.readouterr().err


def test_precisions_map_to_dtypes_and_cpu_is_fp32_only():
    dtypes = {p: device.Placement(Compute(device="cuda", precision=p)).dtype for p in ("fp32", "tf32", "bf16")}
    assert dtypes == {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}
    assert PrecisionSection(cuda="tf32").compute(0) == Compute()
    assert PrecisionSection().compute(2).label == "cuda-bf16"
    with pytest.raises(ValueError, match="CPU stages compute in fp32"):
        Compute(device="cpu", precision="bf16")


def test_local_jobs_get_disjoint_gpu_slots_and_wait_for_a_free_one(tmp_path):
    with gpu_slots(2, tmp_path, {}, total=3) as first, gpu_slots(1, tmp_path, {}, total=3) as second:
        assert first == {"CUDA_VISIBLE_DEVICES": "0,1"} and second == {"CUDA_VISIBLE_DEVICES": "2"}
        got: list[dict] = []
        waiter = threading.Thread(target=lambda: got.append(_claim_once(tmp_path)))
        waiter.start()
        time.sleep(0.3)
        assert not got                                 # all three slots held: the third job waits
    waiter.join(timeout=10)
    assert got and got[0]["CUDA_VISIBLE_DEVICES"] in {"0", "1", "2"}


def _claim_once(slots) -> dict:
    with gpu_slots(1, slots, {}, total=3, poll_s=0.05) as env:
        return env


def test_slots_leave_slurm_and_cpu_jobs_alone(tmp_path):
    with gpu_slots(1, tmp_path, {"CUDA_VISIBLE_DEVICES": "3"}, total=4) as env:
        assert env == {}                               # SLURM's gres (or the user) chose already
    with gpu_slots(0, tmp_path, {}, total=4) as env, gpu_slots(1, tmp_path, {}, total=0) as none:
        assert env == {} and none == {}
    with pytest.raises(StageError, match="asks for 5 GPUs but this machine has 4"):
        with gpu_slots(5, tmp_path, {}, total=4):
            pass


def test_every_stage_asking_for_gpus_stops_before_it_runs(tmp_path, monkeypatch):
    """`runtime.stage.execute` checks the stage JSON's resources first: no CUDA, no run, nothing written."""
    import types

    from compiler.ids import stage_id
    from compiler.schema.base import StrictModel
    from runtime.stage import execute

    class Config(StrictModel):
        value: int

    ran = []
    module = types.SimpleNamespace(VERSION=1, Config=Config, run=lambda cfg, ctx: ran.append(cfg) or {})
    sid = stage_id("toy", 1, Config(value=3).id_json(), {})
    envelope = {"kind": "toy", "id": sid, "version": 1, "config": {"value": 3}, "inputs": {},
                "root": str(tmp_path), "resources": {"threads": 1, "gpus": 1}}
    monkeypatch.delenv(ALLOW_CPU_ENV, raising=False)
    with pytest.raises(StageError, match="toy: its resources ask for 1 GPU"):
        execute(envelope, module)
    assert not ran and not (tmp_path / "results").exists()
    monkeypatch.setenv(ALLOW_CPU_ENV, "1")
    assert (execute(envelope, module) / "stage.json").is_file() and ran
