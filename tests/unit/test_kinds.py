"""One table of stage kinds (`compiler.kinds`): the runtime registry, the planner, the rule order and the
resources section all follow it, and a new kind needs its two modules and one row, nothing else."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

from compiler.kinds import KIND_ORDER, KINDS
from compiler.schema.resources import ResourcesSection
from runtime.registry import STAGES, load_stage


def test_the_registry_and_the_resources_section_follow_the_table():
    assert list(STAGES) == list(KIND_ORDER) and len(set(KIND_ORDER)) == len(KINDS)
    assert list(ResourcesSection.model_fields) == ["default", *KIND_ORDER]
    unset = ResourcesSection(default={"gpus": 1})
    assert {k.name for k in KINDS if unset.of(k.name).gpus == 0} == {k.name for k in KINDS if not k.gpu_by_default}
    assert ResourcesSection(mix={"threads": 3}).of("tokenize").threads == 3  # `resources_from`


def test_every_kind_has_both_halves_of_the_stage_face():
    for kind in KINDS:
        stage, definition = load_stage(kind.name), kind.stage()
        assert isinstance(stage.VERSION, int) and callable(stage.run) and hasattr(stage.Config, "model_validate")
        assert callable(definition.plan), kind.name


DEFINITION = '''"""A stage that only records its run's seed: the smallest kind there is."""
from compiler.planning import RunPlanning
from compiler.schema.base import StrictModel

VERSION = 1


class Config(StrictModel):
    seed: int


def plan(run: RunPlanning) -> None:
    run.roles["dummy"] = run.add("dummy", {"seed": run.spec.seed}, {})
'''

IMPLEMENTATION = '''from compiler.stages.dummy import Config
from runtime.stage import StageContext, write_json


def run(cfg: Config, ctx: StageContext) -> dict:
    write_json(ctx.out / "seed.json", {"seed": cfg.seed})
    return {"seed": cfg.seed}
'''


def test_a_new_kind_is_its_two_modules_and_one_row(tmp_path):
    """In a copy of the project, add `compiler/stages/dummy.py`, `runtime/dummy.py` and one row of
    `compiler.kinds.KINDS`, nothing else; Snakemake then plans, renders and runs the kind under the
    spec's own resources section, and `mixsteer plan` lists it with its estimate."""
    for name in ("compiler", "runtime", "templates", "profiles", "envs"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Snakefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "compiler/stages/dummy.py").write_text(DEFINITION)
    (tmp_path / "runtime/dummy.py").write_text(IMPLEMENTATION)
    kinds = tmp_path / "compiler/kinds.py"
    text, row = kinds.read_text(), '    StageKind("dummy", gpu_by_default=False),\n'
    kinds.write_text(text.replace('    StageKind("report", scope="spec"),\n', row + '    StageKind("report", scope="spec"),\n'))
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs/demo.yaml").write_text(
        "seed: 7\ntoy: {enabled: true, seeds: 1, train_steps: 2}\nresources:\n  dummy: {threads: 1, mem_mb: 123}\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    snakemake = [sys.executable, "-m", "snakemake", "--cores", "1"]

    dry = subprocess.run([*snakemake, "-n"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr + dry.stdout
    assert re.search(r"^rule dummy:", dry.stdout, re.M), dry.stdout
    output = re.search(r"results/dummy/(dummy-[0-9a-f]+)", dry.stdout).group(0)
    assert "mem_mb=123" in dry.stdout.split("rule dummy:")[1].split("\n\n")[0]
    listed = subprocess.run([sys.executable, "-m", "runtime.cli", "plan", "specs/demo.yaml"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and output.split("/")[-1] in listed.stdout, listed.stderr  # costs and estimates too

    done = subprocess.run([*snakemake, f"{output}/stage.json"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / output / "seed.json").read_text()) == {"seed": 7}
    assert json.loads((tmp_path / output / "stage.json").read_text())["version"] == 1
