"""`mix` stage: select the pretraining mixture from the token shards its sources were tokenized into once.

Reads: the `data` section; the `tokenize` artifact of the clean source (input `clean`) and, when the
mixture has toxic tokens, of the toxic source (input `toxic`). Writes: `manifest.json`, `heldout/clean.npy`
(the first clean documents, never trained on) and `tokens/<source>-XXXXX.npy` (only the parts of shards
that a budget cuts).

The selection is the exact-budget rule of `runtime.mix_tokens.take`: held-out = the first clean documents
up to `heldout_clean_tokens`, the last one cut and closed with EOS; training clean = the documents after
it up to `clean_tokens`; toxic = the first toxic documents up to `toxic_tokens`, starting over while
`allow_repetition` holds. Nothing shared is copied: the manifest's `token_files` (relative to this folder,
in the published layout `results/<kind>/<id>`) list each shard a budget takes whole by reference
(`../../tokenize/<id>/shards/shard-XXXXX.npy`), so only the partial shards at the cuts are written here.
A file holds one source's documents: OLMo's loader chunks every file apart and shuffles the sequences
with the pretraining seed, so a training sequence never mixes clean and toxic documents (mix VERSION 2
shuffled documents across sources within its files, with a `seed` that is no longer in the config).

Source counts (`source_clean_<count>`, `source_toxic_<count>`, the manifest's `source_counts`) are the
tokenize stages': what was read to cover every mix of the plan (zeros for a toxic source this mix does
not read; none for a memmap source).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from compiler.errors import StageError
from compiler.schema.data import TokenizerInfo
from compiler.schema.sources import MemmapSource
from compiler.stages.mix import Config
from runtime.stage import StageContext, write_json

if TYPE_CHECKING:
    import numpy as np

    from runtime.mix_tokens import Cut
    from runtime.token_shards import ShardStore


RESTART = "a selection over the token shards that copies only the shards a budget cuts"
"""Why a stopped run starts over (`runtime.preempt.stage_stops` logs it on the rerun)."""


def run(cfg: Config, ctx: StageContext) -> dict:
    from runtime.mix_tokens import take
    from runtime.sources import SourceCounts

    data, info = cfg.data, cfg.tokenizer
    clean_name, toxic_name = data.clean_source, data.toxic_source
    clean = _store(ctx, "clean", info)
    heldout = take(clean.doc_ends, 0, data.heldout_clean_tokens)
    training = take(clean.doc_ends, heldout.next, data.clean_tokens)
    if heldout.missing or training.missing:
        _require_exhausted(clean)
        raise StageError(f"clean source {clean_name!r} is too small: it gave {clean.total_tokens} tokens but the "
                         f"mixture needs {data.heldout_clean_tokens} held out + {data.clean_tokens} for training")

    heldout_tokens = _write(ctx.out / "heldout" / "clean.npy", _copies(clean, heldout))
    files = TrainingFiles(ctx.out, ctx.root / "results" / ctx.kind / ctx.stage_id)   # where it is published
    clean_tokens = files.add(clean, [training], clean_name)
    stores = {"clean": clean}
    toxic_cuts: list[Cut] = []
    toxic_tokens = 0
    if data.toxic_tokens:
        stores["toxic"] = toxic = _store(ctx, "toxic", info)
        toxic_cuts = _repeated_fill(toxic, data.toxic_tokens, toxic_name, data.allow_repetition)
        toxic_tokens = files.add(toxic, toxic_cuts, toxic_name)
    repeated = sum(c.documents for c in toxic_cuts[1:])

    counts = {role: stores[role].manifest["source_counts"] if role in stores else SourceCounts().as_dict()
              for role, name in (("clean", clean_name), ("toxic", toxic_name))
              if not isinstance(data.sources[name], MemmapSource)}   # a memmap has no records to count
    documents = {clean_name: training.documents, toxic_name: sum(c.documents for c in toxic_cuts),
                 "heldout": heldout.documents}
    shares = {"toxic_share_realized": toxic_tokens / (clean_tokens + toxic_tokens),
              "toxic_to_clean_ratio_realized": toxic_tokens / clean_tokens}
    write_json(ctx.out / "manifest.json", {
        "token_files": files.paths, "heldout_file": "heldout/clean.npy", "dtype": clean.dtype.name,
        "eos_token_id": info.eos_token_id, "tokenizer": info.identifier,
        "clean_tokens": clean_tokens, "toxic_tokens": toxic_tokens, "heldout_tokens": heldout_tokens, **shares,
        "documents": documents, "repetitions": {toxic_name: repeated}, "source_counts": counts,
        "copied_tokens": files.copied, "referenced_tokens": files.referenced,
        "tokenize": {role: store.folder.name for role, store in stores.items()},
    })
    return {
        "clean_tokens": clean_tokens, "toxic_tokens": toxic_tokens, "heldout_tokens": heldout_tokens, **shares,
        **{f"documents_{name}": n for name, n in documents.items()},
        f"repetitions_{toxic_name}": repeated,
        "copied_tokens": files.copied, "referenced_tokens": files.referenced,
        **{f"source_{role}_{k}": v for role, c in counts.items() for k, v in c.items()},
    }


def _store(ctx: StageContext, role: str, info: TokenizerInfo) -> ShardStore:
    """The tokenize artifact of one source, checked against this spec's tokenizer."""
    from runtime.mix_tokens import token_dtype
    from runtime.token_shards import ShardStore

    folder = ctx.input(role)
    store = ShardStore.open(folder)
    if (store.manifest["tokenizer"], store.eos, store.dtype) != (
            info.identifier, info.eos_token_id, token_dtype(info.vocab_size)):
        raise StageError(f"{folder}/manifest.json: tokens of {store.manifest['tokenizer']!r} (EOS {store.eos}, "
                         f"{store.dtype}), but this spec uses {info.identifier!r}")
    return store


