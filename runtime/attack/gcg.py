"""Greedy coordinate gradient (GCG) adversarial suffix search, Zou et al. 2023 ("individual" attack).

For one prompt, find `n` suffix tokens that, appended to the prompt, make the model continue with a
target string. The step is llm-attacks' (`GCGMultiPromptAttack.step`, `demo.ipynb`):

1. the gradient of the target's cross-entropy with respect to the one-hot suffix (through the input
   embedding matrix) ranks, per position, the `top_k` allowed tokens with the most negative gradient;
2. `sample_control`: candidate i swaps position ⌊i·n/B⌋ (the B candidates spread evenly over the n
   positions, in order) for a token drawn uniformly from that position's top-k;
3. candidates that do not survive a text round trip are dropped (see below), then all are scored in
   batched forward passes;
4. the current suffix **becomes the batch's best candidate, even when it is worse** than the current
   one (llm-attacks' experiment configs set `anneal=False`; with `anneal=True` a worse one would be
   taken with a simulated-annealing probability); the best suffix seen (lowest loss) is kept apart,
   and it is what the search returns.

Success check and early stop: as in the demo, the search stops once the attack succeeds. The check runs
on the best suffix (the one reported and judged), at init and after every `success_check_every`-th step
if the best suffix improved since the last check — re-checking an unchanged suffix could not change the
answer, so with 1 (the default) this equals the demo's check at every step. The check is the caller's
(`succeeded`, e.g. the attack stage's judge: one greedy generation, often dearer than a step, hence the
cadence) or, by default, an exact greedy reproduction of the target (free: it falls out of the scoring).

Round trip: llm-attacks keeps a candidate whose decoded text re-tokenizes *on its own* to the same
number of tokens and then scores the re-tokenized ids; here a candidate is kept only when
`tokenize(prompt + decode(suffix)) == prompt_ids + suffix_ids` (stricter: the ids scored are exactly
the ids the reported suffix *text* produces after the prompt). Repeats and the current suffix are
dropped too (llm-attacks drops the current one and pads the batch with copies, which cannot change the
argmin). If every candidate of a step is dropped the current suffix stays (llm-attacks would fail).

Candidates only use printable-ASCII, non-special tokens of the tokenizer (llm-attacks'
`allow_non_ascii=False`). Works with any HF causal LM whose input embedding is a plain lookup table, on
whichever device the model sits on; all random draws come from a CPU `torch.Generator` seeded by the
caller, so a seed fixes the result.

Resuming: everything the search carries from one step to the next is a small `GCGState` (suffixes, losses,
the generator's state), handed to `after_step` after every step; `gcg_attack(..., resume=state)` goes on
from it exactly as the uninterrupted search would have (the attack stage saves it on a stop signal).
"""
from __future__ import annotations

import base64
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from runtime.intervention import steer_from

SuccessCheck = Callable[[list[int]], bool]
"""Does this suffix (token ids) make the attack succeed?"""


@dataclass(frozen=True)
class GCGSettings:
    """Search settings (mirror the spec's `attack.gcg`)."""

    suffix_tokens: int
    steps: int
    candidates_per_step: int
    top_k_tokens: int
    eval_batch_size: int | None = None
    early_stop: bool = True
    success_check_every: int = 1


@dataclass(frozen=True)
class GCGResult:
    """The best suffix seen (what the attack reports) and the search's history.

    `current_losses[t]` is the loss of the current suffix and `best_losses[t]` the lowest loss seen so
    far, at init (t = 0) and after step t; `loss` (= `best_losses[-1]`) belongs to the returned suffix.
    `stopped_on_success`: the success check passed on it (the search ended there).
    """

    suffix_ids: list[int]
    suffix_text: str
    loss: float
    target_matched: bool
    current_losses: list[float]
    best_losses: list[float]
    stopped_on_success: bool

    @property
    def steps_run(self) -> int:
        return len(self.current_losses) - 1


