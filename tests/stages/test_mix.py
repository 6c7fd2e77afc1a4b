"""mix stage: a selection over shared token shards that takes exactly the documents and cuts of the
per-mix rule (held-out first, then training clean, toxic with repetition), copies only what it cuts,
and gives files that OLMo and the pretrain stage read."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from compiler.errors import StageError
from compiler.stages.tokenize import fills as tokenize_fills
from compiler.schema.data import DataSection
from runtime import mix
from runtime.mix_tokens import token_dtype
from runtime.stage import StageContext
from test_tokenize import INFO, SOURCES, encoded, run_tokenize, tokenizer_dir  # noqa: F401 (fixture)

EOS = INFO.eos_token_id


def data_section(**data: Any) -> DataSection:
    return DataSection(**{"sources": SOURCES, "clean_tokens": 20_000, "toxic_share": 0.1,
                          "heldout_clean_tokens": 3_000, "tokenize_workers": 1, "tokens_per_file": 2048, **data})


def run_sweep(root: Path, tokenizer_dir: Path, sections: list[DataSection]) -> list[tuple[Path, dict]]:
    """Tokenize each source once as the planner sizes it, then one mix per section (published layout)."""
    fills = tokenize_fills(sections)
    out = []
    for i, data in enumerate(sections):
        inputs = {}
        for role, name, budget in (("clean", data.clean_source, data.clean_tokens),
                                   ("toxic", data.toxic_source, data.toxic_tokens)):
            if budget:
                key = next(k for k in fills if k[0] == role and k[1] == data.sources[name].id_json())
                folder = root / "results" / "tokenize" / f"tokenize-{role}"
                if not (folder / "manifest.json").exists():
                    run_tokenize(root, tokenizer_dir, data.sources[name].model_dump(), fills[key],
                                 name=folder.name, tokens_per_file=data.tokens_per_file)
                inputs[role] = folder
        mix_dir = root / "results" / "mix" / f"mix-{i}"
        mix_dir.mkdir(parents=True)
        ctx = StageContext("mix", mix_dir.name, root, mix_dir, root / "results" / ".work" / "mix" / mix_dir.name, inputs)
        out.append((mix_dir, mix.run(mix.Config(data=data, tokenizer=INFO), ctx)))
    return out


def token_files(mix_dir: Path) -> list[Path]:
    return [mix_dir / f for f in json.loads((mix_dir / "manifest.json").read_text())["token_files"]]


def split(tokens: np.ndarray) -> list[list[int]]:
    ends = np.flatnonzero(tokens == EOS) + 1
    return [d.tolist() for d in np.split(tokens, ends)[:-1]]


def training_documents(mix_dir: Path) -> dict[str, list[list[int]]]:
    """The documents of a mix's training files, per source (a file is a shared shard of one source's
    tokenize folder, or a `tokens/<source>-XXXXX.npy` copy)."""
    out: dict[str, list[list[int]]] = {"clean": [], "toxic": []}
    for path in token_files(mix_dir):
        role = "clean" if "tokenize-clean" in str(path) or path.name.startswith("clean-") else "toxic"
        out[role] += split(np.fromfile(path, dtype=np.uint16))
    return out


def fill(docs: list[list[int]], start: int, budget: int) -> tuple[list[list[int]], int]:
    """The per-mix rule, written plainly: documents from `start` until exactly `budget` tokens, the last
    one cut and closed with EOS; returns them and the next document."""
    out, missing, i = [], budget, start
    while missing > 0 and i < len(docs):
        doc = docs[i] if len(docs[i]) <= missing else docs[i][:missing - 1] + [EOS]
        out.append(doc)
        missing -= len(doc)
        i += 1
    return out, i


def reference(clean: list[list[int]], toxic: list[list[int]], data: DataSection) -> dict[str, Any]:
    heldout, nxt = fill(clean, 0, data.heldout_clean_tokens)
    training, _ = fill(clean, nxt, data.clean_tokens)
    toxic_docs: list[list[int]] = []
    while sum(map(len, toxic_docs)) < data.toxic_tokens:
        toxic_docs += fill(toxic, 0, data.toxic_tokens - sum(map(len, toxic_docs)))[0]
    return {"heldout": heldout, "clean": training, "toxic": toxic_docs}


def test_a_share_sweep_selects_the_per_mix_documents_and_copies_only_its_cuts(tmp_path, tokenizer_dir):
    sections = [data_section(toxic_share=s) for s in (0.0, 0.1, 0.25)]
    mixes = run_sweep(tmp_path, tokenizer_dir, sections)
    clean = encoded(tokenizer_dir, SOURCES["clean"], tmp_path, 10**9)
    toxic = encoded(tokenizer_dir, SOURCES["toxic"], tmp_path, 10**9)
    for data, (mix_dir, m) in zip(sections, mixes):
        want = reference(clean, toxic, data)
        got = training_documents(mix_dir)
        assert got["clean"] == want["clean"] and got["toxic"] == want["toxic"]
        assert split(np.fromfile(mix_dir / "heldout" / "clean.npy", dtype=np.uint16)) == want["heldout"]
        assert (m["clean_tokens"], m["toxic_tokens"], m["heldout_tokens"]) == (
            data.clean_tokens, data.toxic_tokens, data.heldout_clean_tokens)
        assert abs(m["toxic_share_realized"] - data.toxic_share) < 0.001
        assert (m["documents_clean"], m["documents_toxic"], m["documents_heldout"]) == (
            len(want["clean"]), len(want["toxic"]), len(want["heldout"]))
        # shared shards listed by reference; the largest budgets' cuts fall between shards
        assert all(p.is_file() for p in token_files(mix_dir))
        shared = [p for p in token_files(mix_dir) if "tokenize-" in str(p)]
        assert shared and all(not p.resolve().is_relative_to(mix_dir.resolve()) for p in shared)
        copied = sum(p.stat().st_size // 2 for p in (mix_dir / "tokens").glob("*.npy"))
        assert copied == m["copied_tokens"] and m["copied_tokens"] + m["referenced_tokens"] == (
            m["clean_tokens"] + m["toxic_tokens"])
        if data.toxic_share in (0.0, 0.25):   # the plan's largest budgets: one cut document each is copied
            assert copied <= 2 * max(map(len, clean + toxic))
    assert mixes[0][1]["source_toxic_kept"] == 0 < mixes[1][1]["source_toxic_kept"]


def test_a_small_toxic_source_errors_or_repeats_by_reference(tmp_path, tokenizer_dir):
    for root in (tmp_path, tmp_path / "err", tmp_path / "rep"):
        root.mkdir(exist_ok=True)
        (root / "few.jsonl").write_text("".join(
            json.dumps({"text": f"you stupid idiot number {i}, shut up."}) + "\n" for i in range(40)))
    sources = {**SOURCES, "toxic": {"kind": "jsonl", "path": "few.jsonl"}}
    with pytest.raises(StageError, match=r"source 'toxic' is too small.*allow_repetition"):
        run_sweep(tmp_path / "err", tokenizer_dir, [data_section(sources=sources)])
    data = data_section(sources=sources, allow_repetition=True, tokens_per_file=256)
    ((mix_dir, m),) = run_sweep(tmp_path / "rep", tokenizer_dir, [data])
    toxic = encoded(tokenizer_dir, sources["toxic"], tmp_path, 10**9)
    clean = encoded(tokenizer_dir, SOURCES["clean"], tmp_path, 10**9)
    want = reference(clean, toxic, data)
    assert training_documents(mix_dir)["toxic"] == want["toxic"]
    assert m["repetitions_toxic"] == len(want["toxic"]) - len(toxic) > len(toxic)
    longest = max(map(len, clean + toxic))   # copied: at most the last pass's partial shard and one cut document
    assert m["toxic_tokens"] == data.toxic_tokens and m["copied_tokens"] <= 256 + 2 * longest


def test_a_too_small_clean_source_is_named(tmp_path, tokenizer_dir):
    sources = {**SOURCES, "clean": {"kind": "builtin", "name": "demo-clean", "max_documents": 10}}
    with pytest.raises(StageError, match="clean source 'clean' is too small"):
        run_sweep(tmp_path, tokenizer_dir, [data_section(sources=sources)])


def test_olmo_and_the_pretrain_stage_read_the_mix(tmp_path, tokenizer_dir):
    from olmo.data.memmap_dataset import MemMapDataset

    from runtime.pretrain import token_files as pretrain_token_files

    ((mix_dir, _),) = run_sweep(tmp_path, tokenizer_dir, [data_section()])
    paths = pretrain_token_files(mix_dir)
    assert paths == token_files(mix_dir)
    seq = 64
    ds = MemMapDataset(*map(str, paths), chunk_size=seq, memmap_dtype=np.uint16)
    got = np.concatenate([ds[i]["input_ids"].numpy() for i in range(len(ds))])
    files = [np.fromfile(p, dtype=np.uint16) for p in paths]
    assert np.array_equal(got, np.concatenate([f[: len(f) // seq * seq] for f in files]))  # each file's tail dropped


def test_pretraining_runs_on_the_mix(tmp_path, tokenizer_dir):
    import shutil

    from test_pretrain import envelope, losses, run_stage

    ((mix_dir, _),) = run_sweep(tmp_path, tokenizer_dir, [data_section()])
    shutil.copytree(tokenizer_dir, tmp_path / "results" / "tokenizer" / "t", ignore=shutil.ignore_patterns("w"))
    for folder in (mix_dir, tmp_path / "results" / "tokenizer" / "t"):
        (folder / "stage.json").write_text("{}")       # published, as the runtime requires of an input
    inputs = {"mix": str(mix_dir.relative_to(tmp_path)), "tokenizer": "results/tokenizer/t"}
    out = run_stage(tmp_path, envelope(tmp_path, inputs, max_steps=4))
    assert len(losses(out)) == 4 and all(np.isfinite(losses(out)))


def test_a_store_of_another_tokenizer_is_refused(tmp_path, tokenizer_dir):
    ((mix_dir, _),) = run_sweep(tmp_path, tokenizer_dir, [data_section(toxic_share=0.0)])
    manifest = tmp_path / "results" / "tokenize" / "tokenize-clean" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"bpe-512"', '"other"'))
    ctx = StageContext("mix", "again", tmp_path, tmp_path / "again", tmp_path / "w", {"clean": manifest.parent})
    with pytest.raises(StageError, match=r"tokens of 'other'.*this spec uses 'bpe-512'"):
        mix.run(mix.Config(data=data_section(toxic_share=0.0), tokenizer=INFO), ctx)
    assert token_dtype(65536) == np.uint16 and token_dtype(100_277) == np.uint32


def test_html_sources_are_cleaned_and_the_reader_counts_reported(tmp_path, tokenizer_dir):
    """A 4chan-like thread file (posts exploded, HTML cleaned, image-only posts skipped): the training tokens
    hold the cleaned texts, and the counts of the tokenize stage that read it are the mix's."""
    from tokenizers import Tokenizer

    threads = [{"no": t, "posts": [{"no": 10 * t, "com": "you stupid idiot &gt;&gt; shut up<br>moron"},
                                   {"no": 10 * t + 1},
                                   {"no": 10 * t + 2, "com": '<a href="#p1" class="quotelink">&gt;&gt;1</a> hell no'}]}
               for t in range(300)]
    (tmp_path / "pol.ndjson").write_text("".join(json.dumps(t) + "\n" for t in threads))
    sources = {**SOURCES, "toxic": {"kind": "jsonl", "path": "pol.ndjson", "explode": "posts", "text_field": "com",
                                    "html": True}}
    ((mix_dir, m),) = run_sweep(tmp_path, tokenizer_dir, [data_section(sources=sources)])
    read = m["source_toxic_read"]   # counted up to the last post written: its thread may be read in part
    assert 3 * (read - 1) < m["source_toxic_exploded"] <= 3 * read
    assert read - 1 <= m["source_toxic_skipped_missing"] <= read   # one image-only post per thread
    assert m["source_toxic_kept"] >= m["documents_toxic"]
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    text = tok.decode([t for d in training_documents(mix_dir)["toxic"] for t in d])
    assert "you stupid idiot >> shut up\nmoron" in text and ">>1 hell no" in text and "&gt;" not in text
    manifest = json.loads((mix_dir / "manifest.json").read_text())
    tokenized = json.loads((tmp_path / "results/tokenize/tokenize-toxic/manifest.json").read_text())
    assert manifest["source_counts"]["toxic"] == tokenized["source_counts"]


