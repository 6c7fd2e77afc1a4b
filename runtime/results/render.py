"""The comparison as people read it: one table per matched pair, the pooled differences, in Markdown
and HTML (the same prepared strings; the HTML escapes every spec string)."""
from __future__ import annotations

import html
from typing import Any

from .compare import MARK
from .formatting import fmt, interval, missing, plus_minus

HEADERS = ["measure", "scorer", "base", "other", "Δ other − base", "paired", "units"]
POOLED_HEADERS = ["comparison", "measure", "scorer", "seeds", "Δ mean ± sd", "interval"]
NOTE = (f"Δ: OTHER − BASE on the per-item files, with a {{level}} bootstrap interval; paired (the same items "
        f"resampled once for both) where both measured the same items, else each side resampled on its own "
        f"(`paired: no`). {MARK}: the interval excludes 0.")


def _axes(axes: dict[str, Any]) -> str:
    return ", ".join(f"{p.rsplit('.', 1)[-1]}={fmt(v)}" for p, v in axes.items())


def _name(row) -> str:
    draw = "" if missing(row["control_seed"]) else f" (draw {fmt(row['control_seed'])})"
    return f"{row['variant']}{draw}"


def _scorer(row) -> str:
    if missing(row["scorer"]):
        return ""
    return row["scorer"] if row["scorer"] == row["base_scorer"] else f"{row['scorer']} vs {row['base_scorer']}"


def _delta(center, low, high, excludes: bool) -> str:
    return interval(center, low, high) + (f" {MARK}" if excludes else "")


def sections(table) -> list[dict[str, Any]]:
    """One section per matched pair (and per stage chain that changed): title, what changed, rows."""
    out: list[dict[str, Any]] = []
    if table.empty:
        return out
    keys = ["other", "run", "base_run", "variant", "control_seed", "changed"]
    for _, part in table.groupby([table[k].astype(str) for k in keys], sort=False, dropna=False):
        first = part.iloc[0]
        runs = first["run"] if first["run"] == first["base_run"] else f"{first['run']} vs {first['base_run']}"
        rows = [[r["label"], _scorer(r), fmt(r["base_value"]), fmt(r["other_value"]),
                 _delta(r["difference"], r["ci_low"], r["ci_high"], r["excludes_zero"]),
                 "yes" if r["paired"] else "no",
                 str(r["n_other"]) if r["n_other"] == r["n_base"] else f"{r['n_other']} vs {r['n_base']}"]
                for _, r in part.iterrows()]
        out.append({"title": f"{first['other']} − {first['base']}: {_name(first)}, {runs}",
                    "changed": first["changed"] or "(no config field: other inputs)", "headers": HEADERS, "rows": rows})
    return out


def pooled_rows(pooled) -> list[list[str]]:
    return [[f"{r['other']} − {r['base']}: {_name(r)}" + (f", {_axes(r['axes'])}" if r["axes"] else ""),
             r["label"], _scorer(r), str(r["n_seeds"]), plus_minus(r["mean"], r["sd"]),
             _delta(r["mean"], r["ci_low"], r["ci_high"], r["excludes_zero"])] for _, r in pooled.iterrows()]


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows)]


def markdown(table, pooled, *, level: float, title: str) -> str:
    """The comparison as Markdown: the note, the pooled table (several seeds), one table per pair."""
    lines = [f"# {title}", "", NOTE.format(level=f"{100 * level:g} %")]
    if table.empty:
        lines += ["", "No matched pair of finished runs differs: nothing to compare."]
    if not pooled.empty:
        lines += ["", "## Pooled over seeds", "", *_md_table(POOLED_HEADERS, pooled_rows(pooled)), "",
                  "Mean ± sd of the per-seed differences; interval: seeds resampled, then items within each seed."]
    for s in sections(table):
        lines += ["", f"## {s['title']}", "", f"Changed: {s['changed']}", "", *_md_table(s["headers"], s["rows"])]
    return "\n".join(lines) + "\n"


def _html_table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_fragment(table, pooled, *, level: float) -> str:
    """The comparison as an HTML fragment (the report page embeds it)."""
    parts = [f"<p class=\"muted\">{html.escape(NOTE.format(level=f'{100 * level:g} %'))}</p>"]
    if table.empty:
        parts.append("<p>No matched pair of finished runs differs: nothing to compare.</p>")
    if not pooled.empty:
        parts += ["<h3>Pooled over seeds</h3>", _html_table(POOLED_HEADERS, pooled_rows(pooled))]
    for s in sections(table):
        parts += [f"<h3>{html.escape(s['title'])}</h3>", f"<p>Changed: <code>{html.escape(s['changed'])}</code></p>",
                  _html_table(s["headers"], s["rows"])]
    return "\n".join(parts)


def html_page(table, pooled, *, level: float, title: str) -> str:
    """A standalone HTML page of the comparison."""
    style = ("body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}.muted{color:#555}")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
            f"{html_fragment(table, pooled, level=level)}\n</body></html>\n")
