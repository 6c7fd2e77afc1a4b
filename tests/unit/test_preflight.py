"""`mixsteer check`: every source opened, credentials, GPUs and disk, every problem located at once."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.plan import build_plan
from compiler.preflight.check import Machine, local_source_problems, preflight
from compiler.preflight.estimates import estimate, parameters
from compiler.preflight.hub import TOKEN_ENV, HubAccess, HubAnswer
from compiler.validate import load_spec, warnings_of
from compiler.workflow import Workflow
from runtime.sources import SOURCE_READER

ROOT = Path(__file__).resolve().parents[2]
PROBE_SOURCE = "source: {kind: jsonl, path: probe.jsonl}"


class FakeHub:
    """The Hub as a table: repo → answer; everything it was asked is recorded."""

    def __init__(self, answers=None, cached=(), configs=None):
        self.answers, self.cached_repos, self.asked = answers or {}, set(cached), []
        self.configs = configs or {}

    def info(self, repo, repo_type, revision):
        self.asked.append((repo, repo_type, revision))
        return self.answers.get(repo, HubAnswer())

    def cached(self, repo, revision):
        return repo in self.cached_repos

    def config(self, repo, revision):
        return self.configs.get(repo)


def machine(*, offline=True, token=False, hub=None, gpus=0, free=1 << 50, env=None, local=True):
    return Machine(env=env or {}, hub=HubAccess(offline, token, hub or FakeHub()), gpu_count=lambda: gpus,
                   disk_free=lambda root: free, local_run=local)


def check(project, text, m=None, name="s.yaml"):
    runs = load_spec(project(name, text), None, name)
    plan = build_plan(runs[0][1].name, runs, project.root)
    return preflight(runs, plan, project.root, SOURCE_READER, m or machine(), done=set(), warnings=warnings_of(runs))


def line_of(project, name, needle):
    return next(i for i, line in enumerate((project.root / name).read_text().splitlines(), 1) if needle in line)


def with_probe_source(project, source: str, extra: str = "") -> str:
    return project.minimal.replace(PROBE_SOURCE, f"source: {source}{extra}")


# --- local sources ----------------------------------------------------------------------------

def test_a_minimal_spec_on_good_local_files_has_no_problems(project):
    report = check(project, project.minimal)
    assert report.ok and report.problems == [] and report.warnings == []


def test_a_missing_label_field_is_located_where_the_spec_names_it(project):
    text = project.minimal.replace(PROBE_SOURCE, PROBE_SOURCE + "\n    label_field: toxicity_human")
    (p,) = check(project, text).problems
    assert p.path == "probe.data.label_field" and p.line == line_of(project, "s.yaml", "label_field")
    assert "'toxicity_human'" in p.message and "fields: label, text" in p.message


def test_an_object_where_text_belongs_suggests_the_dotted_path(project):
    """RealToxicityPrompts: `prompt` is an object; its text is `prompt.text`."""
    (project.root / "rtp.jsonl").write_text(json.dumps(
        {"prompt": {"text": "So I said", "toxicity": 0.1}, "challenging": False}) + "\n")
    text = project.minimal.replace(
        "{kind: jsonl, path: prompts.jsonl}",
        "{kind: jsonl, path: rtp.jsonl, text_field: prompt}\n      challenging_field: challenging")
    (p,) = check(project, text).problems
    assert p.path == "evaluate.prompt_sets[0].source.text_field"
    assert "dict, not text" in p.message and "did you mean 'prompt.text'" in p.message
    fixed = text.replace("text_field: prompt}", "text_field: prompt.text}")
    assert check(project, fixed, name="fixed.yaml").ok


def test_fields_absent_from_only_some_records_are_fine_and_filters_and_strata_are_checked(project):
    rows = [{"text": "a", "label": 1, "group": "x"}, {"label": 0, "group": "y"}]
    (project.root / "probe.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = ("{kind: jsonl, path: probe.jsonl, filters: [{field: lang, value: en}], "
              "sample: {n: 1, stratify_by: [group, target]}}")
    found = check(project, with_probe_source(project, source)).problems
    assert sorted(p.path for p in found) == ["probe.data.source.filters[0].field",
                                             "probe.data.source.sample.stratify_by[1]"]


def test_a_missing_file_and_an_unreadable_one_are_both_reported(project):
    (project.root / "broken.jsonl").write_text("{not json\n")
    text = with_probe_source(project, "{kind: jsonl, path: broken.jsonl}").replace(
        "path: prompts.jsonl", "path: nothere.jsonl")
    found = {p.path: p.message for p in check(project, text).problems}
    assert "does not exist" in found["evaluate.prompt_sets[0].source.path"]
    assert found["probe.data.source"].startswith("cannot read:")


# --- the Hub ----------------------------------------------------------------------------------

TOXIGEN = "{kind: hf, name: toxigen/toxigen-data, config: annotated, split: train}"


def test_offline_every_hub_source_says_how_to_mirror_it_and_a_gated_one_needs_a_token(project):
    text = with_probe_source(project, TOXIGEN).replace(
        "{kind: jsonl, path: prompts.jsonl}", "{kind: hf, name: allenai/real-toxicity-prompts, revision: abc}")
    report = check(project, text)
    by_path = {}
    for p in report.problems:
        by_path.setdefault(p.path, []).append(p.message)
    assert set(by_path) == {"probe.data.source.name", "evaluate.prompt_sets[0].source.name"}
    assert any("path: data/hub/toxigen/toxigen-data" in m for m in by_path["probe.data.source.name"])
    assert any("gated" in m and TOKEN_ENV in m for m in by_path["probe.data.source.name"])
    assert not any("gated" in m for m in by_path["evaluate.prompt_sets[0].source.name"])
    floating = {w.path: w.message for w in report.warnings}   # neither names a commit: both float
    assert set(floating) == {"probe.data.source", "evaluate.prompt_sets[0].source"}
    assert all("mixsteer lock s.yaml" in m for m in floating.values())
    with_token = check(project, text, machine(token=True)).problems
    assert with_token == [p for p in report.problems if "gated" not in p.message]


def test_online_the_hub_answers_gated_missing_and_unknown_revisions(project):
    hub = FakeHub({"a/gated": HubAnswer(gated=True), "a/gone": HubAnswer(exists=False),
                   "a/old": HubAnswer(revision_exists=False)})
    text = with_probe_source(project, "{kind: hf, name: a/gated, revision: r1}").replace(
        "{kind: jsonl, path: prompts.jsonl}", "{kind: hf, name: a/gone, revision: r2}") + (
        "attack:\n  prompts: {kind: hf, name: a/old, revision: r3}\n")
    found = {p.path: p.message for p in check(project, text, machine(offline=False, hub=hub)).problems}
    assert "gated" in found["probe.data.source.name"]
    assert "does not exist" in found["evaluate.prompt_sets[0].source.name"]
    assert "no revision 'r3'" in found["attack.prompts.revision"]
    assert sorted(hub.asked) == [("a/gated", "dataset", "r1"), ("a/gone", "dataset", "r2"), ("a/old", "dataset", "r3")]


def test_a_classifier_model_is_fine_from_the_local_cache_even_offline(project):
    scorer = ("  scorers:\n    - {kind: classifier, model: org/clf, revision: "
              f"{'a' * 40}, toxic_labels: [toxic]}}\n")
    text = project.minimal.replace("      source: {kind: jsonl, path: prompts.jsonl}\n",
                                   "      source: {kind: jsonl, path: prompts.jsonl}\n" + scorer)
    (p,) = check(project, text).problems
    assert p.path == "evaluate.scorers[0].model" and "path:" in p.message
    assert check(project, text, machine(hub=FakeHub(cached={"org/clf"})), name="c.yaml").ok


# --- credentials, GPUs, disk ------------------------------------------------------------------

def test_a_perspective_scorer_needs_its_key_and_says_cached_texts_are_fine(project):
    prompts = "      source: {kind: jsonl, path: prompts.jsonl}\n"
    text = project.minimal.replace(prompts, prompts + "  scorers: [{kind: perspective}]\n")
    (p,) = check(project, text).problems
    assert "$PERSPECTIVE_API_KEY" in p.message and "cache" in p.message
    assert check(project, text, machine(env={"PERSPECTIVE_API_KEY": "k"}), name="k.yaml").ok


def test_gpus_none_visible_is_information_too_few_a_problem_unless_submitted(project):
    text = project.minimal + "resources:\n  pretrain: {gpus: 8}\n"
    report = check(project, text, machine(gpus=0))
    assert report.ok and any("no GPU visible" in line for line in report.info)
    (p,) = check(project, text, machine(gpus=2), name="g.yaml").problems
    assert p.path == "resources.pretrain.gpus" and p.line == line_of(project, "g.yaml", "gpus: 8")
    assert check(project, text, machine(gpus=2, local=False), name="c.yaml").ok


def test_free_disk_against_the_estimate_of_what_is_not_written_yet(project):
    runs = load_spec(project("s.yaml", project.minimal), None, "s.yaml")
    plan = build_plan(runs[0][1].name, runs, project.root)
    kept = {sid: estimate(inst, plan.instances) for sid, inst in plan.instances.items()}
    needed = sum(e.disk_bytes for e in kept.values()) + max(e.scratch_bytes for e in kept.values())
    (p,) = preflight(runs, plan, project.root, SOURCE_READER, machine(free=needed - 1), done=set()).problems
    assert p.path == "disk" and "free" in p.message
    assert preflight(runs, plan, project.root, SOURCE_READER, machine(free=needed), done=set()).ok
    pretrain = next(sid for sid, i in plan.instances.items() if i.kind == "pretrain")
    assert preflight(runs, plan, project.root, SOURCE_READER, machine(free=needed - 1), done={pretrain}).ok


def test_estimates_follow_their_formulas(project):
    runs = load_spec(project("s.yaml", project.minimal), None, "s.yaml")
    plan = build_plan(runs[0][1].name, runs, project.root)
    by_kind = {i.kind: (i, estimate(i, plan.instances)) for i in plan.instances.values()}
    mix, e = by_kind["mix"]
    data = mix.config.data
    assert e.disk_bytes == 2 * data.heldout_clean_tokens  # every training token is a shared shard's
    tokenized = sorted(estimate(i, plan.instances).disk_bytes for i in plan.instances.values() if i.kind == "tokenize")
    assert tokenized == sorted([2 * (data.heldout_clean_tokens + data.clean_tokens), 2 * data.toxic_tokens])
    pretrain, e = by_kind["pretrain"]
    model, vocab = pretrain.config.model, pretrain.config.vocab
    n = model.n_params_estimate + vocab.embedding_size * model.d_model  # tied embeddings
    assert parameters(pretrain.config) == n and e.disk_bytes == 8 * n and e.scratch_bytes == 24 * n
    assert by_kind["steer"][1].disk_bytes == 4 * n
    assert e.gpu_hours == pretrain.resources.gpu_hours


# --- the CLI and the workflow -----------------------------------------------------------------

def mixsteer(*args):
    return subprocess.run([sys.executable, "-m", "runtime.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


def test_cli_lists_every_problem_at_once_exits_2_and_prints_json(project, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.setenv("HF_HOME", str(project.root / "hf"))  # no stored token
    text = with_probe_source(project, TOXIGEN, "\n    label_field: toxicity_human").replace(
        "path: prompts.jsonl", "path: nothere.jsonl")
    spec = project("bad.yaml", text)
    r = mixsteer("--root", project.root, "check", spec)
    assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr
    lines = [line.strip() for line in r.stdout.splitlines()]
    assert lines[0].startswith("BAD") and "3 problems" in lines[0]
    for needle in ("probe.data.source.name: Hub dataset 'toxigen/toxigen-data' cannot be reached",
                   "probe.data.source.name: Hub dataset 'toxigen/toxigen-data' is gated", TOKEN_ENV,
                   "evaluate.prompt_sets[0].source.path: 'nothere.jsonl' does not exist"):
        assert needle in r.stdout
    problem_lines = [line for line in lines[1:] if not line.startswith("info:") and "warning:" not in line]
    located = rf"{re.escape(str(spec))}:\d+:\d+: "
    assert len(problem_lines) == 3 and all(re.match(located, line) for line in problem_lines)
    (body,) = json.loads(mixsteer("--root", project.root, "check", "--json", spec).stdout)
    assert body["ok"] is False and len(body["problems"]) == 3 and all(p["line"] > 0 for p in body["problems"])


def test_the_workflow_stops_before_any_job_on_a_local_source_problem(project, capsys):
    bad = project("bad.yaml", project.minimal.replace(PROBE_SOURCE, PROBE_SOURCE + "\n    label_field: nope"))
    wf = Workflow.load(["bad.yaml"], project.root)
    with pytest.raises(SystemExit) as e:
        wf.prepare_run(SOURCE_READER)
    assert e.value.code == 2 and "probe.data.label_field" in capsys.readouterr().err
    assert not (project.root / "build" / "stages").exists()
    runs = load_spec(bad, project.root, "bad.yaml")
    assert [p.path for p in local_source_problems(runs, project.root, SOURCE_READER)] == ["probe.data.label_field"]


def test_the_workflow_checks_local_sources_once_per_change(project, monkeypatch):
    project("good.yaml", project.minimal)
    Workflow.load(["good.yaml"], project.root).prepare_run(SOURCE_READER)
    assert (project.root / "build" / "stages").exists()
    calls = []
    monkeypatch.setattr("compiler.preflight.check.local_source_problems", lambda *a: calls.append(a) or [])
    Workflow.load(["good.yaml"], project.root).prepare_run(SOURCE_READER)
    assert calls == []


def test_plan_shows_disk_and_gpu_hours_per_stage_kind_and_its_help_the_formulas(project):
    spec = project("s.yaml", project.minimal + "resources:\n  pretrain: {gpus: 2, runtime_minutes: 90}\n")
    r = mixsteer("--root", project.root, "plan", spec)
    assert r.returncode == 0, r.stderr
    table = r.stdout.split("estimated cost", 1)[1].splitlines()
    pretrain = next(line.split() for line in table if line.split()[:1] == ["pretrain"])
    assert pretrain[1] == "1" and float(pretrain[-1]) == 2 * 90 / 60
    body = json.loads(mixsteer("--root", project.root, "plan", "--json", spec).stdout)
    assert body["cost_not_done"]["pretrain"]["gpu_hours"] == 3.0
    assert all("disk_bytes" in i["estimate"] for i in body["instances"].values())
    assert "2 bytes" in mixsteer("plan", "--help").stdout
