"""The sampler of `runtime.generate`: counter-based per-row draws (SplitMix64, inverse CDF of the warped
softmax), each prompt prefilled once with its cache shared by its samples, and memory-sized batches."""
from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare
from transformers import (LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper)

from compiler.errors import StageError
from runtime.intervention import add_last_position_hooks
from runtime.generate import (Sampling, batch_bytes, draw, load_model, nucleus, plan_batches, row_seed,
                              sample_continuations, uniforms)

PROMPTS = ["the quick brown fox jumps over", "you are a", "thank you for the lovely", "what", "and then"]
KEYS = [f"s/{i}" for i in range(len(PROMPTS))]
MASK64 = (1 << 64) - 1


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir / "model")


@pytest.fixture(scope="module")
def last_steered(tiny_model_dir):
    """The tiny model with ITI `last` hooks on three random heads (shift the last position of each call)."""
    model, tok = load_model(tiny_model_dir / "model")
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    gen = torch.Generator().manual_seed(0)
    heads = [{"layer": layer, "head": head, "direction": torch.randn(head_dim, generator=gen).tolist(),
              "std": 1.0, "alpha": 8.0} for layer, head in ((0, 0), (0, 1), (cfg.num_hidden_layers - 1, 0))]
    add_last_position_hooks(model, {"n_layers": cfg.num_hidden_layers, "n_heads": cfg.num_attention_heads,
                                        "head_dim": head_dim, "heads": heads, "positions": "last"})
    return model, tok


def _splitmix64(seed: int, k: int) -> float:
    """Plain-Python SplitMix64: output k (from 0) of the generator seeded with `seed`, top 53 bits."""
    z = (seed + (k + 1) * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return ((z ^ (z >> 31)) >> 11) * 2.0 ** -53


def test_uniforms_are_splitmix64_whatever_the_batch():
    seeds = [row_seed(0, f"s/{i}", j) for i in range(4) for j in range(3)] + [0, (1 << 63) - 1]
    for step in (0, 1, 19, 10_000):
        u = uniforms(torch.tensor(seeds), step)
        assert u.tolist() == [_splitmix64(x, step) for x in seeds]
        assert uniforms(torch.tensor(seeds[5:7]), step).tolist() == u[5:7].tolist()
        assert ((0 <= u) & (u < 1)).all()


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.8)])
def test_draws_follow_the_warped_softmax(temperature, top_p):
    """Chi-square of 20,000 rows' draws against softmax(top-p(logits / T)); tokens top-p removes never come."""
    logits = torch.tensor([2.0, 1.5, 1.0, 0.0, -0.5, -2.0])
    rows = 20_000
    seeds = torch.tensor([row_seed(7, "chi", j) for j in range(rows)])
    picked = draw(logits.repeat(rows, 1), uniforms(seeds, 3), temperature, top_p)
    warp = LogitsProcessorList([TemperatureLogitsWarper(temperature), TopPLogitsWarper(top_p)])
    expected = torch.softmax(warp(None, logits[None]), -1)[0].double()
    counts = torch.bincount(picked, minlength=len(logits)).double()
    kept = expected > 0
    assert counts[~kept].sum() == 0
    exp = expected[kept] / expected[kept].sum() * rows
    assert chisquare(counts[kept].numpy(), exp.numpy()).pvalue > 1e-3
    if top_p < 1:
        assert kept.sum() < len(logits)   # the case really cut the tail


