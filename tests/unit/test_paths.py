"""Nothing outside results/: an edited stage JSON cannot make a stage write (or read) outside its project.

A stage JSON's `output`, `root` and input folders are not covered by the content id, so the runtime derives
them (runtime.stage_paths). Each hostile edit is run the way Snakemake runs a stage, `python -m runtime
<kind> --config build/stages/<id>.json` (its `main`, on a real file), and must be refused with a clear error
while a victim folder outside the project keeps its content and mtimes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from compiler.ids import stage_id
from compiler.stages import toy
from runtime import __main__ as runtime_cli

ROOT = Path(__file__).resolve().parents[2]
TINY_TOY = {"enabled": True, "n_chains": 2, "n_tokens": 3, "d_model": 4, "n_layers": 1, "train_steps": 2,
            "batch_size": 4, "seeds": 1, "sequence_length": 12, "probe_sequences": 8, "probe_min_position": 4}
UPSTREAM = "pretrain-0123456789ab"


def envelope(inputs: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
    """A toy stage JSON with a true content id; its `inputs` enter the id by basename, as the compiler's do."""
    inputs = inputs or {}
    config = {"toy": TINY_TOY}
    sid = stage_id("toy", toy.VERSION, toy.Config.model_validate(config).id_json(),
                   {name: Path(path).name for name, path in inputs.items()})
    return {"kind": "toy", "id": sid, "version": toy.VERSION, "config": config, "inputs": inputs,
            "output": f"results/toy/{sid}", "resources": {"threads": 1}, **fields}


def write_stage(root: Path, env: dict[str, Any]) -> Path:
    path = root / "build" / "stages" / f"{env['id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(env))
    return path


def snapshot(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under `folder` (itself included) with its mtime and, for files, its bytes."""
    out = {}
    for p in [folder, *sorted(folder.rglob("*"))]:
        out[str(p.relative_to(folder))] = (p.lstat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
    return out


@pytest.fixture
def world(tmp_path) -> tuple[Path, Path]:
    """(project root, victim): a victim folder beside the project that looks like a finished stage output."""
    root, victim = tmp_path / "project", tmp_path / "victim"
    (root / "results").mkdir(parents=True)
    (victim / UPSTREAM).mkdir(parents=True)
    (victim / "precious.txt").write_text("do not touch")
    (victim / UPSTREAM / "stage.json").write_text("{}")
    return root, victim


def refused(path: Path, capsys, *needles: str) -> str:
    """Run the stage JSON through the runtime's CLI; it must exit 1 with a one-line clear error."""
    assert runtime_cli.main(["toy", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("output", ["../victim", "results/../../victim", "/ABS/victim"])
def test_an_output_field_pointing_elsewhere_is_refused(world, capsys, output):
    root, victim = world
    before = snapshot(victim)
    env = envelope()
    env["output"] = output.replace("/ABS", str(victim.parent))
    refused(write_stage(root, env), capsys, f"writes only to results/toy/{env['id']}")
    assert snapshot(victim) == before
    assert not (root / "results" / "toy").exists() and not (root / "results" / ".tmp").exists()


@pytest.mark.parametrize("claimed", ["victim", ".", "/"])
def test_a_root_field_naming_another_folder_is_refused(world, capsys, claimed):
    root, victim = world
    before = snapshot(victim)
    refused(write_stage(root, envelope(root=str(victim.parent / claimed))), capsys,
            f"lives in the project {root}")
    assert snapshot(victim) == before
    assert not (victim / "results").exists() and not (victim.parent / "results").exists()


@pytest.mark.parametrize("where", ["ABS", "results/pretrain/../../../victim/" + UPSTREAM, "../victim/" + UPSTREAM])
def test_an_input_path_outside_results_is_refused(world, capsys, where):
    """The id covers only an input's basename (the upstream id): the folder around it is checked instead."""
    root, victim = world
    path = str(victim / UPSTREAM) if where == "ABS" else where
    refused(write_stage(root, envelope({"model": path})), capsys, "not results/<kind>/<upstream id>")
    assert not (root / "results" / "toy").exists()


def test_an_input_linked_to_a_folder_outside_is_refused(world, capsys):
    root, victim = world
    (root / "results" / "pretrain").mkdir()
    (root / "results" / "pretrain" / UPSTREAM).symlink_to(victim / UPSTREAM, target_is_directory=True)
    refused(write_stage(root, envelope({"model": f"results/pretrain/{UPSTREAM}"})), capsys,
            "resolves to", "outside")
    assert not (root / "results" / "toy").exists()


def test_an_unpublished_input_is_refused(world, capsys):
    root, _ = world
    (root / "results" / "pretrain" / UPSTREAM).mkdir(parents=True)   # a folder without stage.json
    refused(write_stage(root, envelope({"model": f"results/pretrain/{UPSTREAM}"})), capsys,
            "not a published stage output")


def test_an_input_in_another_kinds_folder_is_refused(world, capsys):
    root, _ = world
    (root / "results" / "probe" / UPSTREAM).mkdir(parents=True)
    (root / "results" / "probe" / UPSTREAM / "stage.json").write_text("{}")
    refused(write_stage(root, envelope({"model": f"results/probe/{UPSTREAM}"})), capsys,
            "not results/<kind>/<upstream id>")


@pytest.mark.parametrize("link", ["toy/{id}", ".tmp/toy/{id}", ".work/toy/{id}", "toy"])
def test_a_link_inside_results_leading_outside_is_refused(world, capsys, link):
    """`results/<kind>/<id>` (or the scratch folders, or the kind folder) as a symlink to a folder outside
    the project: publishing would replace it, a run would write into it."""
    root, victim = world
    env = envelope()
    at = root / "results" / link.format(id=env["id"])
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(victim, target_is_directory=True)
    before = snapshot(victim)
    refused(write_stage(root, env), capsys, "resolves to", "outside")
    assert snapshot(victim) == before


def test_the_compiled_json_publishes_in_its_project_from_any_directory(world, tmp_path):
    """The control: the unedited stage JSON, run from another working directory as a real process, publishes
    under the project its JSON lives in, and nowhere else."""
    root, victim = world
    before = snapshot(victim)
    env = envelope()
    del env["output"]                                    # not needed: the runtime decides
    path = write_stage(root, env)
    proc = subprocess.run([sys.executable, "-m", "runtime", "toy", "--config", str(path)], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (root / "results" / "toy" / env["id"] / "stage.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project", "victim"]
    assert snapshot(victim) == before


def test_results_may_be_a_link_to_scratch_as_a_whole(tmp_path):
    """A cluster habit: results/ itself on a scratch disk. Paths inside it still resolve inside it."""
    root, scratch = tmp_path / "project", tmp_path / "scratch"
    scratch.mkdir()
    root.mkdir()
    (root / "results").symlink_to(scratch, target_is_directory=True)
    env = envelope()
    assert runtime_cli.main(["toy", "--config", str(write_stage(root, env))]) == 0
    assert (scratch / "toy" / env["id"] / "stage.json").is_file()
