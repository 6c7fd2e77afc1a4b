"""runtime.sources on the real datasets' layouts, generated small in tmp_path: RealToxicityPrompts JSONL,
the Raiders of the Lost Kek `.tar.zst` of thread NDJSON, a `kjj0/4chanpol`-style Parquet folder, CSV,
JSON arrays, gzip, globs; and what breaks: missing fields, null posts, non-text values, truncated files."""
from __future__ import annotations

import gzip
import io
import json
import tarfile
from html.parser import HTMLParser

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from pydantic import TypeAdapter

from compiler.errors import StageError
from compiler.fingerprint import fingerprint, local_exists
from compiler.schema.sources import TextSourceSpec
from runtime.sources import SourceCounts, iter_records, iter_texts

SPEC = TypeAdapter(TextSourceSpec)

SCORES = ("toxicity", "severe_toxicity", "profanity", "insult", "threat", "identity_attack",
          "sexually_explicit", "flirtation")


def spec(**fields):
    return SPEC.validate_python(fields)


def rtp_rows(n):
    """RealToxicityPrompts lines: `prompt`/`continuation` objects with text and (nullable) scores."""
    rows = []
    for i in range(n):
        scores = {s: (None if (i + k) % 7 == 0 else round(((i * 13 + k) % 10) / 10, 2)) for k, s in enumerate(SCORES)}
        rows.append({
            "filename": f"0{i}-abc.txt", "begin": i, "end": i + 40, "challenging": i % 3 == 0,
            "prompt": {"text": f"prompt number {i}", **scores},
            "continuation": {"text": f" continues {i}", **scores},
        })
    return rows


