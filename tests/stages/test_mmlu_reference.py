"""Our MMLU scoring equals ai2-olmo's own: `olmo.eval.downstream.MMLU` builds the queries, a Hugging Face
OLMo scores them, `ICLMetric` (`acc`, `len_norm`) picks the answers; our path must pick the same answer for
every question, 0-shot and 5-shot ("inst+5"), with and without left truncation of long prompts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.evaluate import capability

SUBJECTS = ["abstract_algebra", "anatomy", "management"]
QUESTIONS = 8
CONTEXT = 1024
"""Long enough for these subjects' 5-shot prompts under the tiny tokenizer (≤ ~820 tokens)."""


def _training_text() -> list[str]:
    """MMLU-styled text from the dev and validation splits (never the scored test questions)."""
    texts = []
    for subject in SUBJECTS:
        for split in ("dev", "validation"):
            for doc in capability._load_mmlu(subject, split):
                texts.append(f"Question: {doc['question']}\nAnswer: {doc['choices'][doc['answer']]}\n\n")
    return texts


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny OLMo trained for 40 steps on MMLU-styled text, so choices differ in likelihood for reasons."""
    from conftest import build_tiny_tokenizer
    from transformers import OlmoConfig, OlmoForCausalLM, PreTrainedTokenizerFast

    tok_file = tmp_path_factory.mktemp("mmlu_tok") / "tokenizer.json"
    build_tiny_tokenizer().save(str(tok_file))
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_file), eos_token="<|endoftext|>", pad_token="<|padding|>")
    torch.manual_seed(0)
    model = OlmoForCausalLM(OlmoConfig(
        vocab_size=384, hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=CONTEXT, pad_token_id=1, eos_token_id=0,
        bos_token_id=None, tie_word_embeddings=True,
    ))
    stream = torch.tensor([t for text in _training_text() for t in tok(text)["input_ids"]])
    windows = stream[: len(stream) // 128 * 128].view(-1, 128)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        batch = windows[torch.randint(len(windows), (16,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), tok


def _first_questions(task, n: int) -> list[dict]:
    return [s for s in task.samples if s["doc_id"] < n]


@torch.inference_mode()
def _reference(task, samples: list[dict], model, batch_size: int = 16) -> dict[str, tuple[list[int], float]]:
    """ai2-olmo's per-question choices (argmax of ICLMetric's stored scores, as its `compute` takes them)
    and its accuracy, for `acc` and `len_norm`."""
    from olmo.eval.downstream import ICLMetric

    metrics = {kind: ICLMetric(kind) for kind in ("acc", "len_norm")}
    for start in range(0, len(samples), batch_size):
        batch = task.collate_fn(samples[start:start + batch_size])
        logits = model(input_ids=batch["input_ids"]).logits
        for metric in metrics.values():
            metric.update(batch, logits)
    out = {}
    for kind, metric in metrics.items():
        scores: dict[int, dict[int, float]] = {}
        for doc_id, cont_id, value in metric.loglikelihoods:
            scores.setdefault(int(doc_id), {})[int(cont_id)] = float(value)
        picks = [int(torch.tensor([by_cont[c] for c in sorted(by_cont)]).argmax())
                 for _, by_cont in sorted(scores.items())]
        out[kind] = (picks, float(metric.compute()))
    return out


@pytest.mark.parametrize("shots, context", [(0, CONTEXT), (5, CONTEXT), (5, 256)],
                         ids=["0-shot", "5-shot", "5-shot-truncated"])
def test_every_question_matches_ai2_olmo(trained, shots, context, monkeypatch):
    from olmo.eval.downstream import MMLU

    model, tok = trained
    monkeypatch.setattr(model.config, "max_position_embeddings", context)
    items = capability.mmlu_items(SUBJECTS, split="test", shots=shots, max_questions=QUESTIONS)
    ours = capability.multiple_choice_accuracy(model, tok, items, batch_size=16)["per_question"]
    off_by_one = 0
    for subject in SUBJECTS:
        task = MMLU(tok, dataset_name=subject, split="test", prompt_variations=2 if shots == 5 else None)
        assert task.prompts == [capability.mmlu_prompt_variant(shots)]
        if context != task.model_ctx_len:  # ai2-olmo's own left truncation, at the model's length
            task.model_ctx_len, task.samples = context, []
            task.prep_examples()
        samples = _first_questions(task, QUESTIONS)
        mine = [q for q in ours if q["subject"] == subject]
        mine_items = [it for it in items if it.subject == subject]
        for it, sample in zip((it for it in mine_items for _ in it.choices), samples):
            assert tok(it.context, add_special_tokens=False)["input_ids"] == sample["ctx"]
            assert tok(it.choices[sample["cont_id"]], add_special_tokens=False)["input_ids"] == sample["continuation"]
        ref = _reference(task, samples, model)
        assert [q["predicted"] for q in mine] == ref["acc"][0]
        assert [q["predicted_len_norm"] for q in mine] == ref["len_norm"][0]
        assert np.mean([q["correct"] for q in mine]) == pytest.approx(ref["acc"][1])
        assert np.mean([q["correct_len_norm"] for q in mine]) == pytest.approx(ref["len_norm"][1])
        assert [q["index"] for q in mine] == list(range(QUESTIONS))
        off_by_one += sum(int(np.argmax(np.array(q["loglikelihoods"]) / [len(c) for c in it.choices]))
                          != q["predicted_len_norm"] for q, it in zip(mine, mine_items))
    # The set is sensitive to the normalisation: dividing by the length with the space picks differently.
    assert off_by_one > 0

