"""The report's HTML page: prepare every value in Python, then render `templates/report.html.j2`.

The template only loops over prepared strings. Jinja2 autoescaping is on, so spec strings (title, run
names, token-view texts) can never inject markup or script. Two pages are written from one template:
`index.html` references images relatively (`plots/<name>.png`), so the folder can be moved or served as
is; `standalone.html` inlines them as data URIs, for `snakemake --report`, which embeds one HTML file
as a data URI where relative links cannot resolve.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.schema.report import ReportRow
from runtime.results.formatting import fmt, format_frame, interval
from .table import variant_rank

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@dataclass
class Page:
    """Everything the page shows, as prepared strings (tables as headers + rows + notes)."""

    title: str
    spec_name: str
    summary: list[tuple[str, str]]
    main: tuple[list[str], list[list[str]], list[str]] | None
    paired: tuple[list[str], list[list[str]], list[str]] | None
    auc: list[dict[str, str]]
    significance: tuple[list[str], list[list[str]]]
    significance_alpha: float
    full: tuple[list[str], list[list[str]]]
    has_seed_table: bool
    views: list[dict[str, Any]] = field(default_factory=list)
    top_k: int = 5
    agreement: dict[str, Any] | None = None   # the scorer check's tables and notes
    conclusions: dict[str, Any] | None = None  # `table` (headers, rows, notes) or `message`; None: no scorer
    text_agreement: dict[str, Any] | None = None  # the same, for the scorers' agreement on the run's texts
    scorer_provenance: dict[str, Any] | None = None  # the Scorers table (runtime.report.provenance)
    comparison: dict[str, Any] | None = None  # `report.compare_to`: title, note, pooled table, sections


def summary_items(rows: list[ReportRow], table, *, n_runs: int,
                  scorers: list[str] = ()) -> list[tuple[str, str]]:
    """Label/value pairs describing what the report covers; `n_runs` counts the spec's sweep points
    (`rows` are merged: the base model of every α is one row); `scorers`: labels, primary first."""
    def distinct(values: list[Any], key: Any = None) -> list[Any]:
        return sorted({v for v in values if v is not None}, key=key)

    items = [("runs", str(n_runs)), ("distinct models", str(len(table)))]
    for label, values in (("variants", distinct([r.variant for r in rows], key=lambda v: (variant_rank(v), v))),
                          ("toxic shares", distinct([r.toxic_share for r in rows])),
                          ("seeds", distinct([r.seed for r in rows])),
                          ("ITI strengths (α)", distinct([r.alpha for r in rows])),
                          ("control draws", distinct([r.control_seed for r in rows]))):
        if values:
            items.append((label, ", ".join(fmt(v) for v in values)))
    if scorers:
        items.append(("toxicity scorers", ", ".join([f"{scorers[0]} (primary)", *scorers[1:]])))
    return items


def auc_box(results: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The scorer/probe-label AUC of each scorer (primary first) as display strings."""
    return [{"value": interval(r["auc"], r["ci_low"], r["ci_high"]),
             "level": f"{100 * r['level']:g} %", "reading": r["reading"],
             "n": f"{r['n_examples']} labelled texts ({r['n_toxic']} toxic)",
             "scorer": r["label"] if r["label"] == r["scorer"] else f"{r['label']}, {r['scorer']}",
             "data": r["data"]} for r in results]


def significance_rows(tests: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["toxic share", "vs share", "heads", "median acc.", "median acc. (ref.)", "U", "p (one-sided)",
               "significant"]
    body = [[fmt(t["toxic_share"]), fmt(t["reference_toxic_share"]), f"{t['n_heads']} vs {t['n_heads_reference']}",
             fmt(t["median_accuracy"]), fmt(t["median_accuracy_reference"]), fmt(t["u_statistic"]),
             f"{t['p_value']:.3g}", f"yes (p < {t['alpha']:g})" if t["significant"] else "no"] for t in tests]
    return headers, body


def full_table(table) -> tuple[list[str], list[list[str]]]:
    return format_frame(table.drop(columns=[c for c in table.columns if c.endswith("_id")]))


def render(**context: Any) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(**context)


def _data_uri(path: Path) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def write_page(folder: Path, page: Page, plots: list[tuple[str, str]]) -> None:
    """Render `index.html` (relative images) and `standalone.html` (inlined images) into `folder`;
    `plots` are (file name, caption) pairs under `plots/`."""
    context = vars(page)
    relative = [{"src": f"plots/{name}", "caption": caption} for name, caption in plots]
    inlined = [{"src": _data_uri(folder / "plots" / name), "caption": caption} for name, caption in plots]
    (folder / "index.html").write_text(render(plots=relative, **context), encoding="utf-8")
    (folder / "standalone.html").write_text(render(plots=inlined, **context), encoding="utf-8")
