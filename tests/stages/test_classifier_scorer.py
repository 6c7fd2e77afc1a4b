"""The `classifier` scorer on tiny random sequence classifiers saved to a temporary folder (no network).

Every expected score is recomputed here from the saved model's own logits, one text at a time (no
padding, no batching, no sorting): the scorer must agree with that reference.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from compiler.errors import StageError
from compiler.schema.scoring import ClassifierScorer
from runtime.scoring.classifier import HFClassifierScorer

WORDS = ("you are a stupid idiot and i hate the quick brown fox jumps over lazy dog thank for kind "
         "helpful answer what wonderful day to learn something new").split()
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]   # RoBERTa's ids: pad = 1
TEXTS = [
    "you are a stupid idiot",
    "thank you",
    "what a wonderful day to learn something new and the quick brown fox jumps over the lazy dog",
    "i hate you",
    "",
    "kind and helpful answer for you",
    "zebra unknown words here",
    "the dog",
]


def save_classifier(folder: Path, labels: list[str], *, arch: str = "bert", multi_label: bool = False,
                    max_positions: int = 64, seed: int = 0, spread: float = 50) -> Path:
    """A random 2-layer BERT or RoBERTa classifier with a word-level `<s> … </s>` tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (AutoModelForSequenceClassification, BertConfig, PreTrainedTokenizerFast,
                              RobertaConfig)

    vocab = {token: i for i, token in enumerate(SPECIALS + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                     pad_token="<pad>", unk_token="<unk>")
    config_class = {"bert": BertConfig, "roberta": RobertaConfig}[arch]
    config = config_class(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=max_positions, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    with torch.no_grad():  # spread the logits: random init gives near-uniform probabilities
        (model.classifier.out_proj if arch == "roberta" else model.classifier).weight.mul_(spread)
    model.save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder


def reference_probabilities(folder: Path, text: str, *, sigmoid: bool, max_length: int = 10**6) -> list[float]:
    """Each label's probability for one text, from the saved model's logits (no padding, no batching)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(**tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")).logits[0]
    if sigmoid:
        return [1 / (1 + math.exp(-z)) for z in logits.tolist()]
    exp = [math.exp(z) for z in logits.tolist()]
    return [e / sum(exp) for e in exp]


@pytest.fixture(scope="module")
def single_label(tmp_path_factory) -> Path:
    return save_classifier(tmp_path_factory.mktemp("single"), ["neutral", "toxic", "insult"])


@pytest.fixture(scope="module")
def multi_label(tmp_path_factory) -> Path:
    return save_classifier(tmp_path_factory.mktemp("multi"), ["toxic", "insult", "threat"], arch="roberta",
                           multi_label=True, max_positions=34)


def scorer(folder: Path, **fields) -> HFClassifierScorer:
    spec = ClassifierScorer(path=folder.name, **{"toxic_labels": ["toxic"], **fields})
    return HFClassifierScorer(spec, folder.parent, progress=False)   # default placement: CPU fp32


def test_single_label_softmax_matches_the_logits(single_label):
    reference = [reference_probabilities(single_label, t, sigmoid=False) for t in TEXTS]
    assert scorer(single_label).score(TEXTS) == pytest.approx([p[1] for p in reference], abs=1e-6)
    both = scorer(single_label, toxic_labels=["toxic", "insult"], combine="sum").score(TEXTS)
    assert both == pytest.approx([p[1] + p[2] for p in reference], abs=1e-6)
    assert len({round(s, 3) for s in both}) > 1          # the texts really score differently


def test_multi_label_sigmoid_max_and_sum(multi_label):
    reference = [reference_probabilities(multi_label, t, sigmoid=True) for t in TEXTS]
    labels = ["toxic", "threat"]
    maxed = scorer(multi_label, toxic_labels=labels).score(TEXTS)
    assert maxed == pytest.approx([max(p[0], p[2]) for p in reference], abs=1e-6)
    summed = scorer(multi_label, toxic_labels=labels, combine="sum").score(TEXTS)
    assert summed == pytest.approx([min(1.0, p[0] + p[2]) for p in reference], abs=1e-6)
    assert all(0.0 <= s <= 1.0 for s in maxed + summed)


def test_activation_can_be_forced(single_label):
    reference = [reference_probabilities(single_label, t, sigmoid=True) for t in TEXTS]
    forced = scorer(single_label, activation="sigmoid").score(TEXTS)
    assert forced == pytest.approx([p[1] for p in reference], abs=1e-6)


def test_input_order_survives_length_sorting(single_label):
    clf = scorer(single_label, batch_size=3)
    alone = [clf.score([t])[0] for t in TEXTS]
    assert clf.score(TEXTS) == pytest.approx(alone, abs=1e-6)
    assert clf.score(TEXTS[::-1]) == pytest.approx(alone[::-1], abs=1e-6)


@pytest.mark.parametrize("fixture", ["single_label", "multi_label"])
def test_batch_size_does_not_change_scores(fixture, request):
    folder = request.getfixturevalue(fixture)
    one = scorer(folder, batch_size=1).score(TEXTS)
    assert scorer(folder, batch_size=64).score(TEXTS) == pytest.approx(one, abs=1e-6)
    assert scorer(folder, batch_size=3).score(TEXTS) == pytest.approx(one, abs=1e-6)


def test_truncation_is_flagged_and_applied(single_label):
    from transformers import AutoTokenizer

    limit = 5
    lengths = [len(ids) for ids in AutoTokenizer.from_pretrained(single_label)(TEXTS)["input_ids"]]
    clf = scorer(single_label, max_length_tokens=limit)
    scores = clf.score(TEXTS)
    assert clf.long_texts(TEXTS) == [n > limit for n in lengths] and any(clf.long_texts(TEXTS))
    assert clf.description()["long_texts"] == "truncate" and clf.description()["max_length_tokens"] == limit
    # a truncated text scores as its first words: <s> + 3 words + </s> = 5 tokens
    cut = [" ".join(t.split()[:limit - 2]) for t in TEXTS]
    assert scores == pytest.approx([reference_probabilities(single_label, t, sigmoid=False)[1] for t in cut],
                                   abs=1e-6)


@pytest.fixture(scope="module")
def word_sensitive(tmp_path_factory) -> Path:
    """A neutral/toxic classifier whose scores move with the words (about 0.4–0.56 for single words): a
    large classifier weight, and a bias that centres the words' logits."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = save_classifier(tmp_path_factory.mktemp("sensitive"), ["neutral", "toxic"], spread=3000)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(**tokenizer(sorted(set(WORDS)), padding=True, return_tensors="pt")).logits
        model.classifier.bias -= logits.median(dim=0).values
    model.save_pretrained(folder)
    return folder


def window_reference(folder: Path, texts: list[str], limit: int) -> list[tuple[float, int]]:
    """Per text, the max over its windows, each scored alone by the saved model (no padding, no batching):
    the text's tokens cut into windows of `limit - 2` (room for <s> and </s>) starting every
    `limit - 2 - overlap` tokens, overlap = half a window, until a window reaches the end; and the number
    of windows."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
    width = limit - 2
    step = width - width // 2
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        starts = [0]
        while starts[-1] + width < len(ids):
            starts.append(starts[-1] + step)
        with torch.no_grad():
            best = max(torch.softmax(model(input_ids=torch.tensor([[0, *ids[s:s + width], 2]])).logits[0], -1)[1]
                       .item() for s in starts)  # <s> … </s>
        out.append((best, len(starts)))
    return out


def test_max_windows_is_the_max_over_each_window_scored_alone(word_sensitive):
    limit = 7
    texts = TEXTS + [" ".join(WORDS), " ".join(reversed(WORDS)) + " you are a stupid idiot"]
    reference = window_reference(word_sensitive, texts, limit)
    assert max(n for _, n in reference) >= 4                 # several windows, the last one short
    windowed = scorer(word_sensitive, max_length_tokens=limit, long_texts="max_windows")
    scores = windowed.score(texts)
    # abs 2e-5: the ×3000 weight magnifies float32 rounding (padding, batch shape) from ~1e-7 to ~4e-6
    assert scores == pytest.approx([best for best, _ in reference], abs=2e-5)
    truncated = scorer(word_sensitive, max_length_tokens=limit).score(texts)
    assert all(w >= t - 2e-5 for w, t in zip(scores, truncated))   # the same float32 rounding as above
    assert sum(w > t + 0.01 for w, t in zip(scores, truncated)) >= 2   # the later windows change scores
    assert windowed.long_texts(texts) == [n > 1 for _, n in reference]
    assert windowed.description() | {"transformers": None} == {
        "activation": "softmax", "max_length_tokens": limit, "long_texts": "max_windows", "window_overlap_tokens": 2,
        "model_type": "bert", "labels": ["neutral", "toxic"], "transformers": None}
    for batch_size in (1, 3):                                # windows of long texts fill batches of their own
        again = scorer(word_sensitive, max_length_tokens=limit, long_texts="max_windows", batch_size=batch_size)
        assert again.score(texts) == pytest.approx(scores, abs=2e-5)


def test_the_model_maximum_is_the_default_limit(multi_label):
    clf = scorer(multi_label)
    assert clf.max_length == 34 - 2                      # RoBERTa positions start after pad_token_id = 1
    long_text = " ".join(WORDS * 3)
    assert clf.score([long_text, "you"]) and clf.long_texts([long_text, "you"]) == [True, False]
    assert clf.description()["activation"] == "sigmoid"   # auto, for a multi-label model
    with pytest.raises(StageError, match="max_length_tokens = 40 exceeds"):
        scorer(multi_label, max_length_tokens=40)


def test_a_missing_label_lists_the_models_labels(single_label):
    with pytest.raises(StageError, match=r"no label\(s\) \['toxicity'\].*'neutral', 'toxic', 'insult'"):
        scorer(single_label, toxic_labels=["toxicity"])


def test_an_absent_local_folder_is_a_clear_error(tmp_path):
    spec = ClassifierScorer(path="models/missing", toxic_labels=["toxic"])
    with pytest.raises(StageError, match="scorer.path: classifier folder .*models/missing does not exist"):
        HFClassifierScorer(spec, tmp_path)


def test_an_uncached_hub_model_offline_says_how_to_fix_it(tmp_path):
    """tests/conftest.py sets HF_HUB_OFFLINE=1: the Hub is never asked."""
    spec = ClassifierScorer(model="nobody/no-such-classifier", revision="0" * 40, toxic_labels=["toxic"])
    with pytest.raises(StageError, match=r"nobody/no-such-classifier at revision 0{40}.*`scorer\.path:`"):
        HFClassifierScorer(spec, tmp_path)


def test_build_scorer_reaches_the_classifier_through_the_cache(single_label, tmp_path):
    """End to end: the spec → `build_scorer` → the shared cache; the second pass is all hits."""
    from runtime.scoring import build_scorer
    from compiler.fingerprint import fingerprint
    from runtime.scoring.cache import TextScoreCache, cached

    spec = ClassifierScorer(path=single_label.name, toxic_labels=["toxic"])
    files = {single_label.name: fingerprint(single_label)}  # what the compiler puts in the stage JSON
    first = cached(build_scorer(spec, single_label.parent), spec, TextScoreCache(tmp_path / "s.sqlite"), files)
    direct = scorer(single_label).score(TEXTS)
    assert first.score(TEXTS) == pytest.approx(direct, abs=1e-6)
    again = cached(build_scorer(spec, single_label.parent), spec, TextScoreCache(tmp_path / "s.sqlite"), files)
    assert again.score(TEXTS) == pytest.approx(direct, abs=1e-6)
    assert (first.misses, again.hits, again.misses) == (len(TEXTS), len(TEXTS), 0)
