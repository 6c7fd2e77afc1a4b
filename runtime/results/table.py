"""`mixsteer results`: one tidy table of every finished result of one or more specs.

A row per (run, model variant, measure, scorer): `value`, `ci_low`, `ci_high`, `n` (the units the
interval resamples: prompts, questions, examples, documents), every sweep axis and every field that
differs between the given specs as columns (dotted spec paths), and the ids of the stages that produced
it (`evaluate_id`, `attack_id`, `score_id`). A measure is a metric its stage published with an interval
(`<m>_ci_low`, `<m>_ci_high`). Only finished stages (`stage.json` present) give rows. Runs of one or
several specs that name the same stage instances give one row, whose `specs` and `run` list them all
(`;`-separated) and whose axis and field columns keep only the values they agree on (else empty).

The planner describes each run by its report rows (`compiler.plan.result_rows`, `ReportRow`): `run`, `axes`,
`seed`, `pretrain`, `variant`, `control_seed`, `evaluate`, `scores` ({scorer label: score id}), `attack`,
`attack_scores`; each spec adds its runs' `fields` ({dotted spec path: value} of the fields that differ
between the specs).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from compiler.schema.report import ReportRow
from runtime.artifacts import read_json

from .items import evaluate_units

Folder = Callable[[str], Path]
"""Stage id → its folder."""

LEAD = ["specs", "run", "variant", "control_seed", "measure", "scorer", "value", "ci_low", "ci_high", "n"]
IDS = ["evaluate_id", "attack_id", "score_id"]
SEP = ";"
TOXICITY_SUFFIXES = ("_expected_max_toxicity", "_toxicity_probability", "_mean_toxicity")


@dataclass(frozen=True)
class SpecRuns:
    """One spec as the table names it (`name`, e.g. its path), the planner's rows of its runs and, per run
name, {dotted spec path: value} of the fields that differ between the specs compared."""

    name: str
    rows: list[ReportRow]
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)


def kind_of(stage_id: str) -> str:
    return stage_id.rsplit("-", 1)[0]


def results_folder(root: Path) -> Folder:
    """Stage id → `root/results/<kind>/<id>`."""
    return lambda sid: root / "results" / kind_of(sid) / sid


def finished(folder: Folder, sid: str | None) -> bool:
    return sid is not None and (folder(sid) / "stage.json").is_file()


def measures(metrics: dict[str, Any]) -> dict[str, tuple[float, float, float]]:
    """Metric → (value, ci_low, ci_high) of every numeric metric published with its interval."""
    def num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return {k: (float(v), float(metrics[f"{k}_ci_low"]), float(metrics[f"{k}_ci_high"]))
            for k, v in metrics.items()
            if num(v) and num(metrics.get(f"{k}_ci_low")) and num(metrics.get(f"{k}_ci_high"))}


def toxicity_n(measure: str, metrics: dict[str, Any]) -> float | None:
    """Prompts behind a score stage's toxicity measure (its `<set>[_challenging]_prompts`)."""
    for suffix in TOXICITY_SUFFIXES:
        if measure.endswith(suffix):
            return metrics.get(measure[: -len(suffix)] + "_prompts")
    return None


def variant_of(row: ReportRow) -> tuple[str | None, int | None]:
    """(variant, control draw) of a planner row."""
    return row.variant, row.control_seed


def _cell(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


class _Reader:
    """Metrics and unit counts of stage folders, each read once."""

    def __init__(self, folder: Folder) -> None:
        self.folder = folder
        self._metrics: dict[str, dict] = {}
        self._counts: dict[str, dict[str, int]] = {}

    def metrics(self, sid: str) -> dict[str, Any]:
        if sid not in self._metrics:
            self._metrics[sid] = read_json(self.folder(sid) / "metrics.json")
        return self._metrics[sid]

    def counts(self, sid: str) -> dict[str, int]:
        if sid not in self._counts:
            units = evaluate_units(self.folder(sid), every_measure=True)
            self._counts[sid] = {m: len(u.keys) for m, u in units.items()}
        return self._counts[sid]


def _records(reader: _Reader, row: ReportRow) -> list[dict[str, Any]]:
    """Every measure of one planner row from its finished stages."""
    folder, out = reader.folder, []
    ev, att = row.evaluate, row.attack
    if finished(folder, ev):
        counts = reader.counts(ev)
        out += [{"measure": m, "scorer": None, "value": v, "ci_low": lo, "ci_high": hi, "n": counts.get(m),
                 "evaluate_id": ev, "attack_id": None, "score_id": None}
                for m, (v, lo, hi) in measures(reader.metrics(ev)).items()]
    if finished(folder, att):
        out += [{"measure": m, "scorer": None, "value": v, "ci_low": lo, "ci_high": hi, "n": None,
                 "evaluate_id": None, "attack_id": att, "score_id": None}
                for m, (v, lo, hi) in measures(reader.metrics(att)).items()]
    for texts, kind, scores in ((ev, "evaluate_id", row.scores), (att, "attack_id", row.attack_scores)):
        for label, sid in scores.items():
            if not finished(folder, sid):
                continue
            metrics = reader.metrics(sid)
            out += [{"measure": m, "scorer": label, "value": v, "ci_low": lo, "ci_high": hi,
                     "n": toxicity_n(m, metrics), "evaluate_id": None, "attack_id": None, "score_id": sid} | {kind: texts}
                    for m, (v, lo, hi) in measures(metrics).items()]
    return out


def _agreed(values: list[Any]) -> Any:
    """The value every merged run agrees on, else None (it does not apply to the merged row)."""
    first = values[0]
    return first if all(v == first for v in values) else None


def result_table(specs: list[SpecRuns], folder: Folder):
    """The tidy table (pandas DataFrame) of every finished result of `specs`, in spec and run order."""
    import pandas as pd

    reader = _Reader(folder)
    merged: dict[tuple, dict[str, Any]] = {}
    members: dict[tuple, list[tuple[SpecRuns, ReportRow]]] = {}
    for spec in specs:
        for row in spec.rows:
            for rec in _records(reader, row):
                key = (*variant_of(row), rec["measure"], rec["scorer"], *(rec[c] for c in IDS))
                merged.setdefault(key, rec)
                members.setdefault(key, []).append((spec, row))
    axes = list(dict.fromkeys(p for s in specs for r in s.rows for p in r.axes))
    fields = list(dict.fromkeys(p for s in specs for r in s.rows for p in s.fields.get(r.run, {}) if p not in axes))
    records = []
    for key, rec in merged.items():
        rows = members[key]
        first = rows[0][1]
        out = {"specs": SEP.join(dict.fromkeys(spec.name for spec, _ in rows)),
               "run": SEP.join(dict.fromkeys(r.run for _, r in rows)),
               "variant": first.variant, "control_seed": first.control_seed} | rec
        for column in axes:
            out[column] = _cell(_agreed([r.axes.get(column) for _, r in rows]))
        for column in fields:
            out[column] = _cell(_agreed([spec.fields.get(r.run, {}).get(column) for spec, r in rows]))
        records.append(out)
    df = pd.DataFrame.from_records(records, columns=[*LEAD, *axes, *fields, *IDS])
    df.attrs["axes"], df.attrs["fields"] = axes, fields
    return df
