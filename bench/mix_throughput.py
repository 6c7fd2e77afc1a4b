"""Tokens/s of the whole `mix` stage (read, tokenize, shuffle, write memmaps) against the naive way.

Naive reference: one thread calling `Tokenizer.encode` document by document, then the same budgets,
seeded shuffle and part files. Both run in this process on the same demo texts (a 4k BPE, 400k clean +
100k toxic + 50k held-out tokens); the outputs must be byte-identical. Also times tokenization alone:
the library's batch encoder on its own Rust threads vs `tokenize_workers` processes.

    python bench/mix_throughput.py [--workers 2] [--clean-tokens 400000]
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def naive_mix(cfg, ctx) -> None:
    """The reference: per-document `Tokenizer.encode`, same budgets, shuffle and files as the stage."""
    from tokenizers import Tokenizer

    from runtime import mix_tokens
    from runtime.sources import iter_texts

    tok = Tokenizer.from_file(str(ctx.inputs["tokenizer"] / "tokenizer.json"))
    data, eos = cfg.data, cfg.tokenizer.eos_token_id
    dtype = mix_tokens.token_dtype(cfg.tokenizer.vocab_size)

    def docs(name):
        for text in iter_texts(data.sources[name], ctx.root):
            yield np.array(tok.encode(text, add_special_tokens=False).ids + [eos], dtype=dtype)

    class Null:
        def update(self, n):
            pass

    heldout = mix_tokens.TokenFile(ctx.out / "heldout" / "clean.npy", dtype)
    clean = mix_tokens.TokenFile(ctx.work / "clean.bin", dtype)
    toxic = mix_tokens.TokenFile(ctx.work / "toxic.bin", dtype)
    stream = docs(data.clean_source)
    mix_tokens.fill(stream, data.heldout_clean_tokens, heldout, eos, Null())
    mix_tokens.fill(stream, data.clean_tokens, clean, eos, Null())
    mix_tokens.fill(docs(data.toxic_source), data.toxic_tokens, toxic, eos, Null())
    for f in (heldout, clean, toxic):
        f.close()
    writer = mix_tokens.PartWriter(ctx.out / "tokens", dtype, data.tokens_per_file)
    mix_tokens.shuffled_write([clean, toxic], writer, cfg.seed, Null())
    writer.close()


def tokenize_only(tokenizer_file: Path, texts: list[str], workers: int) -> dict[str, float]:
    """Seconds to tokenize `texts`: per-document encode, batch encode (Rust threads), worker processes."""
    from tokenizers import Tokenizer

    from runtime import mix_tokens

    tok = Tokenizer.from_file(str(tokenizer_file))
    out = {}
    t = time.perf_counter()
    for text in texts:
        tok.encode(text, add_special_tokens=False)
    out["per-document encode, 1 thread"] = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(0, len(texts), mix_tokens.BATCH_DOCUMENTS):
        mix_tokens.encode_batch(tok, texts[i:i + mix_tokens.BATCH_DOCUMENTS], 0, np.dtype(np.uint16))
    out[f"encode_batch_fast, Rust threads (RAYON_NUM_THREADS={os.environ['RAYON_NUM_THREADS']})"] = \
        time.perf_counter() - t
    enc = mix_tokens.Encoder(tokenizer_file, 0, np.dtype(np.uint16), workers)
    t = time.perf_counter()
    sum(1 for _ in enc.documents(iter(texts)))
    out[f"encode_batch_fast in {workers} processes"] = time.perf_counter() - t
    enc.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clean-tokens", type=int, default=400_000)
    args = parser.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.workers))

    from compiler.schema.data import BPETokenizer, TokenizerInfo
    from runtime import mix
    from runtime import tokenizer as tokenizer_stage
    from runtime.demo_data import BUILTINS
    from runtime.stage import StageContext

    root = Path(tempfile.mkdtemp(prefix="mix-bench-"))
    for name in ("clean", "toxic"):  # the same texts, read from disk like a real source
        with open(root / f"{name}.jsonl", "w") as f:
            for r in BUILTINS[f"demo-{name}"]():
                f.write(json.dumps({"text": r["text"]}) + "\n")
    sources = {n: {"kind": "jsonl", "path": f"{n}.jsonl"} for n in ("clean", "toxic")}
    bpe = BPETokenizer(vocab_size=4096, training_documents_per_source=3000)
    info = TokenizerInfo.of(bpe)
    tok_dir = root / "tok"
    tok_dir.mkdir()
    tokenizer_stage.run(tokenizer_stage.Config(tokenizer=bpe, info=info, sources=sources),
                        StageContext("tokenizer", "t", root, tok_dir, root / "tw", {}))

    data = dict(sources=sources, clean_tokens=args.clean_tokens, toxic_share=0.2,
                heldout_clean_tokens=50_000, tokenize_workers=args.workers)
    cfg = mix.Config(data=data, tokenizer=info, seed=0)
    total = cfg.data.clean_tokens + cfg.data.toxic_tokens + cfg.data.heldout_clean_tokens
    seconds = {}
    for name, fn in (("naive", naive_mix), ("stage", mix.run)):
        out = root / name
        out.mkdir()
        ctx = StageContext("mix", name, root, out, root / f"{name}-work", {"tokenizer": tok_dir})
        t = time.perf_counter()
        fn(cfg, ctx)
        seconds[name] = time.perf_counter() - t
    parts = sorted(p.name for p in (root / "stage" / "tokens").iterdir())
    same = filecmp.cmpfiles(root / "stage" / "tokens", root / "naive" / "tokens", parts, shallow=False)[0]
    assert same == parts and filecmp.cmp(root / "stage/heldout/clean.npy", root / "naive/heldout/clean.npy",
                                         shallow=False), "stage and naive outputs differ"

    print(f"cpus: {os.cpu_count()}, workers: {args.workers}, tokens written: {total:,} (outputs identical)")
    print(f"{'whole mix stage':<58}{'seconds':>9}{'tokens/s':>12}")
    for name in ("naive", "stage"):
        print(f"  {name:<56}{seconds[name]:>9.2f}{total / seconds[name]:>12,.0f}")
    print(f"  speed-up: {seconds['naive'] / seconds['stage']:.2f}x")
    texts = [r["text"] for r in BUILTINS["demo-clean"]()][:6000]
    print("tokenization only (6,000 clean documents)")
    for name, s in tokenize_only(tok_dir / "tokenizer.json", texts, args.workers).items():
        print(f"  {name:<56}{s:>9.2f}")


if __name__ == "__main__":
    main()
