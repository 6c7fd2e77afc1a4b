"""Texts/s of the `classifier` scorer (batched, length-sorted) against a naive one-text-at-a-time loop.

Both paths use the same model object and tokenizer in one process, over the same texts:

- mixsteer: `runtime.scoring.classifier.HFClassifierScorer.score`, batches of `--batch-size` texts sorted
  by token length (little padding), truncation at the model's maximum, `torch.inference_mode`;
- reference: one forward pass per text (no padding at all), softmax over the logits, same truncation.

The model is shaped like a real toxicity classifier but small enough for a 2-core CPU: a **random-weight**
RoBERTa-style sequence classifier (4 layers, d = 256, 4 heads, 514 positions, 2 labels) with the
GPT-NeoX BPE tokenizer the project ships (50,304 tokens; RoBERTa's pad id 1 is `<|padding|>` there).
Random weights do not change the cost of a forward pass. The texts are the demo's generation-like texts:
the DPO chosen/rejected continuations, the SFT replies and the ToxiGen-style statements in data/demo/.

Each path is warmed up on the first texts; then `--rounds` rounds time both paths, in alternating order.
Each round's ratio pairs runs a few seconds apart, so the median of those ratios is the figure to quote
on a shared box (other jobs slow whole minutes down, both paths alike within a round); the median
throughput of each path is printed beside it. The two paths' scores must agree (max |Δ| ≤ 1e-5) or the run fails.

    python bench/score_throughput.py [--texts 0 (all)] [--batch-size 64] [--rounds 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from tokenizers import processors
from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaForSequenceClassification

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.eval_throughput import TOKENIZER_FILE  # noqa: E402
from compiler.schema.scoring import ClassifierScorer  # noqa: E402
from runtime.scoring.classifier import HFClassifierScorer  # noqa: E402

TOLERANCE = 1e-5


def demo_texts() -> list[str]:
    """The continuations and statements of data/demo/, in file order."""
    texts = []
    for name, fields in (("dpo", ("chosen", "rejected")), ("sft", ("text",)), ("toxigen", ("text",))):
        for line in (ROOT / "data" / "demo" / f"{name}.jsonl").read_text().splitlines():
            row = json.loads(line)
            texts.extend(row[f].strip() for f in fields)
    return texts


SMALL = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}
"""This bench's classifier shape (bench/gpu_check.py passes RoBERTa-large's)."""


def save_classifier(folder: Path, shape: dict[str, int] = SMALL) -> None:
    """A random RoBERTa-style classifier of `shape` with the shipped GPT-NeoX tokenizer."""
    tok = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER_FILE), bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>", pad_token="<|padding|>", model_max_length=512)
    eos = tok.eos_token_id
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(   # <s> text </s>, as RoBERTa's
        single="<|endoftext|> $A <|endoftext|>", special_tokens=[("<|endoftext|>", eos)])
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=50304, max_position_embeddings=514, pad_token_id=tok.pad_token_id,
                           bos_token_id=eos, eos_token_id=eos, num_labels=2,
                           id2label={0: "non_toxic", 1: "toxic"}, label2id={"non_toxic": 0, "toxic": 1}, **shape)
    RobertaForSequenceClassification(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)


def naive_scores(scorer: HFClassifierScorer, texts: list[str]) -> list[float]:
    """One unpadded forward pass per text: the loop a first version would write."""
    out = []
    with torch.inference_mode():
        for text in texts:
            enc = scorer.tokenizer(text, truncation=True, max_length=scorer.max_length, return_tensors="pt")
            logits = scorer.model(**enc).logits.float()
            out.append(torch.softmax(logits, dim=-1)[0, scorer.toxic_columns].max().item())
    return out


def timed(fn: Callable[[list[str]], list[float]], texts: list[str]) -> tuple[float, list[float]]:
    start = time.perf_counter()
    scores = fn(texts)
    return time.perf_counter() - start, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=0, help="use the first N texts (0: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: steadier on a shared box)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    texts = demo_texts()
    texts = texts[:args.texts] if args.texts else texts
    with tempfile.TemporaryDirectory() as tmp:
        save_classifier(Path(tmp) / "clf")
        spec = ClassifierScorer(path="clf", toxic_labels=["toxic"], batch_size=args.batch_size)
        scorer = HFClassifierScorer(spec, Path(tmp), progress=False)   # CPU fp32 (no placement)
    lengths = [len(ids) for ids in scorer.tokenizer(texts)["input_ids"]]
    print(f"{len(texts)} texts, {min(lengths)}–{max(lengths)} tokens (mean {statistics.mean(lengths):.1f}); "
          f"random RoBERTa 4×256, batch {args.batch_size}, {torch.get_num_threads()} threads")

    scorer.score(texts[:args.batch_size])       # warm-up
    naive_scores(scorer, texts[:16])
    batched_s, naive_s = [], []
    for r in range(args.rounds):
        pairs = [("batched", scorer.score), ("naive", lambda t: naive_scores(scorer, t))]
        for name, fn in pairs if r % 2 == 0 else pairs[::-1]:
            seconds, scores = timed(fn, texts)
            (batched_s if name == "batched" else naive_s).append(seconds)
            if name == "batched":
                batched = scores
            else:
                naive = scores
        worst = max(abs(a - b) for a, b in zip(batched, naive))
        assert worst <= TOLERANCE, f"batched and naive scores differ by {worst:.2e}"
        print(f"round {r + 1}: batched {len(texts) / batched_s[-1]:8.1f} texts/s, "
              f"naive {len(texts) / naive_s[-1]:8.1f} texts/s = {naive_s[-1] / batched_s[-1]:6.2f}x   "
              f"(max |Δscore| {worst:.1e})")
    ratio = statistics.median(n / b for b, n in zip(batched_s, naive_s))
    b, n = len(texts) / statistics.median(batched_s), len(texts) / statistics.median(naive_s)
    print(f"median: batched {b:.1f} texts/s, naive {n:.1f} texts/s; median of paired ratios {ratio:.2f}x")


if __name__ == "__main__":
    main()
