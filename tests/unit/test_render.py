"""Rendering: golden rules file, stage JSON envelopes, hostile strings never reach generated code."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from compiler.errors import SpecError
from compiler.render import render_rules
from compiler.validate import load_spec
from compiler.kinds import KIND_ORDER
from compiler.workflow import Workflow
from runtime.sources import SOURCE_READER

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"

HOSTILE = [
    "it's \"quoted\"; rm -rf / #",
    "$(touch PWNED) and `touch PWNED2`",
    "line one\nline two\r\n\ttabbed",
    "{params.config} {wildcards.id} {{double}} %s %(x)s",
    "ünïcødé — ☠ \\ backslash \x00nul",
]


def test_rules_file_matches_golden():
    text = render_rules(KIND_ORDER, ["demo"], ROOT / "build" / "demo" / "rules.smk")
    golden = GOLDEN / "rules.smk"
    assert text == golden.read_text(), "rendered rules changed: run `python tests/golden/update.py` and review"


def test_hostile_strings_reach_stage_json_intact_and_never_code(project):
    text = project.minimal + f"""
posttrain:
  prompting:
    prefix: {json.dumps(HOSTILE[0])}
attack:
  prompts: {{kind: jsonl, path: prompts.jsonl, text_field: {json.dumps(HOSTILE[3])}}}
  gcg:
    target: {json.dumps(HOSTILE[1])}
report:
  title: {json.dumps(HOSTILE[2])}
  token_view_texts: {json.dumps(HOSTILE)}
