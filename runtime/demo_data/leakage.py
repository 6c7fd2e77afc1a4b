"""Text overlap between demo sets: one normal form, used by the generators (to refuse a leaking item)
and by the tests (to prove no set shares text with another or with the pretraining corpora).

An evaluation prompt that also occurs in training data measures memorisation, not behaviour; the
normal form makes "the same text" robust to case, Unicode variants, punctuation and spacing.
"""
from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .clean import iter_clean
from .toxic import iter_toxic

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
"""Where the corpora and the sets are cut into sentences for the exact-copy check."""


PUNCTUATION_TO_SPACE = {cp: " " for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)).startswith("P")}
"""`str.translate` table: every Unicode punctuation character (categories P*) becomes a space."""


def normalise(text: str) -> str:
    """Lowercase NFKC text with punctuation replaced by spaces and whitespace collapsed to one space."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().translate(PUNCTUATION_TO_SPACE).split())


def sentences(text: str) -> Iterator[str]:
    """The normalised sentences of `text` (empty ones dropped)."""
    for part in SENTENCE_END.split(text):
        if norm := normalise(part):
            yield norm


@dataclass(frozen=True)
class CorpusText:
    """The pretraining corpora's normalised sentences, as a set and as one searchable text."""

    sentences: frozenset[str]
    joined: str
    """All sentences, each padded with spaces, one a line: `" words "` in it is a whole-word match."""


@lru_cache(maxsize=1)
def corpus_text() -> CorpusText:
    """Every normalised sentence of `demo-clean` and `demo-toxic` (the corpora the demo pretrains on)."""
    found: set[str] = set()
    for record in (*iter_clean(), *iter_toxic()):
        found.update(sentences(record["text"]))
    return CorpusText(frozenset(found), "\n".join(f" {s} " for s in sorted(found)))


class Guard:
    """Keeps the demo sets apart while they are generated, in order.

    A later set may not repeat any sentence or item of an earlier set, nor contain a held-out
    (evaluation or red-team) prompt; held-out prompts and probe texts may not copy or occur inside
    the pretraining corpora (they would test memorisation).
    """

    def __init__(self, corpus: CorpusText) -> None:
        self._corpus = corpus
        self._earlier: set[str] = set()
        self._held_out: list[str] = []

    def admits(self, texts: Sequence[str], *, novel_to_corpus: bool = False) -> bool:
        """Whether an item made of `texts` keeps the sets apart (and, if asked, apart from the corpora)."""
        for text in texts:
            norm = normalise(text)
            padded = f" {norm} "
            if norm in self._earlier or any(s in self._earlier for s in sentences(text)):
                return False
            if any(h in padded for h in self._held_out):
                return False
            if novel_to_corpus and (padded in self._corpus.joined
                                    or any(s in self._corpus.sentences for s in sentences(text))):
                return False
        return True

    def close_set(self, texts: Iterable[str], *, held_out: bool = False) -> None:
        """Record a finished set; a `held_out` set's texts may not occur inside any later set's text."""
        for text in texts:
            self._earlier.add(normalise(text))
            self._earlier.update(sentences(text))
            if held_out:
                self._held_out.append(f" {normalise(text)} ")


MAX_DRAWS_PER_ITEM = 200
"""Draws allowed per accepted item before a set generator gives up (its template space is too small)."""


def draw_set(make: Callable[[int], dict[str, Any]], n: int, guard: Guard, *,
             texts: Callable[[dict[str, Any]], Sequence[str]], held_out: bool = False,
             novel_to_corpus: bool = False) -> list[dict[str, Any]]:
    """`n` items from `make(index)` that are unique after normalisation and that `guard` admits; the
    finished set is recorded in `guard` (as held out if `held_out`). `texts(item)` lists what is checked."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, ...]] = set()
    draws = 0
    while len(out) < n:
        draws += 1
        if draws > n * MAX_DRAWS_PER_ITEM:
            raise RuntimeError(f"could not draw {n} unique, non-leaking items (got {len(out)})")
        item = make(len(out))
        key = tuple(normalise(t) for t in texts(item))
        if key not in seen and guard.admits(texts(item), novel_to_corpus=novel_to_corpus):
            seen.add(key)
            out.append(item)
    guard.close_set((t for item in out for t in texts(item)), held_out=held_out)
    return out
