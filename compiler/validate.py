"""Resolved documents → validated `Spec`s, with every problem located at file:line:col.

Pydantic error locations are mapped back to YAML positions (discriminated-union tags dropped; a
missing key points at its parent mapping); unknown keys get a "did you mean". Domain checks
(`compiler.checks`) run on the validated runs. All problems of all runs are reported in one pass.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .checks import domain_problems, spec_warnings
from .errors import Problem, SpecError
from .fields import check_path, did_you_mean, field_names_at
from .load import PathKey, dotted
from .lock import apply_locks, unlocked_warnings
from .resolve import Document, Run, expand_sweep, load_document
from .schema import Spec


def _data_path(data: Any, loc: tuple[Any, ...]) -> PathKey:
    """Drop the parts of a pydantic loc that are not keys of the data (union tags, validator names)."""
    out: list[Any] = []
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
            out.append(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
            out.append(part)
        elif isinstance(data, dict) and data.get("kind") == part:
            continue  # discriminated-union tag
        else:
            out.append(part)
            data = None
    return tuple(out)


def _message(err: dict[str, Any], loc: tuple[Any, ...]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        known = field_names_at(Spec, tuple(p for p in loc[:-1]))
        return f"unknown key {loc[-1]!r}{did_you_mean(loc[-1], known)}"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind not in ("value_error", "assertion_error") and "input" in err and not isinstance(err["input"], (dict, list)):
        msg += f" (got {err['input']!r})"
    return msg


def problems_of(doc: Document, data: dict[str, Any], exc: ValidationError) -> list[Problem]:
    out = []
    for err in exc.errors(include_url=False):
        loc = _data_path(data, tuple(err["loc"]))
        anchor = loc[:-1] if err["type"] == "missing" else loc
        p = doc.position(anchor)
        out.append(Problem(p.file, p.line, p.column, dotted(loc), _message(err, tuple(err["loc"]))))
    return out


def validate_runs(doc: Document, default_name: str, root: Path | None = None) -> list[tuple[Run, Spec]]:
    """Expand the sweep and validate every run; raise one SpecError with all problems.

    Runs share every section the sweep does not touch (`expand_sweep` copies only along axis paths),
    so each distinct section is validated once and its validated object is passed to the other runs
    (pydantic accepts a model instance as is): the id cache and the path checks then reuse it.
    """
    problems: list[Problem] = []
    try:
        runs = expand_sweep(doc, lambda parts: check_path(Spec, parts))
    except SpecError as exc:  # still validate the rest, as one run without the sweep
        problems.extend(exc.problems)
        data = {k: v for k, v in doc.data.items() if k != "sweep"}
        runs = [Run("run", {}, replace(doc, data=data))]
    validated: list[tuple[Run, Spec]] = []
    sections: dict[tuple[str, int], Any] = {}
    for run in runs:
        data = dict(run.document.data)
        data.setdefault("name", default_name)
        keys = {name: (name, id(data[name]) if name in data else None) for name in Spec.model_fields
                if name not in data or isinstance(data[name], dict)}
        known = {name: sections[key] for name, key in keys.items() if key in sections}
        try:
            spec = Spec.model_validate({**data, **known})
        except ValidationError as exc:
            found = problems_of(run.document, data, exc)
            if not run.axes and problems:  # sweep was broken: values it would set may be missing
                found = [p for p in found if not p.message.startswith("missing required key")]
            problems.extend(found)
            continue
        for name, key in keys.items():
            sections.setdefault(key, getattr(spec, name))
        validated.append((run, spec))
    swept = {tuple(axis.split(".")) for run in runs for axis in run.axes}
    if swept:
        problems.extend(swept_base_problems(doc, default_name, swept))
    if validated:
        checked: set[int] = set()
        for run, spec in validated:
            for path, message in domain_problems(spec, root, checked):
                p = run.document.position(path)
                problems.append(Problem(p.file, p.line, p.column, dotted(path), message))
    if validated and not problems and not any(plans_a_stage(spec) for _, spec in validated):
        p = doc.position(())  # said only when nothing more precise was (e.g. "evaluate needs data")
        problems.append(Problem(p.file, p.line, p.column, "", NOTHING_TO_RUN))
    if problems:
        raise SpecError(_unique(problems))
    return validated


NOTHING_TO_RUN = ("the spec plans no stage: it needs `data:` (a pretraining mixture, on which probe, steer, "
                  "posttrain and evaluate build), `toy: {enabled: true}` or `scorer_check:`")


def plans_a_stage(spec: Spec) -> bool:
    """Whether the planner (`compiler.plan.build_plan`) makes any stage instance of this run: everything
    hangs off a pretraining mixture, the toy experiment or the scorer check."""
    return spec.data is not None or spec.toy.enabled or spec.scorer_check is not None


def swept_base_problems(doc: Document, default_name: str, swept: set[PathKey]) -> list[Problem]:
    """Problems of base values that the sweep overrides in every run, so no run validates them
    (`data.toxic_share: [1, 2]` under a `data.toxic_share` sweep): the base document is validated as
    written, and only problems at or under a swept path are kept. Every other value is validated in each
    run already, and a base that leaves out a value the sweep supplies is not wrong."""
    data = {k: v for k, v in doc.data.items() if k != "sweep"}
    data.setdefault("name", default_name)
    try:
        Spec.model_validate(data)
    except ValidationError as exc:
        found = []
        for err in exc.errors(include_url=False):
            loc = _data_path(data, tuple(err["loc"]))
            under = any(tuple(map(str, loc[:len(path)])) == path for path in swept)
            if under and err["type"] != "missing":
                p = doc.position(loc)
                message = f"{_message(err, tuple(err['loc']))} (a base value the sweep overrides; still checked)"
                found.append(Problem(p.file, p.line, p.column, dotted(loc), message))
        return found
    return []


def warnings_of(runs: list[tuple[Run, Spec]], root: Path | None = None) -> list[Problem]:
    """Located warnings (`checks.spec_warnings`) of validated runs; `mixsteer validate` prints them and
    still exits 0."""
    found: list[Problem] = []
    checked: set[int] = set()
    for run, spec in runs:
        for path, message in spec_warnings(spec, checked, root):
            p = run.document.position(path)
            found.append(Problem(p.file, p.line, p.column, dotted(path), message))
    if runs and runs[0][0].document.lock is not None:
        doc = runs[0][0].document
        found.extend(unlocked_warnings(doc.lock, doc.position))
    return _unique(found)


def _unique(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return sorted(out, key=lambda p: (p.file, p.line, p.column, p.path))


def load_spec(file: Path, root: Path | None = None, display: str | None = None) -> list[tuple[Run, Spec]]:
    """File → validated runs. The spec's default name is the file stem; local paths are checked
    against `root` when given."""
    doc = load_document(Path(file), display)
    data, lock = apply_locks(doc.data, doc.sources)
    doc = replace(doc, data=data, lock=lock)
    stem = re.sub(r"[^a-z0-9_-]+", "-", Path(file).stem.lower()).strip("-_") or "spec"
    return validate_runs(doc, stem, root)
