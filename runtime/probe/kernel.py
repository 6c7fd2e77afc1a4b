"""The `compiled` probe path: one L-BFGS logistic regression per probe, compiled by numba, probes in
parallel over CPU cores (`prange`).

Why it exists: on a CPU the batched torch path streams every head's features from DRAM at each
iteration (hundreds of MB), while one head's problem (1,600 × 128 float32, 0.8 MB) stays in cache.
Here each core gathers one head, centres and scales it, fits it and scores it before moving on, so
memory is read about once. Same objective (raw or standardised space, via the per-feature penalty of
`fit.feature_penalty`), same scaled coordinates, same starting point, same L-BFGS (10 pairs,
H0 = γD with D = diag(1 / (1/4 + λ_j/n)) the inverse diagonal of Böhning's bound and
γ = sᵀy / yᵀDy), same approximate-Armijo backtracking and same stopping rule as
`fit.lbfgs_logistic` without its Gram preconditioner (here a Gram matrix would cost ~60
evaluations of f: far more than it saves).

Each evaluation of f and ∇f runs, block by block of `BLOCK` rows, three loops LLVM vectorises
(logits, residuals, gradient; one fused loop per row was 4× slower); the softplus sum takes one `log`
per block (the log of a product of 1 + e^-|t| ∈ [1, 2]) instead of one `log1p` per row, which more
than halved the residual loop.

Results depend only on the data: probes are independent, so the number of threads does not change
them. The first call compiles (~20 s); numba caches the machine code beside this file.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from runtime.probe.lbfgs import ARMIJO_SLACK, CONSTANT_STD, HISTORY, MAX_HALVINGS

BLOCK = 32
"""Rows per block of an evaluation: 32 × d floats stay in L1 between logits and gradient, and a
product of 32 factors in [1, 2] cannot overflow a float64."""

@njit(cache=True, fastmath=True)
def _dot(a, b):
    """a · b accumulated in float64 (numba's np.dot wants equal dtypes and calls BLAS)."""
    total = 0.0
    for k in range(a.shape[0]):
        total += np.float64(a[k]) * b[k]
    return total


@njit(cache=True, fastmath=True)
def _loss_grad(z, y, w, b, l2_mean, grad_w, buf):
    """Mean objective f/n (float64) at weights w, intercept b; writes ∇_w into grad_w, returns
    (f/n, ∂f/∂b / n). z [n, d] centred, scaled float32, y [n] float32 in {0, 1}, l2_mean [d] the
    per-feature penalty / n, buf [n] scratch."""
    n, d = z.shape
    for j in range(d):
        grad_w[j] = 0.0
    loss = 0.0
    grad_b = np.float32(0.0)
    for i0 in range(0, n, BLOCK):
        i1 = min(n, i0 + BLOCK)
        for i in range(i0, i1):
            t = b
            for j in range(d):
                t += z[i, j] * w[j]
            buf[i] = t
        product = 1.0                                  # Π (1 + e^-|t|): softplus = max(t, 0) + log(·)
        linear = np.float32(0.0)
        for i in range(i0, i1):
            t = buf[i]
            e = math.exp(-abs(t))
            one_plus_e = np.float32(1.0) + e
            product *= one_plus_e
            linear += max(t, np.float32(0.0)) - y[i] * t
            numerator = e if t < 0 else np.float32(1.0)
            r = numerator / one_plus_e - y[i]           # sigmoid(t) - y, stable for either sign
            buf[i] = r
            grad_b += r
        loss += linear + math.log(product)
        for i in range(i0, i1):
            r = buf[i]
            for j in range(d):
                grad_w[j] += r * z[i, j]
    penalty = 0.0
    for j in range(d):
        grad_w[j] = grad_w[j] / n + l2_mean[j] * w[j]
        penalty += np.float64(l2_mean[j]) * w[j] * w[j]
    return loss / n + 0.5 * penalty, grad_b / n


@njit(cache=True, fastmath=True)
def _lbfgs(z, y, l2_mean, max_iterations, tolerance, start_bias):
    """L-BFGS on one centred, scaled probe; returns theta [d+1] (weights, then intercept) and the
    iterations used. Mirrors `fit.lbfgs_logistic` for one probe without a Gram matrix."""
    n, d = z.shape
    size = d + 1
    h0 = np.empty(size, np.float32)                        # B⁻¹'s diagonal (Böhning's bound)
    for j in range(d):
        h0[j] = 1.0 / (0.25 + l2_mean[j])
    h0[d] = 4.0
    theta = np.zeros(size, np.float32)
    theta[d] = start_bias
    grad = np.zeros(size, np.float32)
    cand = np.zeros(size, np.float32)
    cand_grad = np.zeros(size, np.float32)
    q = np.zeros(size, np.float32)
    buf = np.zeros(n, np.float32)
    s_hist = np.zeros((HISTORY, size), np.float32)
    y_hist = np.zeros((HISTORY, size), np.float32)
    rho = np.zeros(HISTORY)                                # 0 = empty slot or rejected pair
    alpha = np.zeros(HISTORY)
    f, grad_b = _loss_grad(z, y, theta[:d], theta[d], l2_mean, grad[:d], buf)
    grad[d] = grad_b
    it = 0
    while it < max_iterations:
        if np.abs(grad).max() <= tolerance:
            break
        q[:] = grad                                        # two-loop recursion: q ← H·grad
        pairs = min(it, HISTORY)
        for k in range(pairs):
            j = (it - 1 - k) % HISTORY
            if rho[j] > 0:
                alpha[j] = rho[j] * _dot(s_hist[j], q)
                q -= np.float32(alpha[j]) * y_hist[j]
        gamma = 1.0                                        # H0 = γ·D, γ = sᵀy / yᵀDy of the newest pair
        newest = (it - 1) % HISTORY
        if pairs > 0 and rho[newest] > 0:
            ydy = 0.0
            for j in range(size):
                ydy += np.float64(y_hist[newest, j]) * h0[j] * y_hist[newest, j]
            gamma = 1.0 / (rho[newest] * ydy)
        q *= np.float32(gamma) * h0
        for k in range(pairs - 1, -1, -1):
            j = (it - 1 - k) % HISTORY
            if rho[j] > 0:
                beta = rho[j] * _dot(y_hist[j], q)
                q += np.float32(alpha[j] - beta) * s_hist[j]
        slope = -_dot(grad, q)
        if slope >= 0:                                     # not a descent direction: D step
            q[:] = h0 * grad
            slope = -_dot(grad, q)
        step = 1.0
        accepted = False
        for _ in range(MAX_HALVINGS):
            cand[:] = theta - np.float32(step) * q
            cand_f, cand_grad_b = _loss_grad(z, y, cand[:d], cand[d], l2_mean, cand_grad[:d], buf)
            cand_grad[d] = cand_grad_b
            if cand_f <= f + 1e-4 * step * slope + ARMIJO_SLACK * abs(f):
                accepted = True
                break
            step *= 0.5
        it += 1
        if not accepted:                                   # cannot decrease f any further
            break
        slot = (it - 1) % HISTORY
        s_hist[slot] = cand - theta
        y_hist[slot] = cand_grad - grad
        sy = _dot(s_hist[slot], y_hist[slot])
        rho[slot] = 1.0 / sy if sy > 1e-12 else 0.0
        theta[:] = cand
        grad[:] = cand_grad
        f = cand_f
    return theta, it


@njit(cache=True, parallel=True, fastmath=True)
def fit_range(x, first, last, train, val, y_train, y_val, standardize, l2_penalty, max_iterations,
              tolerance, weight, bias, val_accuracy, iterations):
    """Fit probes first…last-1 of x [N, G, d] (float32) on rows `train`, score them on rows `val`,
    writing into the [G, …] output arrays (weights and intercept in the original activation space).
    `standardize`: the standardised feature space, else the raw one (`fit` docstring)."""
    d = x.shape[2]
    n = train.shape[0]
    prior = min(max(y_train.astype(np.float64).mean(), 1e-6), 1 - 1e-6)
    start_bias = np.float32(math.log(prior / (1 - prior)))
    for g in prange(first, last):
        z = np.empty((n, d), np.float32)                   # gather, then centre and scale in place
        total = np.zeros(d)
        for i in range(n):
            row = x[train[i], g]
            for j in range(d):
                z[i, j] = row[j]
                total[j] += row[j]
        mean = total / n
        mean32 = mean.astype(np.float32)
        sq = np.zeros(d)
        for i in range(n):
            for j in range(d):
                z[i, j] -= mean32[j]
                sq[j] += np.float64(z[i, j]) * z[i, j]
        std = np.sqrt(sq / n)
        inv = np.empty(d, np.float32)
        for j in range(d):
            if std[j] < CONSTANT_STD * max(abs(mean[j]), 1.0):
                std[j] = 1.0
                inv[j] = 0.0
            else:
                inv[j] = 1.0 / std[j]
        for i in range(n):
            for j in range(d):
                z[i, j] *= inv[j]
        l2_mean = np.empty(d, np.float32)                  # penalty on v = s·w: l2, or l2 / s² (raw)
        for j in range(d):
            l2_mean[j] = l2_penalty / n if standardize else l2_penalty / (n * std[j] * std[j])
        theta, used = _lbfgs(z, y_train, l2_mean, max_iterations, tolerance, start_bias)
        intercept = np.float64(theta[d])
        for j in range(d):
            w_j = theta[j] / std[j]
            weight[g, j] = w_j
            intercept -= w_j * mean[j]
        bias[g] = intercept
        iterations[g] = used
        b64 = np.float64(bias[g])
        correct = 0
        for i in range(val.shape[0]):
            row = x[val[i], g]
            t32 = np.float32(0.0)
            for j in range(d):
                t32 += row[j] * weight[g, j]
            t = np.float64(t32) + b64
            if (t > 0) == (y_val[i] > 0.5):
                correct += 1
        val_accuracy[g] = correct / val.shape[0]
