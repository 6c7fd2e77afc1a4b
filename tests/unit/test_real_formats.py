"""The real-format fixtures (tests/data/real_formats.py → data/real_formats/): regenerating them writes the
same bytes, the committed copy is what the script writes, and each folder is laid out like its public
release (names, compression, archive members, columns and types, nesting, nulls, Hub configs)."""
from __future__ import annotations

import gzip
import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
import zstandard

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "data" / "real_formats.py"
COMMITTED = ROOT / "data" / "real_formats"


def _generate(folder: Path) -> Path:
    subprocess.run([sys.executable, str(SCRIPT), str(folder)], check=True)
    return folder


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("real_formats"))


def _files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _content(path: Path):
    """What a file holds, independent of the compressor's or Parquet writer's version."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        return zstandard.ZstdDecompressor().decompress(data)
    if path.suffix == ".parquet":
        return pq.read_table(path)
    return data


def _jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


def _raiders_threads(path: Path) -> tuple[list[str], list[dict]]:
    tar_bytes = zstandard.ZstdDecompressor().decompress(path.read_bytes())
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = tar.getmembers()
        threads = _jsonl(tar.extractfile(members[0]).read())
    return [m.name for m in members], threads


def test_regenerating_writes_identical_bytes(fresh, tmp_path):
    again = _generate(tmp_path / "again")
    first, second = _files(fresh), _files(again)
    assert first.keys() == second.keys()
    for name, path in first.items():
        assert path.read_bytes() == second[name].read_bytes(), name


def test_committed_copy_is_what_the_script_writes(fresh):
    committed, generated = _files(COMMITTED), _files(fresh)
    assert committed.keys() == generated.keys()
    for name, path in generated.items():
        expected, actual = _content(path), _content(committed[name])
        same = expected.equals(actual) and expected.schema.equals(actual.schema) if hasattr(expected, "equals") \
            else expected == actual
        assert same, f"data/real_formats/{name} is stale: rerun python tests/data/real_formats.py data/real_formats"


def test_c4_en_shards(fresh):
    folder = fresh / "c4"
    configs = yaml.safe_load(folder.joinpath("README.md").read_text().split("---")[1])["configs"]
    assert [c["config_name"] for c in configs] == ["en"]
    shards = sorted(p.name for p in (folder / "en").iterdir())
    assert shards and all(re.fullmatch(r"c4-(train\.\d{5}-of-01024|validation\.\d{5}-of-00008)\.json\.gz", s) for s in shards)
    for shard in (folder / "en").iterdir():
        for record in _jsonl(gzip.decompress(shard.read_bytes())):
            assert list(record) == ["text", "timestamp", "url"]
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["timestamp"])
            assert record["url"].startswith("https://") and record["text"].strip()


def test_4chanpol_parquet_shards_hold_one_flat_text_column(fresh):
    shards = sorted((fresh / "4chanpol" / "data").iterdir())
    assert len(shards) > 1
    for shard in shards:
        assert re.fullmatch(r"train-\d{5}-of-\d{5}-[0-9a-f]{16}\.parquet", shard.name)
        table = pq.read_table(shard)
        assert table.schema.names == ["text"] and str(table.schema.field("text").type) == "string"


def test_raiders_archive_holds_threads_of_4chan_api_posts(fresh):
    members, threads = _raiders_threads(fresh / "raiders" / "pol_0616-1119_labeled.tar.zst")
    assert members == ["pol_0616-1119_labeled.ndjson"]
    posts = [post for thread in threads for post in thread["posts"]]
    assert all(list(thread) == ["posts"] for thread in threads)
    assert all(isinstance(p["no"], int) and isinstance(p["time"], int) for p in posts)
    for thread in threads:                                   # replies point at their thread's first post
        op, *replies = thread["posts"]
        assert op["resto"] == 0 and all(r["resto"] == op["no"] for r in replies)
    comments = [p["com"] for p in posts if "com" in p]
    assert len(comments) < len(posts), "image-only posts carry no `com`"
    joined = "".join(comments)
    assert "<br>" in joined and 'class="quotelink">&gt;&gt;' in joined and '<span class="quote">&gt;' in joined
    assert "&#039;" in joined and not re.search(r"<(?!br>|/?a[ >]|/?span[ >])", joined)
    assert all(set(p["perspectives"]) == {"TOXICITY", "SEVERE_TOXICITY", "INFLAMMATORY", "PROFANITY", "INSULT",
                                          "OBSCENE", "SPAM"} for p in posts if "com" in p)


def test_rtp_prompts_are_nested_objects_with_perspective_scores(fresh):
    records = _jsonl((fresh / "real-toxicity-prompts" / "prompts.jsonl").read_bytes())
    attributes = {"text", "profanity", "sexually_explicit", "identity_attack", "flirtation", "threat", "insult",
                  "severe_toxicity", "toxicity"}
    assert all(list(r) == ["filename", "begin", "end", "challenging", "prompt", "continuation"] for r in records)
    assert all(set(r["prompt"]) == set(r["continuation"]) == attributes for r in records)
    assert {r["challenging"] for r in records} == {True, False}
    scores = [r[part][a] for r in records for part in ("prompt", "continuation") for a in attributes - {"text"}]
    assert None in scores and all(s is None or 0 <= s <= 1 for s in scores)
    assert all(re.fullmatch(r"\d{7}-[0-9a-f]{32}\.txt", r["filename"]) and r["begin"] < r["end"] for r in records)


def test_toxigen_configs_columns_and_grouping(fresh):
    folder = fresh / "toxigen-data"
    configs = yaml.safe_load(folder.joinpath("README.md").read_text().split("---")[1])["configs"]
    assert [c["config_name"] for c in configs] == ["annotated", "train"]
    for split in ("train", "test"):
        table = pq.read_table(folder / "annotated" / f"{split}-00000-of-00001.parquet")
        assert table.schema.names == [
            "text", "target_group", "factual?", "ingroup_effect", "lewd", "framing", "predicted_group",
            "stereotyping", "intent", "toxicity_ai", "toxicity_human", "predicted_author", "actual_method"]
        human = table.column("toxicity_human").to_pylist()
        assert str(table.schema.field("toxicity_human").type) == "double" and all(1 <= h <= 5 for h in human)
        assert min(human) < 2.5 <= max(human)
    train = pq.read_table(folder / "train" / "train-00000-of-00001.parquet")
    assert [(f.name, str(f.type)) for f in train.schema] == [
        ("prompt", "string"), ("generation", "string"), ("generation_method", "string"), ("group", "string"),
        ("prompt_label", "int64"), ("roberta_prediction", "double")]
    prompts = train.column("prompt").to_pylist()
    assert all("\\n" in p and "\n" not in p for p in prompts), "prompts hold literal backslash-n escapes"
    groups = train.column("group").to_pylist()
    runs = [g for i, g in enumerate(groups) if i == 0 or groups[i - 1] != g]
    assert len(runs) == len(set(groups)) > 1, "rows come grouped by target group"
    assert set(train.column("prompt_label").to_pylist()) == {0, 1}


def test_advbench_has_a_target_per_prompt(fresh):
    table = pq.read_table(fresh / "AdvBench" / "data" / "train-00000-of-00001.parquet")
    assert table.schema.names == ["prompt", "target"]
    assert all(t.startswith("Sure, here is") for t in table.column("target").to_pylist())


def test_openwebtext_parquet_export(fresh):
    table = pq.read_table(fresh / "openwebtext-10k" / "plain_text" / "train" / "0000.parquet")
    assert table.schema.names == ["text"] and table.num_rows > 0


def test_lee_pairs_are_split_jsonl_files(fresh):
    files = sorted((fresh / "toxicity_pairwise").iterdir())
    assert [f.name for f in files] == [f"split_{i}.jsonl" for i in range(6)]
    for f in files:
        assert all(list(r) == ["prompt_text", "unpert_gen_text", "pert_gen_text"] for r in _jsonl(f.read_bytes()))
