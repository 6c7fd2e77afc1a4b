"""The `mixsteer` CLI: exit codes, error text without tracebacks, JSON output, diff semantics."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def mixsteer(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "runtime.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)


def test_validate_shipped_specs():
    r = mixsteer("validate", *sorted((ROOT / "specs").glob("*.yaml")))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("ok ") == len(list((ROOT / "specs").glob("*.yaml")))


def test_bad_spec_exits_2_with_located_problems_and_no_traceback(project):
    bad = project("bad.yaml", project.minimal.replace("top_k_heads: 4", "top_k_heds: 4").replace(
        "toxic_share: 0.1", "toxic_share: 2"))
    r = mixsteer("--root", project.root, "validate", bad)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "steer.top_k_heds: unknown key" in r.stderr and "did you mean 'top_k_heads'" in r.stderr
    assert "data.toxic_share:" in r.stderr
    r = mixsteer("--root", project.root, "validate", "--json", bad)
    body = json.loads(r.stdout)
    assert body[0]["ok"] is False and len(body[0]["problems"]) == 2


def test_diff_exit_codes_and_alpha_ablation(project):
    a = project("a.yaml", project.minimal + "sweep:\n  grid:\n    data.toxic_share: [0.0, 0.1]\n")
    same = project("same.yaml", "extends: a.yaml\nsteer:\n  direction: mass_mean\n")  # a default, written out
    b = project("b.yaml", "extends: a.yaml\nsteer:\n  alpha: 12.0\n")
    r = mixsteer("--root", project.root, "diff", a, same)
    assert r.returncode == 0, r.stdout + r.stderr
    r = mixsteer("--root", project.root, "diff", "--json", a, b)
    assert r.returncode == 1
    d = json.loads(r.stdout)
    assert [f["path"] for f in d["fields"]] == ["steer.alpha"]
    assert d["stages"]["pretrain"] == {**d["stages"]["pretrain"], "new": 0, "reused": 2}
    assert d["stages"]["steer"]["new"] == 2 and d["stages"]["steer"]["causes"] == {"config alpha": 2}
    assert d["stages"]["evaluate"]["causes"] == {"input model is new": 2}
    text = mixsteer("--root", project.root, "diff", a, b).stdout
    assert "steer.alpha: 8.0 → 12.0" in text


def test_show_plan_schema(project):
    spec = project("s.yaml", project.minimal)
    r = mixsteer("--root", project.root, "show", "--json", spec)
    body = json.loads(r.stdout)
    assert body["spec"]["pretrain"]["weight_decay"] == 0.1  # defaults resolved
    r = mixsteer("--root", project.root, "plan", "--json", spec)
    plan = json.loads(r.stdout)
    assert {i["status"] for i in plan["instances"].values()} == {"new"}
    r = mixsteer("schema")
    schema = json.loads(r.stdout)
    assert "steer" in schema["properties"] and "extends" in schema["properties"]


def test_help_explains():
    r = mixsteer("--help")
    assert r.returncode == 0 and "diff" in r.stdout and "examples:" in r.stdout


def test_validate_explains_the_measurement_choices(project):
    plain = project("plain.yaml", project.minimal)
    controlled = project("controlled.yaml", "extends: plain.yaml\nsteer:\n  positions: all\n  controls:\n"
                                            "    random_directions: 3\n    random_heads: 1\n")
    r = mixsteer("--root", project.root, "validate", plain, controlled)
    assert r.returncode == 0, r.stderr
    plain_notes, controlled_notes = r.stdout.split("ok  ")[1:]
    assert "probe.recipe li2023" in plain_notes and "steer.positions last" in plain_notes
    assert "steer.controls: none" in plain_notes
    assert "steer.positions all" in controlled_notes and "3 random-direction draws" in controlled_notes
    body = json.loads(mixsteer("--root", project.root, "validate", "--json", controlled).stdout)
    assert any("1 random-head draws" in n for n in body[0]["notes"])
