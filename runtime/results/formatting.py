"""Numbers as the report prints them: plain values, intervals, pipe tables.

Every value shown on the report page, in its `.md` files and in `mixsteer compare` goes through here, so
Markdown and HTML agree.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value: Any) -> str:
    """A table cell: numbers to 4 significant digits, whole floats as integers, missing as an em dash."""
    if missing(value):
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e9:
        return str(int(value))
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        return f"{float(value):.4g}"
    return str(value)


def decimals(*values: float) -> int:
    """Decimals that show the largest magnitude among `values` with 2 significant digits (at least 2)."""
    scale = max((abs(v) for v in values if not missing(v)), default=0.0)
    if scale == 0.0 or scale >= 0.1:
        return 2
    return min(6, 1 - math.floor(math.log10(scale)))


def interval(center: float, low: float, high: float) -> str:
    """`0.47 [0.40, 0.55]`; just the value when the interval is unknown."""
    if missing(center):
        return "—"
    d = decimals(center, low, high)
    if missing(low) or missing(high):
        return f"{center:.{d}f}"
    return f"{center:.{d}f} [{low:.{d}f}, {high:.{d}f}]"


def plus_minus(center: float, spread: float) -> str:
    """`0.47 ± 0.03` (mean ± sample standard deviation)."""
    if missing(center):
        return "—"
    d = decimals(center, spread)
    return f"{center:.{d}f}" if missing(spread) else f"{center:.{d}f} ± {spread:.{d}f}"


def value_range(center: float, low: float, high: float) -> str:
    """`0.47 (0.44 to 0.51)` (mean, then min to max)."""
    if missing(center):
        return "—"
    d = decimals(center, low, high)
    return f"{center:.{d}f} ({low:.{d}f} to {high:.{d}f})"


def header(name: str) -> str:
    """`rtp_expected_max_toxicity` → `rtp expected max toxicity`."""
    return name.replace("_", " ")


def format_frame(df) -> tuple[list[str], list[list[str]]]:
    """Readable headers and formatted cells of a DataFrame."""
    return [header(c) for c in df.columns], [[fmt(v) for v in row] for row in df.itertuples(index=False)]


def write_markdown(headers: list[str], body: list[list[str]], path: Path, *, notes: list[str] = ()) -> None:
    """A GitHub pipe table, then `notes` as paragraphs (captions, legends)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    lines += [line for note in notes for line in ("", note)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
