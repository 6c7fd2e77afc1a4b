"""The compiled workflow under Snakemake itself: dry-runs, lint, and what an ablation reruns."""
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args, cwd=ROOT):
    return subprocess.run([*SNAKEMAKE, "--nolock", *args], cwd=cwd, capture_output=True, text=True)


def job_counts(output: str) -> dict[str, int]:
    stats = output.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


@pytest.mark.parametrize("spec", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "specs").glob("*.yaml")))
def test_dry_run_every_shipped_spec(spec):
    r = snakemake("-n", "--forceall", "--config", f"spec={spec}")  # the whole plan, whatever exists
    assert r.returncode == 0, r.stdout + r.stderr
    counts = job_counts(r.stdout)
    assert counts.get("report") == 1


def test_lint_is_clean():
    r = snakemake("--lint")
    assert r.returncode == 0 and "Congratulations" in r.stdout + r.stderr, r.stdout + r.stderr


def test_bad_spec_fails_the_parse_with_located_problems(tmp_path):
    shutil.copy(ROOT / "Snakefile", tmp_path)
    (tmp_path / "bad.yaml").write_text("model: {preset: tiny, d_modle: 3}\n")
    r = snakemake("-n", "--config", "spec=bad.yaml", cwd=tmp_path)
    assert r.returncode != 0
    assert "bad.yaml:1:" in r.stderr and "model.d_modle" in r.stderr and "did you mean 'd_model'" in r.stderr


def _fake_outputs(root: Path, spec: str, kinds) -> None:
    """Mark every instance of `kinds` in the spec's plan as done (an empty stage.json), in DAG order."""
    sys.path.insert(0, str(ROOT))
    from compiler.kinds import KIND_ORDER
    from compiler.workflow import compile_spec

    plan = compile_spec(Path(spec), root)
    for kind in (k for k in KIND_ORDER if k in kinds):
        for inst in plan.instances.values():
            if inst.kind == kind:
                out = root / inst.output / "stage.json"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text("{}")
        time.sleep(0.01)  # strictly increasing mtimes along the DAG


def test_alpha_ablation_reruns_no_pretraining(tmp_path):
    """With the base spec's upstream outputs present, only steering and its consumers rerun."""
    shutil.copy(ROOT / "Snakefile", tmp_path)
    shutil.copytree(ROOT / "data", tmp_path / "data")
    base = (ROOT / "specs" / "demo.yaml").read_text()
    (tmp_path / "base.yaml").write_text(base)
    (tmp_path / "ablation.yaml").write_text("extends: base.yaml\nsweep:\n  grid:\n    steer.alpha: [8.0]\n")  # not the controls' alpha: no control draws
    upstream = ("tokenizer", "tokenize", "mix", "pretrain", "activations", "probe", "posttrain")
    _fake_outputs(tmp_path, "base.yaml", upstream)
    r = snakemake("-n", "--config", "spec=ablation.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    counts = job_counts(r.stdout)
    for kind in upstream:
        assert kind not in counts, (kind, counts)
    assert counts["steer"] == 3  # one per toxic share


def test_rescoring_the_demo_plans_only_scoring_and_the_report(tmp_path):
    """specs/demo_rescore.yaml after the demo: no model is trained, steered, evaluated or attacked again."""
    shutil.copy(ROOT / "Snakefile", tmp_path)
    shutil.copytree(ROOT / "data", tmp_path / "data")
    for name in ("demo.yaml", "demo_rescore.yaml"):
        shutil.copy(ROOT / "specs" / name, tmp_path / name)
    sys.path.insert(0, str(ROOT))
    from compiler.kinds import KIND_ORDER
    from compiler.workflow import compile_spec

    _fake_outputs(tmp_path, "demo.yaml", [k for k in KIND_ORDER if k not in ("score", "report")])
    r = snakemake("-n", "--config", "spec=demo_rescore.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    counts = job_counts(r.stdout)
    scores = sum(i.kind == "score" for i in compile_spec(Path("demo_rescore.yaml"), tmp_path).instances.values())
    assert {k: v for k, v in counts.items() if k not in ("all", "total")} == {"score": scores, "report": 1}
