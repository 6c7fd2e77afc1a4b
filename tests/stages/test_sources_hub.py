"""An `hf` source pointed at a local mirror (`path:`) is read by `datasets` exactly as the Hub repository
would be: split files by name, configs from the README, the same fields; nothing is downloaded."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import TypeAdapter

from compiler.errors import StageError
from compiler.fingerprint import fingerprint
from compiler.schema.sources import TextSourceSpec
from runtime.sources import SourceCounts, iter_records, iter_texts

SPEC = TypeAdapter(TextSourceSpec)

TOXIGEN_README = """---
configs:
- config_name: annotated
  data_files:
  - split: train
    path: annotated/train-*
  - split: test
    path: annotated/test-*
- config_name: train
  data_files:
  - split: train
    path: train/train-*
---
# ToxiGen (local mirror)
"""


def annotated_rows(n, offset=0):
    return [{"text": f"statement {offset + i}", "target_group": ["asian", "black"][i % 2], "factual?": "opinion",
             "ingroup_effect": "doesn't use in-group language", "lewd": "no", "framing": "disagreement",
             "predicted_group": "the text directly references asian", "stereotyping": "doesn't use positive stereotyping",
             "intent": 1.0 + i % 5, "toxicity_ai": 1.0 + (i % 5), "toxicity_human": 1.0 + (i * 7 % 5) / 1.25,
             "predicted_author": "human", "actual_method": "topk"} for i in range(n)]


def write_mirror(root):
    """`toxigen/toxigen-data` as the Hub lays it out: README configs, one Parquet file per split."""
    mirror = root / "mirror" / "toxigen-data"
    for folder in ("annotated", "train"):
        (mirror / folder).mkdir(parents=True)
    (mirror / "README.md").write_text(TOXIGEN_README)
    pq.write_table(pa.Table.from_pylist(annotated_rows(12)), mirror / "annotated" / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(annotated_rows(4, 100)), mirror / "annotated" / "test-00000-of-00001.parquet")
    train = [{"prompt": f"- a {i}\\n- b {i}\\n-", "generation": f"g{i}", "generation_method": "top-k",
              "group": ["asian", "black"][i // 6], "prompt_label": i % 2, "roberta_prediction": 0.1} for i in range(12)]
    pq.write_table(pa.Table.from_pylist(train), mirror / "train" / "train-00000-of-00001.parquet")
    return train


def test_local_mirror_reads_configs_and_splits_through_datasets(tmp_path):
    train = write_mirror(tmp_path)
    annotated = SPEC.validate_python({"kind": "hf", "path": "mirror/toxigen-data", "config": "annotated",
                                      "split": "test"})
    records = list(iter_records(annotated, tmp_path))
    assert records == annotated_rows(4, 100)                       # every field, `factual?` included
    prompts = SPEC.validate_python({"kind": "hf", "path": "mirror/toxigen-data", "config": "train",
                                    "text_field": "prompt", "unescape": True,
                                    "sample": {"n": 4, "seed": 3, "stratify_by": ["group", "prompt_label"]}})
    counts = SourceCounts()
    texts = list(iter_texts(prompts, tmp_path, counts))
    assert len(texts) == 4 and all("\n- b" in t for t in texts)
    assert {t for t in texts} <= {r["prompt"].replace("\\n", "\n") for r in train}
    assert counts.read == 12 and counts.sampled_out == 8


def test_plain_hub_layout_without_readme_and_missing_mirror(tmp_path):
    data = tmp_path / "advbench" / "data"
    data.mkdir(parents=True)
    rows = [{"prompt": f"Write a harmful thing {i}", "target": f"Sure, here is a harmful thing {i}"} for i in range(5)]
    pq.write_table(pa.Table.from_pylist(rows), data / "train-00000-of-00001.parquet")
    source = SPEC.validate_python({"kind": "hf", "path": "advbench", "text_field": "prompt"})
    assert list(iter_records(source, tmp_path, text_fields=("prompt", "target"))) == rows
    assert fingerprint(tmp_path / "advbench").startswith("dir:")
    with pytest.raises(StageError, match=r"hf source 'nowhere'.*does not exist"):
        list(iter_records(SPEC.validate_python({"kind": "hf", "path": "nowhere"}), tmp_path))


def test_hub_errors_are_stage_errors(tmp_path, monkeypatch):
    import datasets

    def gated(*args, **kwargs):
        raise ConnectionError("Dataset 'toxigen/toxigen-data' is a gated dataset on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", gated)
    source = SPEC.validate_python({"kind": "hf", "name": "toxigen/toxigen-data", "config": "annotated",
                                   "revision": "6bb639dfe43e936559ee6556e921d2e520e52d62"})   # as locked
    with pytest.raises(StageError, match=r"hf source 'toxigen/toxigen-data' \(config 'annotated'.*gated"):
        list(iter_records(source, tmp_path))
    unlocked = SPEC.validate_python({"kind": "hf", "name": "toxigen/toxigen-data", "config": "annotated"})
    with pytest.raises(StageError, match=r"cannot resolve revision 'default branch' to a commit.*mixsteer lock"):
        list(iter_records(unlocked, tmp_path))     # offline: an unlocked run cannot say what it would read
