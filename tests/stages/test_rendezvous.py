"""Two "nodes" on one machine: two `python -m runtime.launch` (one torchrun each, one process per node,
gloo, DDP) meet at a c10d rendezvous on localhost and train as one 2-process run."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from test_pretrain import envelope, losses, run_stage, write_artifacts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_process_out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("one")
    return run_stage(root, envelope(root, write_artifacts(root)))


def test_two_nodes_rendezvous_and_match_one_process(one_process_out, tmp_path):
    """Same loss curve as 1 process, within the tolerance of the 2-process torchrun test (1e-4 relative:
    the same global batches, float summation order aside), and one published output."""
    root = tmp_path                # the process layout is not in the id: a project of its own
    env = envelope(root, write_artifacts(root))
    config = root / "pretrain.json"
    config.write_text(json.dumps(env))
    launch = [sys.executable, "-m", "runtime.launch", "--nodes=2", "--procs-per-node=1",
              f"--rdzv-endpoint=localhost:{free_port()}", f"--rdzv-id={uuid.uuid4().hex}"]
    command = ["--", "-m", "runtime", "pretrain", "--config", str(config)]
    environ = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(launch + extra + command, cwd=ROOT, env=environ, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for extra in (["--rdzv-host"], [])]
    try:
        results = [node.communicate(timeout=180) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for node, (_, stderr) in zip(nodes, results):
        assert node.returncode == 0, stderr[-3000:]
    out = root / env["output"]
    assert [p.name for p in (root / "results/pretrain").iterdir()] == [out.name]
    assert (out / "stage.json").is_file()
    assert np.allclose(losses(out), losses(one_process_out), rtol=1e-4, atol=0)
