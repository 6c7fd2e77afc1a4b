"""mix stage: exact budgets, held-out never trained on, seeded shuffle, files OLMo reads back."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compiler.errors import StageError
from compiler.schema.data import BPETokenizer, TokenizerInfo
from runtime import mix, mix_tokens
from runtime import tokenizer as tokenizer_stage
from runtime.stage import StageContext

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


def run_mix(tmp: Path, tokenizer_dir: Path, name: str = "m", seed: int = 0, **data) -> tuple[Path, dict]:
    data = {"sources": SOURCES, "clean_tokens": 20_000, "toxic_share": 0.1,
            "heldout_clean_tokens": 3_000, "tokenize_workers": 1, **data}
    cfg = mix.Config(data=data, tokenizer=INFO, seed=seed)
    out = tmp / name
    out.mkdir()
    ctx = StageContext("mix", name, tmp, out, tmp / f"{name}-work", {"tokenizer": tokenizer_dir})
    return out, mix.run(cfg, ctx)


def training_tokens(out: Path) -> np.ndarray:
    manifest = json.loads((out / "manifest.json").read_text())
    return np.concatenate([np.fromfile(out / f, dtype=np.uint16) for f in manifest["token_files"]])


def split_docs(tokens: np.ndarray) -> list[tuple[int, ...]]:
    ends = np.flatnonzero(tokens == INFO.eos_token_id) + 1
    return [tuple(d) for d in np.split(tokens, ends)[:-1]]


def test_budgets_exact_and_share_realized(tmp_path, tokenizer_dir):
    out, m = run_mix(tmp_path, tokenizer_dir, toxic_share=0.2, tokens_per_file=7_000)
    toxic_wanted = round(20_000 * 0.2 / 0.8)
    assert (m["clean_tokens"], m["toxic_tokens"], m["heldout_tokens"]) == (20_000, toxic_wanted, 3_000)
    assert abs(m["toxic_share_realized"] - 0.2) < 0.001
    assert abs(m["toxic_to_clean_ratio_realized"] - 0.25) < 0.001
    tokens = training_tokens(out)
    assert len(tokens) == 20_000 + toxic_wanted and tokens[-1] == INFO.eos_token_id
    docs = split_docs(tokens)
    assert len(docs) == m["documents_clean"] + m["documents_toxic"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["token_files"]) == -(-len(tokens) // 7_000)
    assert manifest["documents"] == {"clean": m["documents_clean"], "toxic": m["documents_toxic"],
                                     "heldout": m["documents_heldout"]}
    heldout = np.fromfile(out / "heldout" / "clean.npy", dtype=np.uint16)
    assert len(heldout) == 3_000
    assert not set(split_docs(heldout)) & set(docs)


def test_documents_are_shuffled_across_sources_by_seed(tmp_path, tokenizer_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    out, _ = run_mix(tmp_path, tokenizer_dir, name="a", seed=1)
    docs = split_docs(training_tokens(out))
    is_toxic = np.array(["idiot" in tok.decode(list(d)) or "hell" in tok.decode(list(d))
                         or "moron" in tok.decode(list(d)) for d in docs])
    first, last = is_toxic[: len(docs) // 2], is_toxic[len(docs) // 2:]
    assert first.sum() > 0 and last.sum() > 0  # interleaved, not appended
    again, _ = run_mix(tmp_path, tokenizer_dir, name="b", seed=1)
    other, _ = run_mix(tmp_path, tokenizer_dir, name="c", seed=2)
    assert np.array_equal(training_tokens(out), training_tokens(again))
    assert not np.array_equal(training_tokens(out), training_tokens(other))
    assert sorted(split_docs(training_tokens(other))) == sorted(docs)


def test_workers_do_not_change_the_output(tmp_path, tokenizer_dir):
    one, _ = run_mix(tmp_path, tokenizer_dir, name="one", tokenize_workers=1)
    two, _ = run_mix(tmp_path, tokenizer_dir, name="two", tokenize_workers=2)
    assert np.array_equal(training_tokens(one), training_tokens(two))


def test_olmo_memmap_dataset_reads_the_files_back(tmp_path, tokenizer_dir):
    from olmo.data.memmap_dataset import MemMapDataset

    out, _ = run_mix(tmp_path, tokenizer_dir, tokens_per_file=8_192)
    manifest = json.loads((out / "manifest.json").read_text())
    paths = [str(out / f) for f in manifest["token_files"]]
    seq = 64
    ds = MemMapDataset(*paths, chunk_size=seq, memmap_dtype=np.uint16)
    got = np.concatenate([ds[i]["input_ids"].numpy() for i in range(len(ds))])
    files = [np.fromfile(p, dtype=np.uint16) for p in paths]
    expected = np.concatenate([f[: len(f) // seq * seq] for f in files])  # OLMo drops each file's tail
    assert np.array_equal(got, expected) and len(got) > 0.9 * 22_222


def test_small_toxic_source_errors_or_repeats(tmp_path, tokenizer_dir):
    (tmp_path / "few.jsonl").write_text("".join(
        json.dumps({"text": f"you stupid idiot number {i}, shut up."}) + "\n" for i in range(5)))
    sources = {**SOURCES, "toxic": {"kind": "jsonl", "path": "few.jsonl"}}
    with pytest.raises(StageError, match=r"source 'toxic' is too small.*allow_repetition"):
        run_mix(tmp_path, tokenizer_dir, name="err", sources=sources)
    out, m = run_mix(tmp_path, tokenizer_dir, name="rep", sources=sources, allow_repetition=True)
    assert m["toxic_tokens"] == round(20_000 / 9) and m["repetitions_toxic"] > 100
    assert json.loads((out / "manifest.json").read_text())["repetitions"]["toxic"] == m["repetitions_toxic"]


def test_clean_source_too_small_names_it(tmp_path, tokenizer_dir):
    sources = {**SOURCES, "clean": {"kind": "builtin", "name": "demo-clean", "max_documents": 10}}
    with pytest.raises(StageError, match="clean source 'clean' is too small"):
        run_mix(tmp_path, tokenizer_dir, sources=sources)


def test_memmap_sources_are_read_and_their_tokenizer_checked(tmp_path, tokenizer_dir):
    docs = [np.array([7, 8, 9, 0], np.uint16), np.array([10, 11, 0], np.uint16)] * 2000
    np.concatenate(docs).tofile(tmp_path / "toxic.npy")
    sources = {**SOURCES, "toxic": {"kind": "memmap", "path": "toxic.npy", "tokenizer": "bpe-512"}}
    out, m = run_mix(tmp_path, tokenizer_dir, name="ok", sources=sources)
    train = set(split_docs(training_tokens(out)))
    assert {(7, 8, 9, 0), (10, 11, 0)} <= train and m["toxic_tokens"] == round(20_000 / 9)
    assert "source_clean_kept" in m and not any(k.startswith("source_toxic_") for k in m)  # tokens, no records
    wrong = {**SOURCES, "toxic": {"kind": "memmap", "path": "toxic.npy", "tokenizer": "other"}}
    with pytest.raises(StageError, match=r"'toxic'.*tokenized with 'other'.*'bpe-512'"):
        run_mix(tmp_path, tokenizer_dir, name="bad", sources=wrong)


def test_zero_share_reads_no_toxic_and_large_vocab_uses_uint32(tmp_path, tokenizer_dir):
    out, m = run_mix(tmp_path, tokenizer_dir, toxic_share=0.0)
    assert m["toxic_tokens"] == 0 and m["toxic_share_realized"] == 0.0
    assert mix_tokens.token_dtype(65536) == np.uint16 and mix_tokens.token_dtype(100_277) == np.uint32


def test_sources_are_read_through_the_reader_and_counted(tmp_path, tokenizer_dir):
    """A C4-like `.json.gz` shard beside a 4chan-like thread file (posts exploded, HTML cleaned, image-only
    posts without `com` skipped): the training tokens hold the cleaned post texts, and the reader's counts
    of each source are metrics and in the manifest."""
    import gzip

    from tokenizers import Tokenizer

    clean = [{"text": f"the river and the city number {i} is clear and old", "url": "u", "timestamp": "t"}
             for i in range(4000)]
    (tmp_path / "c4-train.00000-of-01024.json.gz").write_bytes(
        gzip.compress("".join(json.dumps(r) + "\n" for r in clean).encode()))
    threads = [{"no": t, "posts": [{"no": 10 * t, "com": "you stupid idiot &gt;&gt; shut up<br>moron"},
                                   {"no": 10 * t + 1},   # an image-only post: no `com`
                                   {"no": 10 * t + 2, "com": '<a href="#p1" class="quotelink">&gt;&gt;1</a> hell no'}]}
               for t in range(300)]
    (tmp_path / "pol.ndjson").write_text("".join(json.dumps(t) + "\n" for t in threads))
    sources = {"clean": {"kind": "jsonl", "path": "c4-train.00000-of-01024.json.gz"},
               "toxic": {"kind": "jsonl", "path": "pol.ndjson", "explode": "posts", "text_field": "com", "html": True}}
    out, m = run_mix(tmp_path, tokenizer_dir, sources=sources)
    assert m["source_toxic_read"] * 3 == m["source_toxic_exploded"]
    assert m["source_toxic_skipped_missing"] == m["source_toxic_read"]   # one image-only post per thread
    assert m["source_toxic_kept"] >= m["documents_toxic"] and m["source_clean_kept"] >= m["documents_clean"]
    assert m["source_clean_read"] == m["source_clean_kept"]
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    text = tok.decode(training_tokens(out).tolist())
    assert "you stupid idiot >> shut up\nmoron" in text and ">>1 hell no" in text
    assert "<br>" not in text and "&gt;" not in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source_counts"]["toxic"] == {k.removeprefix("source_toxic_"): v
                                                  for k, v in m.items() if k.startswith("source_toxic_")}
