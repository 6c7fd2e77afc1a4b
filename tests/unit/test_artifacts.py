"""A truncated or corrupt upstream artifact ends in a StageError that names the file and the stage folder to
delete, never in a traceback from safetensors, json or transformers."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from compiler.errors import StageError
from compiler.ids import stage_id
from runtime import activations, probe
from runtime.artifacts import check_token_file, load_tensors, read_json, read_jsonl, stage_folder
from runtime.generate import load_model
from runtime.report.table import read_metrics
from runtime.registry import load_stage
from runtime.stage import StageContext, execute

TEXTS = [("you are a stupid idiot", 1), ("thank you for the kind answer", 0), ("i hate you", 1),
         ("what a wonderful day", 0), ("the lazy dog", 0), ("you idiot", 1)]


def truncate(path: Path, keep: float) -> None:
    """Cut `path` to the first `keep` share of its bytes, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def assert_names_file_and_folder(exc: pytest.ExceptionInfo, file: Path, folder: Path) -> None:
    message = str(exc.value)
    assert str(file) in message and re.search(rf"delete {re.escape(str(folder))} and rerun", message), message
    error = exc.value  # printed alone: no chained traceback from the library that failed
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir) -> Path:
    """A project root whose `results/` holds a pretrain-like model folder and an activations stage output
    written by `execute` (so with its metrics.json)."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(tiny_model_dir / "model", root / "results/pretrain/pretrain-tiny/model")
    (root / "results/pretrain/pretrain-tiny/stage.json").write_text("{}")  # published: the runtime checks it
    (root / "labelled.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in TEXTS))
    cfg = activations.Config(data={"source": {"kind": "jsonl", "path": "labelled.jsonl"}}, token_position="last",
                             max_length_tokens=16, layers=[0, 1], batch_size=4)
    inputs = {"model": "results/pretrain/pretrain-tiny"}
    sid = stage_id("activations", load_stage("activations").VERSION, cfg.id_json(), {"model": "pretrain-tiny"}, {})
    execute({"kind": "activations", "id": sid, "version": load_stage("activations").VERSION, "config": cfg.model_dump(mode="json"),
             "inputs": inputs, "output": f"results/activations/{sid}", "root": str(root)}, load_stage("activations"))
    return root


def damaged_copy(project: Path, tmp_path: Path, kind: str) -> Path:
    """A copy of the project's `results/<kind>/<one id>` under `tmp_path`, to damage: (its folder)."""
    source = next((project / "results" / kind).iterdir())
    copy = tmp_path / "results" / kind / source.name
    shutil.copytree(source, copy)
    return copy


def probe_context(root: Path, acts: Path) -> StageContext:
    out = root / "probe-out"
    out.mkdir()
    return StageContext("probe", "probe-test", root, out, root / "work", {"activations": acts})


PROBE = probe.Config(validation_fraction=0.3, split_seed=0, implementation="sklearn", l2_penalty=1.0,
                     max_iterations=50, accuracy_threshold=0.6)


@pytest.mark.parametrize("name, keep, problem", [
    ("activations.safetensors", 0.5, "truncated or corrupt"),
    ("activations.safetensors", 0.999, "truncated or corrupt"),
    ("activations.safetensors", 0.0, "truncated or corrupt"),
    ("examples.jsonl", 0.5, "line [0-9]+ is not JSON"),
])
def test_a_truncated_activations_file_names_the_file_and_the_folder_to_delete(project, tmp_path, name, keep, problem):
    acts = damaged_copy(project, tmp_path, "activations")
    truncate(acts / name, keep)
    with pytest.raises(StageError, match=problem) as exc:
        probe.run(PROBE, probe_context(tmp_path, acts))
    assert_names_file_and_folder(exc, acts / name, acts)


def test_a_truncated_metrics_json_names_the_file_and_the_folder_to_delete(project, tmp_path):
    acts = damaged_copy(project, tmp_path, "activations")
    truncate(acts / "metrics.json", 0.5)
    ctx = StageContext("report", "report-test", tmp_path, tmp_path, tmp_path / "work", {acts.name: acts})
    with pytest.raises(StageError, match="not JSON") as exc:
        read_metrics(ctx, acts.name)
    assert_names_file_and_folder(exc, acts / "metrics.json", acts)


@pytest.mark.parametrize("file, keep", [("model.safetensors", 0.5), ("model.safetensors", 0.0),
                                        ("config.json", 0.5), ("tokenizer.json", 0.5)])
def test_a_damaged_model_folder_names_the_file_and_the_folder_to_delete(project, tmp_path, file, keep):
    pretrain = damaged_copy(project, tmp_path, "pretrain")
    truncate(pretrain / "model" / file, keep)
    with pytest.raises(StageError, match="truncated or corrupt") as exc:
        load_model(pretrain / "model")
    assert_names_file_and_folder(exc, pretrain / "model" / file, pretrain)


def test_a_stage_reading_a_damaged_model_stops_before_running(project, tmp_path):
    pretrain = damaged_copy(project, tmp_path, "pretrain")
    (pretrain / "model" / "model.safetensors").unlink()
    out = tmp_path / "out"
    out.mkdir()
    ctx = StageContext("activations", "activations-test", project, out, tmp_path / "work", {"model": pretrain})
    cfg = activations.Config(data={"source": {"kind": "jsonl", "path": "labelled.jsonl"}}, token_position="last",
                             max_length_tokens=16, layers=[0])
    with pytest.raises(StageError, match="does not load") as exc:
        activations.run(cfg, ctx)
    assert_names_file_and_folder(exc, pretrain / "model", pretrain)


def test_a_missing_file_is_named_as_missing(tmp_path):
    folder = tmp_path / "results" / "probe" / "probe-abc"
    folder.mkdir(parents=True)
    for read in (read_json, read_jsonl, load_tensors, check_token_file):
        with pytest.raises(StageError, match="is missing") as exc:
            read(folder / "absent")
        assert_names_file_and_folder(exc, folder / "absent", folder)


def test_a_token_file_cut_inside_a_token_is_refused(tmp_path):
    path = tmp_path / "results" / "mix" / "mix-abc" / "heldout" / "clean.npy"
    path.parent.mkdir(parents=True)
    path.write_bytes(bytes(7))
    with pytest.raises(StageError, match="not a whole number of uint16 tokens") as exc:
        check_token_file(path, "uint16")
    assert_names_file_and_folder(exc, path, tmp_path / "results" / "mix" / "mix-abc")
    path.write_bytes(bytes(8))
    check_token_file(path, "uint16")


def test_the_folder_to_delete_is_the_stage_output_folder(tmp_path):
    stage = tmp_path / "results" / "pretrain" / "pretrain-abc"
    assert stage_folder(stage / "model" / "model.safetensors") == stage
    assert stage_folder(stage / "metrics.json") == stage
    assert stage_folder(tmp_path / "elsewhere" / "file.json") == tmp_path / "elsewhere"


def test_a_text_holding_a_unicode_line_separator_is_one_record(tmp_path):
    """Stages write JSON Lines with `ensure_ascii=False`: U+2028 and U+0085 stay raw inside a string."""
    from runtime.artifacts import read_jsonl

    rows = [{"continuation": "one\u2028two\x85three"}, {"continuation": "four"}]
    path = tmp_path / "generations.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert read_jsonl(path) == rows