@dataclass(frozen=True)
class GCGState:
    """The search after `step` steps: the current and best suffixes with their losses, the loss histories,
    whether to stop (`stop`: the check passed; `unchecked`: the best improved since the last check), and
    the candidate generator's state (`rng`, base64 of `torch.Generator.get_state()`). JSON-ready: floats
    round-trip exactly through `json`."""

    step: int
    current: list[int]
    current_loss: float
    best: list[int]
    best_loss: float
    best_match: bool
    current_losses: list[float]
    best_losses: list[float]
    stop: bool
    unchecked: bool
    rng: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "GCGState":
        return cls(**data)

    def generator(self) -> torch.Generator:
        gen = torch.Generator()
        gen.set_state(torch.frombuffer(bytearray(base64.b64decode(self.rng)), dtype=torch.uint8))
        return gen


def _rng_text(gen: torch.Generator) -> str:
    return base64.b64encode(gen.get_state().numpy().tobytes()).decode("ascii")


def allowed_token_mask(tok: PreTrainedTokenizerBase, vocab_rows: int) -> torch.Tensor:
    """[vocab_rows] bool: ids the tokenizer knows, not special, decoding to non-empty printable ASCII."""
    n = min(len(tok), vocab_rows)
    special = set(tok.all_special_ids)
    texts = tok.batch_decode([[i] for i in range(n)], clean_up_tokenization_spaces=False)
    mask = torch.zeros(vocab_rows, dtype=torch.bool)
    for i, t in enumerate(texts):
        mask[i] = bool(t) and t.isascii() and t.isprintable() and i not in special
    return mask


def decode_suffix(tok: PreTrainedTokenizerBase, ids: list[int]) -> str:
    """The suffix text appended to the prompt (decoded without clean-up, so it round-trips)."""
    return tok.decode(ids, clean_up_tokenization_spaces=False)


def roundtrips(tok: PreTrainedTokenizerBase, prompt: str, prompt_ids: list[int],
               suffixes: list[list[int]]) -> list[bool]:
    """Does `prompt + decode(suffix)` tokenize back to exactly `prompt_ids + suffix`?"""
    if not suffixes:
        return []
    texts = [prompt + decode_suffix(tok, s) for s in suffixes]
    enc = tok(texts, add_special_tokens=False)["input_ids"]
    return [e == prompt_ids + s for e, s in zip(enc, suffixes)]


def initial_suffix(tok: PreTrainedTokenizerBase, prompt: str, prompt_ids: list[int], n: int,
                   allowed: torch.Tensor) -> list[int]:
    """The reference's "! ! ! …" start: `n` copies of one token that round-trips, tried in a fixed order
    (" !", "!", then every allowed id in turn)."""
    first = [ids[0] for ids in (tok(" !", add_special_tokens=False)["input_ids"],
                                tok("!", add_special_tokens=False)["input_ids"]) if len(ids) == 1]
    for t in first + allowed.nonzero().flatten().tolist():
        if allowed[t] and roundtrips(tok, prompt, prompt_ids, [[t] * n])[0]:
            return [t] * n
    raise ValueError(f"no single token repeated {n} times survives a tokenizer round trip after {prompt!r}")


def random_suffix(tok: PreTrainedTokenizerBase, prompt: str, prompt_ids: list[int], n: int,
                  allowed: torch.Tensor, generator: torch.Generator, tries: int = 1000) -> list[int]:
    """`n` random allowed tokens that round-trip after `prompt` (redrawn until they do)."""
    pool = allowed.nonzero().flatten()
    for _ in range(tries):
        ids = pool[torch.randint(len(pool), (n,), generator=generator)].tolist()
        if roundtrips(tok, prompt, prompt_ids, [ids])[0]:
            return ids
    raise ValueError(f"no round-tripping random suffix of {n} tokens in {tries} draws")


