"""Fit many independent L2 logistic-regression probes (one per head or per layer) and score them.

Both implementations minimise the same objective on the same standardised features
(z = (x - mean_train) / std_train, std 0 → 1, as scikit-learn's `StandardScaler`):

    f(w, b) = Σ_i [log(1 + exp(z_i·w + b)) - y_i (z_i·w + b)] + (l2_penalty / 2) ||w||²

(the intercept b is not penalised), i.e. scikit-learn's `LogisticRegression(C=1/l2_penalty)`.

- `sklearn`: the reference, one `LogisticRegression(lbfgs)` per probe, in a loop.
- `batched`: L-BFGS on a [probes, n, d+1] tensor, every probe at once, each with its own curvature
  history and its own (approximate) Armijo backtracking step; one iteration costs two batched matrix products
  (O(probes·n·d), where Newton would pay O(probes·n·d²) for its Hessians). Probes stop when the
  max-norm of the gradient of f/n is below `tolerance`: scikit-learn's lbfgs stopping rule (`gtol`
  on its per-example-averaged loss).

Returned weights are mapped back to the original (un-standardised) activation space, so `x @ w + b`
is the logit of "toxic" and `w` points toward toxic.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

CHUNK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 27}
"""Probes are fitted in chunks of at most this many feature elements (probes × n × d). On a CPU an
iteration is memory-bound (two passes over the features), so a chunk near cache size (16 MB fp32)
is faster than streaming all heads from RAM; a GPU wants large batches (0.5 GB)."""

MAX_HALVINGS = 30
"""Backtracking line-search halvings before a probe is declared unable to improve (converged)."""

ARMIJO_SLACK = 1e-6
"""Relative slack on the Armijo test (Hager–Zhang's approximate Armijo): near the optimum the decrease
is below float32 rounding of f, and an exact test would reject every step."""

HISTORY = 10
"""L-BFGS curvature pairs kept per probe (scipy's default `maxcor` is 10)."""


@dataclass(frozen=True)
class ProbeFit:
    """Fitted probes, each row one probe, in the original activation space."""

    weight: np.ndarray        # [G, d] float32, logit = x @ w + b (not unit-norm)
    bias: np.ndarray          # [G] float32
    val_accuracy: np.ndarray  # [G] float64, share of validation examples classified correctly
    val_loss: np.ndarray      # [G] float64, mean validation log-loss (tie-break when ranking)
    iterations: np.ndarray    # [G] int64, optimiser iterations used


def fit_probes(x: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray, *,
               l2_penalty: float, max_iterations: int, tolerance: float,
               implementation: str = "batched", device: str | None = None,
               progress: bool = True) -> ProbeFit:
    """Fit one probe per group g on features `x[:, g, :]` ([N, G, d]); rows `train`, score on `val`."""
    if x.ndim != 3:
        raise ValueError(f"features must be [N, probes, d], got shape {x.shape}")
    y = np.asarray(y).astype(np.int64)
    if set(np.unique(y[train]).tolist()) != {0, 1}:
        raise ValueError("the training split must contain both classes (0 and 1)")
    fits = {"sklearn": _fit_sklearn, "batched": _fit_batched}
    if implementation not in fits:
        raise ValueError(f"unknown probe implementation {implementation!r} (have {sorted(fits)})")
    fit = fits[implementation]
    return fit(x, y, np.asarray(train), np.asarray(val), l2_penalty=l2_penalty,
               max_iterations=max_iterations, tolerance=tolerance, device=device, progress=progress)


def _standardise(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (ddof 0) of the training rows; zero std → 1 (as StandardScaler)."""
    mean = x_train.mean(axis=-2, dtype=np.float64)
    std = x_train.std(axis=-2, dtype=np.float64)
    std[std < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)] = 1.0
    return mean, std


def _to_original(w_std: np.ndarray, b_std: np.ndarray, mean: np.ndarray, std: np.ndarray):
    w = w_std / std
    return w.astype(np.float32), (b_std - (w * mean).sum(-1)).astype(np.float32)


def _score(x_val: np.ndarray, y_val: np.ndarray, w: np.ndarray, b: np.ndarray):
    """Validation accuracy and mean log-loss for probes [G, d] on features [G, m, d]."""
    logits = np.einsum("gmd,gd->gm", x_val.astype(np.float64), w.astype(np.float64)) + b[:, None]
    acc = ((logits > 0).astype(np.int64) == y_val[None]).mean(-1)
    loss = (np.logaddexp(0.0, logits) - y_val[None] * logits).mean(-1)
    return acc, loss


def _fit_sklearn(x, y, train, val, *, l2_penalty, max_iterations, tolerance, device, progress):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    n_probes, d = x.shape[1], x.shape[2]
    w_out = np.zeros((n_probes, d), np.float32)
    b_out = np.zeros(n_probes, np.float32)
    iters = np.zeros(n_probes, np.int64)
    for g in tqdm(range(n_probes), desc="probes (sklearn)", disable=not progress):
        xg = x[train, g, :]
        scaler = StandardScaler().fit(xg)
        clf = LogisticRegression(C=1.0 / l2_penalty, solver="lbfgs", max_iter=max_iterations,
                                 tol=tolerance).fit(scaler.transform(xg), y[train])
        w_out[g], b_out[g] = _to_original(clf.coef_[0], clf.intercept_[0], scaler.mean_, scaler.scale_)
        iters[g] = int(np.max(clf.n_iter_))
    acc, loss = _score(x[val].transpose(1, 0, 2), y[val], w_out, b_out)
    return ProbeFit(w_out, b_out, acc, loss, iters)


def _fit_batched(x, y, train, val, *, l2_penalty, max_iterations, tolerance, device, progress,
                 chunk_elements: int | None = None):
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    n_probes, d = x.shape[1], x.shape[2]
    budget = CHUNK_ELEMENTS.get(dev.type, CHUNK_ELEMENTS["cpu"]) if chunk_elements is None else chunk_elements
    chunk = max(1, budget // max(1, len(train) * (d + 1)))
    w_out = np.zeros((n_probes, d), np.float32)
    b_out = np.zeros(n_probes, np.float32)
    iters = np.zeros(n_probes, np.int64)
    y_t = torch.as_tensor(y[train], dtype=torch.float32, device=dev)
    for g0 in tqdm(range(0, n_probes, chunk), desc="probe chunks (batched)", disable=not progress):
        g1 = min(n_probes, g0 + chunk)
        xg = np.ascontiguousarray(x[train, g0:g1, :].transpose(1, 0, 2))      # [g, n, d]
        mean, std = _standardise(xg)
        z = torch.as_tensor(xg, device=dev)
        z = (z - torch.as_tensor(mean[:, None, :], dtype=z.dtype, device=dev)) \
            / torch.as_tensor(std[:, None, :], dtype=z.dtype, device=dev)
        z = torch.cat([z, torch.ones_like(z[..., :1])], dim=-1)                  # intercept column
        theta, used = lbfgs_logistic(z, y_t, l2_penalty, max_iterations, tolerance)
        theta = theta.double().cpu().numpy()
        w_out[g0:g1], b_out[g0:g1] = _to_original(theta[:, :d], theta[:, d], mean, std)
        iters[g0:g1] = used.cpu().numpy()
    acc, loss = _score(x[val].transpose(1, 0, 2), y[val], w_out, b_out)
    return ProbeFit(w_out, b_out, acc, loss, iters)


def _loss_grad(z: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, reg: torch.Tensor, l2_mean: float):
    """Mean objective f/n per probe (float64) and its gradient: z [G, n, d+1], theta [G, d+1]."""
    logits = torch.bmm(z, theta.unsqueeze(-1)).squeeze(-1)
    loss = (torch.nn.functional.softplus(logits) - y * logits).double().mean(-1)
    loss = loss + 0.5 * l2_mean * (theta.double() ** 2 * reg).sum(-1)
    grad = torch.bmm(z.transpose(1, 2), (torch.sigmoid(logits) - y).unsqueeze(-1)).squeeze(-1)
    return loss, grad / z.shape[1] + l2_mean * reg * theta


def lbfgs_logistic(z: torch.Tensor, y: torch.Tensor, l2: float, max_iterations: int,
                   tolerance: float, history: int = HISTORY) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched L-BFGS for G independent probes: z [G, n, d+1] (last column ones), y [n] in {0, 1}.

    Every probe has its own curvature history and its own Armijo backtracking step; a probe leaves
    the working set once max |∇(f/n)| <= tolerance (or its line search can no longer decrease f).
    """
    n_probes, n, d1 = z.shape
    reg = torch.ones(d1, dtype=z.dtype, device=z.device)
    reg[-1] = 0.0                                                         # intercept unpenalised
    l2_mean = l2 / n
    theta = torch.zeros(n_probes, d1, dtype=z.dtype, device=z.device)
    used = torch.zeros(n_probes, dtype=torch.int64, device=z.device)
    ids = torch.arange(n_probes, device=z.device)                         # working set → probe index
    zw, th = z, theta.clone()
    f, g = _loss_grad(zw, y, th, reg, l2_mean)
    s_hist = torch.zeros(n_probes, history, d1, dtype=z.dtype, device=z.device)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros(n_probes, history, dtype=z.dtype, device=z.device)  # 0 = empty slot
    for it in range(max_iterations + 1):
        done = g.abs().amax(-1) <= tolerance
        if it == max_iterations:
            done[:] = True
        if done.any():                                                    # shrink the working set
            theta[ids[done]] = th[done]
            keep = ~done
            ids, zw, th, f, g = ids[keep], zw[keep], th[keep], f[keep], g[keep]
            s_hist, y_hist, rho = s_hist[keep], y_hist[keep], rho[keep]
        if ids.numel() == 0:
            break
        direction = -_two_loop(g, s_hist, y_hist, rho, it)
        uphill = (g * direction).sum(-1) >= 0                             # fall back to steepest descent
        direction = torch.where(uphill[:, None], -g, direction)
        slope = (g * direction).sum(-1).double()
        t = torch.ones(len(ids), dtype=torch.float64, device=z.device)
        accepted = torch.zeros(len(ids), dtype=torch.bool, device=z.device)
        new_th, new_f, new_g = th.clone(), f.clone(), g.clone()
        for _ in range(MAX_HALVINGS):
            todo = ~accepted
            cand = th + (t[:, None] * direction).to(z.dtype)
            cf, cg = (_loss_grad(zw, y, cand, reg, l2_mean) if todo.all()
                      else _loss_grad(zw[todo], y, cand[todo], reg, l2_mean))
            ok = cf <= f[todo] + 1e-4 * t[todo] * slope[todo] + ARMIJO_SLACK * f[todo].abs()
            rows = todo.nonzero().squeeze(-1)[ok]
            new_th[rows], new_f[rows], new_g[rows] = cand[rows], cf[ok], cg[ok]
            accepted[rows] = True
            if accepted.all():
                break
            t = torch.where(accepted, t, t / 2)
        s, yk = new_th - th, new_g - g
        sy = (s * yk).sum(-1)
        slot = it % history
        good = sy > 1e-12
        s_hist[:, slot], y_hist[:, slot] = s, yk
        rho[:, slot] = torch.where(good, 1.0 / sy.clamp_min(1e-12), torch.zeros_like(sy))
        used[ids] += 1
        stalled = ~accepted                                               # cannot decrease f further
        th, f, g = new_th, new_f, torch.where(stalled[:, None], torch.zeros_like(new_g), new_g)
    return theta, used


def _two_loop(g: torch.Tensor, s_hist: torch.Tensor, y_hist: torch.Tensor, rho: torch.Tensor,
              it: int) -> torch.Tensor:
    """H·g by the L-BFGS two-loop recursion, per probe; empty history slots (rho 0) are skipped."""
    history = s_hist.shape[1]
    order = [(it - 1 - k) % history for k in range(min(it, history))]    # newest first
    q, alphas = g.clone(), {}
    for j in order:
        alphas[j] = rho[:, j] * (s_hist[:, j] * q).sum(-1)
        q = q - alphas[j][:, None] * y_hist[:, j]
    if order:
        newest = order[0]
        yy = (y_hist[:, newest] ** 2).sum(-1)
        gamma = torch.where(rho[:, newest] > 0, 1.0 / (rho[:, newest] * yy).clamp_min(1e-30),
                            torch.ones_like(yy))
        q = q * gamma[:, None]
    for j in reversed(order):
        beta = rho[:, j] * (y_hist[:, j] * q).sum(-1)
        q = q + (alphas[j] - beta)[:, None] * s_hist[:, j]
    return q


def rank_probes(fit: ProbeFit) -> np.ndarray:
    """Probe indices best first: by validation accuracy, ties broken by lower validation loss."""
    return np.lexsort((fit.val_loss, -fit.val_accuracy))
