"""`tokenize` stage: tokenize one source once into shared token shards that every mix selects from.

Reads: one data source (through its reader: dotted fields, explode, cleaning, filters, sampling; a
`memmap` source's documents are re-sharded as they are), the tokenizer artifact. Writes (format in
`runtime.token_shards`): `shards/shard-XXXXX.npy`, `index.npy` (document lengths), `manifest.json`
(`shards`, `documents`, `tokens`, `exhausted`, `fills`, `dtype`, `eos_token_id`, `tokenizer`,
`source_counts`).

How far it reads: `fills` are the exact-budget fills the plan's mixes make from this source (clean:
held-out, then the largest training budget; toxic: the largest toxic budget); it stops after the
document that ends the last one (`runtime.mix_tokens.take` is the rule), or at the end of the source
(`exhausted`). `fills: null` reads the whole source. Every document is written whole; the one that ends
a fill is a shard of its own, so a mix at the plan's largest budgets lists every other shard by reference
and copies only that document's head.

Resumable shard by shard: finished shards stay in `ctx.work` with the number of documents they hold;
a rerun reads past those documents without tokenizing them, continues, and logs `resumed from k shards`.
On SIGTERM / SIGUSR1 it stops after the shard being written and exits for a rerun (`runtime.preempt`).
Source counts (`source_tokenize_<count>`, the manifest's `source_counts`) are those of the reader when
the last document written was read: tokenizing ahead and resuming do not change them.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING

from compiler.errors import StageError
from compiler.schema.sources import MemmapSource
from compiler.stages.tokenize import Config
from runtime.stage import StageContext, write_json

if TYPE_CHECKING:
    import numpy as np

    from runtime.mix_tokens import Encoder
    from runtime.sources import SourceCounts


def run(cfg: Config, ctx: StageContext) -> dict:
    from tokenizers import Tokenizer
    from tqdm import tqdm

    from runtime.mix_tokens import Encoder, FillProgress, token_dtype
    from runtime.preempt import StopSignals, resumed
    from runtime.sources import SourceCounts
    from runtime.token_shards import ShardWriter

    started = time.perf_counter()
    info, source = cfg.tokenizer, cfg.source
    tokenizer_file = ctx.input("tokenizer") / "tokenizer.json"
    if Tokenizer.from_file(str(tokenizer_file)).get_vocab_size() != info.vocab_size:
        raise StageError(f"{tokenizer_file} does not have the spec's {info.vocab_size} tokens")
    if isinstance(source, MemmapSource) and source.tokenizer != info.identifier:
        raise StageError(f"memmap source {source.path!r} was tokenized with {source.tokenizer!r}, "
                         f"but this spec uses {info.identifier!r}")
    dtype = token_dtype(info.vocab_size)
    writer = ShardWriter(ctx.work, dtype, cfg.tokens_per_file)
    progress = FillProgress(cfg.fills)
    for length in writer.recorded_lengths():
        progress.feed(length)
    skipped, tokens_before, kept_shards = writer.documents, writer.tokens, len(writer.shards)
    if skipped:
        resumed("tokenize", f"{kept_shards} shards and {skipped} documents")

    counts = SourceCounts()
    snapshots: deque[dict[str, int]] = deque()   # the reader's counts as each document in flight was read
    last_counts = writer.state if writer.state is not None else counts.as_dict()
    text = not isinstance(source, MemmapSource)
    encoder = Encoder(tokenizer_file, info.eos_token_id, dtype, cfg.tokenize_workers) if text else None
    exhausted = False
    try:
        with StopSignals("tokenize") as stop, \
                tqdm(total=sum(cfg.fills) if cfg.fills else None, initial=tokens_before,
                     desc="tokenize", unit="tok", unit_scale=True) as bar:
            docs = _documents(cfg, ctx, encoder, counts, snapshots, skipped)
            while not progress.done:
                if stop.requested():
                    writer.checkpoint()
                    stop.stop(f"{len(writer.shards)} shards and {writer.documents} documents")
                doc = next(docs, None)
                if doc is None:
                    exhausted = True
                    break
                if snapshots:
                    last_counts = snapshots.popleft()
                if progress.ends_fill(len(doc)):   # a shard of its own: the cut falls between shards
                    writer.close_shard()
                    writer.add(doc, last_counts)
                    writer.close_shard()
                else:
                    writer.add(doc, last_counts)
                progress.feed(len(doc))
                bar.update(len(doc))
    finally:
        if encoder is not None:
            encoder.close()

    shards = writer.publish(ctx.out)
    documents = sum(int(s["documents"]) for s in shards)
    tokens = sum(int(s["tokens"]) for s in shards)
    counts_out = last_counts if text else None
    write_json(ctx.out / "manifest.json", {
        "shards": shards, "documents": documents, "tokens": tokens, "exhausted": exhausted,
        "fills": cfg.fills, "tokens_per_file": cfg.tokens_per_file, "dtype": dtype.name,
        "eos_token_id": info.eos_token_id, "tokenizer": info.identifier, "source_counts": counts_out,
    })
    tokenized = tokens - tokens_before
    return {
        "tokens": tokens, "documents": documents, "shards": len(shards), "exhausted": exhausted,
        "resumed_shards": kept_shards, "tokens_tokenized": tokenized,
        "tokens_per_second": tokenized / (time.perf_counter() - started),
        **({f"source_tokenize_{k}": v for k, v in counts_out.items()} if counts_out else {}),
    }


def _documents(cfg: Config, ctx: StageContext, encoder: Encoder | None, counts: SourceCounts,
               snapshots: deque[dict[str, int]], skip: int) -> Iterator[np.ndarray]:
    """The source's documents from the `skip`-th on (each ending with EOS). For a text source each
    document's reader counts go to `snapshots` as its text is handed to the encoder (in order)."""
    from runtime.sources import iter_memmap_documents, iter_texts

    if encoder is None:
        return islice(iter_memmap_documents(cfg.source, ctx.root, cfg.tokenizer.eos_token_id), skip, None)

    def texts() -> Iterator[str]:
        for text in islice(iter_texts(cfg.source, ctx.root, counts), skip, None):
            snapshots.append(counts.as_dict())
            yield text

    return encoder.documents(texts())
