"""`mixsteer`'s commands that only compile: validate, show, lock, plan, compile, diff, schema.

They read specs, lock files and which outputs exist, never sources or results: the program itself is
`runtime.cli`, which adds the commands that do (check, results, compare, scorer-check), reads argv and
the project root (`--root`, default: the current directory) once and passes them down, and turns errors
into exit codes. Each `add_*` adds one command to its parser; each `cmd_*` runs it and returns the exit
code.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from .errors import MixsteerError, Problem, SpecError


def add_validate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("validate", help="check specs; print every problem as file:line:col: path: message")
    p.add_argument("specs", nargs="+", type=Path, metavar="SPEC")
    p.add_argument("--json", action="store_true", help="machine-readable result")
    p.set_defaults(func=cmd_validate)


def add_show(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("show", help="print the fully resolved spec (extends merged, defaults filled)")
    p.add_argument("spec", type=Path, metavar="SPEC")
    p.add_argument("--run", help="which sweep run to show (default: the first; see `plan` for names)")
    p.add_argument("--json", action="store_true", help="JSON instead of YAML")
    p.set_defaults(func=cmd_show)


def add_lock(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("lock", help="resolve every floating Hub reference (a branch, a tag, no revision) to a "
                            "commit and write <spec>.lock.json beside the spec (online)", description=LOCK_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("specs", nargs="+", type=Path, metavar="SPEC")
    p.add_argument("--upgrade", action="store_true",
                   help="ask the Hub again for references already locked, and show which stages a moved one reruns")
    p.set_defaults(func=cmd_lock)


def add_plan(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("plan", help="list stage instances with ids, status (done/resumable/new) and cost",
                            description=_plan_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", type=Path, metavar="SPEC")
    p.add_argument("--json", action="store_true", help="machine-readable plan")
    p.set_defaults(func=cmd_plan)


def add_compile(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("compile", help="write build/<spec>/ (stage JSONs, plan.json, lock.json) and the rules file")
    p.add_argument("specs", nargs="+", type=Path, metavar="SPEC")
    p.set_defaults(func=cmd_compile)


def add_diff(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("diff", help="what B changes vs A and which stage instances must rerun (exit 1 if different)")
    p.add_argument("a", type=Path, metavar="A")
    p.add_argument("b", type=Path, metavar="B")
    p.add_argument("--json", action="store_true", help="machine-readable diff")
    p.set_defaults(func=cmd_diff)


def add_schema(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("schema", help="print the JSON Schema of specs (for editors)")
    p.set_defaults(func=cmd_schema)


def user_path(path: Path) -> Path:
    """A spec path as the user typed it: relative to the current directory."""
    return path if path.is_absolute() else (Path.cwd() / path)


def stage_status(root: Path, kind: str, sid: str) -> str:
    """`done` (its stage.json exists), `resumable` (a work folder is left) or `new`."""
    if (root / "results" / kind / sid / "stage.json").exists():
        return "done"
    if (root / "results" / ".work" / kind / sid).exists():
        return "resumable"
    return "new"


def cmd_validate(args: argparse.Namespace, root: Path) -> int:
    from .measurements import measurement_notes
    from .plan import build_plan
    from .validate import load_spec, warnings_of

    results: list[dict[str, Any]] = []
    for spec in args.specs:
        try:
            runs = load_spec(user_path(spec), root, str(spec))
            plan = build_plan(runs[0][1].name, runs, root)
            results.append({"spec": str(spec), "ok": True, "runs": len(runs), "instances": len(plan.instances),
                            "notes": measurement_notes(runs), "warnings": [vars(w) for w in warnings_of(runs, root)]})
        except SpecError as exc:
            results.append({"spec": str(spec), "ok": False, "problems": [vars(p) for p in exc.problems]})
            if not args.json:
                print(str(exc), file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            if r["ok"]:
                print(f"ok  {r['spec']}: {r['runs']} run(s), {r['instances']} stage instances")
                for note in r["notes"]:
                    print(f"    {note}")
                for w in r["warnings"]:
                    print(Problem(**w), file=sys.stderr)
            else:
                n = len(r["problems"])
                print(f"BAD {r['spec']}: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
    return 0 if all(r["ok"] for r in results) else 2


def _plan_help() -> str:
    from .preflight import estimates

    return ("List every stage instance with its id, status (done / resumable / new), estimated disk and\n"
            "GPU-hours, then the totals per stage kind. The estimates:\n" + estimates.__doc__.split("\n", 2)[2])


LOCK_HELP = """\
A Hub dataset (`kind: hf` with `name:`) or a Hub classifier (`kind: classifier` with `model:`) named by a
branch or tag (`revision: main`, `revision: refs/convert/parquet`) or by no revision at all floats: the Hub
may serve other bytes under it tomorrow. `mixsteer lock SPEC` asks the Hub once which commit each floating
reference points to and writes them to SPEC's lock file (specs/x.yaml -> specs/x.lock.json); commit it
beside the spec. From then on every command reads the spec with those commits in place of the branches:
stage ids, `mixsteer show` and `mixsteer diff` all see the commit, and the same spec and lock give the same
ids on any machine. A run refuses to start while a floating reference is not locked (opt out with
`snakemake --config unlocked=true`: each stage then records the commit it read).