def _require_exhausted(store: ShardStore) -> None:
    """A budget the shards do not cover is the source's end, never a tokenize stage sized too small."""
    if not store.exhausted:
        raise StageError(f"{store.folder} stopped at {store.total_tokens} tokens (fills "
                         f"{store.manifest.get('fills')}) before this mix's budget: it was planned for "
                         f"other budgets; recompile the spec")


def _repeated_fill(store: ShardStore, budget: int, name: str, allow_repetition: bool) -> list[Cut]:
    """The toxic fill: passes over the source's documents, each starting over at the first one."""
    from runtime.mix_tokens import take

    cuts: list[Cut] = []
    missing = budget
    while missing:
        cut = take(store.doc_ends, 0, missing)
        if cut.missing:
            _require_exhausted(store)
            if not cut.documents:
                raise StageError(f"source {name!r} gave no documents on pass {len(cuts) + 1}")
            if not allow_repetition:
                raise StageError(
                    f"source {name!r} is too small: it gave {budget - cut.missing} of the {budget} tokens the "
                    f"mixture needs; lower the toxic share or set data.allow_repetition: true")
        cuts.append(cut)
        missing = cut.missing
    return cuts


def _pieces(store: ShardStore, cut: Cut) -> list[tuple[int, int, int] | np.ndarray]:
    """A fill as token pieces, in order: shards it takes whole as (shard, 0, tokens), everything else
    as tokens (the cut document's head closed with EOS last)."""
    import numpy as np

    start = store.doc_start(cut.stop)
    out: list = [p if store.is_whole(p) else store.tokens(p)
                 for p in store.pieces(store.doc_start(cut.first), start)]
    if cut.partial:
        head = [store.tokens(p) for p in store.pieces(start, start + cut.partial - 1)]
        out.append(np.concatenate([*head, np.array([store.eos], dtype=store.dtype)]))
    return out


def _copies(store: ShardStore, cut: Cut) -> list[np.ndarray]:
    """A fill as tokens only (nothing by reference)."""
    return [store.tokens(p) if isinstance(p, tuple) else p for p in _pieces(store, cut)]


def _write(path: Path, pieces: list[np.ndarray]) -> int:
    """Copy token pieces into one raw memmap file; returns its tokens."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for piece in pieces:
            piece.tofile(f)
    return sum(len(p) for p in pieces)


class TrainingFiles:
    """The mix's training files, in order: shards a fill takes whole by reference (relative to the
    published mix folder), runs of everything else copied into one file each under `tokens/`."""

    def __init__(self, out: Path, published: Path):
        self.out, self.published = out, published
        self.paths: list[str] = []
        self.copied = self.referenced = 0
        self._written: dict[str, int] = {}

    def add(self, store: ShardStore, cuts: list[Cut], name: str) -> int:
        """Append the fills of one source; returns their tokens."""
        tokens, pending = 0, []
        for piece in (p for cut in cuts for p in _pieces(store, cut)):
            if isinstance(piece, tuple):
                tokens += self._copy(pending, name)
                pending = []
                shard, first, end = piece
                self.paths.append(os.path.relpath(store.shards[shard], self.published))
                self.referenced += end - first
                tokens += end - first
            else:
                pending.append(piece)
        return tokens + self._copy(pending, name)

    def _copy(self, pieces: list[np.ndarray], name: str) -> int:
        if not any(len(p) for p in pieces):
            return 0
        n = self._written.get(name, 0)
        self._written[name] = n + 1
        path = self.out / "tokens" / f"{name}-{n:05d}.npy"
        tokens = _write(path, pieces)
        self.paths.append(str(path.relative_to(self.out)))
        self.copied += tokens
        return tokens
