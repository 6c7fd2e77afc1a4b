"""Tokens/s of the pretrain stage's training step vs a plain transformers `OlmoForCausalLM` loop.

Same architecture (the `tiny` preset), same initial weights (the OLMo init exported with
`runtime.pretrain.hf_export`), same random batches, fp32 on CPU, AdamW and grad clipping in both. The reference is
the textbook HF loop: `model(input_ids, labels=input_ids).loss`, `clip_grad_norm_`, `torch.optim.AdamW`.

    python bench/pretrain_throughput.py [--steps 20] [--vocab 4096] [--seq 256] [--batch 8] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import torch


def olmo_setup(args):
    from olmo.model import OLMo
    from olmo.optim import build_optimizer, build_scheduler

    from compiler.schema.data import TokenizerInfo
    from compiler.schema.model import ModelSection
    from compiler.schema.pretrain import PretrainSection
    from runtime.pretrain.process_group import Runtime
    from runtime.pretrain import Config, build_train_config

    cfg = Config(
        model=ModelSection(preset="tiny", max_sequence_length=args.seq),
        vocab=TokenizerInfo(identifier="bench", vocab_size=args.vocab, embedding_size=args.vocab,
                            eos_token_id=0, pad_token_id=1),
        train=PretrainSection(sequence_length=args.seq, global_batch_size=args.batch,
                              device_microbatch_size=args.batch, precision="fp32", warmup_fraction=0.0),
        max_steps=args.steps, seed=0,
    )
    tc = build_train_config(cfg, data_paths=[], tokenizer_file="unused", save_folder="unused",
                            world_size=1, precision="fp32", run_name="bench")
    torch.manual_seed(0)
    model = OLMo(tc.model)
    return tc, model, build_optimizer(tc, model), build_scheduler(tc), Runtime(torch.device("cpu"), 0, 0, 1)


def time_steps(step_fn, batches) -> float:
    step_fn(batches[0])  # warm-up (allocator, thread pools)
    tic = time.perf_counter()
    for b in batches[1:]:
        step_fn(b)
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from runtime.pretrain.hf_export import to_hf_model
    from runtime.pretrain.olmo_train import train_step

    tc, olmo, optim, sched, rt = olmo_setup(args)
    hf = to_hf_model(tc.model, olmo.state_dict()).train()
    hf_optim = torch.optim.AdamW(hf.parameters(), lr=tc.optimizer.learning_rate, betas=tc.optimizer.betas,
                                 eps=tc.optimizer.eps, weight_decay=tc.optimizer.weight_decay)
    gen = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(2, args.vocab, (args.batch, args.seq), generator=gen)}
               for _ in range(args.steps + 1)]
    olmo.train()
    counter = iter(range(1, 10**9))

    def olmo_step(batch):
        train_step(tc, rt, olmo, optim, sched, batch, next(counter), args.steps + 1)

    def hf_step(batch):
        hf_optim.zero_grad(set_to_none=True)
        hf(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), tc.max_grad_norm)
        hf_optim.step()

    tokens = args.steps * args.batch * args.seq
    hf_s, olmo_s = time_steps(hf_step, batches), time_steps(olmo_step, batches)
    print(f"tiny OLMo d={tc.model.d_model} L={tc.model.n_layers} vocab={args.vocab} batch={args.batch}x{args.seq}, "
          f"{args.steps} steps, {args.threads} threads, {torch.__version__}")
    print(f"transformers OlmoForCausalLM loop : {tokens / hf_s:10,.0f} tokens/s")
    print(f"mixsteer pretrain step (ai2-olmo) : {tokens / olmo_s:10,.0f} tokens/s")
    print(f"speed-up                          : {hf_s / olmo_s:10.2f}x")


if __name__ == "__main__":
    main()