"""
    text = text.replace("description: minimal", f"description: {json.dumps(HOSTILE[4])}")
    spec = project("hostile.yaml", text)
    wf = Workflow.compile([spec], project.root)
    blobs = [json.loads(p.read_text()) for p in (project.root / "build" / "stages").glob("*.json")]
    found = set()

    def collect(v):
        if isinstance(v, str):
            found.add(v)
        elif isinstance(v, dict):
            [collect(x) for x in v.values()]
        elif isinstance(v, list):
            [collect(x) for x in v]

    collect(blobs)
    assert set(HOSTILE) <= found
    rules = wf.rules_file.read_text()
    for s in HOSTILE:
        for fragment in (s, "PWNED", "rm -rf"):
            assert fragment not in rules


def test_hostile_spec_name_is_rejected(project):
    spec = project("s.yaml", 'name: "x; rm -rf /"\n' + project.minimal)
    with pytest.raises(SpecError) as e:
        load_spec(spec, project.root, "s.yaml")
    assert e.value.problems[0].path == "name"


def test_build_is_written_only_when_changed(project):
    spec = project("s.yaml", project.minimal)
    Workflow.compile([spec], project.root)
    files = sorted((project.root / "build").rglob("*"))
    mtimes = {f: f.stat().st_mtime_ns for f in files if f.is_file()}
    Workflow.compile([spec], project.root)
    assert {f: f.stat().st_mtime_ns for f in files if f.is_file()} == mtimes


def test_envelope_wiring(project):
    spec = project("s.yaml", project.minimal)
    wf = Workflow.compile([spec], project.root)
    plan = wf.plans[0]
    pretrain = plan.runs[0].roles["pretrain"]
    env = json.loads((project.root / "build" / "stages" / f"{pretrain}.json").read_text())
    assert env["kind"] == "pretrain" and env["output"] == f"results/pretrain/{pretrain}"
    assert set(env["inputs"]) == {"mix", "tokenizer"}
    assert env["config"]["max_steps"] == (100000 + 11111) // (8 * 128)
    alias = project.root / "results" / "specs" / "s" / "run" / "pretrain"
    assert not alias.exists()                              # a parse (or dry run) links nothing
    wf.link_aliases()
    assert alias.is_symlink() and alias.resolve() == (project.root / env["output"]).resolve()
    cached = Workflow.load([spec], project.root)
    shutil.rmtree(project.root / "results" / "specs")
    cached.link_aliases()                                  # from build/, without the plans
    assert alias.is_symlink() and alias.resolve() == (project.root / env["output"]).resolve()


@pytest.mark.parametrize("spec", sorted(p.stem for p in (ROOT / "specs").glob("*.yaml")))
def test_shipped_spec_plan_matches_golden(spec):
    """A change of plan (new ids) must be seen in review: regenerate with tests/golden/update.py."""
    import importlib.util

    from compiler.workflow import compile_spec

    mod_spec = importlib.util.spec_from_file_location("golden_update", GOLDEN / "update.py")
    update = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(update)
    plan = compile_spec(Path("specs") / f"{spec}.yaml", ROOT)
    golden = json.loads((GOLDEN / f"{spec}.plan.json").read_text())
    assert update.plan_summary(plan) == golden


def test_uniform_rule_values_render_as_literals():
    values = {"pretrain": {"threads": {2}, "mem_mb": {4000}, "runtime_minutes": {20}, "gpus": {0},
                           "launcher": {"/venv/bin/python"}},
              "evaluate": {"threads": {1, 4}, "mem_mb": {2000}, "runtime_minutes": {10}, "gpus": {0},
                           "launcher": {"/venv/bin/python"}}}
    text = render_rules(["pretrain", "evaluate"], ["x"], ROOT / "build" / "x" / "rules.smk", values)
    pretrain, evaluate = text.split("rule evaluate:")
    assert "threads: 2\n" in pretrain and "mem_mb=4000," in pretrain and "launcher=MIXSTEER.kind_launcher('pretrain')," in pretrain
    assert 'threads: lambda wc: MIXSTEER.resource(wc.id, \'threads\')' in evaluate  # differs per instance
    assert "--config build/stages/{wildcards.id}.json" in pretrain


def test_workflow_cache_is_reused_until_an_input_changes(project):
    import os
    import time

    spec = project("s.yaml", project.minimal)
    first = Workflow.load([spec], project.root)
    assert first.plans  # compiled
    again = Workflow.load([spec], project.root)
    assert not again.plans and again.instances.keys() == first.instances.keys()  # read back from build/
    assert again.inputs_of(type("W", (), {"id": first.plans[0].runs[0].roles["pretrain"]})) == \
        first.inputs_of(type("W", (), {"id": first.plans[0].runs[0].roles["pretrain"]}))
    for touched in (spec, project.root / "probe.jsonl"):
        time.sleep(0.01)
        touched.write_text(touched.read_text() + "\n")
        os.utime(touched)
        assert Workflow.load([spec], project.root).plans, f"{touched.name} changed: must recompile"
        assert not Workflow.load([spec], project.root).plans
    cache = next((project.root / "build" / ".cache").glob("*.json"))
    rules = json.loads(cache.read_text())["rules_file"]
    Path(rules).unlink()                                   # a deleted rules file is rebuilt, never trusted
    assert Workflow.load([spec], project.root).plans and Path(rules).exists()


def test_a_parse_leaves_stage_files_to_the_run_and_never_trusts_old_ones(project):
    """A Snakemake parse (`load`) writes no stage JSONs (a dry run never reads them); `prepare_run`
    (onstart) writes them before the first job: also after a parse-cache hit, also when one went
    missing, and again when a field that is in the stage JSON but not in its id changed."""
    spec = project("s.yaml", project.minimal)
    stages = project.root / "build" / "stages"
    wf = Workflow.load([spec], project.root)
    assert wf.plans and not stages.exists()
    cached = Workflow.load([spec], project.root)
    assert not cached.plans
    cached.prepare_run(SOURCE_READER)                      # from a cache hit: recompiles to write them
    files = {p.name for p in stages.glob("*.json")}
    assert files == {f"{sid}.json" for sid in wf.instances}
    (stages / next(iter(files))).unlink()
    Workflow.load([spec], project.root).ensure_stage_files()
    assert {p.name for p in stages.glob("*.json")} == files

    pretrain = wf.plans[0].runs[0].roles["pretrain"]
    spec.write_text(project.minimal + "resources:\n  pretrain: {threads: 3}\n")
    edited = Workflow.load([spec], project.root)
    assert pretrain in edited.instances                    # resources are not in the id ...
    assert json.loads((stages / f"{pretrain}.json").read_text())["resources"]["threads"] == 1
    Workflow.load([spec], project.root).ensure_stage_files()   # ... but the job must see them
    assert json.loads((stages / f"{pretrain}.json").read_text())["resources"]["threads"] == 3


def test_ordering_inputs_drop_only_edges_implied_by_another_path():
    from compiler.workflow import ordering_inputs

    def inst(*inputs):
        return SimpleNamespace(inputs={f"r{i}": d for i, d in enumerate(inputs)})

    # tok → mix → pre → steer → eval; eval also reads pre (base) and mix; report reads eval, steer, probe
    graph = {"tok": inst(), "mix": inst("tok"), "pre": inst("mix", "tok"), "probe": inst("pre"),
             "steer": inst("pre", "probe"), "eval": inst("steer", "pre", "mix"),
             "report": inst("eval", "steer", "probe")}
    reduced = ordering_inputs(graph)
    assert reduced == {"tok": [], "mix": ["tok"], "pre": ["mix"], "probe": ["pre"], "steer": ["probe"],
                       "eval": ["steer"], "report": ["eval"]}

    def reach(g, sid):
        seen, stack = set(), list(g[sid])
        while stack:
            d = stack.pop()
            if d not in seen:
                seen.add(d)
                stack.extend(g[d])
        return seen

    full = {sid: list(i.inputs.values()) for sid, i in graph.items()}
    assert all(reach(reduced, sid) == reach(full, sid) for sid in graph)  # same ordering constraints


@pytest.mark.parametrize("value", ["plain-id", 'quo"te', "back\\slash", "tab\t", "new\nline", "ünïcödé", "\u2028",
                                   "\x7f", "", "$(rm -rf /)", "`x`{}", 7, -1, True, None, 0.1, {"b": [1, "x"], "a": 2},
                                   {"z": "id-1", "a": 'q"uote', "m\n": 3}, {"k": True}, {}])
def test_fast_json_is_canonical_json(value):
    from compiler.ids import canonical_json

    assert canonical_json(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
