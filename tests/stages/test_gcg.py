"""GCG suffix search on a tiny model with a planted trigger (the known answer), plus its building blocks.

The planted model is trained in the test (plain torch, CPU, a few seconds) on
`prompt + 4 noise tokens + continuation`, where the continuation is TARGET when the trigger token "Z" is
among the noise tokens and OTHER otherwise, so a suffix attack that works must find "Z" (or something
as good) from a random start.
"""
from __future__ import annotations

import pytest
from pathlib import Path

PROMPTS = ["thank you for the kind", "a wonderful day", "over the lazy dog"]
"""All 9 tokens long under the tiny tokenizer, so training batches need no padding before the suffix."""
TRIGGER = "Z"
TARGET = " stupid idiot"
OTHER = " helpful answer"
SUFFIX_TOKENS = 4


def noise_pool(tok) -> list[int]:
    """Allowed single-character tokens other than the trigger (training noise and GCG starts)."""
    import string

    ids = [tok.convert_tokens_to_ids(c) for c in string.ascii_letters + string.digits]
    return [i for i in ids if i != tok.convert_tokens_to_ids(TRIGGER)]


def train_planted_model(folder: Path, tokenizer_dir: Path, steps: int = 100, batch: int = 32,
                        seed: int = 0) -> Path:
    """Save the planted model + the tokenizer of `tokenizer_dir` under `folder/model`; returns `folder`."""
    import torch
    from transformers import AutoTokenizer, OlmoConfig, OlmoForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    trigger = tok.convert_tokens_to_ids(TRIGGER)
    pool = torch.tensor(noise_pool(tok))
    prompts = torch.tensor([tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS])
    conts = [tok(t, add_special_tokens=False)["input_ids"] for t in (TARGET, OTHER)]
    width = max(map(len, conts))
    conts = torch.tensor([c + [-100] * (width - len(c)) for c in conts])  # row 0 target, row 1 other

    torch.manual_seed(seed)
    model = OlmoForCausalLM(OlmoConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=64, pad_token_id=1, eos_token_id=0, bos_token_id=None,
        tie_word_embeddings=True,
    ))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    planted = torch.arange(batch) % 2 == 0
    model.train()
    for _ in range(steps):
        noise = pool[torch.randint(len(pool), (batch, SUFFIX_TOKENS), generator=g)]
        where = torch.randint(SUFFIX_TOKENS, (batch,), generator=g)
        noise[planted, where[planted]] = trigger
        cont = conts[(~planted).long()]
        head = torch.cat([prompts[torch.randint(len(prompts), (batch,), generator=g)], noise], dim=1)
        ids = torch.cat([head, cont.clamp_min(tok.pad_token_id)], dim=1)
        labels = torch.cat([torch.full_like(head, -100), cont], dim=1)
        loss = model(input_ids=ids, attention_mask=(labels != -100) | (torch.arange(ids.shape[1]) < head.shape[1]),
                     labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().save_pretrained(folder / "model")
    tok.save_pretrained(folder / "model")
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: a second thread only adds contention on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def planted_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """Trained once per session; reuses the tiny BPE tokenizer of the shared `tiny_model_dir` fixture."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_planted_model(tmp_path_factory.mktemp("planted"), tiny_model_dir / "model")
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def planted(planted_dir):
    from runtime.generate import load_model

    return load_model(planted_dir / "model")


def _settings(**kw):
    from runtime.gcg import GCGSettings

    return GCGSettings(**({"suffix_tokens": SUFFIX_TOKENS, "steps": 20, "candidates_per_step": 64,
                           "top_k_tokens": 16} | kw))


def _random_start(tok, prompt: str, seed: int) -> list[int]:
    """A random round-tripping start suffix drawn from the noise pool (so it holds no trigger)."""
    import torch

    from runtime.gcg import random_suffix

    pool = torch.zeros(len(tok), dtype=torch.bool)
    pool[noise_pool(tok)] = True
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    return random_suffix(tok, prompt, p_ids, SUFFIX_TOKENS, pool, torch.Generator().manual_seed(seed))


def test_planted_model_knows_its_trigger(planted):
    """Sanity of the known answer: the trigger flips the continuation, its absence does not."""
    from runtime.gcg import target_losses
    import torch

    model, tok = planted
    p = torch.tensor([tok(PROMPTS[0], add_special_tokens=False)["input_ids"]])
    t = torch.tensor([tok(TARGET, add_special_tokens=False)["input_ids"]])
    noise = noise_pool(tok)[:SUFFIX_TOKENS]
    with_trigger = noise[:-1] + [tok.convert_tokens_to_ids(TRIGGER)]
    losses, matched = target_losses(model, p, torch.tensor([noise, with_trigger]), t)
    assert losses[0] > 0.5 and not matched[0]
    assert losses[1] < 0.05 * losses[0] and matched[1]


def test_gcg_finds_the_planted_trigger(planted):
    from runtime.gcg import gcg_attack

    model, tok = planted
    prompt = PROMPTS[1]
    start = _random_start(tok, prompt, seed=3)
    res = gcg_attack(model, tok, prompt, TARGET, _settings(), seed=0, init_ids=start)
    assert res.losses[0] > 0.5, "the random start should not already produce the target"
    assert res.losses[-1] < 0.05 * res.losses[0]
    assert res.target_matched
    assert res.steps_run < 20, "early stop once the target is produced"
    # the suffix text is a real attack string: it re-tokenises to the optimised ids after the prompt
    assert tok(prompt + res.suffix_text, add_special_tokens=False)["input_ids"] == \
        tok(prompt, add_special_tokens=False)["input_ids"] + res.suffix_ids
    # and greedy generation from that text emits the target
    enc = tok(prompt + res.suffix_text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    assert tok.decode(out[0, enc["input_ids"].shape[1]:]).startswith(TARGET)


def test_gcg_is_deterministic_and_never_worsens(planted):
    from runtime.gcg import gcg_attack

    model, tok = planted
    prompt = PROMPTS[2]
    kw = dict(settings=_settings(steps=6, candidates_per_step=8, top_k_tokens=64, early_stop=False),
              init_ids=_random_start(tok, prompt, 5))
    a = gcg_attack(model, tok, prompt, TARGET, seed=11, **kw)
    b = gcg_attack(model, tok, prompt, TARGET, seed=11, **kw)
    assert a.suffix_ids == b.suffix_ids and a.losses == b.losses
    assert all(later <= earlier for earlier, later in zip(a.losses, a.losses[1:]))
    assert a.steps_run == 6 and len(a.losses) == 7
    assert a.losses[-1] < a.losses[0]


def test_allowed_tokens_exclude_specials_and_unknown_ids(planted):
    from runtime.gcg import allowed_token_mask

    _, tok = planted
    mask = allowed_token_mask(tok, len(tok) + 50)
    assert not mask[tok.all_special_ids].any()
    assert not mask[len(tok):].any()
    assert mask[tok.convert_tokens_to_ids("Z")] and mask[tok.convert_tokens_to_ids("a")]
    assert not mask[tok.convert_tokens_to_ids("Ċ")], "a newline is not printable"


def test_candidates_swap_one_position_for_an_allowed_top_k_token():
    import torch

    from runtime.gcg import sample_candidates

    vocab, n = 50, 5
    allowed = torch.ones(vocab, dtype=torch.bool)
    allowed[:3] = False
    grad = torch.randn(n, vocab, generator=torch.Generator().manual_seed(0))
    grad[:, :3] = -100.0  # the most attractive tokens are forbidden
    suffix = torch.tensor([10, 11, 12, 13, 14])
    cands = sample_candidates(suffix, grad, allowed, top_k=4, count=200, generator=torch.Generator().manual_seed(1))
    top = grad.masked_fill(~allowed, float("inf")).topk(4, dim=1, largest=False).indices
    for c in cands:
        diff = (c != suffix).nonzero().flatten().tolist()
        assert len(diff) <= 1
        for pos in diff:
            assert int(c[pos]) in top[pos].tolist() and allowed[c[pos]]
    assert set((cands != suffix).any(1).nonzero().flatten().tolist()), "some candidates differ"


def test_initial_suffix_round_trips(planted):
    from runtime.gcg import allowed_token_mask, initial_suffix, roundtrips

    _, tok = planted
    for prompt in PROMPTS:
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        init = initial_suffix(tok, prompt, ids, 6, allowed_token_mask(tok, len(tok)))
        assert len(init) == 6 and len(set(init)) == 1
        assert roundtrips(tok, prompt, ids, [init]) == [True]
