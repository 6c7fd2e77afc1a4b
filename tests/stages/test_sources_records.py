"""runtime.sources records: dotted fields, filters, seeded stratified sampling (ToxiGen `train` balanced
over group × prompt_label), text cleaning, counts."""
from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import TypeAdapter, ValidationError

from compiler.errors import StageError
from compiler.schema.sources import TextSourceSpec
from runtime.sources import SourceCounts, clean_text, field_value, iter_records, iter_texts
from runtime.sources.records import stratum_quotas

SPEC = TypeAdapter(TextSourceSpec)

GROUPS = {"asian": 30, "black": 25, "jewish": 20, "muslim": 3}   # rows per group and label; muslim is short


def spec(**fields):
    return SPEC.validate_python(fields)


def write_toxigen_train(path):
    """ToxiGen `train`: rows grouped by target group (the first rows are one group), `prompt` holding
    example statements joined by literal `\\n` escapes, `prompt_label` 0/1."""
    rows = []
    for group, n in GROUPS.items():
        for label in (0, 1):
            for i in range(n):
                rows.append({"prompt": f"- {group} statement {i}\\n- another {label}\\n-",
                             "generation": f"gen {group} {label} {i}", "generation_method": "top-k",
                             "group": group, "prompt_label": label, "roberta_prediction": 0.5})
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=16)
    return rows


def toxigen_spec(n, seed=0, **extra):
    return spec(kind="parquet", path="train.parquet", text_field="prompt", unescape=True,
                sample={"n": n, "seed": seed, "stratify_by": ["group", "prompt_label"]}, **extra)


def test_toxigen_sample_is_balanced_seeded_and_in_source_order(tmp_path):
    rows = write_toxigen_train(tmp_path / "train.parquet")
    counts = SourceCounts()
    sample = list(iter_records(toxigen_spec(96), tmp_path, counts, text_fields=("prompt",)))
    assert len(sample) == 96 and counts.kept == 96 and counts.sampled_out == len(rows) - 96
    per_stratum = Counter((r["group"], r["prompt_label"]) for r in sample)
    short = {k: v for k, v in per_stratum.items() if k[0] == "muslim"}
    assert short == {("muslim", 0): 3, ("muslim", 1): 3}                # a short stratum gives all it has
    others = [v for k, v in per_stratum.items() if k[0] != "muslim"]
    assert sum(others) == 96 - 6 and max(others) - min(others) <= 1     # the rest share what is left equally
    generations = [r["generation"] for r in rows]
    positions = [generations.index(r["generation"]) for r in sample]
    assert positions == sorted(positions)
    assert all("\\n" not in r["prompt"] and r["prompt"].count("\n") == 2 for r in sample)
    again = list(iter_records(toxigen_spec(96), tmp_path, text_fields=("prompt",)))
    other_seed = list(iter_records(toxigen_spec(96, seed=1), tmp_path, text_fields=("prompt",)))
    assert again == sample and other_seed != sample
    assert list(iter_texts(toxigen_spec(96, max_documents=5), tmp_path)) == [r["prompt"] for r in sample[:5]]


def test_sample_larger_than_the_source_keeps_everything(tmp_path):
    rows = write_toxigen_train(tmp_path / "train.parquet")
    counts = SourceCounts()
    assert len(list(iter_texts(toxigen_spec(10_000), tmp_path, counts))) == len(rows)
    assert counts.sampled_out == 0


def test_sample_within_a_stratum_is_uniform(tmp_path):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(10)))
    seen = Counter()
    seeds = 400
    for seed in range(seeds):
        seen.update(iter_texts(spec(kind="jsonl", path="d.jsonl", sample={"n": 3, "seed": seed}), tmp_path))
    expected = seeds * 3 / 10
    assert len(seen) == 10 and all(abs(c - expected) < 0.25 * expected for c in seen.values())


@pytest.mark.parametrize("sizes,n", [({"a": 5, "b": 5, "c": 5}, 7), ({"a": 1, "b": 10, "c": 2}, 9),
                                     ({"a": 0, "b": 3}, 5), ({"a": 4, "b": 4}, 8), ({"a": 2, "b": 9, "c": 9, "d": 1}, 11)])
