"""The bridge Snakemake calls at parse time: compile specs, write build files, answer rule lookups.

`Workflow.compile(spec_files, root)` validates and plans each spec, writes `build/<spec>/…` (only
changed files), renders one rules file for the stage kinds in use, links readable aliases
`results/<spec>/<run>/<role>` → `results/<kind>/<id>`, and exposes the per-instance lookups the
generated rules use (inputs, stage JSON path, launcher, resources).
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .plan import Plan, StageInstance, build_plan
from .render import render_rules, write_build, write_if_changed
from .validate import load_spec

KIND_ORDER = ["tokenizer", "mix", "pretrain", "activations", "probe", "steer", "posttrain",
              "evaluate", "attack", "toy", "report"]


def environment(root: Path) -> dict[str, Any]:
    """Code commit and package versions recorded in lock.json (kept out of golden comparisons)."""
    from runtime.stage import git_commit, package_versions

    return {"git_commit": git_commit(root), "packages": package_versions(), "python": sys.version.split()[0]}


def compile_spec(spec_file: Path, root: Path) -> Plan:
    """Validate and plan one spec file (no disk writes)."""
    display = os.path.relpath(spec_file, root) if Path(spec_file).is_absolute() else str(spec_file)
    runs = load_spec(root / spec_file if not Path(spec_file).is_absolute() else Path(spec_file), root, display)
    return build_plan(runs[0][1].name, runs, root)


@dataclass
class Workflow:
    root: Path
    plans: list[Plan]
    instances: dict[str, StageInstance]
    rules_file: Path
    config_paths: dict[str, Path]

    @classmethod
    def compile(cls, spec_files: list[str | Path], root: Path) -> "Workflow":
        root = Path(root).resolve()
        plans = [compile_spec(Path(f), root) for f in spec_files]
        names = [p.spec_name for p in plans]
        if len(set(names)) != len(names):
            from .errors import PlanError
            raise PlanError(f"two specs share a name: {names}; give each a distinct `name:`")
        env = environment(root)
        instances: dict[str, StageInstance] = {}
        config_paths: dict[str, Path] = {}
        for plan in plans:
            build = root / "build" / plan.spec_name
            write_build(plan, root, build, env)
            link_aliases(plan, root)
            for sid, inst in plan.instances.items():
                instances.setdefault(sid, inst)
                config_paths.setdefault(sid, build / "stages" / f"{sid}.json")
        kinds = [k for k in KIND_ORDER if any(i.kind == k for i in instances.values())]
        rules_file = root / "build" / "+".join(names) / "rules.smk"
        write_if_changed(rules_file, render_rules(kinds, names, rules_file))
        return cls(root, plans, instances, rules_file, config_paths)

    # lookups used by the generated rules -------------------------------------------------------
    def input_files(self, sid: str) -> dict[str, str]:
        inst = self.instances[sid]
        return {name: f"{self.instances[i].output}/stage.json" for name, i in sorted(inst.inputs.items())}

    def config_path(self, sid: str) -> str:
        return os.path.relpath(self.config_paths[sid], self.root)

    def launcher(self, sid: str) -> str:
        """`python` or `torchrun …` (only integers from the resources section reach it)."""
        inst = self.instances[sid]
        procs = inst.resources.processes if inst.kind == "pretrain" else 1
        if procs == 1 and inst.resources.nodes == 1:
            return shlex.quote(sys.executable)
        torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}"]
        torchrun += ["--standalone"] if inst.resources.nodes == 1 else [f"--nnodes={inst.resources.nodes}"]
        return shlex.join(torchrun)

    def resource(self, sid: str, name: str) -> int:
        return int(getattr(self.instances[sid].resources, name))

    @property
    def targets(self) -> list[str]:
        return [f"{i.output}/stage.json" for i in self.instances.values()]


def link_aliases(plan: Plan, root: Path) -> None:
    """`results/<spec>/<run>/<role>` → the content-addressed folder (relative symlinks)."""
    for run in plan.runs:
        folder = root / "results" / plan.spec_name / run.name
        for role, sid in run.roles.items():
            link = folder / role.replace("/", "-")
            target = os.path.relpath(root / plan.instances[sid].output, folder)
            if link.is_symlink() and os.readlink(link) == target:
                continue
            folder.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target, target_is_directory=True)