A spec that `extends` others reads their lock files too (its own wins): an ablation keeps its base's
commits and reuses its stage instances. Without --upgrade, references already locked are kept; with it,
they are resolved again, and the stage instances a moved commit invalidates are listed.
Needs the Hub (HF_HUB_OFFLINE unset; HF_TOKEN for gated datasets).
"""


def cmd_lock(args: argparse.Namespace, root: Path) -> int:
    from huggingface_hub import constants

    from .diff import diff_plans, format_diff
    from .lock import floating_refs, lock_path, lock_spec
    from .preflight.hub import HfHub
    from .resolve import load_document
    from .workflow import compile_spec

    if constants.HF_HUB_OFFLINE:
        raise MixsteerError("`mixsteer lock` asks the Hub, and HF_HUB_OFFLINE is set: run it where there is network")
    hub = HfHub()
    for spec in args.specs:
        file = user_path(spec)
        before = compile_spec(file, root)                     # also validates the spec
        doc = load_document(file, str(spec))
        refs = sorted({ref for _, ref in floating_refs(doc.data)})
        changes = lock_spec(file, doc.sources, refs, hub, upgrade=args.upgrade)
        where = os.path.relpath(lock_path(file), Path.cwd())
        print(f"{spec}: {len(refs)} floating reference(s); {where}: "
              f"{'unchanged' if not changes else f'{len(changes)} change(s)'}")
        for c in changes:
            old = c.old[:12] if c.old else "new"
            print(f"  {c.ref}: {old} -> {c.new[:12] if c.new else 'removed (no longer in the spec)'}")
        if changes and args.upgrade and any(c.old for c in changes):
            print(format_diff(diff_plans(before, compile_spec(file, root)), f"{spec} (old lock)", f"{spec}"))
    return 0


def cmd_show(args: argparse.Namespace, root: Path) -> int:
    from .validate import load_spec

    runs = load_spec(user_path(args.spec), root, str(args.spec))
    chosen = runs[0]
    if args.run:
        matches = [r for r in runs if r[0].name == args.run]
        if not matches:
            raise MixsteerError(f"no run {args.run!r}; runs: {', '.join(r[0].name for r in runs)}")
        chosen = matches[0]
    run, spec = chosen
    dump = spec.model_dump(mode="json", exclude={"sweep"})
    if args.json:
        print(json.dumps({"run": run.name, "axes": run.axes, "spec": dump}, indent=2))
    else:
        print(f"# run {run.name} ({len(runs)} run(s) in this spec)")
        print(yaml.safe_dump(dump, sort_keys=False, width=100), end="")
    return 0


def cmd_plan(args: argparse.Namespace, root: Path) -> int:
    from .preflight.estimates import Estimate, by_kind, disk_needed, estimate_plan, human_bytes
    from .render import plan_json
    from .workflow import compile_spec

    plan = compile_spec(user_path(args.spec), root)
    estimates = estimate_plan(plan)
    users: dict[str, list[str]] = {}
    for run in plan.runs:
        for role, sid in run.roles.items():
            users.setdefault(sid, []).append(f"{run.name}:{role}")
    if args.json:
        body = plan_json(plan)
        for sid, inst in body["instances"].items():
            inst["status"] = stage_status(root, inst["kind"], sid)
            inst["estimate"] = vars(estimates[sid])
        pending = {sid: e for sid, e in estimates.items() if body["instances"][sid]["status"] != "done"}
        body["cost_not_done"] = {k.kind: vars(k) for k in by_kind(pending, plan.instances)}
        print(json.dumps(body, indent=2))
        return 0
    print(f"spec {plan.spec_name}: {len(plan.runs)} run(s), {len(plan.instances)} stage instances")
    print(f"{'status':<10} {'id':<26} {'disk':>10} {'GPU-h':>7}  used by")
    counts: dict[str, int] = {}
    new: dict[str, Estimate] = {}
    for sid, inst in plan.instances.items():
        st = stage_status(root, inst.kind, sid)
        counts[st] = counts.get(st, 0) + 1
        if st != "done":
            new[sid] = estimates[sid]
        who = users.get(sid, [])
        shown = ", ".join(who[:3]) + (f" (+{len(who) - 3})" if len(who) > 3 else "")
        disk = human_bytes(estimates[sid].disk_bytes)
        print(f"{st:<10} {sid:<26} {disk:>10} {inst.resources.gpu_hours:>7.1f}  {shown}")
    print("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    print(f"\nestimated cost of the {len(new)} instances not done (formulas: mixsteer plan --help):")
    print(f"  {'stage':<12} {'instances':>9} {'disk':>10} {'scratch':>10} {'GPU-h':>9}")
    for k in by_kind(new, plan.instances):
        print(f"  {k.kind:<12} {k.instances:>9} {human_bytes(k.disk_bytes):>10} {human_bytes(k.scratch_bytes):>10} "
              f"{k.gpu_hours:>9.1f}")
    print(f"  total: about {human_bytes(disk_needed(list(new.values())))} of disk at the peak (kept outputs + the "
          f"largest scratch), {sum(e.gpu_hours for e in new.values()):.1f} GPU-hours")
    return 0


def cmd_compile(args: argparse.Namespace, root: Path) -> int:
    from .workflow import Workflow

    wf = Workflow.compile([user_path(s) for s in args.specs], root)
    wf.link_aliases()
    for plan in wf.plans:
        print(f"build/{plan.spec_name}/: {len(plan.instances)} stage JSONs, plan.json, lock.json")
    print(f"rules: {wf.rules_file.relative_to(root)}")
    return 0


def cmd_diff(args: argparse.Namespace, root: Path) -> int:
    from .diff import diff_plans, format_diff
    from .workflow import compile_spec

    a = compile_spec(user_path(args.a), root)
    b = compile_spec(user_path(args.b), root)
    d = diff_plans(a, b)
    if args.json:
        print(json.dumps(d.to_json(), indent=2, default=str))
    else:
        print(format_diff(d, str(args.a), str(args.b)))
    return 0 if d.identical else 1


def cmd_schema(args: argparse.Namespace, root: Path) -> int:
    from .schema import Spec

    schema = Spec.model_json_schema()
    schema["properties"]["extends"] = {"description": "Base spec file(s) to deep-merge onto.",
                                       "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    print(json.dumps(schema, indent=2))
    return 0
