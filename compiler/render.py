"""Plan → files: one JSON envelope per stage instance, plan.json, lock.json and the Snakemake rules.

Spec values never enter generated source: the rules (templates/rules.smk.j2) only name stage kinds,
and each job reads its stage JSON by path. Files are written only when their bytes change, because
Snakemake re-runs this at every parse and mtimes must not move.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jinja2
from .ids import ID_HEX, canonical_json as _j
from .lock import lock_record
from .plan import Plan
from .planning import StageInstance

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

EXTRA_OUTPUTS: dict[str, list[tuple[str, str]]] = {
    # outputs shown by `snakemake --report` (the report stage publishes them atomically with stage.json)
    "report": [
        # snakemake --report embeds one file as a data URI: the page with its images inlined
        ("html", 'report("results/report/{id}/standalone.html", category="mixsteer", caption="{caption}")'),
    ],
}


def write_if_changed(path: Path, text: str, *, parent_exists: bool = False) -> bool:
    """Write atomically, and only if the content differs; returns whether it wrote.
    `parent_exists` skips the mkdir (thousands of stage JSONs share one folder)."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return False
    except FileNotFoundError:
        pass
    if not parent_exists:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path.parent}/.{path.name}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return True


def _obj(items: dict[str, str]) -> str:
    """A JSON object from already-serialised values (sorted keys)."""
    return "{" + ",".join(f"{_j(k)}:{items[k]}" for k in sorted(items)) + "}"


def envelope_json(inst: StageInstance) -> str:
    """The stage JSON a job reads: the full config (cached per section) plus its wiring; keys in
    sorted order. No project root: the runtime takes the project the file lives in (`build/stages/`
    under it), and decides the output and input folders from the ids (`runtime.stage_paths`);
    `output` is there for readers and must say `results/<kind>/<id>`."""
    inputs = _j({name: f"results/{_kind(i)}/{i}" for name, i in inst.inputs.items()})
    return (f'{{"config":{inst.config.full_json()},"files":{_j(inst.files)},"id":{_j(inst.id)},'
            f'"inputs":{inputs},"kind":{_j(inst.kind)},"output":{_j(inst.output)},'
            f'"resources":{inst.resources.full_json()},"version":{_j(inst.version)}}}\n')


def _kind(instance_id: str) -> str:
    return instance_id.rsplit("-", 1)[0]


def _instance_json(i: StageInstance) -> str:
    return _obj({"kind": _j(i.kind), "version": _j(i.version), "inputs": _j(i.inputs), "files": _j(i.files),
                 "output": _j(i.output), "config": i.config.full_json(), "resources": i.resources.full_json()})


def plan_members(plan: Plan) -> dict[str, str]:
    """The deterministic description of a plan, as serialised JSON members."""
    return {
        "spec": _j(plan.spec_name),
        "runs": _j([{"name": r.name, "axes": r.axes, "stages": r.roles} for r in plan.runs]),
        "instances": _obj({i.id: _instance_json(i) for i in plan.instances.values()}),
    }


def plan_json(plan: Plan) -> dict[str, Any]:
    return json.loads(_obj(plan_members(plan)))


def write_stage_files(plan: Plan, root: Path) -> list[Path]:
    """Write the stage JSONs (root/build/stages/<id>.json, shared by every spec: ids are content
    addresses); returns the files that changed."""
    changed = []
    stages = root / "build" / "stages"
    stages.mkdir(parents=True, exist_ok=True)
    for inst in plan.instances.values():
        path = stages / f"{inst.id}.json"
        if write_if_changed(path, envelope_json(inst), parent_exists=True):
            changed.append(path)
    return changed


def write_build(plan: Plan, build_dir: Path, environment: dict[str, Any]) -> list[Path]:
    """Write plan.json and lock.json under build_dir; returns the files that changed."""
    changed = []
    members = plan_members(plan)
    lock = {**members, "resolved": _resolved(plan), "hub": _j(lock_record(plan.lock)), "environment": _j(environment)}
    for name, text in (("plan.json", _obj(members) + "\n"), ("lock.json", _obj(lock) + "\n")):
        if write_if_changed(build_dir / name, text):
            changed.append(build_dir / name)
    return changed


def _resolved(plan: Plan) -> str:
    """The resolved spec once (the first run) plus each run's axis values: runs differ only there."""
    first = plan.runs[0].spec
    return _obj({"base": first.full_json(), "runs": _j({r.name: r.axes for r in plan.runs})})


RULE_VALUES = ("threads", "mem_mb", "runtime_minutes", "gpus", "nodes", "launcher")
"""Per-instance rule values. Rendered as literals when every instance of a kind agrees (the usual
case), else as a lookup function: Snakemake evaluates functions per job, which costs parse time."""


def render_rules(kinds: list[str], specs: list[str], rules_file: Path,
                 values: dict[str, dict[str, set]] | None = None) -> str:
    """The Snakemake rules for the given stage kinds (one rule per kind). `values[kind][name]` holds
    the distinct values of each `RULE_VALUES` entry over the kind's instances."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, autoescape=False,
    )
    conda_env = os.path.relpath(TEMPLATES.parent / "envs" / "mixsteer.yaml", rules_file.parent)
    caption = os.path.relpath(TEMPLATES / "report_caption.rst", rules_file.parent)
    rules = []
    for k in kinds:
        rule = {"kind": k, "extra_outputs": [(n, e.replace("{caption}", caption)) for n, e in EXTRA_OUTPUTS.get(k, [])]}
        for name in RULE_VALUES:
            seen = (values or {}).get(k, {}).get(name, set())
            if name == "launcher":  # a machine-local interpreter path: looked up at parse, never written here
                rule[name] = f"MIXSTEER.kind_launcher({k!r})" if len(seen) == 1 else "lambda wc: MIXSTEER.launcher(wc.id)"
            else:
                rule[name] = repr(next(iter(seen))) if len(seen) == 1 else f"lambda wc: MIXSTEER.resource(wc.id, {name!r})"
        rules.append(rule)
    return env.get_template("rules.smk.j2").render(rules=rules, specs=specs, id_hex=ID_HEX, conda_env=conda_env)
