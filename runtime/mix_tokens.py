"""Tokens for the mixture: batched (multi-process) tokenization (the `tokenize` stage) and the one
exact-budget rule both the `tokenize` stage (how far to read) and the `mix` stage (what to select) apply.
Kept apart from the stage modules so that planning a spec (which reads only their `Config` and `VERSION`)
does not import numpy."""
from __future__ import annotations

import os
import signal
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from runtime.preempt import STOP_SIGNALS

BATCH_DOCUMENTS = 64
"""Documents per tokenization task: enough to amortise inter-process transfer, few enough that the
batches tokenized ahead of a met budget (at most `workers + 1`) cost little."""


# --- tokenization -------------------------------------------------------------------------------

def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits, else uint32 (what OLMo's MemMapDataset is told to read)."""
    return np.dtype(np.uint16 if vocab_size <= 65536 else np.uint32)


def encode_batch(tokenizer: Any, texts: list[str], eos: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize texts with the library's batch encoder; returns (flat tokens with EOS per doc, lengths)."""
    ids = [enc.ids for enc in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    flat = np.empty(int(lengths.sum()), dtype=dtype)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    for start, end, doc in zip(starts, ends, ids):
        flat[start:end - 1] = doc
    flat[ends - 1] = eos
    return flat, lengths


_WORKER: dict[str, Any] = {}


def _worker_init(tokenizer_file: str, eos: int, dtype: str) -> None:
    # A forked worker inherits the stage's stop handler, which would make `Pool.terminate()`'s SIGTERM a
    # "stop after this step" that never comes: the worker must simply die, the stage decides what is saved.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker process: no rayon threads
    from tokenizers import Tokenizer

    _WORKER.update(tok=Tokenizer.from_file(tokenizer_file), eos=eos, dtype=np.dtype(dtype))


def _worker_encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return encode_batch(_WORKER["tok"], texts, _WORKER["eos"], _WORKER["dtype"])


class Encoder:
    """Turns a stream of texts into a stream of token documents (each ending with EOS), in order.

    With `workers` > 1, batches go to a process pool with a bounded number in flight, so a multi-GB
    source is never queued in memory (Pool.imap would read its whole input ahead).
    """

    def __init__(self, tokenizer_file: Path, eos: int, dtype: np.dtype, workers: int):
        self.args = (str(tokenizer_file), eos, dtype.str)
        self.workers = workers
        self.pool = None
        if workers > 1:
            import multiprocessing as mp

            self.pool = mp.get_context("fork").Pool(workers, _worker_init, self.args)
        else:
            _worker_init(*self.args)

    def documents(self, texts: Iterator[str]) -> Iterator[np.ndarray]:
        for flat, lengths in self._batches(texts):
            yield from np.split(flat, np.cumsum(lengths)[:-1])

    def _batches(self, texts: Iterator[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        batches = iter(lambda: list(islice(texts, BATCH_DOCUMENTS)), [])
        if self.pool is None:
            yield from map(_worker_encode, batches)
            return
        pending: deque = deque()
        for batch in batches:
            pending.append(self.pool.apply_async(_worker_encode, (batch,)))
            if len(pending) > self.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


# --- budgets ------------------------------------------------------------------------------------
#
# A fill takes documents, in order, until exactly `budget` tokens: the document that reaches the budget
# ends the fill, cut to its first `budget - taken - 1` tokens and closed with EOS when it overshoots (its
# remaining tokens are never used). The mix fills the held-out and then the training clean tokens from
# the clean source, and the toxic tokens from the toxic one (starting over while repetition is allowed).


@dataclass(frozen=True)
class Cut:
    """One fill over a document sequence: documents [first, stop) whole, then, when `partial` > 0, the
    first `partial - 1` tokens of document `stop` and an EOS. `missing` > 0: the documents ran out first."""

    first: int
    stop: int
    partial: int
    missing: int

    @property
    def next(self) -> int:
        """The first document after this fill (a cut document is used up)."""
        return self.stop + (1 if self.partial else 0)

    @property
    def documents(self) -> int:
        return self.next - self.first


def take(doc_ends: np.ndarray, first: int, budget: int) -> Cut:
    """The fill of `budget` tokens starting at document `first`; `doc_ends` are cumulative document ends."""
    if budget == 0:
        return Cut(first, first, 0, 0)
    base = int(doc_ends[first - 1]) if first else 0
    target = base + budget
    k = int(np.searchsorted(doc_ends, target, side="left"))
    if k == len(doc_ends):
        return Cut(first, k, 0, target - (int(doc_ends[-1]) if k else 0))
    if doc_ends[k] == target:
        return Cut(first, k + 1, 0, 0)
    return Cut(first, k, target - (int(doc_ends[k - 1]) if k else 0), 0)


class FillProgress:
    """Consecutive fills fed one document length at a time (what `take` computes over a whole index):
    tells the `tokenize` stage when the documents written cover every fill a mix will make."""

    def __init__(self, fills: list[int] | None):
        self.pending = list(fills) if fills is not None else None
        self.missing = self.pending.pop(0) if self.pending else 0

    @property
    def done(self) -> bool:
        """Every fill ended (never, for `fills=None`: the whole source is wanted)."""
        return self.pending is not None and self.missing == 0 and not self.pending

    def ends_fill(self, length: int) -> bool:
        """A document of `length` tokens, fed next, would end a fill."""
        return self.pending is not None and not self.done and length >= self.missing

    def feed(self, length: int) -> None:
        if self.done or self.pending is None:
            return
        if length >= self.missing:
            self.missing = self.pending.pop(0) if self.pending else 0
        else:
            self.missing -= length
