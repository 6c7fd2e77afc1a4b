"""`mixsteer diff A B`: what an ablation changes, and what it costs, before anything runs.

Two parts, both computed from validated, fully-defaulted specs (so writing a default out explicitly
is no difference, and key order or float spelling never is):

1. Field differences, grouped by section: for every dotted path, the set of values it takes over the
   runs of A versus over the runs of B (a sweep axis that gains a value shows as {0, 0.1} → {0, 0.1, 0.2}).
2. Invalidation: per stage kind, how many of B's instances A already has (reused) and how many are
   new; for the new ones, which config fields or upstream inputs differ from their nearest counterpart
   in A (same kind, same run and role where possible), and their cost from B's `resources`.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from .fields import flatten
from .ids import canonical_json
from .kinds import KIND_ORDER
from .plan import Plan
from .planning import StageInstance

IGNORED_FIELDS = ("name",)
RUNS_SHOWN = 6


@dataclass
class FieldChange:
    path: str
    a: list[Any]
    b: list[Any]

    @property
    def section(self) -> str:
        return self.path.split(".", 1)[0]


@dataclass
class KindChange:
    kind: str
    reused: int = 0
    new: int = 0
    removed: int = 0
    causes: Counter = field(default_factory=Counter)
    gpu_hours: float = 0.0
    runtime_hours: float = 0.0


@dataclass
class SpecDiff:
    fields: list[FieldChange]
    runs_added: list[str]
    runs_removed: list[str]
    kinds: list[KindChange]

    @property
    def identical(self) -> bool:
        return not self.fields and not self.runs_added and not self.runs_removed and all(
            k.new == 0 and k.removed == 0 for k in self.kinds)

    def to_json(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "fields": [{"path": f.path, "a": f.a, "b": f.b} for f in self.fields],
            "runs_added": self.runs_added, "runs_removed": self.runs_removed,
            "stages": {k.kind: {"reused": k.reused, "new": k.new, "removed": k.removed,
                                "causes": dict(k.causes), "gpu_hours": k.gpu_hours,
                                "runtime_hours": k.runtime_hours} for k in self.kinds},
        }


def _values(plan: Plan) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for run in plan.runs:
        for path, value in flatten(run.spec.model_dump(mode="json", exclude={"sweep"})).items():
            if path.split(".")[0] not in IGNORED_FIELDS:
                out[path].add(canonical_json(value))
    return out


def _decode(values: set[str]) -> list[Any]:
    import json
    return [json.loads(v) for v in sorted(values)]


def diff_plans(a: Plan, b: Plan) -> SpecDiff:
    va, vb = _values(a), _values(b)
    fields = [FieldChange(p, _decode(va.get(p, set())), _decode(vb.get(p, set())))
              for p in sorted(set(va) | set(vb)) if va.get(p) != vb.get(p)]
    names_a, names_b = [r.name for r in a.runs], [r.name for r in b.runs]
    kinds = []
    roles_a = {(r.name, role): sid for r in a.runs for role, sid in r.roles.items()}
    for kind in KIND_ORDER:
        in_b = [i for i in b.instances.values() if i.kind == kind]
        in_a = [i for i in a.instances.values() if i.kind == kind]
        if not in_a and not in_b:
            continue
        kc = KindChange(kind)
        for inst in in_b:
            if inst.id in a.instances:
                kc.reused += 1
                continue
            kc.new += 1
            kc.gpu_hours += inst.resources.gpu_hours
            kc.runtime_hours += inst.resources.runtime_minutes / 60
            counterpart = _counterpart(inst, b, a, roles_a) or _nearest(inst, in_a)
            for cause in _causes(inst, counterpart):
                kc.causes[cause] += 1
        kc.removed = sum(1 for i in in_a if i.id not in b.instances)
        kinds.append(kc)
    return SpecDiff(fields, [n for n in names_b if n not in names_a], [n for n in names_a if n not in names_b], kinds)


def _counterpart(inst: StageInstance, b: Plan, a: Plan, roles_a: dict) -> StageInstance | None:
    for run in b.runs:
        for role, sid in run.roles.items():
            if sid == inst.id and (run.name, role) in roles_a:
                return a.instances[roles_a[(run.name, role)]]
    return None


def _nearest(inst: StageInstance, candidates: list[StageInstance]) -> StageInstance | None:
    if not candidates:
        return None
    return min(candidates, key=lambda c: len(_causes(inst, c)))


def _causes(inst: StageInstance, other: StageInstance | None) -> list[str]:
    if other is None:
        return ["no counterpart in A"]
    fa, fb = flatten(other.config.id_dump()), flatten(inst.config.id_dump())
    out = [f"config {p}" for p in sorted(set(fa) | set(fb)) if canonical_json(fa.get(p)) != canonical_json(fb.get(p))]
    for path in sorted(set(inst.files) | set(other.files)):
        if inst.files.get(path) != other.files.get(path):
            out.append(f"file {path} changed")
    for name in sorted(set(inst.inputs) | set(other.inputs)):
        if inst.inputs.get(name) != other.inputs.get(name):
            out.append(f"input {name} is new")
    if inst.version != other.version:
        out.append(f"VERSION {other.version} → {inst.version}")
    return out or ["identical config (other id)"]


def format_diff(d: SpecDiff, a_name: str, b_name: str) -> str:
    lines = []
    if d.identical:
        return f"{a_name} and {b_name} are identical: every stage instance is shared."
    lines.append(f"--- {a_name}\n+++ {b_name}")
    by_section: dict[str, list[FieldChange]] = defaultdict(list)
    for f in d.fields:
        by_section[f.section].append(f)
    for section in sorted(by_section):
        lines.append(f"\n[{section}]")
        for f in by_section[section]:
            lines.append(f"  {f.path}: {_show(f.a)} → {_show(f.b)}")
    if d.runs_added or d.runs_removed:
        lines.append("\n[runs]")
        for sign, names in (("+", d.runs_added), ("-", d.runs_removed)):
            lines += [f"  {sign} {r}" for r in names[:RUNS_SHOWN]]
            if len(names) > RUNS_SHOWN:
                lines.append(f"  {sign} … and {len(names) - RUNS_SHOWN} more")
    lines.append("\nStages of B (reused from A / new), and why the new ones are new:")
    lines.append(f"  {'stage':<12} {'reused':>6} {'new':>5}  {'GPU-h':>8}  {'hours':>7}  causes")
    total_gpu = total_h = 0.0
    for k in d.kinds:
        causes = "; ".join(f"{c} ({n})" for c, n in k.causes.most_common(4)) if k.new else ""
        lines.append(f"  {k.kind:<12} {k.reused:>6} {k.new:>5}  {k.gpu_hours:>8.1f}  {k.runtime_hours:>7.1f}  {causes}")
        total_gpu += k.gpu_hours
        total_h += k.runtime_hours
    lines.append(f"  estimated cost of new instances: {total_gpu:.1f} GPU-hours, {total_h:.1f} job-hours (from B's resources)")
    return "\n".join(lines)


def _show(values: list[Any]) -> str:
    if not values:
        return "(absent)"
    if len(values) == 1:
        return canonical_json(values[0])
    return "{" + ", ".join(canonical_json(v) for v in values) + "}"
