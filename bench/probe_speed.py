"""Batched torch probes vs the per-head scikit-learn loop, on one OLMo-1B-shaped synthetic problem.

All 16 × 16 heads (head size 128) of random activations for 2,000 examples; `--planted` heads carry
a toxic-vs-clean shift of graded strength along a random direction, so the true ranking of the best
heads is known. Prints the time of each implementation, the speed-up, the largest per-head accuracy
gap and whether the top-K head sets agree for every K up to 10 % of heads.

    python bench/probe_speed.py [--threads 2]
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from runtime.probe_fit import fit_probes, rank_probes


def planted_activations(n: int, layers: int, heads: int, head_dim: int, planted: int, seed: int):
    """Gaussian [n, layers·heads, head_dim] features, labels, and the planted heads best first."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, layers * heads, head_dim), dtype=np.float32)
    chosen = rng.choice(layers * heads, planted, replace=False)
    for rank, g in enumerate(chosen):
        u = rng.standard_normal(head_dim)
        u /= np.linalg.norm(u)
        strength = 3.0 - 2.0 * rank / max(1, planted - 1)             # separations 3.0 … 1.0
        x[:, g, :] += ((y - 0.5) * strength)[:, None] * u.astype(np.float32)
    return x, y, chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--planted", type=int, default=None, help="default: 10 %% of heads")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--tolerance", type=float, default=1e-6)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n_heads = args.layers * args.heads
    top = max(1, math.ceil(0.1 * n_heads))
    planted = args.planted or top
    x, y, chosen = planted_activations(args.examples, args.layers, args.heads, args.head_dim, planted, 0)
    order = np.random.default_rng(1).permutation(args.examples)
    train, val = order[: int(0.8 * args.examples)], order[int(0.8 * args.examples):]
    kw = dict(l2_penalty=args.l2, max_iterations=1000, tolerance=args.tolerance, progress=False)
    fits, seconds = {}, {}
    for impl in ("batched", "sklearn"):
        fit_probes(x[:, :2], y, train, val, implementation=impl, device="cpu", **kw)  # warm-up: start-up
        t0 = time.perf_counter()                                                # costs are not compared
        fits[impl] = fit_probes(x, y, train, val, implementation=impl, device="cpu", **kw)
        seconds[impl] = time.perf_counter() - t0
    rb, rs = rank_probes(fits["batched"]), rank_probes(fits["sklearn"])
    agree = all(set(rb[:k]) == set(rs[:k]) for k in range(1, top + 1))
    gap = np.abs(fits["batched"].val_accuracy - fits["sklearn"].val_accuracy).max()
    print(f"{n_heads} heads × {args.examples} examples × d {args.head_dim}, {planted} planted, "
          f"{args.threads} threads, torch {torch.__version__}")
    print(f"batched (torch L-BFGS): {seconds['batched']:.2f} s, "
          f"max {fits['batched'].iterations.max()} iterations")
    print(f"sklearn (lbfgs loop):   {seconds['sklearn']:.2f} s, "
          f"max {fits['sklearn'].iterations.max()} iterations")
    print(f"speed-up: {seconds['sklearn'] / seconds['batched']:.1f}x")
    print(f"max per-head accuracy gap: {100 * gap:.2f} points")
    print(f"top-K sets agree for every K <= {top}: {agree}")
    print(f"planted heads are the top {planted} (batched / sklearn): "
          f"{set(rb[:planted]) == set(chosen)} / {set(rs[:planted]) == set(chosen)}")


if __name__ == "__main__":
    main()
