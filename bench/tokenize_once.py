"""Tokenization work and token-file disk of a toxic-share sweep: today's per-mix path against tokenize once.

Per-mix (mix VERSION 2): every mix tokenized its own sources up to its own budgets and wrote all of its
tokens. It is emulated with the same code as the new path, so the comparison is fair: one `tokenize` stage
run per mix, sized to that mix's own budgets (same encoder, same workers), and the old mix's files counted
as held-out + clean + toxic tokens. Tokenize once: one `tokenize` run per source sized for the whole sweep
(`compiler.stages.tokenize.fills`), then one `mix` selection per share over the shared shards. Both sweeps
run in this process on the demo texts (a 4k BPE); the mixes of both paths must hold the same documents.

Then the paper grid (specs/bad_data_good_models.yaml), from its plan alone: tokens tokenized and token-file
bytes per-mix (one mix per share and seed, as mix VERSION 2's ids had the seed) against the plan's
tokenize and mix instances (`compiler.preflight.estimates`).

    python bench/tokenize_once.py [--workers 2] [--clean-tokens 400000] [--shares 0.05 0.1 0.25]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"clean": {"kind": "builtin", "name": "demo-clean"}, "toxic": {"kind": "builtin", "name": "demo-toxic"}}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.npy") if p.is_file())


def run_tokenize(root: Path, name: str, source, info, fills, tokens_per_file: int, workers: int) -> dict:
    from runtime import tokenize
    from runtime.stage import StageContext

    out = root / "results" / "tokenize" / name
    out.mkdir(parents=True)
    cfg = tokenize.Config(source=source, tokenizer=info, fills=fills, tokens_per_file=tokens_per_file,
                          tokenize_workers=workers)
    ctx = StageContext("tokenize", name, root, out, root / "results" / ".work" / name,
                       {"tokenizer": root / "results" / "tokenizer" / "t"})
    return tokenize.run(cfg, ctx)


def run_mix(root: Path, name: str, data, info, inputs: dict[str, str]) -> dict:
    from runtime import mix
    from runtime.stage import StageContext

    out = root / "results" / "mix" / name
    out.mkdir(parents=True)
    ctx = StageContext("mix", name, root, out, root / "results" / ".work" / name,
                       {role: root / "results" / "tokenize" / i for role, i in inputs.items()})
    return mix.run(mix.Config(data=data, tokenizer=info), ctx)


def per_mix(root: Path, sections, info, args) -> dict[str, float]:
    """Each mix tokenizes its own sources up to its own budgets (mix VERSION 2's work)."""
    from compiler.stages.tokenize import fills as tokenize_fills

    tokens = seconds = disk = 0.0
    for i, data in enumerate(sections):
        own = tokenize_fills([data])
        for (role, *_), fills in own.items():
            source = data.sources[data.clean_source if role == "clean" else data.toxic_source]
            started = time.perf_counter()
            m = run_tokenize(root, f"{role}-{i}", source, info, fills, args.tokens_per_file, args.workers)
            seconds += time.perf_counter() - started
            tokens += m["tokens"]
        disk += 2 * (data.heldout_clean_tokens + data.clean_tokens + data.toxic_tokens)   # every token written
    return {"tokens": tokens, "seconds": seconds, "disk": disk}


def once(root: Path, sections, info, args) -> dict[str, float]:
    """Tokenize each source once for the sweep, then select each mix."""
    from compiler.stages.tokenize import fills as tokenize_fills

    tokens = seconds = 0.0
    names = {}
    started = time.perf_counter()
    for (role, *_), fills in tokenize_fills(sections).items():
        data = sections[-1]
        source = data.sources[data.clean_source if role == "clean" else data.toxic_source]
        m = run_tokenize(root, role, source, info, fills, args.tokens_per_file, args.workers)
        tokens += m["tokens"]
        names[role] = role
    tokenize_seconds = time.perf_counter() - started
    for i, data in enumerate(sections):
        run_mix(root, f"mix-{i}", data, info, {r: n for r, n in names.items() if r == "clean" or data.toxic_tokens})
    seconds = time.perf_counter() - started
    disk = folder_bytes(root / "results" / "tokenize") + folder_bytes(root / "results" / "mix")
    return {"tokens": tokens, "seconds": seconds, "disk": disk, "tokenize_seconds": tokenize_seconds,
            "mix_seconds": seconds - tokenize_seconds}


def same_documents(root: Path, sections) -> bool:
    """The per-mix path's own stores, cut by the same rule, hold each once-path mix's documents."""
    from runtime.mix_tokens import take
    from runtime.token_shards import ShardStore

    for i, data in enumerate(sections):
        manifest = json.loads((root / "once/results/mix" / f"mix-{i}/manifest.json").read_text())
        mix_dir = root / "once/results/mix" / f"mix-{i}"
        got = np.concatenate([np.fromfile(mix_dir / f, dtype=np.uint16) for f in manifest["token_files"]])
        clean = ShardStore.open(root / "per_mix/results/tokenize" / f"clean-{i}")
        held = take(clean.doc_ends, 0, data.heldout_clean_tokens)
        train = take(clean.doc_ends, held.next, data.clean_tokens)
        want = [_tokens(clean, train)]
        if data.toxic_tokens:
            toxic = ShardStore.open(root / "per_mix/results/tokenize" / f"toxic-{i}")
            want.append(_tokens(toxic, take(toxic.doc_ends, 0, data.toxic_tokens)))
        if not np.array_equal(got, np.concatenate(want)):
            return False
    return True


def _tokens(store, cut) -> np.ndarray:
    whole = np.concatenate([np.fromfile(p, dtype=store.dtype) for p in store.shards])
    head = whole[store.doc_start(cut.stop):store.doc_start(cut.stop) + cut.partial - 1] if cut.partial else []
    tail = [*head, store.eos] if cut.partial else []
    return np.concatenate([whole[store.doc_start(cut.first):store.doc_start(cut.stop)], np.array(tail, store.dtype)])


def paper_grid() -> dict[str, float]:
    """Tokens tokenized and token-file bytes of the paper grid: per-mix (12 mixes) vs its plan."""
    from compiler.plan import build_plan
    from compiler.preflight.estimates import estimate
    from compiler.validate import load_spec

    runs = load_spec(ROOT / "specs" / "bad_data_good_models.yaml")
    plan = build_plan("paper", runs)
    mixes = {(spec.data.toxic_share, spec.seed): spec.data for _, spec in runs}
    old_tokens = sum(d.heldout_clean_tokens + d.clean_tokens + d.toxic_tokens for d in mixes.values())
    instances = plan.instances.values()
    tokenize = [i for i in instances if i.kind == "tokenize"]
    new_tokens = sum(sum(i.config.fills) if i.config.fills else i.config.source.declared_tokens for i in tokenize)
    new_disk = sum(estimate(i, plan.instances).disk_bytes for i in instances if i.kind in ("tokenize", "mix"))
    return {"mixes_per_mix": len(mixes), "tokenize_instances": len(tokenize),
            "mix_instances": sum(i.kind == "mix" for i in instances),
            "tokens_per_mix": old_tokens, "tokens_once": new_tokens,
            "disk_per_mix": 2 * old_tokens, "disk_once": new_disk}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clean-tokens", type=int, default=400_000)
    parser.add_argument("--heldout-tokens", type=int, default=50_000)
    parser.add_argument("--tokens-per-file", type=int, default=65_536)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.05, 0.1, 0.25])
    args = parser.parse_args()

    from compiler.schema.data import BPETokenizer, DataSection, TokenizerInfo
    from runtime import tokenizer as tokenizer_stage
    from runtime.stage import StageContext

    bpe = BPETokenizer(vocab_size=4096)
    info = TokenizerInfo.of(bpe)
    sections = [DataSection(sources=SOURCES, clean_tokens=args.clean_tokens, heldout_clean_tokens=args.heldout_tokens,
                            toxic_share=share, tokens_per_file=args.tokens_per_file, tokenize_workers=args.workers)
                for share in args.shares]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tok_dir = tmp / "tok"
        tok_dir.mkdir()
        tokenizer_stage.run(tokenizer_stage.Config(tokenizer=bpe, info=info, sources=SOURCES),
                            StageContext("tokenizer", "t", tmp, tok_dir, tmp / "tok-work", {}))
        results = {}
        for name, path in (("per_mix", per_mix), ("once", once)):
            root = tmp / name
            (root / "results" / "tokenizer").mkdir(parents=True)
            (root / "results" / "tokenizer" / "t").symlink_to(tok_dir)
            results[name] = path(root, sections, info, args)
        identical = same_documents(tmp, sections)
    old, new = results["per_mix"], results["once"]
    print(f"sweep: shares {args.shares}, {args.clean_tokens:,} clean + {args.heldout_tokens:,} held-out tokens, "
          f"{args.tokens_per_file:,} tokens a shard, {args.workers} workers; mixes hold the same documents: {identical}")
    print(f"  tokens tokenized   per-mix {old['tokens']:>12,.0f}   once {new['tokens']:>12,.0f}   "
          f"{old['tokens'] / new['tokens']:.2f}x less")
    print(f"  wall seconds       per-mix {old['seconds']:>12.2f}   once {new['seconds']:>12.2f}   "
          f"{old['seconds'] / new['seconds']:.2f}x less (tokenize {new['tokenize_seconds']:.2f} s + "
          f"{len(sections)} mixes {new['mix_seconds']:.2f} s)")
    print(f"  token-file bytes   per-mix {old['disk']:>12,.0f}   once {new['disk']:>12,.0f}   "
          f"{old['disk'] / new['disk']:.2f}x less")
    grid = paper_grid()
    print(f"paper grid: {grid['mixes_per_mix']} per-mix mixes -> {grid['tokenize_instances']} tokenize + "
          f"{grid['mix_instances']} mix instances")
    print(f"  tokens tokenized   per-mix {grid['tokens_per_mix'] / 1e9:>8.1f} B   once {grid['tokens_once'] / 1e9:>8.1f} B   "
          f"{grid['tokens_per_mix'] / grid['tokens_once']:.1f}x less")
    print(f"  token-file bytes   per-mix {grid['disk_per_mix'] / 1e9:>8.1f} GB   once {grid['disk_once'] / 1e9:>8.1f} GB   "
          f"{grid['disk_per_mix'] / grid['disk_once']:.1f}x less (estimate: mixes copy at most one shard at a cut)")


if __name__ == "__main__":
    main()
