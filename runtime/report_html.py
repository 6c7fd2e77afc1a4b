"""The report's HTML page: prepare every value in Python, then render `templates/report.html.j2`.

The template only loops over prepared strings. Jinja2 autoescaping is on, so spec strings (title, run
names, token-view texts) can never inject markup or script. Two pages are written from one template:
`index.html` references images relatively (`plots/<name>.png`), so the folder can be moved or served as
is; `standalone.html` inlines them as data URIs, for `snakemake --report`, which embeds one HTML file
as a data URI where relative links cannot resolve.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def header(name: str) -> str:
    """`rtp_expected_max_toxicity` → `rtp expected max toxicity`."""
    return name.replace("_", " ")


def fmt(value: Any) -> str:
    """Numbers to 4 significant digits, missing values as an em dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e9:
        return str(int(value))
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        return f"{float(value):.4g}"
    return str(value)


def format_table(df, *, std_suffix: bool = False) -> tuple[list[str], list[list[str]]]:
    """Readable headers and formatted cells; with `std_suffix`, `<m>_mean` + `<m>_std` become one
    `<m> (mean ± std)` column."""
    cols = list(df.columns)
    if not std_suffix:
        return [header(c) for c in cols], [[fmt(v) for v in row] for row in df.itertuples(index=False)]
    out_cols = [c for c in cols if not c.endswith("_std")]
    headers = [header(c[:-5]) + " (mean ± std)" if c.endswith("_mean") else header(c) for c in out_cols]
    body = []
    for _, row in df.iterrows():
        cells = []
        for c in out_cols:
            if c.endswith("_mean"):
                std = row.get(c[:-5] + "_std")
                cells.append(fmt(row[c]) + ("" if std is None or math.isnan(std) else f" ± {fmt(std)}"))
            else:
                cells.append(fmt(row[c]))
        body.append(cells)
    return headers, body


def summary(rows: list[dict[str, Any]], table) -> list[tuple[str, str]]:
    """Label/value pairs describing what the report covers."""
    from runtime.report import VARIANT_ORDER

    def distinct(key):
        values = {r.get(key) for r in rows if r.get(key) is not None}
        if key == "variant":
            return sorted(values, key=lambda v: (VARIANT_ORDER.index(v) if v in VARIANT_ORDER else 99, v))
        return sorted(values)

    items = [("runs", str(len({r["run"] for r in rows}))), ("table rows (distinct models)", str(len(table)))]
    for label, key in (("variants", "variant"), ("toxic shares", "toxic_share"), ("seeds", "seed"),
                       ("ITI strengths (alpha)", "alpha")):
        values = distinct(key)
        if values:
            items.append((label, ", ".join(fmt(v) for v in values)))
    return items


def significance_rows(tests: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["toxic share", "vs share", "heads", "median acc.", "median acc. (ref.)", "U", "p (one-sided)",
               "significant"]
    body = [[fmt(t["toxic_share"]), fmt(t["reference_toxic_share"]), f"{t['n_heads']} vs {t['n_heads_reference']}",
             fmt(t["median_accuracy"]), fmt(t["median_accuracy_reference"]), fmt(t["u_statistic"]),
             f"{t['p_value']:.3g}", f"yes (p < {t['alpha']:g})" if t["significant"] else "no"] for t in tests]
    return headers, body


def render(**context: Any) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(**context)


def _data_uri(path: Path) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def write_page(path: Path, *, cfg, rows, table, by_seed, tests, plots, views) -> None:
    """Render `index.html` (relative images) and `standalone.html` (inlined images) into `path`'s folder;
    `plots` are (file name, caption) pairs under `plots/`."""
    shown = table.drop(columns=[c for c in table.columns if c.endswith("_id")])
    headers, body = format_table(shown)
    seeds = format_table(by_seed, std_suffix=True) if by_seed is not None else None
    sig_headers, sig_body = significance_rows(tests)
    context = dict(
        title=cfg.title, spec_name=cfg.spec_name, summary=summary(rows, table),
        table_headers=headers, table_rows=body, seeds_table=seeds,
        significance_headers=sig_headers, significance_rows=sig_body,
        significance_alpha=cfg.significance_alpha,
        views=views, top_k=cfg.token_view_top_k_heads,
    )
    folder = path.parent
    relative = [{"src": f"plots/{name}", "caption": caption} for name, caption in plots]
    inlined = [{"src": _data_uri(folder / "plots" / name), "caption": caption} for name, caption in plots]
    path.write_text(render(plots=relative, **context), encoding="utf-8")
    (folder / "standalone.html").write_text(render(plots=inlined, **context), encoding="utf-8")
