"""runtime.sources: every TextSourceSpec kind streams its records, limits and errors name the source."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from pydantic import TypeAdapter

from compiler.errors import StageError
from compiler.schema.sources import TextSourceSpec
from runtime.sources import iter_memmap_documents, iter_records, iter_texts

SPEC = TypeAdapter(TextSourceSpec)


def write_jsonl(path, rows, gz=False):
    opener = gzip.open if gz else open
    with opener(path, "wt") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


@pytest.mark.parametrize("name,gz", [("a.jsonl", False), ("a.jsonl.gz", True)])
def test_jsonl_plain_and_gz(tmp_path, name, gz):
    rows = [{"text": f"doc {i}", "label": i % 2} for i in range(5)]
    write_jsonl(tmp_path / name, rows, gz)
    spec = SPEC.validate_python({"kind": "jsonl", "path": name})
    assert list(iter_records(spec, tmp_path)) == rows
    limited = SPEC.validate_python({"kind": "jsonl", "path": name, "max_documents": 2})
    assert list(iter_texts(limited, tmp_path)) == ["doc 0", "doc 1"]


def test_missing_file_and_field_name_the_source(tmp_path):
    with pytest.raises(StageError, match=r"jsonl source 'nope.jsonl'.*does not exist"):
        list(iter_records(SPEC.validate_python({"kind": "jsonl", "path": "nope.jsonl"}), tmp_path))
    write_jsonl(tmp_path / "a.jsonl", [{"body": "x"}])
    spec = SPEC.validate_python({"kind": "jsonl", "path": "a.jsonl"})
    with pytest.raises(StageError, match=r"'a.jsonl'.*no record has the field 'text'.*body"):
        list(iter_texts(spec, tmp_path))


def test_parquet_folder_in_sorted_file_order(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"content": ["c", "d", "e"]}), tmp_path / "pq" / "b.parquet")
    pq.write_table(pa.table({"content": ["a", "b"]}), tmp_path / "pq" / "a.parquet")
    spec = SPEC.validate_python({"kind": "parquet", "path": "pq", "text_field": "content"})
    assert list(iter_texts(spec, tmp_path)) == ["a", "b", "c", "d", "e"]
    single = SPEC.validate_python({"kind": "parquet", "path": "pq/b.parquet", "text_field": "content",
                                   "max_documents": 2})
    assert list(iter_texts(single, tmp_path)) == ["c", "d"]


def test_text_folder_one_document_per_file_sorted(tmp_path):
    (tmp_path / "t").mkdir()
    for name, body in [("2.txt", "second"), ("1.txt", "first"), ("skip.md", "no")]:
        (tmp_path / "t" / name).write_text(body)
    spec = SPEC.validate_python({"kind": "text", "path": "t"})
    assert list(iter_texts(spec, tmp_path)) == ["first", "second"]


def test_builtin_known_and_unknown(tmp_path):
    spec = SPEC.validate_python({"kind": "builtin", "name": "demo-toxic", "max_documents": 3})
    first, again = list(iter_texts(spec, tmp_path)), list(iter_texts(spec, tmp_path))
    assert len(first) == 3 and first == again
    with pytest.raises(StageError, match=r"builtin source 'demo-nothing'.*demo-clean"):
        list(iter_records(SPEC.validate_python({"kind": "builtin", "name": "demo-nothing"}), tmp_path))


def test_hf_passes_the_spec_to_load_dataset(tmp_path, monkeypatch):
    import datasets

    seen = {}

    def fake_load(name, config, split, revision, streaming):
        seen.update(name=name, config=config, split=split, revision=revision, streaming=streaming)
        return iter([{"text": "a"}, {"text": "b"}, {"text": "c"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    commit = "a" * 40                                         # as the lock file resolves it
    spec = SPEC.validate_python({"kind": "hf", "name": "allenai/c4", "config": "en", "max_documents": 2,
                                 "revision": commit})
    assert list(iter_texts(spec, tmp_path)) == ["a", "b"]
    assert seen == dict(name="allenai/c4", config="en", split="train", revision=commit, streaming=True)


def test_memmap_documents_split_on_eos(tmp_path, monkeypatch):
    import runtime.sources.memmap as memmap

    monkeypatch.setattr(memmap, "MEMMAP_CHUNK_TOKENS", 4)  # documents straddle chunks
    tokens = np.array([5, 6, 0, 7, 0, 8, 9, 10, 11, 0, 12], dtype=np.uint16)
    tokens.tofile(tmp_path / "t.npy")
    spec = SPEC.validate_python({"kind": "memmap", "path": "t.npy", "tokenizer": "x"})
    docs = [d.tolist() for d in iter_memmap_documents(spec, tmp_path, eos_token_id=0)]
    assert docs == [[5, 6, 0], [7, 0], [8, 9, 10, 11, 0], [12, 0]]
    with pytest.raises(StageError, match="holds tokens"):
        list(iter_records(spec, tmp_path))
