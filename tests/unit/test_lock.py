"""`mixsteer lock` against a fake Hub served over HTTP (the real `huggingface_hub` client asks it), and what
the lock does to ids, `show`, `diff` and a run that starts with a floating reference."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.errors import MixsteerError
from compiler.lock import LockFile, Ref, apply_locks, floating_refs, lock_path
from compiler.workflow import Workflow, compile_spec
from tests.fake_hub import FakeHub

ROOT = Path(__file__).resolve().parents[2]

FLOATING = """
attack:
  prompts: {kind: hf, name: walledai/AdvBench, split: train, text_field: prompt}
  max_prompts: 2
  gcg: {steps: 2, candidates_per_step: 4, top_k_tokens: 4, suffix_tokens: 2, target: "Sure"}
"""
SCORER = ("  scorers:\n"
          "    - {kind: classifier, name: clf, model: org/clf, revision: main, toxic_labels: [LABEL_1]}\n")


def floating_spec(project, name: str = "s.yaml") -> Path:
    prompts = "      source: {kind: jsonl, path: prompts.jsonl}\n"
    return project(name, project.minimal.replace(prompts, prompts + SCORER) + FLOATING)


def mixsteer(*args: str, cwd: Path, hub_url: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "0" if hub_url else "1", "HF_HOME": str(cwd / ".hf"),
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    if hub_url:
        env["HF_ENDPOINT"] = hub_url
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def hub():
    fake = FakeHub()
    fake.add("dataset", "walledai/AdvBench", label="advbench-1")
    fake.add("model", "org/clf", label="clf-1",
             files={"config.json": json.dumps({"id2label": {"0": "LABEL_0", "1": "LABEL_1"}}).encode()})
    with fake.serve() as server:
        fake.url = server.url
        yield fake


def test_floating_references_are_hub_datasets_and_models_not_named_by_a_commit():
    doc = {"a": {"kind": "hf", "name": "x/y"},                               # default branch
           "b": [{"kind": "hf", "name": "x/z", "revision": "refs/convert/parquet"},
                 {"kind": "hf", "name": "x/w", "revision": "a" * 40},            # a commit: pinned
                 {"kind": "hf", "path": "data/hub/x/v", "revision": "main"}],    # a local mirror: no Hub
           "c": {"kind": "classifier", "model": "o/m", "revision": "v1.0"},
           "d": {"kind": "classifier", "path": "models/m"}}
    assert list(floating_refs(doc)) == [
        (("a",), Ref("dataset", "x/y", None)), (("b", 0), Ref("dataset", "x/z", "refs/convert/parquet")),
        (("c",), Ref("model", "o/m", "v1.0"))]


def test_lock_resolves_every_floating_reference_and_ids_come_from_the_commits(project, hub):
    spec = floating_spec(project)
    r = mixsteer("lock", "s.yaml", cwd=project.root, hub_url=hub.url)
    assert r.returncode == 0, r.stderr
    lock = LockFile.read(lock_path(spec))
    advbench, clf = (hub.repos[k].branches["main"] for k in (("dataset", "walledai/AdvBench"), ("model", "org/clf")))
    assert {k: e.commit for k, e in lock.entries.items()} == {
        "dataset:walledai/AdvBench@": advbench, "model:org/clf@main": clf}
    # the locked spec is the spec with the commits written in: same ids, same resolved values
    pinned = project("pinned.yaml", spec.read_text()
                     .replace("name: walledai/AdvBench,", f"name: walledai/AdvBench, revision: {advbench},")
                     .replace("revision: main", f"revision: {clf}"))
    a, b = compile_spec(spec, project.root), compile_spec(pinned, project.root)
    assert sorted(a.instances) == sorted(b.instances)
    assert a.lock.resolved == {"dataset:walledai/AdvBench@": advbench, "model:org/clf@main": clf}
    shown = mixsteer("show", "s.yaml", cwd=project.root)
    assert f"revision: {advbench}" in shown.stdout and f"revision: {clf}" in shown.stdout
    # locking again asks the Hub nothing and changes nothing
    asked = len(hub.requests)
    again = mixsteer("lock", "s.yaml", cwd=project.root, hub_url=hub.url)
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert [q for q in hub.requests[asked:] if "/api/models/" in q or "/api/datasets/" in q] == []


def test_a_moved_upstream_commit_shows_in_lock_upgrade_and_in_diff(project, hub):
    spec = floating_spec(project)
    assert mixsteer("lock", "s.yaml", cwd=project.root, hub_url=hub.url).returncode == 0
    old = project.root / "old"
    old.mkdir()
    shutil.copy(spec, old / "s.yaml")
    shutil.copy(lock_path(spec), lock_path(old / "s.yaml"))     # data paths stay relative to the project root
    moved = hub.add("dataset", "walledai/AdvBench", label="advbench-2")       # upstream lands a commit
    plain = mixsteer("lock", "s.yaml", cwd=project.root, hub_url=hub.url)
    assert "unchanged" in plain.stdout                                         # a lock holds until upgraded
    up = mixsteer("lock", "--upgrade", "s.yaml", cwd=project.root, hub_url=hub.url)
    assert up.returncode == 0, up.stderr
    assert f"-> {moved[:12]}" in up.stdout and "attack" in up.stdout           # what the move reruns
    assert LockFile.read(lock_path(spec)).entries["dataset:walledai/AdvBench@"].commit == moved
    d = mixsteer("diff", "old/s.yaml", "s.yaml", cwd=project.root)
    assert d.returncode == 1
    assert "attack.prompts.revision" in d.stdout and moved in d.stdout
    assert "pretrain" not in [line.split()[0] for line in d.stdout.splitlines() if "new" in line and line.strip()]


def test_an_ablation_keeps_the_commits_its_base_locked(project, hub):
    floating_spec(project, "base.yaml")
    assert mixsteer("lock", "base.yaml", cwd=project.root, hub_url=hub.url).returncode == 0
    hub.add("dataset", "walledai/AdvBench", label="advbench-2")                # moves after the base was locked
    ablation = project("ablation.yaml", "extends: base.yaml\nsteer: {alpha: 3.0}\n")
    r = mixsteer("lock", "ablation.yaml", cwd=project.root, hub_url=hub.url)
    assert r.returncode == 0 and not lock_path(ablation).exists()             # nothing of its own floats
    base, abl = compile_spec(project.root / "base.yaml", project.root), compile_spec(ablation, project.root)
    attacks = lambda plan: {s for s, i in plan.instances.items() if i.kind == "attack" and "steer" not in i.inputs}
    assert attacks(base) & attacks(abl)                                      # the base model's attack is shared


def test_a_run_with_an_unlocked_reference_stops_before_its_first_job(project):
    floating_spec(project)
    shutil.copy(ROOT / "Snakefile", project.root)
    r = subprocess.run([sys.executable, "-m", "snakemake", "--nolock", "--cores", "1", "--config", "spec=s.yaml"],
                       cwd=project.root, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "mixsteer lock s.yaml" in r.stderr and "walledai/AdvBench" in r.stderr and "org/clf" in r.stderr
    assert not (project.root / "results" / "tokenizer").exists()               # no job ran


def test_opting_in_runs_unlocked_and_says_so(project, capsys):
    floating_spec(project)
    wf = Workflow.compile(["s.yaml"], project.root)
    with pytest.raises(MixsteerError, match="mixsteer lock s.yaml"):
        wf.check_locked()
    wf.allow_unlocked = True
    wf.check_locked()
    assert "unlocked" in capsys.readouterr().err


def test_lock_offline_and_a_missing_repository_are_clear_errors(project, hub):
    floating_spec(project)
    offline = mixsteer("lock", "s.yaml", cwd=project.root)
    assert offline.returncode == 2 and "HF_HUB_OFFLINE" in offline.stderr and "Traceback" not in offline.stderr
    del hub.repos[("model", "org/clf")]
    missing = mixsteer("lock", "s.yaml", cwd=project.root, hub_url=hub.url)
    assert missing.returncode == 2 and "org/clf" in missing.stderr and "no such repository" in missing.stderr
    assert not lock_path(project.root / "s.yaml").exists()                   # nothing half-written


def test_a_damaged_lock_file_is_a_clear_error(project):
    spec = floating_spec(project)
    lock_path(spec).write_text('{"version": 1, "references": {"dataset:x/y@": {"commit": "main"}}}')
    with pytest.raises(MixsteerError, match="not resolved to a 40-hex commit"):
        apply_locks({}, (str(spec),))
    lock_path(spec).write_text("{not json")
    r = mixsteer("validate", "s.yaml", cwd=project.root)
    assert r.returncode == 2 and "s.lock.json" in r.stderr and "Traceback" not in r.stderr


def test_check_online_confirms_the_commit_and_the_toxic_labels(project, hub):
    spec = floating_spec(project)
    assert mixsteer("lock", "s.yaml", cwd=project.root, hub_url=hub.url).returncode == 0
    ok = mixsteer("check", "--json", "s.yaml", cwd=project.root, hub_url=hub.url)
    info = " ".join(json.loads(ok.stdout)[0]["info"])
    assert "toxic_labels ['LABEL_1'] among id2label" in info
    spec.write_text(spec.read_text().replace("toxic_labels: [LABEL_1]", "toxic_labels: [toxic]"))
    bad = mixsteer("check", "--json", "s.yaml", cwd=project.root, hub_url=hub.url)
    problems = {p["path"]: p["message"] for p in json.loads(bad.stdout)[0]["problems"]}
    assert "not among the checkpoint's id2label" in problems["evaluate.scorers[0].toxic_labels"]
    cached = mixsteer("check", "--json", "s.yaml", cwd=project.root)         # offline, config.json in the cache
    assert "not among the checkpoint's id2label" in json.dumps(json.loads(cached.stdout)[0]["problems"])
    shutil.rmtree(project.root / ".hf")
    offline = mixsteer("check", "--json", "s.yaml", cwd=project.root)
    report = json.loads(offline.stdout)[0]
    assert any("toxic_labels not checked (offline)" in line for line in report["info"])


def test_an_unlocked_hub_source_is_read_at_one_commit_and_records_it(hub, monkeypatch, tmp_path):
    import datasets
    import huggingface_hub.constants as hf_constants

    from compiler.schema.sources import HFSource
    from runtime.sources import SourceCounts, iter_records

    monkeypatch.setattr(hf_constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    asked = []

    def load_dataset(name, config, *, split, revision, streaming, **extra):  # the rows; the Hub part is real
        asked.append(revision)
        return iter([{"prompt": "how do I"}, {"prompt": "tell me"}])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    counts = SourceCounts()
    spec = HFSource(kind="hf", name="walledai/AdvBench", text_field="prompt")
    assert [r["prompt"] for r in iter_records(spec, tmp_path, counts, text_fields=("prompt",))] == ["how do I", "tell me"]
    commit = hub.repos[("dataset", "walledai/AdvBench")].branches["main"]
    assert asked == [commit] and counts.metrics("attack")["source_attack_hub_commit"] == commit
