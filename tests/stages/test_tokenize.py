"""tokenize stage: documents round-trip to the tokenizer's ids, it reads exactly as far as the fills need,
a run killed or stopped mid-way resumes to byte-identical shards, damaged shards are named; the paper plan
tokenizes C4 once."""
from __future__ import annotations

import json
import os
import signal
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter

from compiler.errors import StageError
from compiler.schema.data import BPETokenizer, TokenizerInfo
from compiler.schema.sources import TextSourceSpec
from runtime import tokenize
from runtime import tokenizer as tokenizer_stage
from runtime.mix_tokens import FillProgress, take
from runtime.preempt import Preempted
from runtime.stage import StageContext
from runtime.token_shards import ShardStore

ROOT = Path(__file__).resolve().parents[2]
BPE = BPETokenizer(vocab_size=512, training_documents_per_source=300)
INFO = TokenizerInfo.of(BPE)
SOURCES = {"clean": {"kind": "builtin", "name": "demo-clean"},
           "toxic": {"kind": "builtin", "name": "demo-toxic"}}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tok")
    cfg = tokenizer_stage.Config(tokenizer=BPE, info=INFO, sources=SOURCES)
    tokenizer_stage.run(cfg, StageContext("tokenizer", "t", root, root, root / "w", {}))
    return root


def run_tokenize(root: Path, tokenizer_dir: Path, source: dict[str, Any], fills: list[int] | None, *,
                 name: str = "tokenize-a", tokens_per_file: int = 4096, workers: int = 1) -> tuple[Path, dict]:
    """One tokenize run in the published layout (`results/tokenize/<name>`), its work folder kept."""
    cfg = tokenize.Config(source=source, tokenizer=INFO, fills=fills, tokens_per_file=tokens_per_file,
                          tokenize_workers=workers)
    out = root / "results" / "tokenize" / name
    out.mkdir(parents=True, exist_ok=True)
    ctx = StageContext("tokenize", name, root, out, root / "results" / ".work" / "tokenize" / name,
                       {"tokenizer": tokenizer_dir})
    return out, tokenize.run(cfg, ctx)


def documents(out: Path) -> list[list[int]]:
    """Every document of a shard store, in order, cut by its index."""
    store = ShardStore.open(out)
    tokens = np.concatenate([np.fromfile(p, dtype=store.dtype) for p in store.shards])
    return [d.tolist() for d in np.split(tokens, store.doc_ends[:-1])]


def encoded(tokenizer_dir: Path, source: dict[str, Any], root: Path, n: int) -> list[list[int]]:
    """The first `n` texts of a source encoded one by one with the tokenizer, EOS appended: the reference."""
    from tokenizers import Tokenizer

    from runtime.sources import iter_texts

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    spec = TypeAdapter(TextSourceSpec).validate_python(source)
    return [tok.encode(t, add_special_tokens=False).ids + [INFO.eos_token_id]
            for t in islice(iter_texts(spec, root), n)]


def test_documents_round_trip_and_reading_stops_where_the_fills_end(tmp_path, tokenizer_dir):
    fills = [3_000, 20_000]
    out, m = run_tokenize(tmp_path, tokenizer_dir, SOURCES["clean"], fills)
    docs = documents(out)
    assert docs == encoded(tokenizer_dir, SOURCES["clean"], tmp_path, len(docs))
    store = ShardStore.open(out)
    heldout = take(store.doc_ends, 0, fills[0])
    training = take(store.doc_ends, heldout.next, fills[1])
    assert not heldout.missing and not training.missing and training.next == len(docs)  # not one document more
    manifest = json.loads((out / "manifest.json").read_text())
    assert (m["tokens"], m["documents"], m["exhausted"]) == (manifest["tokens"], len(docs), False)
    assert manifest["source_counts"]["kept"] == len(docs) == m["source_tokenize_kept"]
    # a document that ends a fill is a shard of its own: the cuts fall between shards
    ends = [int(e) for e in store.shard_ends]
    forced = {store.doc_start(d) for cut in (heldout, training) for d in (cut.stop, cut.stop + 1)}
    assert forced <= set(ends) | {0}
    assert all(s["tokens"] >= 4096 for s, end in zip(manifest["shards"], ends[:-1]) if end not in forced)


def test_workers_and_whole_source_runs(tmp_path, tokenizer_dir):
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps({"text": f"you stupid idiot number {i}, shut up."}) + "\n" for i in range(300)))
    source = {"kind": "jsonl", "path": "few.jsonl"}
    one, m = run_tokenize(tmp_path, tokenizer_dir, source, None, name="one", tokens_per_file=1000)
    two, _ = run_tokenize(tmp_path, tokenizer_dir, source, [10**9], name="two", tokens_per_file=1000, workers=2)
    assert m["exhausted"] and m["documents"] == 300 and m["source_tokenize_read"] == 300
    assert documents(one) == documents(two) == encoded(tokenizer_dir, source, tmp_path, 300)


def _interrupted(monkeypatch, after: int, how: str) -> None:
    """Make the next tokenize run fail (`crash`) or be asked to stop (`sigterm`) after `after` documents."""
    real = tokenize._documents

    def documents_then(*args, **kwargs):
        for i, doc in enumerate(real(*args, **kwargs)):
            if i == after:
                if how == "crash":
                    raise RuntimeError("killed")
                os.kill(os.getpid(), signal.SIGTERM)
            yield doc

    monkeypatch.setattr(tokenize, "_documents", documents_then)


