"""activations stage: hooks read the right tensors, padding never changes a result, artifact contract."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from compiler.errors import StageError  # noqa: E402
from compiler.schema.probe import LabelledData  # noqa: E402
from runtime import activations  # noqa: E402
from runtime.sources import labelled  # noqa: E402
from runtime.stage import StageContext  # noqa: E402

SHORT = "you are kind"
LONGER = ["the quick brown fox jumps over the lazy dog and then some more",
          "what a wonderful day to learn something new, thank you for the kind and helpful answer"]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    path = tiny_model_dir / "model"
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path, local_files_only=True)


def _extract(model, tok, texts, position="last", layers=(0, 1), padding_side="right", batch_size=8):
    return activations.extract(model, tok, texts, layers=list(layers), position=position, max_length=64,
                               batch_size=batch_size, padding_side=padding_side, progress=False)


@pytest.mark.parametrize("position", ["last", "mean"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padding_never_changes_a_result(model_and_tokenizer, position, padding_side):
    model, tok = model_and_tokenizer
    heads_alone, resid_alone, _ = _extract(model, tok, [SHORT], position, padding_side=padding_side)
    heads_batch, resid_batch, n_tokens = _extract(model, tok, [LONGER[0], SHORT, LONGER[1]], position,
                                                  padding_side=padding_side)
    assert n_tokens[1] < n_tokens[0] and n_tokens[1] < n_tokens[2]     # the short text really is padded
    torch.testing.assert_close(heads_batch[1], heads_alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(resid_batch[1], resid_alone[0], atol=1e-5, rtol=1e-4)


def test_residual_matches_hidden_states_and_mean_pools_tokens(model_and_tokenizer):
    model, tok = model_and_tokenizer
    _, last, _ = _extract(model, tok, [LONGER[0]], "last")
    _, mean, _ = _extract(model, tok, [LONGER[0]], "mean")
    with torch.no_grad():
        hs = model(**tok([LONGER[0]], return_tensors="pt"), output_hidden_states=True).hidden_states
    # hidden_states[i + 1] is the residual after layer i, except the last, which has the final norm
    torch.testing.assert_close(last[0, 0], hs[1][0, -1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mean[0, 0], hs[1][0].mean(0), atol=1e-5, rtol=1e-5)
    normed = model.get_decoder().norm(last[:, 1])
    torch.testing.assert_close(normed[0], hs[2][0, -1], atol=1e-5, rtol=1e-5)


def test_head_split_follows_the_model_heads(tiny_model_dir):
    """Silencing head 1's values in layer 0 zeroes exactly that head's recorded output."""
    path = tiny_model_dir / "model"
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    before, _, _ = _extract(model, tok, LONGER, layers=[0])
    dh = before.shape[-1]
    with torch.no_grad():
        model.model.layers[0].self_attn.v_proj.weight[dh:2 * dh] = 0
    after, _, _ = _extract(model, tok, LONGER, layers=[0])
    assert before[:, 0, 1].abs().max() > 1e-3
    assert after[:, 0, 1].abs().max() == 0
    keep = [0, 2, 3]
    torch.testing.assert_close(after[:, 0, keep], before[:, 0, keep])


def test_group_key_normalises_case_space_and_unicode():
    assert labelled.group_key("Hello   World ") == labelled.group_key("hello world")
    assert labelled.group_key("ﬁne") == labelled.group_key("fine")        # NFKC ligature
    assert labelled.group_key("hello world") != labelled.group_key("hello, world")


def _write_data(root, rows):
    path = root / "probe.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return "probe.jsonl"


def test_labels_are_binarised_or_rejected(tmp_path):
    rows = [{"text": f"text {i}", "score": s, "group": g}
            for i, (s, g) in enumerate([(1.0, "a"), (2.5, "b"), (4.8, "a"), (2.4, "b")])]
    rel = _write_data(tmp_path, rows)
    ctx = StageContext("activations", "a-test", tmp_path, tmp_path / "out", tmp_path / "work", {})
    data = LabelledData(source={"kind": "jsonl", "path": rel}, label_field="score", label_threshold=2.5,
                        attribute_fields=["group"], max_examples=3)
    examples = labelled.load_examples(data, ctx)
    assert [e["label"] for e in examples] == [0, 1, 1]
    assert [e["attributes"]["group"] for e in examples] == ["a", "b", "a"]
    no_threshold = data.model_copy(update={"label_threshold": None})
    with pytest.raises(StageError, match="not 0/1"):
        labelled.load_examples(no_threshold, ctx)


def test_stage_writes_the_contract(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    texts = [SHORT, *LONGER, "i hate you, you stupid idiot", "YOU ARE KIND"]
    rel = _write_data(tmp_path, [{"text": t, "label": i % 2, "target": "x" if i < 3 else "y"}
                                 for i, t in enumerate(texts)])
    out = tmp_path / "out"
    out.mkdir()
    ctx = StageContext("activations", "activations-test", tmp_path, out, tmp_path / "work",
                       {"model": tiny_model_dir})
    data = {"source": {"kind": "jsonl", "path": rel}, "attribute_fields": ["target"]}
    cfg = activations.Config(data=data, token_position="last", max_length_tokens=64, layers=[1],
                             batch_size=2)
    metrics = activations.run(cfg, ctx)
    saved = load_file(str(out / "activations.safetensors"))
    assert saved["heads"].shape == (5, 1, 4, 8) and saved["resid"].shape == (5, 1, 32)
    assert saved["labels"].tolist() == [0, 1, 0, 1, 0] and saved["layers"].tolist() == [1]
    examples = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert [e["text"] for e in examples] == texts
    assert examples[0]["group"] == examples[4]["group"] != examples[1]["group"]
    assert examples[3]["attributes"] == {"target": "y"}
    assert metrics["n_examples"] == 5 and metrics["n_toxic"] == 2
    assert metrics["source_probe_read"] == metrics["source_probe_kept"] == 5
    # only layer 1 was recorded, and it is the same layer 1 a full run records
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir / "model", local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir / "model", local_files_only=True)
    _, resid_all, _ = _extract(model, tok, texts)
    torch.testing.assert_close(saved["resid"][:, 0], resid_all[:, 1], atol=1e-5, rtol=1e-5)


def test_missing_layer_fails_loudly(tiny_model_dir, tmp_path):
    rel = _write_data(tmp_path, [{"text": SHORT, "label": 1}])
    ctx = StageContext("activations", "activations-test", tmp_path, tmp_path, tmp_path / "work",
                       {"model": tiny_model_dir})
    cfg = activations.Config(data={"source": {"kind": "jsonl", "path": rel}}, token_position="last",
                             max_length_tokens=16, layers=[5])
    with pytest.raises(StageError, match="do not exist"):
        activations.run(cfg, ctx)


def test_toxigen_annotated_parquet_is_read_through_the_source(tmp_path):
    """ToxiGen `annotated` as the Hub ships it: `toxicity_human` (1–5) thresholded at 2.5, `target_group` as
    the attribute; a null text is skipped and counted, a kept row without its score is an error."""
    from layouts import write_toxigen_annotated

    from runtime.sources import SourceCounts

    rows = [("they are wonderful cooks", "asian", 1.3), (None, "black", 4.0),
            ("they should all leave", "black", 4.7), ("", "jewish", 2.0), ("they are people", "jewish", 2.5)]
    write_toxigen_annotated(tmp_path / "annotated" / "train-00000-of-00001.parquet", rows)
    ctx = StageContext("activations", "a-test", tmp_path, tmp_path / "out", tmp_path / "work", {})
    data = LabelledData(source={"kind": "parquet", "path": "annotated"}, label_field="toxicity_human",
                        label_threshold=2.5, attribute_fields=["target_group"])
    counts = SourceCounts()
    examples = labelled.load_examples(data, ctx, counts)
    kept = [r for r in rows if r[0]]
    assert [e["text"] for e in examples] == [t for t, _, _ in kept]
    assert [e["label"] for e in examples] == [int(s >= 2.5) for _, _, s in kept]
    assert [e["attributes"] for e in examples] == [{"target_group": g} for _, g, _ in kept]
    assert (counts.read, counts.skipped_null, counts.skipped_empty, counts.kept) == (5, 1, 1, 3)

    write_toxigen_annotated(tmp_path / "annotated" / "train-00000-of-00001.parquet",
                            [("fine", "asian", 1.0), ("no score", "asian", None)])
    with pytest.raises(StageError, match=r"parquet source 'annotated': record 1.*'toxicity_human'"):
        labelled.load_examples(data, ctx)


def test_dotted_text_and_label_fields(tmp_path):
    """Nested records (RTP-like): text at `prompt.text`, score at `prompt.toxicity`."""
    rows = [{"prompt": {"text": f"text {i}", "toxicity": s}} for i, s in enumerate([0.9, 0.1, 0.6])]
    rel = _write_data(tmp_path, rows)
    ctx = StageContext("activations", "a-test", tmp_path, tmp_path / "out", tmp_path / "work", {})
    data = LabelledData(source={"kind": "jsonl", "path": rel, "text_field": "prompt.text"},
                        label_field="prompt.toxicity", label_threshold=0.5)
    examples = labelled.load_examples(data, ctx)
    assert [(e["text"], e["label"]) for e in examples] == [("text 0", 1), ("text 1", 0), ("text 2", 1)]
