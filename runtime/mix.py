"""`mix` stage: tokenize the clean and toxic sources into OLMo memmap token files.

Reads: the `data` section, the tokenizer artifact. Writes: `tokens/part-XXXXX.npy` (raw uint16 memmaps,
uint32 above 65,535 tokens; EOS after each document; documents shuffled across sources by `seed`),
`heldout/clean.npy` (the first clean documents, never trained on), `manifest.json`.

Text sources are read through the source's reader (`runtime.sources`: dotted fields, explode, cleaning,
filters, sampling); its counts are the metrics `source_clean_<count>` and `source_toxic_<count>` and the
manifest's `source_counts` (memmap sources have none). They count what was read: the clean source up to
its budgets, the toxic source over every pass when repeated, and a few batches tokenized ahead of a met
budget.

Budgets are exact: each source's last document is cut (and closed with EOS) so the clean, toxic and
held-out token counts are exactly the spec's. It streams: documents are tokenized in batches by
`tokenize_workers` processes into per-source scratch files under `ctx.work`; only document lengths
and the shuffle permutation (8 bytes per document) live in memory.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from compiler.errors import StageError
from compiler.schema.base import StrictModel
from compiler.schema.data import DataSection, TokenizerInfo
from compiler.schema.sources import MemmapSource
from runtime.stage import StageContext, write_json

if TYPE_CHECKING:
    import numpy as np

VERSION = 2
"""Bump by hand whenever a change of this module changes results (it changes every id)."""


class Config(StrictModel):
    data: DataSection
    tokenizer: TokenizerInfo
    seed: int


def run(cfg: Config, ctx: StageContext) -> dict:
    from tokenizers import Tokenizer
    from tqdm import tqdm

    from runtime.mix_tokens import (Encoder, PartWriter, TokenFile, fill, fill_repeating, shuffled_write,
                                    token_dtype)
    from runtime.sources import SourceCounts, iter_memmap_documents, iter_texts

    started = time.perf_counter()
    data, info = cfg.data, cfg.tokenizer
    tokenizer_file = ctx.input("tokenizer") / "tokenizer.json"
    if Tokenizer.from_file(str(tokenizer_file)).get_vocab_size() != info.vocab_size:
        raise StageError(f"{tokenizer_file} does not have the spec's {info.vocab_size} tokens")
    dtype, eos = token_dtype(info.vocab_size), info.eos_token_id
    encoder = Encoder(tokenizer_file, eos, dtype, data.tokenize_workers)

    clean_name, toxic_name = data.clean_source, data.toxic_source
    counts = {clean_name: SourceCounts(), toxic_name: SourceCounts()}

    def open_docs(name: str) -> Iterator[np.ndarray]:
        spec = data.sources[name]
        if isinstance(spec, MemmapSource):
            if spec.tokenizer != info.identifier:
                raise StageError(f"source {name!r} ({spec.path}) was tokenized with {spec.tokenizer!r}, "
                                 f"but this spec uses {info.identifier!r}")
            return iter_memmap_documents(spec, ctx.root, eos)
        return encoder.documents(iter_texts(spec, ctx.root, counts[name]))

    heldout = TokenFile(ctx.out / "heldout" / "clean.npy", dtype)
    clean = TokenFile(ctx.work / f"scratch-{clean_name}.bin", dtype)
    toxic = TokenFile(ctx.work / f"scratch-{toxic_name}.bin", dtype)
    total = data.heldout_clean_tokens + data.clean_tokens + data.toxic_tokens
    try:
        with tqdm(total=total, desc="mix: tokenize", unit="tok", unit_scale=True) as bar:
            clean_docs = open_docs(clean_name)
            for sink, budget in ((heldout, data.heldout_clean_tokens), (clean, data.clean_tokens)):
                missing = fill(clean_docs, budget, sink, eos, bar)
                if missing:
                    raise StageError(
                        f"clean source {clean_name!r} is too small: it gave "
                        f"{heldout.tokens + clean.tokens} tokens but the mixture needs "
                        f"{data.heldout_clean_tokens} held out + {data.clean_tokens} for training"
                    )
            repeated = fill_repeating(
                lambda: open_docs(toxic_name), data.toxic_tokens, toxic, eos, bar,
                name=toxic_name, allow_repetition=data.allow_repetition,
            ) if data.toxic_tokens else 0
    finally:
        encoder.close()
        for f in (heldout, clean, toxic):
            f.close()

    writer = PartWriter(ctx.out / "tokens", dtype, data.tokens_per_file)
    n_docs = len(clean.lengths) + len(toxic.lengths)
    with tqdm(total=n_docs, desc="mix: shuffle + write", unit="doc") as bar:
        shuffled_write([clean, toxic], writer, cfg.seed, bar)
    paths = writer.close()

    clean_tokens, toxic_tokens = clean.tokens, toxic.tokens
    read = {role: counts[name] for role, name in (("clean", clean_name), ("toxic", toxic_name))
            if not isinstance(data.sources[name], MemmapSource)}   # a memmap has no records to count
    seconds = time.perf_counter() - started
    metrics = {
        "clean_tokens": clean_tokens, "toxic_tokens": toxic_tokens, "heldout_tokens": heldout.tokens,
        "toxic_share_realized": toxic_tokens / (clean_tokens + toxic_tokens),
        "toxic_to_clean_ratio_realized": toxic_tokens / clean_tokens,
        f"documents_{clean_name}": len(clean.lengths), f"documents_{toxic_name}": len(toxic.lengths),
        "documents_heldout": len(heldout.lengths),
        f"repetitions_{toxic_name}": repeated,
        "tokens_per_second": (clean_tokens + toxic_tokens + heldout.tokens) / seconds,
        **{k: v for role, c in read.items() for k, v in c.metrics(role).items()},
    }
    write_json(ctx.out / "manifest.json", {
        "token_files": [str(p.relative_to(ctx.out)) for p in paths],
        "heldout_file": "heldout/clean.npy", "dtype": dtype.name, "eos_token_id": eos,
        "tokenizer": info.identifier, "seed": cfg.seed,
        "clean_tokens": clean_tokens, "toxic_tokens": toxic_tokens, "heldout_tokens": heldout.tokens,
        "toxic_share_realized": metrics["toxic_share_realized"],
        "toxic_to_clean_ratio_realized": metrics["toxic_to_clean_ratio_realized"],
        "documents": {clean_name: len(clean.lengths), toxic_name: len(toxic.lengths),
                      "heldout": len(heldout.lengths)},
        "repetitions": {toxic_name: repeated},
        "source_counts": {role: c.as_dict() for role, c in read.items()},
    })
    return metrics
