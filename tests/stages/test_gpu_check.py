"""bench/gpu_check.py, shrunk (`--shrink`) on CPU: every section runs the stages' code and reports sane numbers,
and one failing section is reported without stopping the others."""
from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {"pretrain", "generate", "gcg", "probe", "classifier"}


@pytest.fixture(scope="module")
def shrunk(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, str]:
    """One shrunk run of the whole check, in its own process (it starts a process group)."""
    out = tmp_path_factory.mktemp("gpu_check")
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--shrink", "--out", str(out)], cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def rows(section: dict) -> dict[str, float | str]:
    return {r["measure"]: r["value"] for r in section["rows"]}


def test_every_section_runs_and_reports_positive_finite_numbers(shrunk):
    _, results, _ = shrunk
    assert set(results["sections"]) == SECTIONS and results["shrink"] is True
    for name, section in results["sections"].items():
        assert "error" not in section, f"{name}: {section.get('error')}"
        numbers = [v for v in rows(section).values() if isinstance(v, (int, float))]
        assert numbers and all(math.isfinite(v) and v > 0 for v in numbers), (name, section["rows"])
    env = results["environment"]
    assert env["torch"] and env["transformers"] and env["device"] and env["compute"] == "cpu-fp32"


def test_sections_measure_what_they_claim(shrunk):
    _, results, _ = shrunk
    s = results["sections"]
    for strategy in ("ddp", "fsdp"):  # random init: the first loss is near ln(vocabulary)
        info = s["pretrain"]["info"][strategy]
        assert all(math.isfinite(x) for x in info["losses"])
        assert abs(info["losses"][0] - math.log(512)) < 1.0
        assert {f"{strategy} tokens/s", f"{strategy} step time"} <= set(rows(s["pretrain"]))
    gen = s["generate"]["info"]
    expected = gen["prompts"] * gen["samples"] * gen["max_new_tokens"]
    assert gen["sample_continuations"]["new_tokens_per_round"] == expected
    assert gen["HF generate"]["new_tokens_per_round"] == expected
    assert sum(gen["plan"]) == gen["prompts"]
    assert rows(s["gcg"])["steps run"] == s["gcg"]["info"]["settings"]["steps"]
    assert 0.5 <= rows(s["probe"])["best validation accuracy"] <= 1.0  # planted heads are separable
    assert rows(s["classifier"])["scores in [0, 1]"] == "True"


def test_markdown_table_has_one_line_per_measure(shrunk):
    proc, results, table = shrunk
    lines = table.strip().splitlines()
    assert lines[0] == "| section | measure | value | unit |"
    assert len(lines) - 2 == sum(len(s["rows"]) for s in results["sections"].values())
    assert table.strip() in proc.stdout  # printed too


def test_a_failing_section_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    gpu_check = importlib.import_module("bench.gpu_check")

    def broken(*args, **kwargs):
        raise RuntimeError("probe exploded")

    monkeypatch.setattr(gpu_check, "check_probe", broken)
    status = gpu_check.main(["--shrink", "--out", str(tmp_path), "--sections", "probe", "classifier"])
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert status == 1
    assert set(results["sections"]) == {"probe", "classifier"}
    assert "probe exploded" in results["sections"]["probe"]["error"]
    assert "error" not in results["sections"]["classifier"] and results["sections"]["classifier"]["rows"]
    assert "| probe | FAILED | RuntimeError: probe exploded |" in (tmp_path / "gpu_check.md").read_text()
