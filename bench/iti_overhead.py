"""Generation speed of ITI folded into the checkpoint vs the unsteered model vs hook-based ITI.

One random HF OLMo (no download), one random intervention on the top-K heads, three models:
- unsteered: the checkpoint as saved;
- folded: `runtime.steer.iti.fold_into_o_proj`, saved and reloaded with plain `from_pretrained`;
- hooks: the unsteered checkpoint with `runtime.intervention.add_shift_hooks` (the honest_llama/pyvene way).
Same prompts, greedy, exactly `--new-tokens` tokens each (EOS off), rounds interleaved so machine load
hits all three alike; prints the median tokens/s per model and the ratio to unsteered. Goal: folded
≥ 0.98× unsteered. The folded and hooked generations are checked token-identical.

    python bench/iti_overhead.py --layers 8 --d-model 512 --heads 8 --top-k 30
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, OlmoConfig, OlmoForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runtime.intervention import ProbeHeads, add_shift_hooks  # noqa: E402
from runtime.steer.iti import build_intervention, fold_into_o_proj  # noqa: E402


def build_models(args: argparse.Namespace, folder: Path, device: str):
    torch.manual_seed(0)
    config = OlmoConfig(vocab_size=args.vocab, hidden_size=args.d_model, intermediate_size=4 * args.d_model,
                        num_hidden_layers=args.layers, num_attention_heads=args.heads,
                        num_key_value_heads=args.heads, max_position_embeddings=2048, pad_token_id=1,
                        eos_token_id=0, bos_token_id=None)
    OlmoForCausalLM(config).save_pretrained(folder / "base")
    head_dim = args.d_model // args.heads
    rng = np.random.default_rng(0)
    accuracy = rng.uniform(0.5, 1, (args.layers, args.heads))
    ranking = [divmod(int(g), args.heads) for g in np.argsort(accuracy.ravel(), kind="stable")[::-1]]
    probe = ProbeHeads(layers=list(range(args.layers)), accuracy=accuracy, ranking=ranking,
                           directions=rng.normal(size=(args.layers, args.heads, head_dim)),
                           stds=rng.uniform(0.5, 2, (args.layers, args.heads)))
    intervention = build_intervention(probe, top_k_heads=args.top_k, alpha=8.0, direction="mass_mean",
                                          positions="all", n_layers=args.layers)
    folded = fold_into_o_proj(AutoModelForCausalLM.from_pretrained(folder / "base"), intervention)
    folded.save_pretrained(folder / "folded")

    def load(name: str):
        return AutoModelForCausalLM.from_pretrained(folder / name, dtype=torch.float32).to(device).eval()

    hooked = load("base")
    add_shift_hooks(hooked, intervention)
    return {"unsteered": load("base"), "folded": load("folded"), "hooks": hooked}


@torch.no_grad()
def generate(model, prompts: torch.Tensor, new_tokens: int) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                         max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=1)
    if prompts.is_cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--top-k", type=int, default=30)
    p.add_argument("--batch", type=int, default=4, help="prompts per generate call")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 avoids spin-wait on a busy box)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(args, Path(tmp), device)
    prompts = torch.randint(2, args.vocab, (args.batch, args.prompt_tokens),
                            generator=torch.Generator().manual_seed(0)).to(device)
    outputs = {name: generate(m, prompts, args.new_tokens)[0] for name, m in models.items()}  # warm-up
    assert torch.equal(outputs["folded"], outputs["hooks"]), "folded and hooked generations differ"
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            times[name].append(generate(model, prompts, args.new_tokens)[1])

    n_tokens = args.batch * args.new_tokens
    print(f"device: {device}, threads: {torch.get_num_threads()}, model: {args.layers} layers x d {args.d_model}"
          f" x {args.heads} heads, vocab {args.vocab}; {args.top_k} heads steered; batch {args.batch} x "
          f"({args.prompt_tokens} prompt + {args.new_tokens} new tokens), greedy, median of {args.rounds} rounds")
    base = n_tokens / statistics.median(times["unsteered"])
    print(f"{'model':<12}{'tokens/s':>12}{'vs unsteered':>15}")
    for name in models:
        rate = n_tokens / statistics.median(times[name])
        print(f"{name:<12}{rate:>12,.0f}{rate / base:>14.3f}x")


if __name__ == "__main__":
    main()
