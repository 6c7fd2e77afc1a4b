"""The report's "Scorers" section: which scorer made each toxicity number, as its score stages recorded it.

A toxicity number is only comparable with another made by the same scorer under the same settings: the
model and commit (for Perspective, the API and when its answers were fetched: its scores of the same
texts drifted between 2020 and 2023, Pozzobon et al. 2023), the activation actually applied (`auto`
resolved to sigmoid or softmax), the toxic labels and how they are combined, the window and what happened
to longer texts. Every score stage writes `scorer.json` (`runtime.scoring.record`); this module reads
those of the score stages the report's rows name and sums them per scorer, primary first. Written as
`scorers.md` and a section of the page.
"""
from __future__ import annotations

import datetime
from typing import Any

from compiler.schema.report import ReportRow
from runtime.artifacts import read_json
from runtime.stage import StageContext

from .table import row_scores

HEADERS = ["scorer", "model / service", "activation", "toxic labels (combine)", "window", "long texts",
           "texts scored"]


def records_by_scorer(ctx: StageContext, runs: list[ReportRow], scorers: list[str]) -> dict[str, list[dict]]:
    """{label: the `scorer.json` of each distinct score stage of that scorer}, in `scorers` order."""
    ids: dict[str, dict[str, None]] = {label: {} for label in scorers}
    for row in runs:
        for _, label, sid in row_scores(row):
            ids.setdefault(label, {})[sid] = None
    return {label: [read_json(ctx.input(sid) / "scorer.json") for sid in sids] for label, sids in ids.items() if sids}


def section(ctx: StageContext, runs: list[ReportRow], *, scorers: list[str]) -> dict[str, Any] | None:
    """{"headers", "rows", "notes"} of the Scorers table (None when the report names no score stage)."""
    by_label = records_by_scorer(ctx, runs, scorers)
    if not by_label:
        return None
    rows, notes = [], []
    for label, records in by_label.items():
        row, row_notes = scorer_row(label, records, primary=bool(scorers) and label == scorers[0])
        rows.append(row)
        notes += row_notes
    notes.append("Texts counted over every score stage of the scorer (a text scored in two stages counts twice). "
                 "Long texts: longer than the scorer's window; `truncate` scores their beginning, `max_windows` the "
                 "highest of windows overlapping by half a window that cover the whole text.")
    return {"headers": HEADERS, "rows": rows, "notes": notes}


def scorer_row(label: str, records: list[dict[str, Any]], primary: bool = False) -> tuple[list[str], list[str]]:
    """One table row for a scorer, and the notes it needs (unknowns said as such)."""
    first = records[0]
    settings, resolved = first["settings"], first.get("resolved")
    counts = {key: sum(r["texts"][key] for r in records) for key in first["texts"]}
    notes = []
    if len({r["scorer_id"] for r in records}) > 1:
        notes.append(f"`{label}`: its score stages used {len({r['scorer_id'] for r in records})} different "
                     f"scorer ids (local model files changed between them); the first is shown.")
    if resolved is None:
        notes.append(f"`{label}`: every score came from a cache written before scorers' resolved settings were "
                     f"kept: activation and window unknown.")
    kind = first["kind"]
    row = [f"{label} (primary)" if primary else label, source(kind, settings, resolved, first["files"]),
           activation(kind, settings, resolved), labels(kind, settings),
           window(resolved), long_texts(first["long_text_rule"], counts), f"{counts['n_texts']:,}"]
    if counts["unknown_length_texts"]:
        notes.append(f"`{label}`: {counts['unknown_length_texts']:,} texts' scores came from a cache written before "
                     f"text lengths were kept: whether they were long is unknown.")
    if kind == "perspective":
        notes.append(f"`{label}`: {perspective_dates(records)}")
    return row, notes


def source(kind: str, settings: dict[str, Any], resolved: dict[str, Any] | None, files: dict[str, str]) -> str:
    """Model and commit, local folder and content fingerprint, or the service and its endpoint."""
    resolved = resolved or {}
    if kind == "classifier":
        if settings.get("model"):
            loaded = resolved.get("commit")
            pinned = settings.get("revision")
            extra = f" (loaded commit {loaded})" if loaded and loaded != pinned else ""
            return f"{settings['model']} @ {pinned}{extra}"
        return f"local folder {settings['path']} (content {files.get(settings['path'], 'unknown')})"
    if kind == "perspective":
        return f"Perspective API, TOXICITY, {settings['endpoint']}"
    if kind == "lexicon":
        words = f", {resolved['words']} words" if "words" in resolved else ""
        return f"word list {settings['path']} (content {files.get(settings['path'], 'unknown')}{words})"
    if kind == "detoxify":
        return f"Detoxify {settings['variant']} from {settings['checkpoint_path']}"
    version = f" {resolved['version']}" if "version" in resolved else ""
    return f"alt-profanity-check{version}"


def activation(kind: str, settings: dict[str, Any], resolved: dict[str, Any] | None) -> str:
    if kind != "classifier":
        return "—"
    applied = (resolved or {}).get("activation", "unknown")
    return f"{applied} (auto)" if settings.get("activation") == "auto" else applied


def labels(kind: str, settings: dict[str, Any]) -> str:
    if kind == "classifier":
        return f"{', '.join(settings['toxic_labels'])} ({settings['combine']})"
    return "TOXICITY" if kind == "perspective" else "—"


def window(resolved: dict[str, Any] | None) -> str:
    length = (resolved or {}).get("max_length_tokens")
    return f"{length} tokens" if length else ("whole text" if resolved else "unknown")


def long_texts(rule: str, counts: dict[str, int]) -> str:
    if rule == "whole text":
        return "read whole"
    done = counts["windowed_texts"] if rule == "max_windows" else counts["truncated_texts"]
    return f"{rule}: {done:,} of {counts['n_texts']:,} {'windowed' if rule == 'max_windows' else 'truncated'}"


def perspective_dates(records: list[dict[str, Any]]) -> str:
    """When the Perspective answers behind these scores were fetched, and how many have no known date."""
    answers = [r["perspective_answers"] for r in records]
    firsts = [a["first_fetched_unix"] for a in answers if a["first_fetched_unix"] is not None]
    lasts = [a["last_fetched_unix"] for a in answers if a["last_fetched_unix"] is not None]
    dated, undated, absent = (sum(a[k] for a in answers) for k in ("dated_texts", "undated_texts", "absent_texts"))
    parts = [f"answers fetched {_day(min(firsts))} to {_day(max(lasts))} (UTC) for {dated:,} texts" if firsts
             else "no answer has a known fetch date"]
    if undated:
        parts.append(f"{undated:,} answers were cached before fetch times were kept: their date is unknown")
    if absent:
        parts.append(f"{absent:,} texts are no longer in the Perspective cache (scores from the shared score "
                     f"cache): their date is unknown")
    return "; ".join(parts) + ". Perspective's scores of the same texts drifted between 2020 and 2023: compare " \
                              "only numbers fetched in the same period."


def _day(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.timezone.utc).strftime("%Y-%m-%d")
