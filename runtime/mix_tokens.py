"""The `mix` stage's machinery: batched (multi-process) tokenization, exact-budget filling of
scratch token files, and the seeded shuffle into OLMo memmap parts. Kept apart from `runtime.mix` so
that planning a spec (which reads only `mix.Config` and `mix.VERSION`) does not import numpy."""
from __future__ import annotations

import os
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from compiler.errors import StageError

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

class TokenFile:
    """Append-only raw token file that remembers its document lengths."""

    def __init__(self, path: Path, dtype: np.dtype):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.dtype = path, dtype
        self.file: BinaryIO = open(path, "wb")
        self.lengths = array("q")

    def add(self, doc: np.ndarray) -> None:
        self.file.write(doc.astype(self.dtype, copy=False).tobytes())
        self.lengths.append(len(doc))

    def close(self) -> None:
        self.file.close()

    @property
    def tokens(self) -> int:
        return sum(self.lengths)


def fill(docs: Iterator[np.ndarray], budget: int, sink: TokenFile, eos: int, progress: Any) -> int:
    """Move documents into `sink` until exactly `budget` tokens; the last one is cut and closed
    with EOS. Returns the tokens still missing when `docs` ran out (0 = budget met)."""
    missing = budget
    while missing > 0:
        doc = next(docs, None)
        if doc is None:
            return missing
        if len(doc) > missing:
            doc = np.append(doc[:missing - 1], np.array([eos], dtype=doc.dtype))
        sink.add(doc)
        missing -= len(doc)
        progress.update(len(doc))
    return 0


def fill_repeating(open_docs: Callable[[], Iterator[np.ndarray]], budget: int, sink: TokenFile,
                   eos: int, progress: Any, *, name: str, allow_repetition: bool) -> int:
    """`fill` from a source, starting it over while repetition is allowed; returns documents repeated."""
    passes, missing, repeated = 0, budget, 0
    while missing > 0:
        before = len(sink.lengths)
        missing = fill(open_docs(), missing, sink, eos, progress)
        if passes:
            repeated += len(sink.lengths) - before
        if missing and len(sink.lengths) == before:
            raise StageError(f"source {name!r} gave no documents on pass {passes + 1}")
        if missing and not allow_repetition:
            raise StageError(
                f"source {name!r} is too small: it gave {budget - missing} of the {budget} tokens the "
                f"mixture needs; lower the toxic share or set data.allow_repetition: true"
            )
        passes += 1
    return repeated


# --- shuffle and write --------------------------------------------------------------------------

class PartWriter:
    """Writes one token stream as `part-XXXXX.npy` raw memmap files of `tokens_per_file` tokens."""

    def __init__(self, folder: Path, dtype: np.dtype, tokens_per_file: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.dtype, self.cap = folder, dtype, tokens_per_file
        self.paths: list[Path] = []
        self.file: BinaryIO | None = None
        self.room = 0

    def write(self, tokens: np.ndarray) -> None:
        while len(tokens):
            if self.room == 0:
                self._next_file()
            head, tokens = tokens[:self.room], tokens[self.room:]
            self.file.write(head.astype(self.dtype, copy=False).tobytes())
            self.room -= len(head)

    def _next_file(self) -> None:
        if self.file:
            self.file.close()
        self.paths.append(self.folder / f"part-{len(self.paths):05d}.npy")
        self.file = open(self.paths[-1], "wb")
        self.room = self.cap

    def close(self) -> list[Path]:
        if self.file:
            self.file.close()
        return self.paths


def shuffled_write(scratch: list[TokenFile], writer: PartWriter, seed: int, progress: Any) -> None:
    """Write every scratch document once, in one seeded random order across all sources."""
    maps = [np.memmap(s.path, dtype=s.dtype, mode="r") if s.tokens else None for s in scratch]
    lengths = [np.frombuffer(s.lengths, dtype=np.int64) for s in scratch]
    starts = [np.cumsum(ln) - ln for ln in lengths]
    which = np.concatenate([np.full(len(ln), i, dtype=np.int64) for i, ln in enumerate(lengths)])
    index = np.concatenate([np.arange(len(ln), dtype=np.int64) for ln in lengths])
    order = np.random.default_rng(seed).permutation(len(which))
    for src, doc in zip(which[order], index[order]):
        start, length = starts[src][doc], lengths[src][doc]
        writer.write(maps[src][start:start + length])
        progress.update(1)
