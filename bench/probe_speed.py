"""The fast probe paths vs the per-head scikit-learn fits, on one OLMo-1B-shaped synthetic problem.

All 16 × 16 heads (head size 128) of random activations for 2,000 examples; `--planted` heads carry
a toxic-vs-clean shift of graded strength along a random direction, so the true ranking of the best
heads is known. Raw activations are not standardised (Li et al.'s recipe fits them as they are), so
each feature gets its own scale, log-uniform over `--feature-scale`, and its own offset (the default
range is the spread of a briefly trained tiny OLMo's head activations). The recipe timed is `li2023`
(raw features, C = 1/l2) for every implementation. Times the reference (`sklearn`: one scikit-learn
`LogisticRegression` per head, heads spread over `--threads` joblib workers with one BLAS thread
each) first, then the `compiled` (numba, the CPU path) and `batched` (torch, the GPU path)
implementations; prints each one's speed-up over the reference, its largest per-head accuracy gap
and whether its top-K head set equals the reference's for every K up to 10 % of heads (by the stage's
tie rule, `runtime.probe.rank_heads`). Each implementation is warmed up on 2 heads first (numba
compiles then, joblib starts its workers; the first-call time is printed, not compared).

    python bench/probe_speed.py [--threads 2]
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from runtime.probe import rank_heads
from runtime.probe.fit import fit_probes


def planted_activations(n: int, layers: int, heads: int, head_dim: int, planted: int,
                        scale: tuple[float, float], seed: int):
    """Gaussian [n, layers·heads, head_dim] features (per-feature scale log-uniform over `scale`, offset
    N(0, scale_hi²)), labels, and the planted heads best first."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, layers * heads, head_dim), dtype=np.float32)
    chosen = rng.choice(layers * heads, planted, replace=False)
    for rank, g in enumerate(chosen):
        u = rng.standard_normal(head_dim)
        u /= np.linalg.norm(u)
        strength = 3.0 - 2.0 * rank / max(1, planted - 1)             # separations 3.0 … 1.0
        x[:, g, :] += ((y - 0.5) * strength)[:, None] * u.astype(np.float32)
    stds = np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1]), (layers * heads, head_dim)))
    offsets = scale[1] * rng.standard_normal((layers * heads, head_dim))
    x *= stds.astype(np.float32)
    x += offsets.astype(np.float32)
    return x, y, chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--planted", type=int, default=None, help="default: 10 %% of heads")
    ap.add_argument("--threads", type=int, default=2, help="torch/numba threads and sklearn joblib workers")
    ap.add_argument("--feature-scale", type=float, nargs=2, default=(0.02, 0.2), metavar=("LO", "HI"))
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--tolerance", type=float, default=1e-6)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n_heads = args.layers * args.heads
    top = max(1, math.ceil(0.1 * n_heads))
    planted = args.planted or top
    x, y, chosen = planted_activations(args.examples, args.layers, args.heads, args.head_dim, planted,
                                       tuple(args.feature_scale), 0)
    order = np.random.default_rng(1).permutation(args.examples)
    train, val = order[: int(0.8 * args.examples)], order[int(0.8 * args.examples):]
    kw = dict(standardize=False, l2_penalty=args.l2, max_iterations=1000, tolerance=args.tolerance,
              progress=False)
    fits, seconds, warm = {}, {}, {}
    for impl in ("sklearn", "compiled", "batched"):
        t0 = time.perf_counter()
        fit_probes(x[:, :2], y, train, val, implementation=impl, device="cpu", **kw)
        warm[impl] = time.perf_counter() - t0
        t0 = time.perf_counter()
        fits[impl] = fit_probes(x, y, train, val, implementation=impl, device="cpu", **kw)
        seconds[impl] = time.perf_counter() - t0
    ref = fits["sklearn"]
    rs = rank_heads(ref.val_accuracy[None], [0])
    print(f"{n_heads} heads × {args.examples} examples × d {args.head_dim}, {planted} planted, "
          f"feature scales {args.feature_scale[0]}–{args.feature_scale[1]}, recipe li2023 (raw), "
          f"{args.threads} threads, torch {torch.__version__}")
    print(f"sklearn  (lbfgs, {args.threads} joblib workers, reference): {seconds['sklearn']:.2f} s "
          f"(first call {warm['sklearn']:.1f} s), "
          f"max {ref.iterations.max()} iterations, planted heads on top: {set(rs[:planted]) == set(chosen)}")
    for impl, what in (("compiled", "numba, per head in cache"), ("batched", "torch, all heads as tensors")):
        fit, ranked = fits[impl], rank_heads(fits[impl].val_accuracy[None], [0])
        agree = all(set(ranked[:k]) == set(rs[:k]) for k in range(1, top + 1))
        gap = np.abs(fit.val_accuracy - ref.val_accuracy).max()
        print(f"{impl:8} ({what}): {seconds[impl]:.2f} s (first call {warm[impl]:.1f} s), "
              f"max {fit.iterations.max()} iterations; speed-up {seconds['sklearn'] / seconds[impl]:.1f}x; "
              f"max accuracy gap {100 * gap:.2f} points; top-K agrees for every K <= {top}: {agree}; "
              f"planted heads on top: {set(ranked[:planted]) == set(chosen)}")


if __name__ == "__main__":
    main()
