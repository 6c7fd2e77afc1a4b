"""Sharded checkpoints (`torch.distributed.checkpoint`, every rank writes its shards) with 2 gloo processes.

`runtime.launch` starts `torchrun` with 2 FSDP workers. The stop comes as SLURM delivers it: SIGTERM to
every process of the launch (launcher, torchrun's agent, both workers); each worker finishes its step, the
ranks write their shards, and the rerun on 2 processes resumes from them. Bit-identity holds (same world
size, same FSDP sharding, every rank's RNG restored), so the final weights must be torch.equal to those
of an uninterrupted 2-process run. Three 2-process launches: slow on 2 shared cores.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from test_pretrain import losses
from test_pretrain_checkpoint import (
    EVERY_2_STEPS, MAX_STEPS, finish, launch, logged_steps, same_weights, stage_json, wait_for, work_of,
)

SHARDED_FSDP = {**EVERY_2_STEPS, "distributed_strategy": "fsdp", "checkpoint_format": "sharded"}


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, whatever session they run in (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(p := todo.pop())
        todo += children.get(p, [])
    return tree


@pytest.mark.slow
def test_sharded_checkpoint_of_two_processes_resumes_bit_identical(tmp_path):
    clean_root, stopped_root = tmp_path / "clean", tmp_path / "stopped"
    clean_env, clean_config = stage_json(clean_root, SHARDED_FSDP)
    clean = launch(clean_config)
    env, config = stage_json(stopped_root, SHARDED_FSDP)
    assert env["id"] == clean_env["id"]               # the process layout and format are not in the id
    work = work_of(stopped_root, env)
    proc = launch(config)
    wait_for(lambda: logged_steps(work) >= 3, proc, "step 3")
    for pid in process_tree(proc.pid):               # SLURM signals every process of a step
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    stderr = finish(proc, 75)
    assert stderr.count("received SIGTERM") >= 2      # both workers stopped on it, after the same step
    finish(clean)
    (newest, *_) = sorted(work.glob("step-*.dcp"), reverse=True)
    shards = sorted(p.name for p in newest.glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"], shards    # each rank wrote its own shard
    sidecar = json.loads(newest.with_name(newest.name + ".json").read_text())
    assert sidecar["world_size"] == 2 and set(shards) <= set(sidecar["files"])
    stopped_at = int(newest.name[len("step-"):-len(".dcp")])
    assert 3 <= stopped_at < MAX_STEPS

    stderr = finish(launch(config))
    assert f"pretrain: resumed from {newest} (step {stopped_at} of {MAX_STEPS})" in stderr
    assert "bit-identical" not in stderr              # same world size: nothing left unrestored
    out, clean_out = stopped_root / env["output"], clean_root / env["output"]
    assert losses(out) == losses(clean_out)
    assert same_weights(out, clean_out)
    assert json.loads((out / "metrics.json").read_text())["world_size_changes"] == []