@pytest.mark.parametrize("top_p", [0.0, 0.3, 0.9, 0.99])
def test_nucleus_keeps_what_hf_top_p_keeps(top_p):
    """The sort-free nucleus equals HF's `TopPLogitsWarper` mask, on flat and on peaked rows."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.cat([torch.randn(8, 5000, generator=gen) * scale for scale in (0.5, 3.0, 8.0)])
    logp = torch.log_softmax(logits, -1)
    hf = TopPLogitsWarper(top_p) if top_p > 0 else TopPLogitsWarper(1e-12)
    assert torch.equal(nucleus(logp, top_p), hf(None, logits).isfinite())


def test_top_p_zero_draws_the_most_likely_token():
    logits = torch.tensor([[0.5, 3.0, -1.0, 2.9], [4.0, 0.0, 1.0, 3.0]])
    u = uniforms(torch.arange(2), 0)
    assert draw(logits, u, 1.0, 0.0).tolist() == [1, 0]
    assert draw(logits, torch.tensor([0.999999, 0.999999]), 1.0, 1e-9).tolist() == [1, 0]


class _CounterDraws(LogitsProcessor):
    """For HF `generate` over rows expanded by hand: the same per-row draws as a one-hot score."""

    def __init__(self, seeds: torch.Tensor, prompt_len: int, s: Sampling):
        self.seeds, self.prompt_len, self.s = seeds, prompt_len, s

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_len
        token = draw(scores, uniforms(self.seeds, step), self.s.temperature, self.s.top_p)
        return torch.full_like(scores, float("-inf")).scatter_(-1, token.unsqueeze(-1), 0.0)


@pytest.mark.parametrize("which", ["tiny", "last_steered"])
def test_shared_prefill_equals_generate_on_expanded_rows(which, request):
    """One prefill per prompt, cache repeated to the samples: token for token what HF `generate` gives when
    every (prompt, sample) row is prefilled on its own, with the same draws (fp32, CPU); also with ITI's
    last-position hooks (prompt's last token and each new token shifted)."""
    model, tok = request.getfixturevalue(which)
    s = Sampling(samples_per_prompt=3, max_new_tokens=8, temperature=1.0, top_p=0.9, batch_size=8, seed=0)
    ours = sample_continuations(model, tok, PROMPTS, KEYS, s, prefix="Be kind. ")
    enc = tok(["Be kind. " + p for p in PROMPTS], return_tensors="pt", padding=True, add_special_tokens=False)
    enc = {k: v.repeat_interleave(3, dim=0) for k, v in enc.items()}
    seeds = torch.tensor([row_seed(0, k, j) for k in KEYS for j in range(3)])
    ids = model.generate(**enc, do_sample=False, max_new_tokens=8, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id,
                         logits_processor=LogitsProcessorList([_CounterDraws(seeds, enc["input_ids"].shape[1], s)]))
    texts = tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert ours == [texts[i:i + 3] for i in range(0, len(texts), 3)]
    assert len({c for cs in ours for c in cs}) > 1


def test_samples_do_not_depend_on_batching(tiny):
    """One prompt a batch, or batches cut by a small memory budget: the same continuations."""
    model, tok = tiny
    s = Sampling(samples_per_prompt=2, max_new_tokens=6, temperature=1.0, top_p=0.9, batch_size=5, seed=3)
    whole = sample_continuations(model, tok, PROMPTS, KEYS, s)
    assert plan_batches(model, tok, PROMPTS, s) == [5]
    small = Sampling(**{**s.__dict__, "memory_budget": batch_bytes(model, 2, 8, s)})
    assert len(plan_batches(model, tok, PROMPTS, small)) > 1
    assert sample_continuations(model, tok, PROMPTS, KEYS, small) == whole
    assert sample_continuations(model, tok, PROMPTS, KEYS, Sampling(**{**s.__dict__, "batch_size": 1})) == whole


def test_planned_batches_stay_under_the_budget(tiny):
    model, tok = tiny
    prompts = [" ".join(["a"] * n) for n in (3, 12, 5, 5, 9, 2, 20, 1, 9, 9, 14)]
    s = Sampling(samples_per_prompt=25, max_new_tokens=20, temperature=1.0, top_p=0.9, batch_size=64, seed=0,
                 memory_budget=batch_bytes(model, 3, 20, Sampling(25, 20, 1.0, 0.9, 64, 0)))
    sizes = plan_batches(model, tok, prompts, s)
    assert sum(sizes) == len(prompts) and len(sizes) > 1
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert max(lengths) + 20 <= model.config.max_position_embeddings   # nothing cut
    start = 0
    for n in sizes:
        assert batch_bytes(model, n, max(lengths[start:start + n]), s) <= s.memory_budget
        if start + n < len(prompts):   # greedy: one more prompt would not have fit
            assert batch_bytes(model, n + 1, max(lengths[start:start + n + 1]), s) > s.memory_budget
        start += n
    assert plan_batches(model, tok, prompts, s) == sizes
    too_small = Sampling(**{**s.__dict__, "memory_budget": batch_bytes(model, 1, max(lengths), s) - 1})
    with pytest.raises(StageError, match="memory budget"):
        plan_batches(model, tok, prompts, too_small)


def test_batch_bytes_grow_with_samples_and_length(tiny):
    model, _ = tiny
    s = Sampling(samples_per_prompt=4, max_new_tokens=20, temperature=1.0, top_p=0.9, batch_size=8, seed=0)
    more = Sampling(**{**s.__dict__, "samples_per_prompt": 8})
    assert batch_bytes(model, 2, 10, s) < batch_bytes(model, 2, 10, more)
    assert batch_bytes(model, 2, 10, s) < batch_bytes(model, 2, 100, s) < batch_bytes(model, 4, 100, s)


def test_rows_after_their_eos_are_padded_as_generate_pads_them(tiny):
    """With a frequent token made the EOS, rows stop at different steps: the decoding loop pads each after
    its EOS, token for token as HF `generate` does, and stops once every row has stopped."""
    from types import SimpleNamespace

    from runtime.generate import _decode, _encode, _prepare

    model, tok = tiny
    s = Sampling(samples_per_prompt=4, max_new_tokens=10, temperature=1.0, top_p=0.9, batch_size=8, seed=1)
    enc = dict(_encode(tok, PROMPTS, None, _prepare(model, tok, s)))
    seeds = torch.tensor([row_seed(1, k, j) for k in KEYS for j in range(4)])
    free = _decode(model, SimpleNamespace(eos_token_id=None, pad_token_id=tok.pad_token_id), enc, seeds, s)
    eos = int(free[:, :3].flatten().mode().values)    # a token some rows draw early
    ours = _decode(model, SimpleNamespace(eos_token_id=eos, pad_token_id=tok.pad_token_id), enc, seeds, s)
    stopped = (ours == eos).any(-1)
    assert 0 < int(stopped.sum()) < len(seeds)     # some rows stop, others run on
    for row in ours[stopped]:
        after = row[int((row == eos).nonzero()[0]) + 1:]
        assert (after == tok.pad_token_id).all()
    expanded = {k: v.repeat_interleave(4, dim=0) for k, v in enc.items()}
    width = expanded["input_ids"].shape[1]
    ids = model.generate(**expanded, do_sample=False, max_new_tokens=10, pad_token_id=tok.pad_token_id,
                         eos_token_id=eos, logits_processor=LogitsProcessorList([_CounterDraws(seeds, width, s)]))
    assert torch.equal(ours, ids[:, width:])
