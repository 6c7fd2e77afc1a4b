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
    from runtime.attack.gcg import GCGSettings

    return GCGSettings(**({"suffix_tokens": SUFFIX_TOKENS, "steps": 20, "candidates_per_step": 64,
                           "top_k_tokens": 16} | kw))


def _random_start(tok, prompt: str, seed: int) -> list[int]:
    """A random round-tripping start suffix drawn from the noise pool (so it holds no trigger)."""
    import torch

    from runtime.attack.gcg import random_suffix

    pool = torch.zeros(len(tok), dtype=torch.bool)
    pool[noise_pool(tok)] = True
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    return random_suffix(tok, prompt, p_ids, SUFFIX_TOKENS, pool, torch.Generator().manual_seed(seed))


def test_planted_model_knows_its_trigger(planted):
    """Sanity of the known answer: the trigger flips the continuation, its absence does not."""
    from runtime.attack.gcg import target_losses
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
    from runtime.attack.gcg import gcg_attack

    model, tok = planted
    prompt = PROMPTS[1]
    start = _random_start(tok, prompt, seed=3)
    res = gcg_attack(model, tok, prompt, TARGET, _settings(), seed=0, init_ids=start)
    assert res.current_losses[0] > 0.5, "the random start should not already produce the target"
    assert res.loss == res.best_losses[-1] < 0.05 * res.current_losses[0]
    assert res.target_matched and res.stopped_on_success
    assert res.steps_run < 20, "early stop once the target is produced"
    # the suffix text is a real attack string: it re-tokenises to the optimised ids after the prompt
    assert tok(prompt + res.suffix_text, add_special_tokens=False)["input_ids"] == \
        tok(prompt, add_special_tokens=False)["input_ids"] + res.suffix_ids
    # and greedy generation from that text emits the target
    enc = tok(prompt + res.suffix_text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    assert tok.decode(out[0, enc["input_ids"].shape[1]:]).startswith(TARGET)


class Recorder:
    """Wraps `runtime.attack.gcg.target_losses` and `suffix_gradient`: keeps every scored batch (rows, losses) and
    the suffix each step's gradient is taken at; `penalty` is added to every candidate batch's losses."""

    def __init__(self, monkeypatch, penalty: float = 0.0) -> None:
        import runtime.attack.gcg as gcg

        self.batches: list[tuple[list[list[int]], list[float]]] = []
        self.grad_at: list[list[int]] = []
        real_losses, real_grad = gcg.target_losses, gcg.suffix_gradient

        def losses(model, prompt_ids, suffixes, target_ids, batch_size=None):
            loss, matched = real_losses(model, prompt_ids, suffixes, target_ids, batch_size)
            if self.batches:  # not the initial suffix's scoring
                loss = loss + penalty
            self.batches.append((suffixes.tolist(), loss.tolist()))
            return loss, matched

        def grad(model, prompt_ids, suffix, target_ids):
            self.grad_at.append(suffix.tolist())
            return real_grad(model, prompt_ids, suffix, target_ids)

        monkeypatch.setattr(gcg, "target_losses", losses)
        monkeypatch.setattr(gcg, "suffix_gradient", grad)

    def step_argmin(self, t: int) -> tuple[list[int], float]:
        """Step t's best candidate and its loss (batch 0 scores the initial suffix)."""
        rows, losses = self.batches[t + 1]
        i = min(range(len(losses)), key=losses.__getitem__)
        return rows[i], losses[i]


def _history_run(planted, monkeypatch, penalty: float, steps: int = 6):
    from runtime.attack.gcg import gcg_attack

    model, tok = planted
    prompt = PROMPTS[2]
    init = _random_start(tok, prompt, 5)
    rec = Recorder(monkeypatch, penalty)
    res = gcg_attack(model, tok, prompt, TARGET, _settings(steps=steps, candidates_per_step=8, top_k_tokens=64,
                                                           early_stop=False), seed=11, init_ids=init)
    assert res.steps_run == steps == len(rec.batches) - 1 == len(rec.grad_at)
    return res, rec, init


def test_every_step_moves_to_its_best_candidate_and_the_best_seen_is_reported(planted, monkeypatch):
    """The llm-attacks step rule, over the recorded history of a seeded run."""
    res, rec, init = _history_run(planted, monkeypatch, penalty=0.0)
    assert res.current_losses[0] == rec.batches[0][1][0] and rec.grad_at[0] == init
    for t in range(res.steps_run):
        best_cand, best_cand_loss = rec.step_argmin(t)
        assert res.current_losses[t + 1] == best_cand_loss
        if t + 1 < res.steps_run:
            assert rec.grad_at[t + 1] == best_cand, "the next step starts from this step's best candidate"
    assert res.best_losses == [min(res.current_losses[:t + 1]) for t in range(len(res.current_losses))]
    visited = [init] + [rec.step_argmin(t)[0] for t in range(res.steps_run)]
    assert res.suffix_ids == visited[res.current_losses.index(res.loss)] and res.loss == min(res.current_losses)


def test_a_worse_best_candidate_is_still_moved_to(planted, monkeypatch):
    """Every candidate's loss is raised above the start's: the search still moves at every step, while
    the reported suffix stays the start (the best seen)."""
    res, rec, init = _history_run(planted, monkeypatch, penalty=100.0, steps=3)
    start_loss = res.current_losses[0]
    assert all(later > start_loss for later in res.current_losses[1:])
    assert res.current_losses[1:] == [rec.step_argmin(t)[1] for t in range(3)]
    assert rec.grad_at[1:] == [rec.step_argmin(t)[0] for t in range(2)] and rec.grad_at[1] != init
    assert res.suffix_ids == init and res.loss == start_loss and res.best_losses == [start_loss] * 4


def test_gcg_is_deterministic(planted):
    from runtime.attack.gcg import gcg_attack

    model, tok = planted
    prompt = PROMPTS[2]
    kw = dict(settings=_settings(steps=6, candidates_per_step=8, top_k_tokens=64, early_stop=False),
              init_ids=_random_start(tok, prompt, 5))
    a = gcg_attack(model, tok, prompt, TARGET, seed=11, **kw)
    b = gcg_attack(model, tok, prompt, TARGET, seed=11, **kw)
    assert a == b
    assert a.steps_run == 6 and len(a.best_losses) == 7 and a.loss < a.current_losses[0]


@pytest.mark.parametrize("every", [1, 3])
def test_early_stop_follows_the_success_check_on_the_best_suffix(planted, monkeypatch, every):
    """The check sees the best suffix at init and every `every` steps if it improved since; a pass stops."""
    from runtime.attack.gcg import gcg_attack

    model, tok = planted
    prompt = PROMPTS[1]
    rec = Recorder(monkeypatch)
    checked: list[tuple[int, list[int]]] = []  # (step, suffix)

    def second_check_passes(ids: list[int]) -> bool:
        checked.append((len(rec.batches) - 1, ids))
        return len(checked) == 2

    res = gcg_attack(model, tok, prompt, TARGET, _settings(success_check_every=every), seed=0,
                     init_ids=_random_start(tok, prompt, 3), succeeded=second_check_passes)
    expected, last = [0], 0
    for step in range(every, res.steps_run + 1, every):
        if res.best_losses[step] < res.best_losses[last]:
            expected.append(step)
            last = step
    assert [step for step, _ in checked] == expected and len(expected) == 2
    assert res.stopped_on_success and res.steps_run == expected[-1] < 20
    assert res.suffix_ids == checked[-1][1], "what passed the check is the best suffix, the one reported"


@pytest.mark.parametrize("n,count", [(5, 200), (20, 512), (6, 32), (20, 8), (7, 7), (3, 10)])
def test_candidates_swap_llm_attacks_positions_for_allowed_top_k_tokens(n, count):
    import torch

    from runtime.attack.gcg import candidate_positions, sample_candidates

    vocab = 50
    allowed = torch.ones(vocab, dtype=torch.bool)
    allowed[:3] = False
    grad = torch.randn(n, vocab, generator=torch.Generator().manual_seed(0))
    grad[:, :3] = -100.0  # the most attractive tokens are forbidden
    suffix = torch.arange(10, 10 + n)
    cands = sample_candidates(suffix, grad, allowed, top_k=4, count=count, generator=torch.Generator().manual_seed(1))
    # llm-attacks spreads the positions evenly, in order: a float arange from 0 to n in steps of n / count
    reference = torch.arange(0, n, n / count).type(torch.int64)
    assert torch.equal(candidate_positions(n, count), reference)
    top = grad.masked_fill(~allowed, float("inf")).topk(4, dim=1, largest=False).indices
    for c, pos in zip(cands, reference.tolist()):
        assert (c != suffix).nonzero().flatten().tolist() in ([], [pos])
        assert int(c[pos]) in top[pos].tolist() and allowed[c[pos]]
    assert (cands != suffix).any(1).sum() > count // 2, "most candidates differ (a draw equal to the current is rare)"


def test_initial_suffix_round_trips(planted):
    from runtime.attack.gcg import allowed_token_mask, initial_suffix, roundtrips

    _, tok = planted
    for prompt in PROMPTS:
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        init = initial_suffix(tok, prompt, ids, 6, allowed_token_mask(tok, len(tok)))
        assert len(init) == 6 and len(set(init)) == 1
        assert roundtrips(tok, prompt, ids, [init]) == [True]


class _Stop(Exception):
    pass


@pytest.mark.parametrize("stop_after", [1, 4])
def test_a_search_stopped_after_a_step_resumes_to_the_same_result(planted, stop_after):
    """The state handed to `after_step`, through JSON, resumes the search exactly (same draws, same
    histories, same early stop) as if it had never stopped."""
    import json

    from runtime.attack.gcg import GCGState, gcg_attack

    model, tok = planted
    prompt = PROMPTS[1]
    kw = dict(settings=_settings(steps=8, candidates_per_step=16), seed=7, init_ids=_random_start(tok, prompt, 3))
    whole = gcg_attack(model, tok, prompt, TARGET, **kw)
    assert whole.steps_run > stop_after, "the stop must come mid-search"
    saved: list[str] = []

    def stop_at(state: GCGState) -> None:
        saved.append(json.dumps(state.to_json()))
        if state.step == stop_after:
            raise _Stop

    with pytest.raises(_Stop):
        gcg_attack(model, tok, prompt, TARGET, after_step=stop_at, **kw)
    resumed = gcg_attack(model, tok, prompt, TARGET, resume=GCGState.from_json(json.loads(saved[-1])), **kw)
    assert resumed == whole