def test_a_run_killed_then_stopped_resumes_to_byte_identical_shards(tmp_path, tokenizer_dir, monkeypatch, capfd):
    fills = [3_000, 40_000]
    whole, _ = run_tokenize(tmp_path / "a", tokenizer_dir, SOURCES["clean"], fills, tokens_per_file=2048)
    root = tmp_path / "b"
    _interrupted(monkeypatch, 100, "crash")
    with pytest.raises(RuntimeError, match="killed"):
        run_tokenize(root, tokenizer_dir, SOURCES["clean"], fills, tokens_per_file=2048)
    work = root / "results" / ".work" / "tokenize" / "tokenize-a"
    progress = json.loads((work / "progress.json").read_text())
    assert progress["shards"] and progress["open"] is None
    with open(work / "shards" / f"shard-{len(progress['shards']):05d}.npy", "ab") as f:
        f.write(b"\x07\x00" * 5)   # written after the last record, then killed: dropped on resume
    monkeypatch.undo()
    _interrupted(monkeypatch, 60, "sigterm")   # counted from the resumed run's first document
    with pytest.raises(Preempted):
        run_tokenize(root, tokenizer_dir, SOURCES["clean"], fills, tokens_per_file=2048)
    opened = json.loads((work / "progress.json").read_text())["open"]
    assert opened is not None                   # the open shard was saved as it stood
    with open(work / "shards" / opened["file"], "ab") as f:
        f.write(b"\x07\x00" * 5)               # and again bytes after that record
    monkeypatch.undo()
    out, m = run_tokenize(root, tokenizer_dir, SOURCES["clean"], fills, tokens_per_file=2048)
    assert "tokenize: resumed from" in capfd.readouterr().err and m["resumed_shards"] > 0
    assert m["tokens_tokenized"] < m["tokens"]
    names = sorted(p.name for p in (whole / "shards").iterdir())
    assert names == sorted(p.name for p in (out / "shards").iterdir())
    for name in names:
        assert (whole / "shards" / name).read_bytes() == (out / "shards" / name).read_bytes(), name
    assert np.array_equal(np.load(whole / "index.npy"), np.load(out / "index.npy"))
    assert json.loads((whole / "manifest.json").read_text()) == json.loads((out / "manifest.json").read_text())


def test_a_damaged_store_is_a_stage_error_naming_the_file(tmp_path, tokenizer_dir):
    out, _ = run_tokenize(tmp_path, tokenizer_dir, SOURCES["toxic"], [5_000], tokens_per_file=1024)
    ShardStore.open(out)
    shard = out / "shards" / "shard-00001.npy"
    good = shard.read_bytes()
    shard.write_bytes(good[:len(good) // 2])
    with pytest.raises(StageError, match=rf"{shard}.*truncated or corrupt.*delete {out} and rerun"):
        ShardStore.open(out)
    shard.write_bytes(good[:-2] + b"\x05\x00")   # same size, last EOS overwritten
    with pytest.raises(StageError, match=rf"{shard}.*EOS"):
        ShardStore.open(out)
    shard.write_bytes(good)
    index = out / "index.npy"
    index.write_bytes(index.read_bytes()[:40])
    with pytest.raises(StageError, match=rf"{index}.*truncated or corrupt"):
        ShardStore.open(out)
    (out / "manifest.json").write_text("{")
    with pytest.raises(StageError, match=rf"{out / 'manifest.json'}.*not JSON"):
        ShardStore.open(out)


def test_memmap_sources_are_resharded_and_their_tokenizer_checked(tmp_path, tokenizer_dir):
    docs = [[7, 8, 9, 0], [10, 11, 0]] * 500
    np.array([t for d in docs for t in d], np.uint16).tofile(tmp_path / "toxic.npy")
    source = {"kind": "memmap", "path": "toxic.npy", "tokenizer": "bpe-512"}
    out, m = run_tokenize(tmp_path, tokenizer_dir, source, [1_000], tokens_per_file=256)
    assert documents(out) == docs[:m["documents"]] and not any(k.startswith("source_") for k in m)
    with pytest.raises(StageError, match=r"'toxic.npy'.*tokenized with 'other'.*'bpe-512'"):
        run_tokenize(tmp_path, tokenizer_dir, {**source, "tokenizer": "other"}, [1_000], name="bad")


def test_fill_progress_stops_where_take_ends_the_last_fill():
    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(1, 40, 300)
        fills = [int(f) for f in rng.integers(1, 1500, rng.integers(1, 4))]
        progress, fed = FillProgress(fills), 0
        while not progress.done and fed < len(lengths):
            progress.feed(int(lengths[fed]))
            fed += 1
        ends, first, missing = np.cumsum(lengths), 0, 0
        for budget in fills:
            cut = take(ends, first, budget)
            first, missing = cut.next, cut.missing
        assert (fed, progress.done) == ((first, True) if not missing else (len(lengths), False))


def test_the_paper_plan_tokenizes_c4_once():
    from compiler.plan import build_plan
    from compiler.validate import load_spec

    runs = load_spec(ROOT / "specs" / "bad_data_good_models.yaml")
    plan = build_plan("paper", runs)
    tokenizes = [i for i in plan.instances.values() if i.kind == "tokenize"]
    c4 = [i for i in tokenizes if getattr(i.config.source, "name", None) == "allenai/c4"]
    assert len(c4) == 1 and len(tokenizes) == 2
    shares = {spec.data.toxic_share for _, spec in runs}
    mixes = [i for i in plan.instances.values() if i.kind == "mix"]
    assert len(mixes) == len(shares) and all(m.inputs["clean"] == c4[0].id for m in mixes)
    assert all(rp.roles["tokenize/clean"] == c4[0].id for rp in plan.runs)
    data = runs[0][1].data
    assert c4[0].config.fills == [data.heldout_clean_tokens, data.clean_tokens]
    toxic = next(i for i in tokenizes if i is not c4[0])
    assert toxic.config.fills is None   # 4chan declares fewer tokens than the 25 % share needs: read it whole