def write_jsonl(path, rows, opener=open):
    with opener(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def test_rtp_nested_prompt_text_and_challenging_flag(tmp_path):
    rows = rtp_rows(12)
    rows[4]["prompt"]["text"] = None       # a null text is skipped, not an error
    rows[5]["prompt"] = None               # a null object on the path too
    write_jsonl(tmp_path / "prompts.jsonl", rows)
    counts = SourceCounts()
    source = spec(kind="jsonl", path="prompts.jsonl", text_field="prompt.text")
    texts = list(iter_texts(source, tmp_path, counts))
    assert texts == [r["prompt"]["text"] for r in rows if r["prompt"] and r["prompt"]["text"]]
    assert counts.as_dict() == dict(read=12, exploded=0, skipped_missing=0, skipped_null=2, skipped_empty=0,
                                    filtered_out=0, sampled_out=0, kept=10)
    challenging = spec(kind="jsonl", path="prompts.jsonl", text_field="prompt.text",
                       filters=[{"field": "challenging", "value": True}])
    kept = list(iter_records(challenging, tmp_path, text_fields=("prompt.text",)))
    assert [r["begin"] for r in kept] == [r["begin"] for r in rows if r["challenging"] and r["prompt"]
                                          and r["prompt"]["text"]]


class ReferenceHTML(HTMLParser):
    """An independent 4chan-markup reader: the text of every element, `<br>` as a newline."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []

    def handle_starttag(self, tag, attrs):
        if tag == "br":
            self.parts.append("\n")

    def handle_data(self, data):
        self.parts.append(data)

    @classmethod
    def text(cls, markup):
        parser = cls()
        parser.feed(markup)
        parser.close()
        return "".join(parser.parts).strip()


def raiders_threads(n_threads):
    """Raiders of the Lost Kek NDJSON: a thread a line, its posts in `posts`, text in `com` (4chan HTML,
    absent on image-only posts), each post with Perspective scores and entities."""
    threads = []
    for t in range(n_threads):
        posts = []
        for p in range(4):
            no = 1000 * t + p
            post = {"no": no, "resto": 0 if p == 0 else 1000 * t, "now": "06/29/16(Wed)10:55:52", "time": 1467212152,
                    "name": "Anonymous", "perspectives": {"TOXICITY": 0.1 * p, "SEVERE_TOXICITY": 0.01},
                    "entities": [{"entity_name": "x", "entity_label": "ORG"}]}
            if p == 1:
                post["com"] = (f'<a href="#p{no - 1}" class="quotelink">&gt;&gt;{no - 1}</a><br>'
                               f'<span class="quote">&gt;implying thread {t}</span><br>I&#039;m &quot;sure&quot; &amp; so')
            elif p == 2:
                post["com"] = f"plain post {t}<br><br>with <s>spoiler</s> &lt;b&gt;not a tag&lt;/b&gt;"
            elif p == 3:
                post["filename"] = "image"                # image-only: no `com`
            else:
                post["com"] = f"OP of thread {t}<wbr>"
            posts.append(post)
        threads.append({"posts": posts, "extracted_poster_id": {}})
    return threads


def write_tar_zst(path, members, level=3):
    """A `.tar.zst` archive of (name, bytes) members, compressed as a stream like the Zenodo release."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(zstandard.ZstdCompressor(level=level).compress(buffer.getvalue()))


def ndjson(rows):
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_raiders_tar_zst_explodes_threads_into_cleaned_posts(tmp_path):
    threads = raiders_threads(5)
    write_tar_zst(tmp_path / "pol_0616-1119_labeled.tar.zst",
                  [("README.txt", b"not data"), ("pol_062016-112019_labeled.ndjson", ndjson(threads))])
    counts = SourceCounts()
    source = spec(kind="jsonl", path="pol_0616-1119_labeled.tar.zst", members="*.ndjson", explode="posts",
                  text_field="com", html=True)
    texts = list(iter_texts(source, tmp_path, counts))
    expected = [ReferenceHTML.text(p["com"]) for t in threads for p in t["posts"] if "com" in p]
    assert texts == expected
    assert not any(markup in t for t in texts for markup in ("<br", "<a ", "<span", "<wbr", "&#039;", "&amp;", "&gt;"))
    assert any("<b>not a tag</b>" in t for t in texts)                    # escaped markup is text
    assert any(t.startswith(">>") and "\n>implying" in t for t in texts)   # quote link and greentext kept as text
    assert counts.read == 5 and counts.exploded == 20 and counts.skipped_missing == 5 and counts.kept == 15
    records = list(iter_records(source, tmp_path, text_fields=("com",)))
    assert [r["no"] for r in records] == [p["no"] for t in threads for p in t["posts"] if "com" in p]


def test_null_posts_and_threads_without_posts_are_counted(tmp_path):
    threads = raiders_threads(2)
    threads[0]["posts"].insert(1, None)
    threads.append({"extracted_poster_id": {}})          # no `posts`
    threads.append({"posts": None})
    write_jsonl(tmp_path / "t.ndjson", threads)
    counts = SourceCounts()
    source = spec(kind="jsonl", path="t.ndjson", explode="posts", text_field="com", html=True)
    assert len(list(iter_texts(source, tmp_path, counts))) == 6
    assert (counts.read, counts.exploded, counts.skipped_null, counts.skipped_missing) == (4, 8, 2, 2 + 1)


def test_4chanpol_parquet_folder_flat_text(tmp_path):
    folder = tmp_path / "4chanpol" / "data"
    folder.mkdir(parents=True)
    shards = [[f"shard {s} post {i}" for i in range(5)] for s in range(3)]
    for s, texts in enumerate(shards):
        pq.write_table(pa.table({"text": texts, "id": list(range(5))}), folder / f"train-0000{s}-of-00003.parquet",
                       row_group_size=2)
    (folder / "README.md").write_text("not a shard")
    source = spec(kind="parquet", path="4chanpol")
    assert list(iter_texts(source, tmp_path)) == [t for texts in shards for t in texts]
    only = spec(kind="parquet", path="4chanpol", members="*00001-of-*")
    assert list(iter_texts(only, tmp_path)) == shards[1]


def test_csv_json_gzip_zst_and_glob(tmp_path):
    rows = [{"text": f"doc {i}", "score": i} for i in range(6)]
    with open(tmp_path / "a.csv", "w") as f:
        f.write("text,score\n" + "".join(f'"{r["text"]}, quoted",{r["score"]}\n' for r in rows))
    csv_src = spec(kind="csv", path="a.csv", filters=[{"field": "score", "op": "ge", "value": 3}])
    assert list(iter_texts(csv_src, tmp_path)) == [f"{r['text']}, quoted" for r in rows if r["score"] >= 3]

    (tmp_path / "array.json").write_text(json.dumps(rows))
    (tmp_path / "object.json").write_text(json.dumps({"version": 1, "data": rows}))
    assert list(iter_records(spec(kind="json", path="array.json"), tmp_path)) == rows
    assert list(iter_records(spec(kind="json", path="object.json", explode="data"), tmp_path)) == rows

    (tmp_path / "shards").mkdir()
    write_jsonl(tmp_path / "shards" / "c4-train.00000-of-00002.json.gz", rows[:3], gzip.open)
    (tmp_path / "shards" / "c4-train.00001-of-00002.json.zst").write_bytes(
        zstandard.ZstdCompressor().compress(ndjson(rows[3:5])) + zstandard.ZstdCompressor().compress(ndjson(rows[5:])))
    glob_src = spec(kind="jsonl", path="shards/c4-train.*-of-00002.json.*")
    assert list(iter_records(glob_src, tmp_path)) == rows            # two zstd frames in one file read through
    assert list(iter_records(spec(kind="jsonl", path="shards"), tmp_path)) == rows
    with pytest.raises(StageError, match=r"glob .*nothing-\*.*matches no file"):
        list(iter_records(spec(kind="jsonl", path="shards/nothing-*"), tmp_path))


def test_text_files_inside_a_tar_gz(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in [("docs/b.txt", "second"), ("docs/a.txt", "first"), ("docs/skip.md", "no")]:
            info = tarfile.TarInfo(name)
            info.size = len(body.encode())
            tar.addfile(info, io.BytesIO(body.encode()))
    (tmp_path / "docs.tar.gz").write_bytes(buffer.getvalue())
    assert list(iter_texts(spec(kind="text", path="docs.tar.gz"), tmp_path)) == ["second", "first"]   # archive order


def test_glob_is_checked_and_fingerprinted_by_its_files(tmp_path):
    (tmp_path / "d").mkdir()
    write_jsonl(tmp_path / "d" / "a.jsonl", [{"text": "a"}])
    pattern = tmp_path / "d" / "*.jsonl"
    assert local_exists(pattern) and not local_exists(tmp_path / "d" / "*.parquet")
    before = fingerprint(pattern)
    write_jsonl(tmp_path / "d" / "b.jsonl", [{"text": "b"}])
    after = fingerprint(pattern)
    assert after != before and after.startswith("glob:")
    write_jsonl(tmp_path / "d" / "b.jsonl", [{"text": "changed"}])
    assert fingerprint(pattern) != after


@pytest.mark.parametrize("name", ["threads.tar.zst", "threads.tar", "threads.ndjson.zst", "threads.ndjson.gz"])
def test_truncated_files_are_a_clear_error(tmp_path, name):
    threads = raiders_threads(40)
    whole = tmp_path / f"whole-{name}"
    if ".tar" in name:
        write_tar_zst(whole, [("a.ndjson", ndjson(threads))])
        if name.endswith(".tar"):
            whole.write_bytes(zstandard.ZstdDecompressor().decompress(whole.read_bytes()))
    elif name.endswith(".zst"):
        whole.write_bytes(zstandard.ZstdCompressor().compress(ndjson(threads)))
    else:
        whole.write_bytes(gzip.compress(ndjson(threads)))
    data = whole.read_bytes()
    assert list(iter_records(spec(kind="jsonl", path=whole.name), tmp_path)) == threads
    cut = data[: len(data) * 2 // 3]
    if name.endswith(".zst"):   # cut at a line boundary of the decompressed text: only the frame can tell
        cut = zstandard.ZstdCompressor().compress(ndjson(threads))
        cut = cut[: len(cut) - 8]
    (tmp_path / name).write_bytes(cut)
    with pytest.raises(StageError, match=rf"jsonl source '{name}': {name}.* truncated or corrupt"):
        list(iter_records(spec(kind="jsonl", path=name), tmp_path))


def test_non_text_value_names_source_record_and_field(tmp_path):
    threads = raiders_threads(3)
    threads[2]["posts"][1]["com"] = 12345
    write_jsonl(tmp_path / "t.ndjson", threads)
    source = spec(kind="jsonl", path="t.ndjson", explode="posts", text_field="com")
    with pytest.raises(StageError, match=r"jsonl source 't.ndjson': record 2 \(posts\[1\]\) \(t.ndjson\): "
                                         r"field 'com' is int 12345, not text"):
        list(iter_texts(source, tmp_path))
    write_jsonl(tmp_path / "rtp.jsonl", [{"prompt": {"text": "ok"}}, {"prompt": {"text": ["a", "list"]}}])
    with pytest.raises(StageError, match=r"record 1 .*field 'prompt.text' is list"):
        list(iter_texts(spec(kind="jsonl", path="rtp.jsonl", text_field="prompt.text"), tmp_path))


def test_missing_field_everywhere_is_an_error_sometimes_is_counted(tmp_path):
    write_jsonl(tmp_path / "rtp.jsonl", rtp_rows(3))
    with pytest.raises(StageError, match=r"no record has the field 'text' .*'challenging', 'continuation'"):
        list(iter_texts(spec(kind="jsonl", path="rtp.jsonl"), tmp_path))   # the paper spec's old mistake
    write_jsonl(tmp_path / "threads.ndjson", raiders_threads(2))
    with pytest.raises(StageError, match=r"no record has the field 'post' .*record 0: \['extracted_poster_id', 'posts'\]"):
        list(iter_texts(spec(kind="jsonl", path="threads.ndjson", explode="post", text_field="com"), tmp_path))
    write_jsonl(tmp_path / "mixed.jsonl", [{"text": "a"}, {"body": "b"}, {"text": ""}, {"text": "  \n"}, {"text": "c"}])
    counts = SourceCounts()
    assert list(iter_texts(spec(kind="jsonl", path="mixed.jsonl"), tmp_path, counts)) == ["a", "c"]
    assert (counts.skipped_missing, counts.skipped_empty, counts.kept) == (1, 2, 2)


def test_bad_json_and_non_object_lines_name_the_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(StageError, match=r"bad.jsonl:2: bad JSON"):
        list(iter_records(spec(kind="jsonl", path="bad.jsonl"), tmp_path))
    (tmp_path / "list.jsonl").write_text('{"text": "a"}\n["text"]\n')
    with pytest.raises(StageError, match=r"list.jsonl:2 is a JSON list, not an object"):
        list(iter_records(spec(kind="jsonl", path="list.jsonl"), tmp_path))