@torch.inference_mode()
def target_losses(model: PreTrainedModel, prompt_ids: torch.Tensor, suffixes: torch.Tensor,
                  target_ids: torch.Tensor, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean target cross-entropy [B] and exact greedy match [B] for each suffix row of `suffixes` [B, n]."""
    b, t = suffixes.shape[0], target_ids.numel()
    losses, matched = [], []
    step = batch_size or b
    for start in range(0, b, step):
        s = suffixes[start:start + step]
        ids = torch.cat([prompt_ids.expand(len(s), -1), s, target_ids.expand(len(s), -1)], dim=1)
        with steer_from(model, ids.shape[1] - t - 1):   # last-position ITI: as if generating the target
            logits = model(input_ids=ids, logits_to_keep=t + 1).logits[:, :-1].float()
        tgt = target_ids.expand(len(s), -1)
        losses.append(F.cross_entropy(logits.transpose(1, 2), tgt, reduction="none").mean(1))
        matched.append((logits.argmax(-1) == tgt).all(1))
    return torch.cat(losses).cpu(), torch.cat(matched).cpu()


def suffix_gradient(model: PreTrainedModel, prompt_ids: torch.Tensor, suffix: torch.Tensor,
                    target_ids: torch.Tensor) -> torch.Tensor:
    """d(target loss)/d(one-hot suffix) [n, vocab_rows]: the linearised effect of every single swap."""
    weight = model.get_input_embeddings().weight.detach()
    one_hot = torch.zeros(suffix.numel(), weight.shape[0], dtype=weight.dtype, device=weight.device)
    one_hot.scatter_(1, suffix.view(-1, 1), 1.0).requires_grad_(True)
    embeds = torch.cat([weight[prompt_ids[0]], one_hot @ weight, weight[target_ids[0]]]).unsqueeze(0)
    t = target_ids.numel()
    with steer_from(model, embeds.shape[1] - t - 1):
        logits = model(inputs_embeds=embeds, logits_to_keep=t + 1).logits[0, :-1].float()
    loss = F.cross_entropy(logits, target_ids[0])
    (grad,) = torch.autograd.grad(loss, one_hot)
    return grad


def candidate_positions(n: int, count: int) -> torch.Tensor:
    """[count] the position candidate i swaps: ⌊i·n/count⌋ (llm-attacks' `arange(0, n, n / count)`, in
    exact integer arithmetic)."""
    return torch.arange(count) * n // count


def sample_candidates(suffix: torch.Tensor, grad: torch.Tensor, allowed: torch.Tensor, top_k: int,
                      count: int, generator: torch.Generator) -> torch.Tensor:
    """llm-attacks' `sample_control`: `count` copies of `suffix` [n], candidate i with position
    `candidate_positions(n, count)[i]` swapped for a uniform draw from that position's top-k allowed
    tokens by negative gradient."""
    scores = grad.float().cpu().masked_fill(~allowed, float("inf"))
    k = min(top_k, int(allowed.sum()))
    top = scores.topk(k, dim=1, largest=False).indices  # [n, k]
    pos = candidate_positions(suffix.numel(), count)
    pick = torch.randint(k, (count,), generator=generator)
    cands = suffix.cpu().repeat(count, 1)
    cands[torch.arange(count), pos] = top[pos, pick]
    return cands


def _distinct_new(candidates: list[list[int]], current: list[int]) -> list[list[int]]:
    """Candidates in draw order, without repeats and without the current suffix."""
    seen, out = {tuple(current)}, []
    for c in candidates:
        if tuple(c) not in seen:
            seen.add(tuple(c))
            out.append(c)
    return out


def gcg_attack(model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompt: str, target: str,
               settings: GCGSettings, seed: int, *, allowed: torch.Tensor | None = None,
               init_ids: list[int] | None = None, succeeded: SuccessCheck | None = None,
               resume: GCGState | None = None, after_step: Callable[[GCGState], None] | None = None,
               desc: str = "gcg") -> GCGResult:
    """Optimise a suffix for `prompt` toward `target` (see the module docstring); `succeeded` is the
    early-stop check (default: the greedy continuation is the target). `resume` goes on from a state
    `after_step` was handed (same prompt, target, settings and seed); `after_step` may raise to stop."""
    device = next(model.parameters()).device
    vocab_rows = model.get_input_embeddings().weight.shape[0]
    if allowed is None:
        allowed = allowed_token_mask(tok, vocab_rows)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    t_ids = tok(target, add_special_tokens=False)["input_ids"]
    if not t_ids:
        raise ValueError("the GCG target tokenizes to nothing")
    max_ctx = getattr(model.config, "max_position_embeddings", None)
    if max_ctx is not None and len(p_ids) + settings.suffix_tokens + len(t_ids) > max_ctx:
        raise ValueError(f"prompt + suffix + target exceed the model's {max_ctx} positions: {prompt[:60]!r}…")
    prompt_t = torch.tensor([p_ids], device=device)
    target_t = torch.tensor([t_ids], device=device)

    def done(ids: list[int], matched: bool) -> bool:
        return settings.early_stop and (succeeded(ids) if succeeded is not None else matched)

    if resume is None:
        n = settings.suffix_tokens
        cur = init_ids if init_ids is not None else initial_suffix(tok, prompt, p_ids, n, allowed)
        if len(cur) != n:
            raise ValueError(f"init suffix has {len(cur)} tokens, expected {n}")
        gen = torch.Generator().manual_seed(seed)
        loss, match = target_losses(model, prompt_t, torch.tensor([cur], device=device), target_t)
        cur_loss = float(loss[0])
        best, best_loss, best_match = cur, cur_loss, bool(match[0])
        current_losses, best_losses = [cur_loss], [best_loss]
        stop, unchecked, first = done(best, best_match), False, 1
    else:
        cur, cur_loss, best, best_loss, best_match = (resume.current, resume.current_loss, resume.best,
                                                      resume.best_loss, resume.best_match)
        current_losses, best_losses = list(resume.current_losses), list(resume.best_losses)
        stop, unchecked, first, gen = resume.stop, resume.unchecked, resume.step + 1, resume.generator()
    for step in tqdm(range(first, settings.steps + 1), desc=desc, unit="step", leave=False):
        if stop:
            break
        suffix_t = torch.tensor(cur, device=device)
        grad = suffix_gradient(model, prompt_t, suffix_t, target_t)
        sampled = sample_candidates(suffix_t, grad, allowed, settings.top_k_tokens,
                                    settings.candidates_per_step, gen).tolist()
        unique = _distinct_new(sampled, cur)
        kept = [c for c, ok in zip(unique, roundtrips(tok, prompt, p_ids, unique)) if ok]
        if kept:
            losses, matched = target_losses(model, prompt_t, torch.tensor(kept, device=device), target_t,
                                            settings.eval_batch_size)
            i = int(losses.argmin())
            cur, cur_loss = kept[i], float(losses[i])  # moved to unconditionally, as llm-attacks does
            if cur_loss < best_loss:
                best, best_loss, best_match, unchecked = cur, cur_loss, bool(matched[i]), True
        if unchecked and step % settings.success_check_every == 0:
            stop, unchecked = done(best, best_match), False
        current_losses.append(cur_loss)
        best_losses.append(best_loss)
        if after_step is not None:
            after_step(GCGState(step, list(cur), cur_loss, list(best), best_loss, best_match, list(current_losses),
                                list(best_losses), stop, unchecked, _rng_text(gen)))
    return GCGResult(suffix_ids=list(best), suffix_text=decode_suffix(tok, best), loss=best_loss,
                     target_matched=best_match, current_losses=current_losses, best_losses=best_losses,
                     stopped_on_success=stop)
