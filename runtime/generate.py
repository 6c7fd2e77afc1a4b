"""Batched sampling of continuations with a reproducible random stream per (prompt, sample).

`model.generate` draws every row of a batch from one global RNG, so a sample would depend on the batch
it happened to share and on the batch size. Here each row owns a `torch.Generator` seeded from
(seed, prompt key, sample index); a `LogitsProcessor` applies temperature and top-p (HF's own warpers)
and draws the row's token with that generator, then hands `generate` a one-hot score that greedy
decoding picks. Batching, left padding and the KV cache stay `generate`'s; a rerun, or a different
`batch_size`, gives the same continuations up to float rounding of padded batches: a row's logits can
differ in the last bits with the batch it shares (matrix kernels block by batch shape), and a draw near a
boundary of the cumulative distribution can then pick another token. The evaluate stage therefore
resumes only at batch boundaries (one batch is one saved chunk), so a resumed run is bit-identical.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm
from transformers import (
    GenerationConfig, LogitsProcessor, LogitsProcessorList,
    PreTrainedModel, PreTrainedTokenizerBase, TemperatureLogitsWarper, TopPLogitsWarper,
)

from compiler.errors import StageError
from runtime import iti
from runtime.artifacts import load_causal_lm, load_tokenizer


@dataclass(frozen=True)
class Sampling:
    """Decoding settings (mirrors the spec's `evaluate.generation`)."""

    samples_per_prompt: int
    max_new_tokens: int
    temperature: float
    top_p: float
    batch_size: int
    seed: int


def device_for_run() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(folder: Path, device: torch.device | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """An HF checkpoint folder (the model-folder contract) → eval-mode model and tokenizer.

    A folder holding `intervention.json` (ITI with `positions: last`, written by the steer stage) gets
    that intervention as last-position hooks (`runtime.iti`); wrap teacher-forced scoring in
    `runtime.iti.steer_from` to shift a whole continuation."""
    tok = load_tokenizer(folder)
    model = load_causal_lm(folder, dtype=torch.float32)
    model = model.to(device or device_for_run()).eval()
    intervention_file = folder / iti.INTERVENTION_FILE
    if intervention_file.exists():
        try:
            intervention = iti.load_intervention(intervention_file)
            if intervention["positions"] != "last":
                raise ValueError(f"positions is {intervention['positions']!r}; only 'last' is applied at load")
            iti.add_last_position_hooks(model, intervention)
        except (ValueError, KeyError) as exc:
            raise StageError(f"{intervention_file}: {exc!r}") from None
    return model, tok


def row_seed(seed: int, key: str, sample: int) -> int:
    """A 63-bit seed that depends only on (seed, prompt key, sample index)."""
    digest = hashlib.sha256(f"{seed}\0{key}\0{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class PerRowSampler(LogitsProcessor):
    """Temperature + top-p, then one draw per row from that row's own generator (→ one-hot scores)."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: torch.device):
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature), TopPLogitsWarper(top_p)])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(self.warpers(input_ids, scores.float()), dim=-1)
        u = torch.cat([torch.rand(1, generator=g, device=probs.device) for g in self.generators])
        cdf = probs.cumsum(-1)
        picked = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).clamp_max(probs.shape[-1] - 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, picked, 0.0)


@torch.inference_mode()
def sample_continuations(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: Sequence[str], keys: Sequence[str],
    s: Sampling, *, prefix: str | None = None, desc: str = "generate", progress: bool = True,
) -> list[list[str]]:
    """`samples_per_prompt` continuations for each prompt (`prefix` prepended to the model input only).

    `keys` name the prompts for seeding (e.g. `<set>/<index>`), so a sample's random stream does not depend
    on its batch; `progress=False` for a caller that shows its own progress.
    """
    if len(keys) != len(prompts):
        raise ValueError("one key per prompt")
    tok.padding_side = "left"
    tok.truncation_side = "left"  # keep the end of an over-long prompt: it is what gets continued
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    max_ctx = getattr(model.config, "max_position_embeddings", None)
    gen_cfg = GenerationConfig(
        do_sample=False, max_new_tokens=s.max_new_tokens,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    )
    device = next(model.parameters()).device
    out: list[list[str]] = []
    for start in tqdm(range(0, len(prompts), s.batch_size), desc=desc, unit="batch", leave=False,
                      disable=not progress):
        batch = [(prefix or "") + p for p in prompts[start:start + s.batch_size]]
        max_len = None if max_ctx is None else max_ctx - s.max_new_tokens
        enc = tok(batch, return_tensors="pt", padding=True, truncation=max_len is not None,
                  max_length=max_len, add_special_tokens=False).to(device)
        # greedy `generate` refuses num_return_sequences > 1, so expand rows here, as it would
        enc = {k: v.repeat_interleave(s.samples_per_prompt, dim=0) for k, v in enc.items()}
        seeds = [row_seed(s.seed, k, j) for k in keys[start:start + s.batch_size]
                 for j in range(s.samples_per_prompt)]
        sampler = PerRowSampler(seeds, s.temperature, s.top_p, device)
        ids = model.generate(**enc, generation_config=gen_cfg, logits_processor=LogitsProcessorList([sampler]))
        texts = tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        n = s.samples_per_prompt
        out.extend(texts[i:i + n] for i in range(0, len(texts), n))
    return out