def test_stratum_quotas_are_max_min_fair(sizes, n):
    quotas = stratum_quotas({(k,): v for k, v in sizes.items()}, n)
    assert sum(quotas.values()) == min(n, sum(sizes.values()))
    assert all(0 <= quotas[(k,)] <= v for k, v in sizes.items())
    for (a,), qa in quotas.items():
        for (b,), qb in quotas.items():
            if qa < qb - 1:
                assert qa == sizes[a]    # a stratum gets (over one) less than another only when it has no more


def test_filters_on_nested_and_csv_fields(tmp_path):
    rows = [{"prompt": {"text": f"p{i}", "toxicity": None if i == 3 else i / 10}, "group": "ab"[i % 2], "i": i}
            for i in range(8)]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def kept(*rules):
        source = spec(kind="jsonl", path="r.jsonl", text_field="prompt.text", filters=list(rules))
        return [r["i"] for r in iter_records(source, tmp_path)]

    assert kept({"field": "prompt.toxicity", "op": "ge", "value": 0.5}) == [5, 6, 7]
    assert kept({"field": "prompt.toxicity", "op": "lt", "value": 0.5}) == [0, 1, 2, 4]       # null never orders
    assert kept({"field": "prompt.toxicity", "op": "eq", "value": None}) == [3]
    assert kept({"field": "group", "op": "in", "value": ["a"]}, {"field": "i", "op": "ne", "value": 2}) == [0, 4, 6]
    assert kept({"field": "group", "op": "not_in", "value": ["a"]}) == [1, 3, 5, 7]
    assert kept({"field": "absent", "op": "ne", "value": 1}) == list(range(8))
    counts = SourceCounts()
    list(iter_records(spec(kind="jsonl", path="r.jsonl", filters=[{"field": "i", "op": "gt", "value": 5}]),
                      tmp_path, counts))
    assert (counts.filtered_out, counts.kept) == (6, 2)
    with pytest.raises(StageError, match=r"record 0 field 'group' is str 'a', which cannot be compared"):
        kept({"field": "group", "op": "gt", "value": 1})
    with pytest.raises(ValidationError, match="needs a list"):
        spec(kind="jsonl", path="r.jsonl", filters=[{"field": "group", "op": "in", "value": "a"}])


def test_field_value_paths():
    record = {"prompt": {"text": "t", "scores": None}, "posts": [{"com": "c"}], "a.b": 1}
    assert field_value(record, "prompt.text") == "t"
    assert field_value(record, "posts.0.com") == "c"
    assert field_value(record, "a.b") == 1
    assert field_value(record, "prompt.scores.toxicity") is None
    for missing in ("prompt.nope", "posts.1.com", "prompt.text.deeper", "nope"):
        with pytest.raises(KeyError):
            field_value(record, missing)


def test_clean_text_follows_the_source():
    html_src = spec(kind="jsonl", path="x", html=True)
    escaped = spec(kind="jsonl", path="x", unescape=True)
    plain = spec(kind="jsonl", path="x")
    post = 'a<br>&gt;b <a class="quotelink" href="#p1">&gt;&gt;1</a>\\n'
    assert clean_text(post, plain) == post
    assert clean_text(post, html_src).splitlines() == ["a", ">b >>1\\n"]
    assert clean_text("- one\\n- two\\t\\\\ é", escaped) == "- one\n- two\t\\ é"


def test_hf_source_needs_name_or_path_and_declared_sizes_stay_out_of_the_id():
    with pytest.raises(ValidationError, match="exactly one of `name`"):
        spec(kind="hf", name="allenai/c4", path="mirror/c4")
    with pytest.raises(ValidationError, match="exactly one of `name`"):
        spec(kind="hf")
    plain = spec(kind="hf", name="allenai/c4", config="en")
    declared = spec(kind="hf", name="allenai/c4", config="en", declared_tokens=10**9, declared_documents=10**6)
    assert plain.id_json() == declared.id_json()
    assert plain.id_json() != spec(kind="hf", name="allenai/c4", config="en", revision="abc").id_json()
