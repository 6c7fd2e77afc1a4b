"""The shared stage face: atomic publish, nothing half-written on failure, VERSION guard, provenance."""
import json
import types

import pytest

from compiler.errors import StageError
from compiler.schema.base import StrictModel
from compiler.ids import stage_id
from runtime.stage import execute


class Config(StrictModel):
    value: int


def module(run, version=1):
    return types.SimpleNamespace(VERSION=version, Config=Config, run=run)


TOY_ID = stage_id("toy", 1, Config(value=3).id_json(), {})


def envelope(tmp_path, **over):
    env = {"kind": "toy", "id": TOY_ID, "version": 1, "config": {"value": 3},
           "inputs": {}, "output": f"results/toy/{TOY_ID}", "root": str(tmp_path), "resources": {"threads": 2}}
    env.update(over)
    return env


def test_success_publishes_metrics_and_manifest_last(tmp_path):
    def run(cfg, ctx):
        assert ctx.out != tmp_path / "results/toy" / TOY_ID and ctx.threads == 2
        (ctx.out / "artifact.txt").write_text(str(cfg.value))
        ballast = bytearray(64 * 2**20)          # touch 64 MiB: the recorded peak memory must see it
        ballast[::4096] = b"x" * len(ballast[::4096])
        return {"answer": cfg.value * 2}

    final = execute(envelope(tmp_path), module(run))
    assert (final / "artifact.txt").read_text() == "3"
    assert json.loads((final / "metrics.json").read_text()) == {"answer": 6}
    manifest = json.loads((final / "stage.json").read_text())
    assert manifest["config"] == {"value": 3} and manifest["version"] == 1 and "packages" in manifest
    assert manifest["seconds"] >= 0 and manifest["peak_rss_mb"] >= 64
    assert not (tmp_path / "results/.tmp/toy" / TOY_ID).exists()
    assert not (tmp_path / "results/.work/toy" / TOY_ID).exists()


def test_failure_leaves_no_output_but_keeps_work_for_resume(tmp_path):
    def run(cfg, ctx):
        (ctx.work / "checkpoint").write_text("step 5")
        (ctx.out / "half.txt").write_text("partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        execute(envelope(tmp_path), module(run))
    assert not (tmp_path / "results/toy" / TOY_ID).exists()
    assert (tmp_path / "results/.work/toy" / TOY_ID / "checkpoint").read_text() == "step 5"

    def resume(cfg, ctx):
        return {"resumed_from": (ctx.work / "checkpoint").read_text()}

    final = execute(envelope(tmp_path), module(resume))
    assert json.loads((final / "metrics.json").read_text()) == {"resumed_from": "step 5"}
    assert not (final / "half.txt").exists()  # the failed attempt's partial output is gone


def test_snakemake_precreated_empty_folder_is_replaced(tmp_path):
    (tmp_path / "results/toy" / TOY_ID).mkdir(parents=True)
    final = execute(envelope(tmp_path), module(lambda cfg, ctx: {}))
    assert (final / "stage.json").exists()


def test_finished_output_is_never_overwritten(tmp_path):
    execute(envelope(tmp_path), module(lambda cfg, ctx: {}))
    with pytest.raises(StageError, match="already complete"):
        execute(envelope(tmp_path), module(lambda cfg, ctx: {}))


def test_version_mismatch_is_refused(tmp_path):
    with pytest.raises(StageError, match="VERSION"):
        execute(envelope(tmp_path), module(lambda cfg, ctx: {}, version=2))


def test_config_is_revalidated_with_a_clear_error(tmp_path):
    for bad in ({"value": 3, "typo": 1}, {"value": "three"}):
        with pytest.raises(StageError, match="not valid") as e:
            execute(envelope(tmp_path, config=bad), module(lambda cfg, ctx: {}))
        assert "value" in str(e.value) or "typo" in str(e.value)


def test_an_edited_stage_config_does_not_run_under_its_old_id(tmp_path):
    with pytest.raises(StageError, match="changed after compilation"):
        execute(envelope(tmp_path, config={"value": 4}), module(lambda cfg, ctx: {}))
    assert not (tmp_path / "results/toy" / TOY_ID).exists()
