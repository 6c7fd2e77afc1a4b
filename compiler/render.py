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

from .ids import ID_HEX
from .plan import Plan, StageInstance

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

EXTRA_OUTPUTS: dict[str, list[tuple[str, str]]] = {
    # outputs shown by `snakemake --report` (the report stage publishes them atomically with stage.json)
    "report": [
        # snakemake --report embeds one file as a data URI: the page with its images inlined
        ("html", 'report("results/report/{id}/standalone.html", category="mixsteer", caption="{caption}")'),
    ],
}


def write_if_changed(path: Path, text: str) -> bool:
    """Write atomically, and only if the content differs; returns whether it wrote."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def envelope(inst: StageInstance, root: Path) -> dict[str, Any]:
    """The stage JSON a job reads: config dump (all fields) plus wiring."""
    return {
        "kind": inst.kind, "id": inst.id, "version": inst.version,
        "config": inst.config.model_dump(mode="json"),
        "inputs": {name: f"results/{_kind(i)}/{i}" for name, i in sorted(inst.inputs.items())},
        "files": inst.files, "output": inst.output, "root": str(root),
        "resources": inst.resources.model_dump(mode="json"),
    }


def _kind(instance_id: str) -> str:
    return instance_id.rsplit("-", 1)[0]


def plan_json(plan: Plan) -> dict[str, Any]:
    """The deterministic description of a plan (what lock.json and `mixsteer plan --json` show)."""
    return {
        "spec": plan.spec_name,
        "runs": [{"name": r.name, "axes": r.axes, "stages": r.roles} for r in plan.runs],
        "instances": {
            i.id: {"kind": i.kind, "version": i.version, "inputs": i.inputs, "files": i.files, "output": i.output,
                   "config": i.config.model_dump(mode="json"),
                   "resources": i.resources.model_dump(mode="json")}
            for i in plan.instances.values()
        },
    }


def write_build(plan: Plan, root: Path, build_dir: Path, environment: dict[str, Any]) -> list[Path]:
    """Write stage JSONs, plan.json and lock.json under build_dir; returns the files that changed."""
    changed = []
    for inst in plan.instances.values():
        path = build_dir / "stages" / f"{inst.id}.json"
        if write_if_changed(path, dump_json(envelope(inst, root))):
            changed.append(path)
    body = plan_json(plan)
    for name, obj in (("plan.json", body), ("lock.json", {**body, "resolved": _resolved(plan), "environment": environment})):
        if write_if_changed(build_dir / name, dump_json(obj)):
            changed.append(build_dir / name)
    return changed


def _resolved(plan: Plan) -> dict[str, Any]:
    return {r.name: r.spec.model_dump(mode="json", exclude={"sweep"}) for r in plan.runs}


def render_rules(kinds: list[str], specs: list[str], rules_file: Path) -> str:
    """The Snakemake rules for the given stage kinds (one rule per kind)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, autoescape=False,
    )
    conda_env = os.path.relpath(TEMPLATES.parent / "envs" / "mixsteer.yaml", rules_file.parent)
    caption = os.path.relpath(TEMPLATES / "report_caption.rst", rules_file.parent)
    rules = [
        {"kind": k, "extra_outputs": [(n, e.replace("{caption}", caption)) for n, e in EXTRA_OUTPUTS.get(k, [])],
         "threads": "lambda wc: MIXSTEER.resource(wc.id, \"threads\")"}
        for k in kinds
    ]
    return env.get_template("rules.smk.j2").render(rules=rules, specs=specs, id_hex=ID_HEX, conda_env=conda_env)
