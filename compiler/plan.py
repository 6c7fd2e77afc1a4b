"""Validated runs → a deduplicated graph of stage instances with content ids.

Per run the planner asks every stage kind of `compiler.kinds.KINDS`, in table order, to plan its
instances (`compiler.stages.<kind>.plan`, which sees the roles and model variants planned so far), wiring
inputs by id; the report is planned once over all runs:

    tokenizer → tokenize → mix → pretrain ─┬─ activations → probe → steer ─┐
                                           ├─ posttrain (sft, dpo) ─────────┼─ evaluate / attack per model variant
                                           └────────────────────────────────┘        └─ score per scorer
    toy (independent)                     report ← every evaluate, score, probe, attack, toy

Scoring is its own stage: one `score` instance per (evaluate or attack instance, scorer), so the scorers
are in no id upstream of them and changing one reruns only scoring and the report.

Model variants: `base` (pretrained), `prompting` (base + instruction prefix, a pseudo-stage: an
evaluate instance with `prefix`), `iti`, its seeded controls `iti_random_direction/<n>` and
`iti_random_heads/<n>` (evaluated, never attacked), `sft`, `dpo`. Instances are keyed by id, so runs
that share a config share the instance: a sweep over `steer.alpha` has one pretraining per toxic share
and seed, and a sweep over shares and seeds tokenizes each source once (`tokenize`: one instance per
source, tokenizer and shard size, reading as far as the plan's largest budget needs) and has one mix per
share.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .checks import local_paths
from .fingerprint import fingerprint, local_exists
from .ids import stage_id
from .kinds import KINDS, kind_named
from .lock import LockState
from .planning import RunPlan, RunPlanning, StageInstance
from .report_rows import report_rows
from .schema import Spec
from .schema.base import StrictModel
from .schema.data import TokenizerInfo
from .schema.report import ReportRow


@dataclass
class Plan:
    spec_name: str
    instances: dict[str, StageInstance]
    runs: list[RunPlan]
    sources: tuple[str, ...] = ()  # files read: the spec, its extends chain and their lock files
    lock: LockState = field(default_factory=LockState)

    @property
    def report_id(self) -> str | None:
        return next((i for i, s in self.instances.items() if s.kind == "report"), None)


class _Builder:
    """Adds instances by content id. Runs of a sweep share their section objects (interned by
    `compiler.validate`), so a request made of the same objects is answered from a memo without
    building or hashing the config again."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.instances: dict[str, StageInstance] = {}
        self._memo: dict[tuple, str] = {}
        self._keep: list[Any] = []  # memo keys use id(); keep those objects alive
        self._fingerprints: dict[str, str | None] = {}

    def add(self, kind: str, config_fields: dict[str, Any], inputs: dict[str, str], spec: Spec) -> str:
        key = (kind, tuple(config_fields), tuple(map(_identity, config_fields.values())),
               tuple(inputs.items()), id(spec.resources), id(spec.precision))
        if key in self._memo:
            return self._memo[key]
        self._keep.append((config_fields, spec.resources, spec.precision))
        module = kind_named(kind).stage()
        if "compute" in module.Config.model_fields:  # a model stage: where and in what format (runtime.device)
            config_fields = {**config_fields, "compute": spec.precision.compute(spec.resources.of(kind).gpus)}
        config = module.Config(**config_fields)
        files = self._files(config)
        sid = stage_id(kind, module.VERSION, config.id_json(), inputs, files)
        if sid not in self.instances:
            self.instances[sid] = StageInstance(
                kind, sid, module.VERSION, config, dict(inputs), spec.resources.of(kind), files)
        self._memo[key] = sid
        return sid

    def _files(self, config: StrictModel) -> dict[str, str]:
        if self.root is None:
            return {}
        out = {}
        for path in sorted(local_paths(config)):
            if path not in self._fingerprints:
                full = self.root / path
                self._fingerprints[path] = fingerprint(full) if local_exists(full) else None
            if self._fingerprints[path] is not None:
                out[path] = self._fingerprints[path]
        return out

    def tokenizer_info(self, tokenizer: Any) -> TokenizerInfo:
        """One TokenizerInfo object per tokenizer section, so the memo above keeps hitting."""
        key = ("tokenizer-info", id(tokenizer))
        if key not in self._memo:
            self._memo[key] = TokenizerInfo.of(tokenizer)
        return self._memo[key]


def _identity(value: Any) -> Any:
    """A memo key for one config value: models and dicts by object, lists by items, scalars by type
    and value (so 1, 1.0 and True stay apart)."""
    kind = type(value)
    if kind is list:
        return (list, tuple(map(_identity, value)))
    if isinstance(value, (BaseModel, dict)):
        return (object, id(value))
    return (kind, value)


def build_plan(spec_name: str, runs: list[tuple[Any, Spec]], root: Path | None = None, *,
               compare: bool = True) -> Plan:
    """`runs` are (resolve.Run, Spec) pairs from `compiler.validate`. Each run is planned by every kind of
    `compiler.kinds.KINDS` in table order (`compiler.stages.<kind>.plan`), then the spec-wide kinds (the
    report) over all runs. With `root`, the content of every local file a stage reads enters its id
    (`compiler.fingerprint`). With `compare`, the specs of `report.compare_to` are planned too (their own
    `compare_to` is not followed)."""
    from .stages.tokenize import fills

    b = _Builder(root)
    plan_fills = fills([spec.data for _, spec in runs if spec.data is not None])
    per_run = [k.stage() for k in KINDS if k.scope == "run"]
    run_plans = []
    for run, spec in runs:
        planning = RunPlanning(b, spec, plan_fills)
        for stage in per_run:
            stage.plan(planning)
        run_plans.append(RunPlan(run.name, dict(run.axes), spec, planning.roles))
    compared = _compared(run_plans[0].spec.report.compare_to, root, b.instances) if compare else []
    for kind in KINDS:
        if kind.scope == "spec":
            kind.stage().plan(b, spec_name, run_plans, compared)
    lock = runs[0][0].document.lock or LockState()
    sources = tuple(sorted({s for run, _ in runs for s in run.document.sources} | set(lock.lock_files)
                           | {s for c in compared for s in c.files}))
    return Plan(spec_name, b.instances, run_plans, sources, lock)


@dataclass(frozen=True)
class ComparedSpec:
    """A spec of `report.compare_to`: its path, its report rows and the files planning it read."""

    path: str
    rows: list[ReportRow]
    files: tuple[str, ...]

    def ids(self) -> list[str]:
        """The evaluate and score ids the comparison reads."""
        return [sid for r in self.rows for sid in (r.evaluate, *r.scores.values()) if sid]


def _compared(paths: list[str], root: Path | None, instances: dict[str, StageInstance]) -> list[ComparedSpec]:
    """Each spec of `report.compare_to`; the instances its evaluate and score stages need (and everything
    upstream) join `instances`."""
    from .validate import load_spec

    out = []
    for path in paths:
        file = Path(path) if root is None else root / path
        plan = build_plan(file.stem, load_spec(file, root, path), root, compare=False)
        compared = ComparedSpec(path, result_rows(plan), plan.sources)
        todo = compared.ids()
        while todo:
            sid = todo.pop()
            if sid not in instances:
                instances[sid] = plan.instances[sid]
                todo += plan.instances[sid].inputs.values()
        out.append(compared)
    return out


def result_rows(plan: Plan) -> list[ReportRow]:
    """The report rows of every run of `plan` (`compiler.report_rows`): what `runtime.results` reads."""
    return [row for rp in plan.runs for row in report_rows(rp, plan.instances)]
