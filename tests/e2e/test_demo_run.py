"""The demo end to end under Snakemake (slow: `pytest -m slow`): every stage runs, results make
sense, and a second invocation has nothing to do."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    for item in ("Snakefile", "specs", "data"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, tmp_path / item)
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2"], cwd=tmp_path,
                         capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-4000:]
    results = tmp_path / "results"

    mixes = [json.loads(p.read_text()) for p in results.glob("mix/*/manifest.json")]
    assert sorted(round(m["toxic_share_realized"], 3) for m in mixes) == [0.0, 0.1, 0.25]
    for metrics in results.glob("pretrain/*/metrics.json"):
        m = json.loads(metrics.read_text())
        assert m["final_loss"] < m["initial_loss"] - 1.0
    report = next(results.glob("report/*/index.html"))
    assert (report.parent / "table.csv").exists() and list((report.parent / "plots").glob("*.png"))

    again = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert "Nothing to be done" in again.stdout + again.stderr