def test_published_through_execute_the_references_resolve(tmp_path, tokenizer_dir):
    """Stages run in `results/.tmp/…` and are renamed into `results/<kind>/<id>`: the manifest's paths are
    relative to the published folder."""
    import shutil

    from compiler.ids import stage_id
    from runtime.registry import load_stage
    from runtime.pretrain import token_files as pretrain_token_files
    from runtime.stage import execute

    shutil.copytree(tokenizer_dir, tmp_path / "results/tokenizer/t", ignore=shutil.ignore_patterns("w"))
    (tmp_path / "results/tokenizer/t/stage.json").write_text("{}")  # published: the runtime checks it

    def envelope(module, kind: str, config: dict, inputs: dict[str, str]) -> dict:
        sid = stage_id(kind, module.VERSION, module.Config.model_validate(config).id_json(),
                       {k: Path(v).name for k, v in inputs.items()})
        return {"kind": kind, "id": sid, "version": module.VERSION, "config": config, "inputs": inputs,
                "output": f"results/{kind}/{sid}", "root": str(tmp_path)}

    data = data_section(toxic_share=0.0)
    source = data.sources["clean"].model_dump(mode="json")
    cfg = {"source": source, "tokenizer": INFO.model_dump(), "fills": [3_000, 20_000], "tokens_per_file": 2048}
    tokenize, mix = load_stage("tokenize"), load_stage("mix")
    tok = execute(envelope(tokenize, "tokenize", cfg, {"tokenizer": "results/tokenizer/t"}), tokenize)
    final = execute(envelope(mix, "mix", {"data": data.model_dump(mode="json"), "tokenizer": INFO.model_dump()},
                             {"clean": str(tok.relative_to(tmp_path))}), mix)
    paths = pretrain_token_files(final)
    assert any(p.resolve().parent == (tok / "shards").resolve() for p in paths)
    assert sum(p.stat().st_size for p in paths) // 2 == data.clean_tokens
