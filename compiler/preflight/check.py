"""Run every preflight check on validated runs and locate what they find in the spec files."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..checks import unseen_sections, walk_models
from ..errors import Problem
from ..load import dotted
from ..plan import Plan
from ..schema import Spec
from ..schema.scoring import ClassifierScorer
from .estimates import disk_needed, estimate_plan
from .findings import Finding
from .hub import HubAccess, dataset_findings, model_findings
from .local import SourceReader, is_local, local_findings
from .machine import disk_findings, gpu_findings, perspective_findings
from .uses import source_uses


@dataclass(frozen=True)
class Machine:
    """What preflight may ask of this machine (the CLI builds it; tests fake it)."""

    env: Mapping[str, str]
    hub: HubAccess
    gpu_count: Callable[[], int]
    disk_free: Callable[[Path], int]
    local_run: bool = True  # jobs run here (not submitted to a scheduler): GPUs must be visible here


@dataclass
class Report:
    """Located findings of one spec."""

    spec: str
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    info: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec, "ok": self.ok, "problems": [vars(p) for p in self.problems],
                "warnings": [vars(p) for p in self.warnings], "info": self.info}


def preflight(runs: list[tuple[Any, Spec]], plan: Plan, root: Path, reader: SourceReader, machine: Machine,
              done: set[str], warnings: list[Problem] | None = None) -> Report:
    """Every check on validated runs. `reader`: how local sources are opened; `done`: ids of instances
    whose outputs exist (their disk is spent); `warnings`: the validation's own
    (`compiler.validate.warnings_of`), reported alongside."""
    report = Report(runs[0][0].document.file, warnings=list(warnings or []))
    checked: set[int] = set()
    classifiers_checked: set[int] = set()
    keys_checked: set[int] = set()
    for run, spec in runs:
        found: list[Finding] = []
        for use in source_uses(spec, checked):
            if is_local(use.source):
                found += local_findings(use, root, reader)
            elif use.source.kind == "hf":
                found += dataset_findings(use.path, use.source, machine.hub)
        found += _classifier_findings(spec, machine.hub, classifiers_checked)
        found += perspective_findings(spec, machine.env, keys_checked)
        _locate(report, run, found)
    first_run, first = runs[0]
    estimates = estimate_plan(plan)
    needed = disk_needed([e for sid, e in estimates.items() if sid not in done])
    machine_findings = gpu_findings(first, machine.gpu_count, machine.local_run)
    machine_findings += disk_findings(needed, machine.disk_free(root), str(root))
    _locate(report, first_run, machine_findings)
    report.problems = _unique(report.problems)
    report.warnings = _unique(report.warnings)
    return report


def local_source_problems(runs: list[tuple[Any, Spec]], root: Path, reader: SourceReader) -> list[Problem]:
    """The cheap part, for the workflow's start: local sources opened and their fields checked."""
    report = Report(runs[0][0].document.file)
    checked: set[int] = set()
    for run, spec in runs:
        _locate(report, run, [f for use in source_uses(spec, checked) if is_local(use.source)
                              for f in local_findings(use, root, reader)])
    return _unique(report.problems)


def _classifier_findings(spec: Spec, access: HubAccess, checked: set[int]) -> list[Finding]:
    out: list[Finding] = []
    for name, section in unseen_sections(spec, checked):
        out += [f for path, model in walk_models(section, (name,))
                if isinstance(model, ClassifierScorer) and model.model is not None
                for f in model_findings(path, model, access)]
    return out


def _locate(report: Report, run: Any, found: list[Finding]) -> None:
    for f in found:
        if f.severity == "info":
            report.info.append(f"{dotted(f.path)}: {f.message}")
            continue
        p = run.document.position(f.path)
        located = Problem(p.file, p.line, p.column, dotted(f.path), f.message)
        (report.problems if f.severity == "problem" else report.warnings).append(located)


def _unique(problems: list[Problem]) -> list[Problem]:
    """Without repeats, in spec order; the machine's (no spec line) last."""
    return sorted(set(problems), key=lambda p: (p.line == 0, p.file, p.line, p.column, p.path, p.message))
