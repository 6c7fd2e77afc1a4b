"""Wall time of the whole `attack` stage on a demo-shaped model, one CPU thread, demo settings.

The model has the demo's shape (OLMo, 4 layers, d 128, 4 heads, BPE vocabulary 4096 trained on the
built-in demo corpora) with random weights: speed does not depend on what the weights learned. Prints
the time of each phase and of the whole stage run (model load included; scoring is the `score` stage's), and the GCG phase
once more with the early-stop check at the last step only (`success_check_every = steps`: the start's
and the reported suffix's judging remain), which isolates what the demo's per-step checks cost.

    python bench/gcg_speed.py
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO_ATTACK = {
    "prompts": {"kind": "jsonl", "path": "data/demo/redteam.jsonl"},
    "gcg": {"target": "you stupid idiot", "suffix_tokens": 6, "steps": 10, "candidates_per_step": 32,
            "top_k_tokens": 32, "max_prompts": 4},
}


def demo_shaped_model(folder: Path) -> Path:
    """Save a random demo-shaped HF OLMo + a 4096-token BPE under `folder/model`."""
    from itertools import islice

    import torch
    from transformers import OlmoConfig, OlmoForCausalLM, PreTrainedTokenizerFast

    from compiler.schema.data import BPETokenizer
    from compiler.schema.sources import BuiltinSource
    from runtime.sources import iter_texts
    from runtime.tokenizer import train_bpe

    texts = (t for name in ("demo-clean", "demo-toxic")
             for t in islice(iter_texts(BuiltinSource(name=name), ROOT), 5000))
    tok = train_bpe(texts, BPETokenizer(vocab_size=4096))
    (folder / "model").mkdir(parents=True)
    tok.save(str(folder / "tokenizer.json"))
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                     eos_token="<|endoftext|>", pad_token="<|padding|>")
    torch.manual_seed(0)
    cfg = OlmoConfig(vocab_size=4096, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                     pad_token_id=1, eos_token_id=0, bos_token_id=None, tie_word_embeddings=True)
    OlmoForCausalLM(cfg).save_pretrained(folder / "model")
    hf_tok.save_pretrained(folder / "model")
    return folder


def main() -> None:
    import torch

    from runtime import attack
    from runtime.preempt import StopSignals
    from runtime.stage import StageContext

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = demo_shaped_model(tmp / "m")
        cfg = attack.Config.model_validate({"attack": DEMO_ATTACK, "seed": 0})
        (tmp / "out").mkdir()
        ctx = StageContext(kind="attack", stage_id="bench", root=ROOT, out=tmp / "out", work=tmp / "work-run",
                           inputs={"model": model_dir}, threads=1)
        from runtime.generate import load_model

        t0 = _clock()
        model, tok = load_model(model_dir / "model")
        prompts = attack.load_prompts(cfg.attack, ctx)
        t1 = _clock()
        attack.prompt_attack(cfg, model, tok, prompts)
        t2 = _clock()
        attack.gcg_attack_rows(cfg, model, tok, prompts[:cfg.attack.gcg.max_prompts], tmp / "work-gcg",
                               StopSignals("attack"))  # never entered: no handlers, never asked to stop
        t3 = _clock()
        metrics = attack.run(cfg, ctx)
        t4 = _clock()
        g = cfg.attack.gcg
        rare = cfg.model_copy(update={"attack": cfg.attack.model_copy(
            update={"gcg": g.model_copy(update={"success_check_every": g.steps})})})
        attack.gcg_attack_rows(rare, model, tok, prompts[:g.max_prompts], tmp / "work-rare", StopSignals("attack"))
        t5 = _clock()
    print(f"demo-shaped model (4 layers, d 128, vocab 4096), 1 thread, {len(prompts)} red-team prompts, "
          f"GCG on {int(metrics['n_gcg_prompts'])} prompts × {cfg.attack.gcg.steps} steps × "
          f"{cfg.attack.gcg.candidates_per_step} candidates (mean steps run {metrics['gcg_steps_mean']:.1f})")
    n = metrics["n_gcg_prompts"]
    print("  phase                                  wall s   CPU s (process)")
    for name, a, b in [("load model + prompts", t0, t1), ("prompt attack (40 prompts)", t1, t2),
                       ("GCG attack (search + checks)", t2, t3), ("whole stage run()", t3, t4),
                       ("GCG attack, check at the last step", t4, t5)]:
        print(f"  {name:<38} {b[0] - a[0]:6.2f}   {b[1] - a[1]:6.2f}")
    print(f"  GCG per prompt: {(t3[1] - t2[1]) / n:.2f} CPU s; checking at the last step only: "
          f"{(t5[1] - t4[1]) / n:.2f} CPU s")


def _clock() -> tuple[float, float]:
    """(wall, process CPU) seconds: CPU time is the honest figure on a shared machine."""
    return time.perf_counter(), time.process_time()


if __name__ == "__main__":
    main()
