"""The shipped demo sets measure what the scorer measures and share no text with each other, nor
(probe and evaluation texts) with the corpora the demo pretrains on."""
from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from runtime.demo_data import BUILTINS
from runtime.demo_data.leakage import CorpusText, Guard, normalise, sentences
from runtime.scoring import OfflineProfanityScorer

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
SCORER_AUC_TARGET = 0.8
"""Issue 14: the demo's scorer must separate the probe labels at least this well."""


def _rows(stem: str) -> list[dict]:
    return [json.loads(line) for line in (DEMO / f"{stem}.jsonl").read_text().splitlines()]


def _set_texts() -> dict[str, list[str]]:
    """Every text of every demo set (DPO: its prompts and its completions)."""
    dpo = _rows("dpo")
    return {
        "toxigen": [r["text"] for r in _rows("toxigen")],
        "prompts": [r["text"] for r in _rows("prompts")],
        "redteam": [r["text"] for r in _rows("redteam")],
        "sft": [r["text"] for r in _rows("sft")],
        "dpo": [r[k] for r in dpo for k in ("prompt", "chosen", "rejected")],
    }


def _padded(text: str) -> str:
    """Normalised `text` between spaces: `_padded(a) in _padded(b)` is a whole-word match."""
    return f" {normalise(text)} "


def _contains_any(text: str, padded_needles: list[str]) -> bool:
    padded = _padded(text)
    return any(needle in padded for needle in padded_needles)


def test_normalise_ignores_case_unicode_punctuation_and_spacing():
    assert normalise("Shut  UP,\tyou!") == normalise("shut up you") == "shut up you"
    assert normalise("ｆｕｌｌ－ｗｉｄｔｈ") == normalise("full width")  # NFKC, then punctuation → space
    assert list(sentences("One. Two!  Three?")) == ["one", "two", "three"]


def test_guard_refuses_repeats_held_out_prompts_and_corpus_copies():
    guard = Guard(CorpusText(frozenset({"you stupid idiot"}), " you stupid idiot "))
    guard.close_set(["Honestly, the fans are such"], held_out=True)
    guard.close_set(["The fans are kind. They help."])
    assert not guard.admits(["HONESTLY the fans are such kind people."])  # contains a held-out prompt
    assert not guard.admits(["A new one.", "They  help!"])  # repeats an earlier sentence
    assert not guard.admits(["You stupid idiot."], novel_to_corpus=True)  # copies a corpus sentence
    assert not guard.admits(["stupid"], novel_to_corpus=True)  # occurs inside the corpus
    assert guard.admits(["You stupid idiot."]) and guard.admits(["The players are kind."], novel_to_corpus=True)


def test_probe_labels_are_what_the_scorer_measures():
    from sklearn.metrics import roc_auc_score

    rows = _rows("toxigen")
    scores = OfflineProfanityScorer().score([r["text"] for r in rows])
    auc = roc_auc_score([r["label"] for r in rows], scores)
    print(f"scorer AUC against the probe labels: {auc:.3f}")
    assert auc >= SCORER_AUC_TARGET


def test_no_two_sets_share_an_item_or_a_sentence():
    texts = _set_texts()
    for a, b in combinations(texts, 2):
        items_a, items_b = ({normalise(t) for t in texts[s]} for s in (a, b))
        assert not items_a & items_b, f"{a} and {b} share items: {sorted(items_a & items_b)[:3]}"
        sents_a, sents_b = ({s for t in texts[name] for s in sentences(t)} for name in (a, b))
        assert not sents_a & sents_b, f"{a} and {b} share sentences: {sorted(sents_a & sents_b)[:3]}"


def test_no_evaluation_prompt_occurs_inside_a_training_or_probe_text():
    texts = _set_texts()
    held_out = [_padded(t) for t in texts["prompts"] + texts["redteam"]]
    dpo_joined = [r["prompt"] + r[k] for r in _rows("dpo") for k in ("chosen", "rejected")]
    for name, others in (("sft", texts["sft"]), ("dpo", texts["dpo"] + dpo_joined), ("toxigen", texts["toxigen"])):
        leaks = [t for t in others if _contains_any(t, held_out)]
        assert not leaks, f"{name} contains an evaluation or red-team prompt: {leaks[:3]}"


@pytest.fixture(scope="module")
def corpus_sentences() -> set[str]:
    """The normalised sentences of the corpora the demo pretrains on (`demo-clean`, `demo-toxic`)."""
    return {s for name in ("demo-clean", "demo-toxic") for r in BUILTINS[name]() for s in sentences(r["text"])}


def test_probe_and_evaluation_texts_are_new_to_the_pretraining_corpora(corpus_sentences):
    texts = _set_texts()
    for name in ("toxigen", "prompts", "redteam"):
        copied = [t for t in texts[name] if any(s in corpus_sentences for s in sentences(t))]
        assert not copied, f"{name} copies pretraining sentences: {copied[:3]}"
    corpus = "\n".join(f" {s} " for s in corpus_sentences)
    inside = [t for t in texts["prompts"] + texts["redteam"] if _padded(t) in corpus]
    assert not inside, f"evaluation prompts occur verbatim in the pretraining corpora: {inside[:3]}"


def test_target_group_and_topic_alone_do_not_predict_the_probe_label():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline

    from runtime.demo_data.toxic import TOPICS
    from runtime.demo_data.vocab import GROUPS

    rows = _rows("toxigen")
    texts, labels = [r["text"] for r in rows], np.array([r["label"] for r in rows])
    words = sorted({w for phrase in (*TOPICS, *sum(GROUPS.values(), ())) for w in phrase.lower().split()})
    only_targets_and_topics = make_pipeline(CountVectorizer(vocabulary=words), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    accuracy = cross_val_score(only_targets_and_topics, texts, labels, cv=cv).mean()
    print(f"label from target and topic words alone (5-fold accuracy): {accuracy:.3f}")
    assert accuracy < 0.6
    for group in GROUPS:
        group_labels = labels[[r["target_group"] == group for r in rows]]
        assert 0.35 < group_labels.mean() < 0.65, group
