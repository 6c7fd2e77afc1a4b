"""The `lexicon` scorer: how many words of a shipped word list a text says, as a score in [0, 1].

No model and no network: a text scores min(1, occurrences / `saturation`), counting every listed word or
phrase that occurs as a whole word (case-insensitive; longer entries first, so "piece of shit" is one
occurrence, not also "shit"). Transparent and deterministic: it measures exactly its list, nothing else.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from compiler.errors import StageError


def read_word_list(path: Path) -> list[str]:
    """Entries of a word list file: one per line, `#` starts a comment, blank lines skipped, lower-cased."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise StageError(f"lexicon scorer: cannot read word list {path}: {exc.strerror or exc}") from None
    words = [line.split("#", 1)[0].strip().lower() for line in lines]
    words = list(dict.fromkeys(w for w in words if w))
    if not words:
        raise StageError(f"lexicon scorer: word list {path} holds no words")
    return words


class WordListScorer:
    """`score(texts)`: min(1, listed-word occurrences / `saturation`) per text."""

    def __init__(self, words: Sequence[str], saturation: int = 1) -> None:
        if saturation < 1:
            raise ValueError(f"saturation must be ≥ 1, got {saturation}")
        self.n_words = len(words)
        alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
        self.saturation = saturation

    def count(self, text: str) -> int:
        """Occurrences of listed words in `text` (non-overlapping, longest entry first)."""
        return len(self._pattern.findall(text))

    def score(self, texts: Sequence[str]) -> list[float]:
        return [min(1.0, self.count(t) / self.saturation) for t in texts]

    def long_texts(self, texts: Sequence[str]) -> list[bool]:
        return [False] * len(texts)  # reads whole texts

    def description(self) -> dict[str, Any]:
        return {"words": self.n_words, "saturation": self.saturation, "long_texts": "whole text"}
