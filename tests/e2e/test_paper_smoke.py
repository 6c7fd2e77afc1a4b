"""The paper spec end to end on CPU (slow: `pytest -m slow`): specs/paper_smoke.yaml, every source a small
file in its real dataset's layout (data/real_formats/), under Snakemake. Every stage kind of the plan
produced its results, and the stages that read sources report what they read in their metrics."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = "specs/paper_smoke.yaml"
SOURCE_READERS = ("tokenize", "mix", "activations", "posttrain", "evaluate", "attack")
"""Stage kinds that read a data source (pretraining mixture, probe texts, SFT/DPO data, prompts)."""


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_smoke")
    for item in ("Snakefile", "specs"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, root / item)
    subprocess.run([sys.executable, str(ROOT / "tests/data/real_formats.py"), str(root / "data/real_formats")],
                   check=True)
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--config", f"spec={SPEC}"],
                         cwd=root, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-4000:]
    return root


def _planned_kinds(root: Path) -> set[str]:
    sys.path.insert(0, str(ROOT))
    from compiler.workflow import compile_spec

    return {inst.kind for inst in compile_spec(root / SPEC, root).instances.values()}


def _metrics(root: Path, kind: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "results" / kind).glob("*/metrics.json"))]


@pytest.mark.slow
def test_every_stage_of_the_paper_spec_ran(smoke):
    kinds = _planned_kinds(smoke)
    assert {"mix", "pretrain", "activations", "probe", "steer", "posttrain", "evaluate", "attack", "score",
            "report"} <= kinds
    for kind in kinds:
        done = list((smoke / "results" / kind).glob("*/stage.json"))
        assert done, f"no {kind} stage finished"


@pytest.mark.slow
def test_source_counts_are_in_the_metrics(smoke):
    for kind in SOURCE_READERS:
        runs = _metrics(smoke, kind)
        assert runs, kind
        for metrics in runs:
            kept = {k: v for k, v in metrics.items() if k.startswith("source_") and k.endswith("_kept")}
            assert kept and all(metrics[k.replace("_kept", "_read")] >= v for k, v in kept.items()), (kind, sorted(metrics))
            assert any(v > 0 for v in kept.values()), (kind, kept)


@pytest.mark.slow
def test_the_toxic_share_and_the_real_formats_were_read(smoke):
    mixes = [json.loads(p.read_text()) for p in (smoke / "results" / "mix").glob("*/manifest.json")]
    assert sorted(round(m["toxic_share_realized"], 2) for m in mixes) == [0.0, 0.1]
    toxic_kept = sorted(m["source_toxic_kept"] for m in _metrics(smoke, "mix"))
    assert toxic_kept[0] == 0 < toxic_kept[1]                 # share 0 reads no toxic post; share 0.1 does
    for m in _metrics(smoke, "evaluate"):                     # sampled from the whole file, balanced (ToxiGen)
        assert 0 < m["source_prompts_toxigen_kept"] < m["source_prompts_toxigen_read"]
        assert 0 < m["source_prompts_rtp_kept"] < m["source_prompts_rtp_read"]
        assert m["source_cross_entropy_kept"] > 0
