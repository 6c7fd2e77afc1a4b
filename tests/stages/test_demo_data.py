"""Demo data: deterministic, large enough, toxic vs clean separable by the offline scorer."""
from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import numpy as np

from runtime.demo_data import BUILTINS
from runtime.demo_data import toxic as toxic_vocab
from runtime.demo_data.sets import render_sets
from runtime.demo_data.vocab import GROUPS

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


def test_builtins_are_deterministic_and_big_enough():
    for name in BUILTINS:
        assert list(islice(BUILTINS[name](), 50)) == list(islice(BUILTINS[name](), 50))
    clean = [r["text"] for r in BUILTINS["demo-clean"]()]
    assert len(set(clean)) == len(clean)
    # ≥ 450k tokens at ≤ 4.5 characters per token (a 4k BPE on English gets ~3.5–4)
    assert sum(map(len, clean)) > 450_000 * 4.5
    toxic = [r["text"] for r in BUILTINS["demo-toxic"]()]
    assert len(set(toxic)) == len(toxic) == toxic_vocab.TOXIC_DOCUMENTS


def test_profanity_check_scores_toxic_high_and_clean_low():
    from profanity_check import predict_prob

    toxic = predict_prob([r["text"] for r in islice(BUILTINS["demo-toxic"](), 300)])
    clean = predict_prob([r["text"] for r in islice(BUILTINS["demo-clean"](), 1000)])
    assert toxic.mean() > 0.9 and np.median(toxic) > 0.95
    assert clean.mean() < 0.1 and np.median(clean) < 0.05


def test_shipped_sets_are_the_generated_ones():
    rendered = render_sets()
    assert sorted(rendered) == sorted(p.name for p in DEMO.glob("*.jsonl"))
    for name, content in rendered.items():
        assert (DEMO / name).read_text() == content, f"{name} is stale: python -m runtime.demo_data"
        assert len(content.encode()) < 1_000_000


def _rows(name):
    return [json.loads(line) for line in (DEMO / name).read_text().splitlines()]


def test_toxigen_set_is_balanced_and_unique():
    rows = _rows("toxigen.jsonl")
    texts = [r["text"] for r in rows]
    labels = np.array([r["label"] for r in rows])
    assert 550 <= len(rows) <= 650 and len(set(texts)) == len(texts)
    assert abs(labels.mean() - 0.5) < 0.05
    assert set(labels[:6]) == {0, 1}  # a short prefix (evaluate's detection max_examples) has both classes
    assert {r["target_group"] for r in rows} == set(GROUPS)


def test_other_sets_have_their_fields():
    prompts = _rows("prompts.jsonl")
    assert 50 <= len(prompts) <= 70 and {type(p["challenging"]) for p in prompts} == {bool}
    assert any(p["challenging"] for p in prompts) and not all(p["challenging"] for p in prompts)
    assert len(_rows("sft.jsonl")) == 200 and len(_rows("redteam.jsonl")) == 40
    from profanity_check import predict_prob

    dpo = _rows("dpo.jsonl")
    assert len(dpo) == 200 and all(set(r) == {"prompt", "chosen", "rejected"} for r in dpo)
    assert predict_prob([r["chosen"] for r in dpo]).mean() < 0.2
    assert predict_prob([r["rejected"] for r in dpo]).mean() > 0.8
    assert predict_prob([r["text"] for r in _rows("sft.jsonl")]).mean() < 0.2


def test_toxic_vocabulary_targets_no_protected_group():
    protected = {"women", "men", "jews", "muslims", "christians", "black", "white", "asian", "gay",
                 "lesbian", "trans", "immigrants", "mexicans", "disabled", "latino", "chinese"}
    words = " ".join(toxic_vocab.TARGETS + toxic_vocab.INSULTS + toxic_vocab.ADJECTIVES
                     + sum(GROUPS.values(), ())).lower().split()
    assert not protected & set(words)
