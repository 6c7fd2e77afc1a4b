"""The bridge Snakemake calls at parse time: compile specs, write build files, answer rule lookups.

`Workflow.compile(spec_files, root)` validates and plans each spec, writes `build/<spec>/…` and the
stage JSONs (only changed files), renders one rules file for the stage kinds in use, and exposes the
per-instance lookups the generated rules use (inputs, stage JSON path, launcher, resources).
`Workflow.load` is what a Snakemake parse calls: the same without the stage JSONs, or a cache hit.
`prepare_run` (Snakemake's `onstart`) writes the stage JSONs and links the readable aliases
`results/specs/<spec>/<run>/<role>` → `results/<kind>/<id>` before the first job.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kinds import KIND_ORDER, kind_named
from .load import dotted
from .plan import Plan, build_plan
from .planning import StageInstance
from .preflight.local import SourceReader
from .provenance import git_commit, package_versions
from .render import RULE_VALUES, render_rules, write_build, write_if_changed, write_stage_files
from .schema.resources import StageResources
from .validate import load_spec


def environment(root: Path) -> dict[str, Any]:
    """Code commit and package versions recorded in lock.json (kept out of golden comparisons)."""
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
    spec_files: list[str] = field(default_factory=list)
    allow_unlocked: bool = False   # `--config unlocked=true`: run floating references as they are today
    cache: dict[str, Any] = field(default_factory=dict)  # the cache file as `load` read or wrote it

    @property
    def sources(self) -> list[str]:
        return sorted({s for p in self.plans for s in p.sources})

    def link_aliases(self) -> None:
        """Readable links `results/specs/<spec>/<run>/<role>` for every spec of this workflow."""
        link_aliases(self.root, [self.rules_file.parent.parent / name / "aliases.json"
                                 for name in self.rules_file.parent.name.split("+")])

    @classmethod
    def load(cls, spec_files: list[str | Path], root: Path) -> "Workflow":
        """What a Snakemake parse needs: `compile` without the stage JSONs, unless nothing it read
        changed since the last compile (Snakemake parses the Snakefile at every invocation, and once
        per job on a cluster): then the stage instances are read back from the cache's index without
        validating anything. The stage JSONs are left to `prepare_run` (a dry run never reads them:
        a 1,000-run sweep has 3,000)."""
        root = Path(root).resolve()
        try:
            state = json.loads(_cache_file(spec_files, root).read_text())
        except (OSError, json.JSONDecodeError):
            state = None
        if state and state.get("stamps") == _stamps(state["watched"], root):
            cached = cls._from_build(state, root, spec_files)
            if cached is not None:
                return cached
        wf = cls.compile(spec_files, root, stage_files=False)
        watched = sorted({*wf.sources, *(f for i in wf.instances.values() for f in i.files)})
        wf._record({
            "watched": watched, "stamps": _stamps(watched, root), "rules_file": str(wf.rules_file),
            "instances": {sid: [i.kind, i.version, i.inputs, i.resources.model_dump(), i.files]
                          for sid, i in wf.instances.items()},
            "stage_files": "pending",
        })
        return wf

    @classmethod
    def _from_build(cls, state: dict[str, Any], root: Path, spec_files: list[str | Path]) -> "Workflow | None":
        """The workflow from the cache's instance index (what the rules need: no configs), or None
        when the rules file was deleted."""
        try:
            instances = {sid: StageInstance(kind, sid, version, None, inputs,  # type: ignore[arg-type]
                                            StageResources.model_construct(**resources), files)
                         for sid, (kind, version, inputs, resources, files) in state["instances"].items()}
        except (KeyError, TypeError, ValueError):
            return None
        if not Path(state["rules_file"]).exists():
            return None
        return cls(root, [], instances, Path(state["rules_file"]), list(map(str, spec_files)), cache=state)

    def _record(self, state: dict[str, Any]) -> None:
        """Write the cache file (unchanged bytes are not rewritten) and keep what it now holds."""
        write_if_changed(_cache_file(self.spec_files, self.root), json.dumps(state))
        self.cache = state

    def prepare_run(self, reader: SourceReader) -> None:
        """Before the first job of a run (Snakemake's `onstart`): the local sources checked (read with
        `reader`, the runtime's readers the Snakefile hands in), the stage JSONs, then the aliases."""
        from .errors import MixsteerError

        try:
            self.check_locked()
            self.check_local_sources(reader)
        except MixsteerError as exc:  # printed as `mixsteer check` prints it; no traceback, no job started
            print(f"mixsteer: the run cannot start:\n{exc}", file=sys.stderr)
            raise SystemExit(2) from None
        self.ensure_stage_files()
        self.link_aliases()

    def check_locked(self) -> None:
        """Refuse to start while a spec names a floating Hub reference its lock files do not resolve,
        with the command that fixes it (unless the user opted in: then the runtime resolves it and
        records the commit it read in the stage's metrics)."""
        from .errors import MixsteerError
        from .lock import apply_locks
        from .resolve import load_document

        lines = []
        for f in self.spec_files:
            doc = load_document(self.root / f, f)
            for u in apply_locks(doc.data, doc.sources)[1].unlocked:
                p = doc.position(u.path)
                lines.append(f"  {p.file}:{p.line}:{p.column}: {dotted(u.path)}: {u.ref} floats; lock it: "
                             f"`mixsteer lock {p.file}`")
        if not lines:
            return
        if self.allow_unlocked:
            print("mixsteer: running with unlocked references (--config unlocked=true); each stage records the "
                  "commit it read:\n" + "\n".join(lines), file=sys.stderr)
            return
        raise MixsteerError("floating Hub references are not locked; run the command below (it asks the Hub once "
                            "and writes the spec's lock file), or opt in with `--config unlocked=true`:\n"
                            + "\n".join(lines))

    def check_local_sources(self, reader: SourceReader) -> None:
        """`mixsteer check`'s local part (every local source opened, the fields the spec names looked for
        in its first records); a problem stops the run before any job starts, with the same report.
        Done once per change: the cache records a pass, and any change to a spec or a data file it
        reads starts a new cache. No network and no GPU query (`mixsteer check` does those)."""
        from .errors import SpecError
        from .preflight.check import local_source_problems

        if self.cache.get("local_sources") == "checked":
            return
        problems = [p for f in self.spec_files for p in local_source_problems(
            load_spec(self.root / f, self.root, os.path.relpath(self.root / f, self.root)), self.root, reader)]
        if problems:
            raise SpecError(problems)
        if self.cache:
            self._record({**self.cache, "local_sources": "checked"})

    def ensure_stage_files(self) -> None:
        """Write the stage JSONs the last parse left pending, or any that went missing. Jobs read
        only these: a stage JSON is never trusted from an older compile (operational fields such as
        resources are in it but not in its id)."""
        stages = self.root / "build" / "stages"
        if self.cache.get("stage_files") == "written" and all((stages / f"{sid}.json").exists()
                                                              for sid in self.instances):
            return
        plans = self.plans or [compile_spec(Path(f), self.root) for f in self.spec_files]
        for plan in plans:
            write_stage_files(plan, self.root)
        if self.cache:
            self._record({**self.cache, "stage_files": "written"})

    @classmethod
    def compile(cls, spec_files: list[str | Path], root: Path, *, stage_files: bool = True) -> "Workflow":
        """Validate and plan every spec and write build/ (the stage JSONs too, unless `stage_files`
        is false: then `ensure_stage_files` does it before a run)."""
        root = Path(root).resolve()
        plans = [compile_spec(Path(f), root) for f in spec_files]
        names = [p.spec_name for p in plans]
        if len(set(names)) != len(names):
            from .errors import PlanError
            raise PlanError(f"two specs share a name: {names}; give each a distinct `name:`")
        env = environment(root)
        instances: dict[str, StageInstance] = {}
        for plan in plans:
            build = root / "build" / plan.spec_name
            write_build(plan, build, env)
            if stage_files:
                write_stage_files(plan, root)
            write_if_changed(build / "aliases.json", json.dumps(alias_map(plan), sort_keys=True))
            for sid, inst in plan.instances.items():
                instances.setdefault(sid, inst)
        kinds = [k for k in KIND_ORDER if any(i.kind == k for i in instances.values())]
        rules_file = root / "build" / "+".join(names) / "rules.smk"
        wf = cls(root, plans, instances, rules_file, list(map(str, spec_files)))
        values: dict[str, dict[str, set]] = {}
        for sid, inst in instances.items():
            per_kind = values.setdefault(inst.kind, {})
            for name in RULE_VALUES:
                per_kind.setdefault(name, set()).add(wf.launcher(sid) if name == "launcher" else wf.resource(sid, name))
        write_if_changed(rules_file, render_rules(kinds, names, rules_file, values))
        return wf

    def __post_init__(self) -> None:
        needs = {sid: [f"{self.instances[i].output}/stage.json" for i in ids]
                 for sid, ids in ordering_inputs(self.instances).items()}

        def inputs_of(wildcards: Any) -> list[str]:
            """The rules' input function: the upstream stage.json files that order this job."""
            return needs[wildcards.id]

        # Snakemake inspects an input function's signature at every call (~15 µs, once per job);
        # `_overwrite_params` (snakemake.common.FUNC_OVERWRITE_PARAMS_ATTR) answers it from a cache.
        inputs_of._overwrite_params = inspect.signature(inputs_of).parameters  # type: ignore[attr-defined]
        self.inputs_of = inputs_of

    # lookups used by the generated rules -------------------------------------------------------
    def launcher(self, sid: str) -> str:
        """`python -m runtime.launch --nodes N --procs-per-node P --stop-grace-s S --` for every kind: a
        `torchrun` kind of the table (pretraining) on one process, torchrun, or one torchrun per node; every
        other kind on one process.
        The launcher owns the stage's processes and stop signals, and under SLURM gives it a job step of
        its own. Only integers from the resources section reach the shell."""
        inst = self.instances[sid]
        res = inst.resources
        procs, nodes = (int(res.processes), int(res.nodes)) if kind_named(inst.kind).torchrun else (1, 1)
        return shlex.join([sys.executable, "-m", "runtime.launch", f"--nodes={nodes}", f"--procs-per-node={procs}",
                           f"--stop-grace-s={int(res.stop_grace_s)}", "--"])

    def kind_launcher(self, kind: str) -> str:
        """The launcher shared by every instance of a kind (the renderer checked it is shared)."""
        (launcher,) = {self.launcher(sid) for sid, i in self.instances.items() if i.kind == kind}
        return launcher

    def resource(self, sid: str, name: str) -> int:
        return int(getattr(self.instances[sid].resources, name))

    @property
    def targets(self) -> list[str]:
        """The sinks of the stage graph (usually just the report): Snakemake finds the rest."""
        used = {i for inst in self.instances.values() for i in inst.inputs.values()}
        return [f"{i.output}/stage.json" for sid, i in self.instances.items() if sid not in used]


def ordering_inputs(instances: dict[str, StageInstance]) -> dict[str, list[str]]:
    """Each instance's inputs less those already upstream of another input (transitive reduction).

    The runtime reads every input path from its stage JSON; Snakemake needs the edges only to order
    jobs and propagate reruns, and a dropped edge is implied by a path through the kept ones. In a
    1,000-run sweep this removes a quarter of the edges (report → steer, evaluate → base model, …),
    and Snakemake's dry run pays per edge.
    """
    upstream: dict[str, frozenset[str]] = {}

    def ancestors(sid: str) -> frozenset[str]:
        if sid not in upstream:
            found: set[str] = set()
            stack = list(instances[sid].inputs.values())
            while stack:
                dep = stack.pop()
                if dep not in found:
                    found.add(dep)
                    stack.extend(upstream.get(dep, instances[dep].inputs.values()))
            upstream[sid] = frozenset(found)
        return upstream[sid]

    reduced = {}
    for sid, inst in instances.items():
        direct = sorted(set(inst.inputs.values()))
        implied = set().union(*(ancestors(d) for d in direct)) if direct else set()
        reduced[sid] = [d for d in direct if d not in implied]
    return reduced


CODE_DIRS = ("compiler", "runtime", "templates")


def _cache_file(spec_files: list[str | Path], root: Path) -> Path:
    key = hashlib.sha256(json.dumps([str(root), *map(str, spec_files)]).encode()).hexdigest()[:16]
    return root / "build" / ".cache" / f"workflow-{key}.json"


def _stamps(watched: list[str], root: Path) -> list[list[Any]]:
    """(path, size, mtime_ns) of the watched files and of mixsteer's own code and templates."""
    code = Path(__file__).resolve().parent.parent
    paths = [root / w for w in watched]
    paths += sorted(p for d in CODE_DIRS for p in (code / d).rglob("*") if p.suffix in (".py", ".j2", ".rst"))
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append([str(p), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([str(p), None, None])
    return out


def alias_map(plan: Plan) -> dict[str, dict[str, str]]:
    """run → alias file name → output folder, for `results/specs/<spec>/<run>/<alias>`."""
    return {r.name: {role.replace("/", "-"): plan.instances[sid].output for role, sid in r.roles.items()}
            for r in plan.runs}


def link_aliases(root: Path, alias_files: list[Path]) -> None:
    """`results/specs/<spec>/<run>/<role>` → the content-addressed folder (relative symlinks), for
    each `build/<spec>/aliases.json`.

    Called when a real run starts (`onstart` in the Snakefile) and by `mixsteer compile`, not at
    every parse: a 1,000-run sweep has 14,000 links, and a dry run needs none of them.
    `results/specs/<spec>/.aliases.json` records the last mapping linked, so an unchanged plan costs
    one read.
    """
    for alias_file in alias_files:
        spec_dir = root / "results" / "specs" / alias_file.parent.name
        mapping = alias_file.read_text()
        index = spec_dir / ".aliases.json"
        if index.exists() and index.read_text() == mapping:
            continue
        for run, links in json.loads(mapping).items():
            folder = spec_dir / run
            for name, output in links.items():
                link = folder / name
                target = os.path.relpath(root / output, folder)
                if link.is_symlink() and os.readlink(link) == target:
                    continue
                folder.mkdir(parents=True, exist_ok=True)
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(target, target_is_directory=True)
        write_if_changed(index, mapping)
