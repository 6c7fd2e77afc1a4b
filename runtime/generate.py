"""Batched sampling of continuations: each prompt prefilled once, each row's draws a pure function of its seed.

Every row (one sample of one prompt) owns a 63-bit seed `row_seed(seed, prompt key, sample)`; its draw at
decoding step t is the t-th output of SplitMix64 seeded with it (`uniforms`: a counter-based generator,
computed for all rows at once on the device), and the token is the inverse CDF of the temperature- and
top-p-warped softmax (HF's top-p rule, `draw`) at that uniform. A row's draws therefore depend neither
on the batch it shares nor on the batch size. `model.generate` draws every row from one global RNG, so the
decoding loop is ours (`_decode`): the distinct prompts of a batch are prefilled once, left-padded with
HF's position ids, and their KV cache is repeated to `samples_per_prompt` rows (`DynamicCache.
batch_repeat_interleave`); only the last position's logits are computed. A row that emits EOS is padded,
as `generate` does, and the batch stops when every row has.

Batches are sized by memory (`plan_batches`): the estimated KV cache, logits and prefill activations of
a batch stay under a byte budget (`memory_budget`). A row's logits can still differ in the last bits with
the batch it shares (matrix kernels block by batch shape), and a draw near a boundary of the cumulative
distribution can then pick another token; the evaluate stage therefore resumes only at batch boundaries
(one batch is one saved chunk), with a deterministic plan, so a resumed run is bit-identical.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from compiler.errors import StageError
from compiler.schema.precision import Compute
from runtime.intervention import INTERVENTION_FILE, add_last_position_hooks, load_intervention
from runtime.artifacts import load_causal_lm, load_tokenizer
from runtime.device import Placement

CPU_MEMORY_BUDGET = 2 * 1024 ** 3
"""Bytes a CPU generation batch may use when no budget is given (a fixed default: a laptop's share)."""

CUDA_BUDGET_FRACTION = 0.8
"""Share of the device memory not held by this process's tensors (the model) that a batch may use."""

DRAW_BYTES = 48
"""Bytes per row and vocabulary entry alive while a token is drawn (`draw`: the model's logits, float32
log-probabilities, float64 probabilities, int64 bins, float32 temporaries and boolean masks)."""

HISTOGRAM_BINS, HISTOGRAM_ROUNDS = 256, 2
"""The nucleus boundary is narrowed to 1 / 256² of the row's log-probability span (a handful of tokens)."""

_GAMMA, _M1, _M2 = (int(h, 16) - (1 << 64) for h in ("9e3779b97f4a7c15", "bf58476d1ce4e5b9", "94d049bb133111eb"))
"""SplitMix64's increment and mixing multipliers, as two's-complement int64 (torch has no uint64 maths)."""


@dataclass(frozen=True)
class Sampling:
    """Decoding settings (mirrors the spec's `evaluate.generation`); `batch_size` caps prompts per batch
    and `memory_budget` (bytes, None = the device's default) sizes the batches below that cap."""

    samples_per_prompt: int
    max_new_tokens: int
    temperature: float
    top_p: float
    batch_size: int
    seed: int
    memory_budget: int | None = None


def load_model(folder: Path, placement: Placement | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """An HF checkpoint folder (the model-folder contract) → eval-mode model and tokenizer, on the device and
    in the dtype of `placement` (`runtime.device.place`; CPU fp32 without one).

    A folder holding `intervention.json` (ITI with `positions: last`, written by the steer stage) gets
    that intervention as last-position hooks (`runtime.intervention`); wrap teacher-forced scoring in
    `runtime.intervention.steer_from` to shift a whole continuation."""
    placement = placement or Placement(Compute())
    tok = load_tokenizer(folder)
    model = load_causal_lm(folder, **placement.load_kwargs()).to(placement.device).eval()
    intervention_file = folder / INTERVENTION_FILE
    if intervention_file.exists():
        try:
            intervention = load_intervention(intervention_file)
            if intervention["positions"] != "last":
                raise ValueError(f"positions is {intervention['positions']!r}; only 'last' is applied at load")
            add_last_position_hooks(model, intervention)
        except (ValueError, KeyError) as exc:
            raise StageError(f"{intervention_file}: {exc!r}") from None
    return model, tok


def row_seed(seed: int, key: str, sample: int) -> int:
    """A 63-bit seed that depends only on (seed, prompt key, sample index)."""
    digest = hashlib.sha256(f"{seed}\0{key}\0{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's `>>` is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def uniforms(seeds: torch.Tensor, step: int) -> torch.Tensor:
    """Output number `step` (from 0) of SplitMix64 seeded with each of `seeds` (int64), as float64 in [0, 1):
    the top 53 bits of mix(seed + (step + 1) · gamma). A pure function of (seed, step), on any device."""
    offset = ((step + 1) * _GAMMA) % (1 << 64)
    z = seeds + (offset - (1 << 64) if offset >= 1 << 63 else offset)
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    z = z ^ _shr(z, 31)
    return _shr(z, 11).double() * 2.0 ** -53


def nucleus(logp: torch.Tensor, top_p: float) -> torch.Tensor:
    """The tokens HF's `TopPLogitsWarper` keeps, as a mask: token i is kept when the tokens more likely than
    it hold less than `top_p` of the mass (so the most likely always is). Found without sorting the
    vocabulary: `HISTOGRAM_ROUNDS` passes bin the log-probabilities into `HISTOGRAM_BINS` equal bins (plus
    one below and one above the range) and narrow the range to the bin where the ascending mass crosses
    1 − top_p; bins above it are kept, bins below dropped, and only the few tokens of that bin are sorted.
    Bins are monotone in the log-probability, so what is dropped is always a least-likely set. Bin masses
    are float64 sums (`scatter_add_`: in a fixed order on CPU, in atomic order on CUDA)."""
    probs = logp.exp().double()
    hi = logp.amax(-1, keepdim=True)
    lo = logp.masked_fill(logp.isinf(), float("inf")).amin(-1, keepdim=True)
    for _ in range(HISTOGRAM_ROUNDS):
        lo, hi = lo - (hi - lo) / HISTOGRAM_BINS, hi + (hi - lo) / HISTOGRAM_BINS   # a bin of slack each side
        width = (hi - lo) / HISTOGRAM_BINS
        bins = ((logp - lo) / width).floor().clamp(-1, HISTOGRAM_BINS).long() + 1   # 0: below lo; last: above hi
        mass = torch.zeros(len(logp), HISTOGRAM_BINS + 2, dtype=torch.float64, device=probs.device)
        cum = mass.scatter_add_(-1, bins, probs).cumsum(-1)
        edge = (cum <= 1 - top_p).sum(-1, keepdim=True).clamp_max(HISTOGRAM_BINS + 1)   # first bin crossing
        lo = lo + (edge - 1).to(lo.dtype) * width
        hi = lo + width
    above, band = bins > edge, bins == edge
    size = max(int(band.sum(-1).max()), 1)
    vals, idx = torch.topk(logp.masked_fill(~band, float("-inf")), size, dim=-1)
    band_probs = vals.double().exp()
    before = cum[:, -1:] - cum.gather(-1, edge) + band_probs.cumsum(-1) - band_probs
    kept = above.scatter(-1, idx, (before < top_p) & vals.isfinite() | above.gather(-1, idx))
    return kept.scatter(-1, logp.argmax(-1, keepdim=True), True)   # top_p = 0 keeps the most likely alone


def draw(scores: torch.Tensor, u: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """One token per row: the inverse CDF, at the row's uniform `u`, of softmax(scores / temperature) cut to
    its nucleus (`nucleus`), taken over the kept tokens in vocabulary order."""
    logp = torch.log_softmax(scores.float() / temperature, dim=-1)
    probs = logp.exp() if top_p >= 1 else torch.where(nucleus(logp, top_p), logp.exp(), 0.0)
    cdf = probs.cumsum(-1)
    # right=True: the first token whose cumulative mass exceeds the target, never one of mass 0
    rank = torch.searchsorted(cdf, u.to(cdf.dtype).unsqueeze(-1) * cdf[:, -1:], right=True)
    return rank.squeeze(-1).clamp_max(probs.shape[-1] - 1)


def _kv_bytes_per_token(model: PreTrainedModel) -> int:
    """Keys and values of one token over all layers, at the model's dtype."""
    cfg = model.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * heads * head_dim * model.dtype.itemsize


def batch_bytes(model: PreTrainedModel, prompts: int, prompt_tokens: int, s: Sampling) -> int:
    """Estimated peak bytes of one batch beyond the weights: the prefill's cache for `prompts` prompts
    padded to `prompt_tokens` (alive until it is repeated), plus the larger of the prefill's activations
    (hidden states, MLP, attention scores) with its last-position logits, and the cache repeated to every
    sample row at full length (plus one layer's copy while it grows) with the tensors of each draw."""
    cfg, item = model.config, model.dtype.itemsize
    rows, length = prompts * s.samples_per_prompt, prompt_tokens + s.max_new_tokens
    kv = _kv_bytes_per_token(model)
    activations = prompts * prompt_tokens * item * (
        4 * cfg.hidden_size + 2 * cfg.intermediate_size + cfg.num_attention_heads * prompt_tokens)
    decode = rows * length * kv * (cfg.num_hidden_layers + 1) // cfg.num_hidden_layers
    draws = rows * cfg.vocab_size * DRAW_BYTES
    return prompts * prompt_tokens * kv + max(activations + prompts * cfg.vocab_size * 4, decode + draws)


def memory_budget(model: PreTrainedModel, s: Sampling) -> int:
    """Bytes a batch may use: the configured budget, else on CUDA a share of the memory this process's
    tensors leave free (total − allocated: deterministic for one model on one device, unlike the free
    memory of a shared device, so a resumed run plans the same batches), else `CPU_MEMORY_BUDGET`."""
    if s.memory_budget is not None:
        return s.memory_budget
    device = next(model.parameters()).device
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return int(CUDA_BUDGET_FRACTION * (total - torch.cuda.memory_allocated(device)))
    return CPU_MEMORY_BUDGET


def _encode(tok: PreTrainedTokenizerBase, prompts: Sequence[str], prefix: str | None, max_len: int | None):
    """The left-padded batch of prompts (prefix prepended), cut from the left to `max_len` tokens."""
    return tok([(prefix or "") + p for p in prompts], return_tensors="pt", padding=True,
               truncation=max_len is not None, max_length=max_len, add_special_tokens=False)


def _prepare(model: PreTrainedModel, tok: PreTrainedTokenizerBase, s: Sampling) -> int | None:
    """Left padding and truncation (an over-long prompt keeps its end: it is what gets continued); returns
    the longest prompt the context leaves room for."""
    tok.padding_side = "left"
    tok.truncation_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    max_ctx = getattr(model.config, "max_position_embeddings", None)
    return None if max_ctx is None else max_ctx - s.max_new_tokens


def plan_batches(model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: Sequence[str], s: Sampling,
                 prefix: str | None = None) -> list[int]:
    """Prompts per batch, in order: each batch as many consecutive prompts as fit `memory_budget` (at
    their longest prompt's length) and `s.batch_size`. Deterministic for given prompts, settings and
    budget; StageError when one prompt with its samples does not fit."""
    max_len = _prepare(model, tok, s)
    lengths = [len(ids) for ids in tok([(prefix or "") + p for p in prompts], truncation=max_len is not None,
                                       max_length=max_len, add_special_tokens=False)["input_ids"]]
    budget, sizes, start = memory_budget(model, s), [], 0
    while start < len(lengths):
        n, longest = 0, 0
        while start + n < len(lengths) and n < s.batch_size:
            wider = max(longest, lengths[start + n])
            if batch_bytes(model, n + 1, wider, s) > budget:
                break
            n, longest = n + 1, wider
        if n == 0:
            need = batch_bytes(model, 1, lengths[start], s)
            raise StageError(f"one prompt of {lengths[start]} tokens with {s.samples_per_prompt} samples needs "
                             f"~{need / 2 ** 20:.0f} MiB, over the generation memory budget of "
                             f"{budget / 2 ** 20:.0f} MiB (evaluate.generation.memory_budget_mb)")
        sizes.append(n)
        start += n
    return sizes


@torch.inference_mode()
def _decode(model: PreTrainedModel, tok: PreTrainedTokenizerBase, enc: dict[str, torch.Tensor],
            seeds: torch.Tensor, s: Sampling) -> torch.Tensor:
    """New token ids [prompts × samples, ≤ max_new_tokens] (pad after a row's EOS) for one batch of
    distinct prompts: one prefill, the cache repeated to the sample rows, then one token per step."""
    n = s.samples_per_prompt
    mask = enc["attention_mask"]
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache = DynamicCache(config=model.config)
    logits = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions, cache=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1]
    cache.batch_repeat_interleave(n)
    logits, mask = logits.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)
    position = positions[:, -1:].repeat_interleave(n, dim=0)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    done = torch.zeros(len(seeds), dtype=torch.bool, device=seeds.device)
    out = []
    for step in range(s.max_new_tokens):
        token = draw(logits, uniforms(seeds, step), s.temperature, s.top_p)
        token = token.masked_fill(done, pad)
        out.append(token)
        if eos is not None:
            done |= token == eos
        if step + 1 == s.max_new_tokens or bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        position = position + 1
        logits = model(input_ids=token.unsqueeze(-1), attention_mask=mask, position_ids=position, cache=cache,
                       use_cache=True).logits[:, -1]
    return torch.stack(out, dim=-1)


def sample_continuations(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: Sequence[str], keys: Sequence[str],
    s: Sampling, *, prefix: str | None = None, desc: str = "generate", progress: bool = True,
) -> list[list[str]]:
    """`samples_per_prompt` continuations for each prompt (`prefix` prepended to the model input only),
    in the batches `plan_batches` gives.

    `keys` name the prompts for seeding (e.g. `<set>/<index>`), so a sample's random stream does not depend
    on its batch; `progress=False` for a caller that shows its own progress.
    """
    if len(keys) != len(prompts):
        raise ValueError("one key per prompt")
    max_len = _prepare(model, tok, s)
    device = next(model.parameters()).device
    out: list[list[str]] = []
    start = 0
    for size in tqdm(plan_batches(model, tok, prompts, s, prefix), desc=desc, unit="batch", leave=False,
                     disable=not progress):
        enc = _encode(tok, prompts[start:start + size], prefix, max_len).to(device)
        seeds = torch.tensor([row_seed(s.seed, k, j) for k in keys[start:start + size]
                              for j in range(s.samples_per_prompt)], dtype=torch.long, device=device)
        texts = tok.batch_decode(_decode(model, tok, dict(enc), seeds, s), skip_special_tokens=True)
        out.extend(texts[i:i + s.samples_per_prompt] for i in range(0, len(texts), s.samples_per_prompt))
        start += size
    return out
