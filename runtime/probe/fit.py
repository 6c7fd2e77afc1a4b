"""Fit many independent L2 logistic-regression probes (one per head or per layer) and score them.

Every implementation minimises, per probe, scikit-learn's `LogisticRegression(C=1/l2_penalty)`
objective on the training rows, in one of two feature spaces (`standardize`):

    f(w, b) = Σ_i [log(1 + exp(u_i·w + b)) - y_i (u_i·w + b)] + (l2_penalty / 2) ||w||²

- raw (`standardize=False`, Li et al.'s recipe): u = x, the activations as they are (honest_llama fits
  `LogisticRegression` on them unscaled);
- standardised (`standardize=True`): u = (x - mean_train) / std_train, as scikit-learn's
  `StandardScaler` (std 0 → 1).

The intercept b is not penalised, so both spaces may be centred without moving the optimum. The fast
paths fit in centred, scaled coordinates z = (x - mean) / s (s the training std; a feature below float32
resolution is constant: s = 1 and its weight exactly 0) for good conditioning in either space: the raw
objective is the same problem with the per-feature penalty (l2_penalty / s_j²) v_j² on the scaled
weights v_j = s_j w_j (a change of variables, not an approximation). Probes stop when the max-norm of
the gradient of f/n in those scaled coordinates is below `tolerance` (scikit-learn's lbfgs stops on
the same norm of its own gradient with `tol`).

- `sklearn`: the reference, one scikit-learn `LogisticRegression(C=1/l2_penalty, max_iter, tol,
  random_state)` (lbfgs) per probe on the raw (or `StandardScaler`ed) training rows, probes spread over
  `torch.get_num_threads()` joblib workers with one BLAS thread each. Rows are cast to float64 first:
  scikit-learn fits float32 input in float32, whose rounding of f stops lbfgs short of the optimum
  (on a tiny model's raw activations: f 1.5e-5 above it, one validation prediction flipped).
- `compiled`: L-BFGS per probe, compiled by numba, probes in parallel over CPU cores, each probe
  gathered, fitted and scored while it sits in cache (`runtime/probe/kernel.py`): the CPU path.
- `batched`: L-BFGS on a [probes, n, d] tensor, every probe at once, each with its own curvature
  history and its own (approximate) Armijo backtracking step; one iteration costs two batched matrix
  products (O(probes·n·d)). The starting curvature is Böhning's bound B = zᵀz/(4n) + diag(λ_j)/n,
  exact at logits 0, so the many weak probes converge in ~5 iterations; B costs one Gram matrix per
  probe (O(probes·n·d²)) once, where Newton would pay that every iteration (features wider than
  `PRECONDITION_MAX_DIM` start from its diagonal, 1/(1/4 + λ_j/n), instead).

Returned weights are mapped back to the original activation space, so `x @ w + b` is the logit of
"toxic" and `w` points toward toxic.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from runtime.probe.lbfgs import ARMIJO_SLACK, CONSTANT_STD, HISTORY, MAX_HALVINGS

CHUNK_ELEMENTS = {"cpu": 1 << 26, "cuda": 1 << 27}
"""Probes are fitted in chunks of at most this many feature elements (probes × n × d), to bound
memory (0.25 GB fp32 on a CPU, 0.5 GB on a GPU). Large chunks amortise the per-iteration Python
work over many probes; weak probes converge in a handful of iterations and leave the working set."""

PRECONDITION_MAX_DIM = 512
"""Widest features that get Böhning's preconditioner. Its Gram matrices cost probes·n·d² once (as
fast GEMMs, worth ~d/20 memory-bound iterations) and save ~10 iterations: a clear win for head-sized
probes (d = 128), a loss for OLMo-1B's 2,048-wide residual stream, which uses plain L-BFGS."""


@dataclass(frozen=True)
class ProbeFit:
    """Fitted probes, each row one probe, in the original activation space."""

    weight: np.ndarray        # [G, d] float32, logit = x @ w + b (not unit-norm)
    bias: np.ndarray          # [G] float32
    val_accuracy: np.ndarray  # [G] float64, share of validation examples classified correctly
    iterations: np.ndarray    # [G] int64, optimiser iterations used


def fit_probes(x: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray, *,
               standardize: bool, l2_penalty: float, max_iterations: int, tolerance: float,
               implementation: str = "compiled", seed: int = 0, device: str | None = None,
               progress: bool = True) -> ProbeFit:
    """Fit one probe per group g on features `x[:, g, :]` ([N, G, d]); rows `train`, score on `val`.
    `standardize`: the feature space (module docstring); `seed`: scikit-learn's `random_state`."""
    if x.ndim != 3:
        raise ValueError(f"features must be [N, probes, d], got shape {x.shape}")
    y = np.asarray(y).astype(np.int64)
    if set(np.unique(y[train]).tolist()) != {0, 1}:
        raise ValueError("the training split must contain both classes (0 and 1)")
    fits = {"sklearn": _fit_sklearn, "compiled": _fit_compiled, "batched": _fit_batched}
    if implementation not in fits:
        raise ValueError(f"unknown probe implementation {implementation!r} (have {sorted(fits)})")
    fit = fits[implementation]
    return fit(x, y, np.asarray(train), np.asarray(val), standardize=standardize, l2_penalty=l2_penalty,
               max_iterations=max_iterations, tolerance=tolerance, seed=seed, device=device,
               progress=progress)


def _to_original(w_scaled: np.ndarray, b_centred: np.ndarray, mean: np.ndarray, std: np.ndarray):
    w = w_scaled / std
    return w.astype(np.float32), (b_centred - (w * mean).sum(-1)).astype(np.float32)


def feature_penalty(l2_penalty: float, std: np.ndarray, standardize: bool) -> np.ndarray:
    """Per-feature L2 strength on the scaled weights v = s·w: l2 (standardised space) or l2 / s² (raw
    space, where the penalty acts on w = v / s)."""
    std = np.asarray(std, dtype=np.float64)
    return np.full_like(std, l2_penalty) if standardize else l2_penalty / std ** 2


def _score(x: np.ndarray, y_val: np.ndarray, val: np.ndarray, w: np.ndarray, b: np.ndarray):
    """Validation accuracy of probes [G, d] on the rows `val` of features [N, G, d]."""
    per_probe = torch.from_numpy(np.asarray(x, dtype=np.float32)).permute(1, 2, 0)   # [G, d, N] view
    # w^T x as a row-vector product over the strided view: no copy of the features
    logits = torch.bmm(torch.from_numpy(w).unsqueeze(1), per_probe).squeeze(1)[:, np.asarray(val)]
    logits = logits.double().numpy() + b[:, None].astype(np.float64)
    return ((logits > 0).astype(np.int64) == y_val[None]).mean(-1)


def _fit_sklearn(x, y, train, val, *, standardize, l2_penalty, max_iterations, tolerance, seed, device,
                 progress):
    from joblib import Parallel, delayed, parallel_config

    n_probes = x.shape[1]
    jobs = max(1, min(torch.get_num_threads(), n_probes))
    chunks = np.array_split(np.arange(n_probes), min(n_probes, 8 * jobs))
    fit_chunk = delayed(_sklearn_chunk)
    kw = dict(standardize=standardize, l2_penalty=l2_penalty, max_iterations=max_iterations,
              tolerance=tolerance, seed=seed)
    # one probe's problem (n × d, ~1 MB) is too small for BLAS threads: 1 per worker, workers = cores
    with parallel_config(backend="loky", inner_max_num_threads=1):
        parts = Parallel(n_jobs=jobs, return_as="generator")(
            fit_chunk(x[train[:, None], c[None, :]], y[train], **kw) for c in chunks)
        parts = list(tqdm(parts, total=len(chunks), desc="probes (sklearn)", disable=not progress))
    w_out, b_out, iters = (np.concatenate(a) for a in zip(*parts))
    return ProbeFit(w_out, b_out, _score(x, y[val], val, w_out, b_out), iters)


def _sklearn_chunk(x_train, y_train, *, standardize, l2_penalty, max_iterations, tolerance, seed):
    """scikit-learn fits of the probes x_train [n, g, d] (training rows only): (weights, intercepts,
    iterations), in the original activation space."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    n_probes, d = x_train.shape[1], x_train.shape[2]
    w_out, b_out = np.zeros((n_probes, d), np.float32), np.zeros(n_probes, np.float32)
    iters = np.zeros(n_probes, np.int64)
    with threadpool_limits(limits=1, user_api="blas"):
        for g in range(n_probes):
            xg = x_train[:, g, :].astype(np.float64)       # float32 input would stay float32 (below)
            scaler = StandardScaler().fit(xg) if standardize else None
            clf = LogisticRegression(C=1.0 / l2_penalty, max_iter=max_iterations, tol=tolerance,
                                     random_state=seed).fit(scaler.transform(xg) if scaler else xg, y_train)
            if scaler:
                w_out[g], b_out[g] = _to_original(clf.coef_[0], clf.intercept_[0], scaler.mean_, scaler.scale_)
            else:
                w_out[g], b_out[g] = clf.coef_[0], clf.intercept_[0]
            iters[g] = int(np.max(clf.n_iter_))
    return w_out, b_out, iters


COMPILED_CHUNKS = 20
"""The compiled path fits probes in about this many calls, so its progress bar moves."""


def _fit_compiled(x, y, train, val, *, standardize, l2_penalty, max_iterations, tolerance, seed, device,
                  progress):
    import numba

    from runtime.probe.kernel import fit_range

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    n_probes, d = x.shape[1], x.shape[2]
    out = ProbeFit(np.zeros((n_probes, d), np.float32), np.zeros(n_probes, np.float32),
                   np.zeros(n_probes), np.zeros(n_probes, np.int64))
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    train64, val64 = np.asarray(train, np.int64), np.asarray(val, np.int64)
    y_train, y_val = y[train64].astype(np.float32), y[val64].astype(np.float64)
    step = max(numba.get_num_threads(), -(-n_probes // COMPILED_CHUNKS))
    with tqdm(total=n_probes, desc="probes (compiled)", disable=not progress) as bar:
        for g0 in range(0, n_probes, step):
            g1 = min(n_probes, g0 + step)
            fit_range(x32, g0, g1, train64, val64, y_train, y_val, bool(standardize), float(l2_penalty),
                      int(max_iterations), float(tolerance), out.weight, out.bias,
                      out.val_accuracy, out.iterations)
            bar.update(g1 - g0)
    return out


def _fit_batched(x, y, train, val, *, standardize, l2_penalty, max_iterations, tolerance, seed, device,
                 progress):
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    n_probes, d = x.shape[1], x.shape[2]
    budget = CHUNK_ELEMENTS.get(dev.type, CHUNK_ELEMENTS["cpu"])
    chunk = max(1, budget // max(1, len(train) * d))
    w_out = np.zeros((n_probes, d), np.float32)
    b_out = np.zeros(n_probes, np.float32)
    iters = np.zeros(n_probes, np.int64)
    x_all = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    rows = torch.as_tensor(np.asarray(train), dtype=torch.int64)
    y_t = torch.as_tensor(y[train], dtype=torch.float32, device=dev)
    for g0 in tqdm(range(0, n_probes, chunk), desc="probe chunks (batched)", disable=not progress):
        g1 = min(n_probes, g0 + chunk)
        z, mean, std, gram = _standardised(x_all, rows, g0, g1, dev)
        l2 = torch.as_tensor(feature_penalty(l2_penalty, std, standardize), dtype=z.dtype, device=dev)
        theta, used = lbfgs_logistic(z, y_t, gram, l2, max_iterations, tolerance)
        theta = theta.double().cpu().numpy()
        w_out[g0:g1], b_out[g0:g1] = _to_original(theta[:, :d], theta[:, d], mean, std)
        iters[g0:g1] = used.cpu().numpy()
    return ProbeFit(w_out, b_out, _score(x, y[val], val, w_out, b_out), iters)


def _standardised(x_all: torch.Tensor, rows: torch.Tensor, g0: int, g1: int, dev: torch.device):
    """Probes g0…g1 as z = (x - mean) / std, one contiguous [g, n, d] float32 tensor on `dev`, with the
    float64 mean and std (ddof 0; a std below float32 resolution marks a constant feature, which gets
    std 1 as in `StandardScaler` and is zeroed exactly) and the Gram matrix z^T z (None for features
    wider than `PRECONDITION_MAX_DIM`).

    Built in three passes over memory: rows are gathered and transposed a few probes at a time (so
    the transpose stays in cache), centred in place, then scaled in place; the variances come free
    from the diagonal of the centred Gram matrix, which the preconditioner needs anyway.
    """
    n, g, d = len(rows), g1 - g0, x_all.shape[2]
    z = torch.empty(g, n, d, dtype=torch.float32, device=dev)
    step = max(1, (1 << 20) // max(1, n * d))                               # ~4 MB per transpose
    for a in range(g0, g1, step):
        b = min(g1, a + step)
        z[a - g0:b - g0].copy_(x_all[:, a:b].index_select(0, rows).to(dev).transpose(0, 1))
    mean = z.mean(dim=1)
    z.sub_(mean.unsqueeze(1))
    gram = torch.bmm(z.transpose(1, 2), z) if d <= PRECONDITION_MAX_DIM else None
    sq = gram.diagonal(dim1=1, dim2=2) if gram is not None else z.pow(2).sum(dim=1)
    std = (sq.double() / n).sqrt()
    mean64 = mean.double()
    constant = std < CONSTANT_STD * mean64.abs().clamp_min(1.0)
    std = torch.where(constant, torch.ones_like(std), std)
    inv = torch.where(constant, torch.zeros_like(std), 1.0 / std).float()   # constant columns → exactly 0
    z.mul_(inv.unsqueeze(1))
    if gram is not None:
        gram.mul_(inv.unsqueeze(1) * inv.unsqueeze(2))
    return z, mean64.cpu().numpy(), std.cpu().numpy(), gram


def _loss_grad(z: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, l2_mean: torch.Tensor):
    """Mean objective f/n per probe (summed in float32, returned as float64) and its gradient:
    z [G, n, d] (centred, scaled), theta [G, d+1] = weights and intercept, l2_mean [G, d] the
    per-feature penalty / n.

    The weight gradient is a row-vector product r^T z ([G, 1, n] @ [G, n, d]): on CPUs this reads z
    in its storage order and runs several times faster than z^T r.
    """
    w, b = theta[:, :-1], theta[:, -1:]
    logits = torch.bmm(z, w.unsqueeze(-1)).squeeze(-1) + b
    loss = (torch.nn.functional.softplus(logits) - y * logits).mean(-1).double()
    loss = loss + 0.5 * (l2_mean.double() * w.double() ** 2).sum(-1)
    r = torch.sigmoid(logits) - y
    grad_w = torch.bmm(r.unsqueeze(1), z).squeeze(1) / z.shape[1] + l2_mean * w
    return loss, torch.cat([grad_w, r.mean(-1, keepdim=True)], dim=-1)


def bohning_factor(gram: torch.Tensor, n: int, l2_mean: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of B_w = z^T z / (4n) + diag(l2_mean) per probe (`gram` = z^T z of centred z).

    With z centred, B = diag(B_w, 1/4) bounds the Hessian of f/n from above everywhere (σ' ≤ 1/4,
    Böhning 1992) and equals it at logits 0, so B⁻¹ is the L-BFGS starting curvature: weak probes
    (most heads) converge in a few steps. Its cost is one batched GEMM (probes · n · d²), as much as
    one Hessian, paid once instead of once per Newton step.
    """
    bound = gram / (4 * n)
    bound.diagonal(dim1=1, dim2=2).add_(l2_mean)
    factor, info = torch.linalg.cholesky_ex(bound)
    if bool((info != 0).any()):                          # float32 lost positive definiteness
        factor = torch.linalg.cholesky(bound.double()).to(gram.dtype)
    return factor


@dataclass(frozen=True)
class Preconditioner:
    """B⁻¹ per probe: a Cholesky factor of B's weight block, or (wide features) the inverse of B's
    diagonal, 1 / (1/4 + l2_mean_j) for scaled features; the intercept's entry is always 4."""

    chol: torch.Tensor | None      # [G, d, d]
    diagonal: torch.Tensor         # [G, d]

    def __getitem__(self, rows) -> "Preconditioner":
        return Preconditioner(self.chol[rows] if self.chol is not None else None, self.diagonal[rows])

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        """B⁻¹ q for q [G, d+1]."""
        if self.chol is not None:
            qw = torch.cholesky_solve(q[:, :-1].unsqueeze(-1), self.chol).squeeze(-1)
        else:
            qw = q[:, :-1] * self.diagonal
        return torch.cat([qw, 4.0 * q[:, -1:]], dim=-1)


def _start_loss_grad(z: torch.Tensor, y: torch.Tensor, b0: torch.Tensor):
    """`_loss_grad` at w = 0, intercept b0: every logit is b0, so one pass over z (r^T z, shared r)
    instead of two."""
    r = torch.sigmoid(b0) - y                                             # [n]
    loss = (torch.nn.functional.softplus(b0) - y * b0).mean().double().expand(z.shape[0])
    grad_w = torch.matmul(r, z) / z.shape[1]                              # [G, d]
    return loss.clone(), torch.cat([grad_w, r.mean().expand(z.shape[0], 1)], dim=-1)


def lbfgs_logistic(z: torch.Tensor, y: torch.Tensor, gram: torch.Tensor | None, l2: torch.Tensor,
                   max_iterations: int, tolerance: float,
                   history: int = HISTORY) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched, Böhning-preconditioned L-BFGS for G independent probes: z [G, n, d] centred, scaled
    features, y [n] in {0, 1}, l2 [G, d] the per-feature penalty (`feature_penalty`); returns theta
    [G, d+1] (weights, then intercept) and the iterations used. `gram` is z^T z (Böhning's
    preconditioner), or None to start from its diagonal (`_standardised` decides).

    Every probe has its own curvature history, its own preconditioner and its own Armijo backtracking
    step; a probe leaves the working set once max |∇(f/n)| <= tolerance (or its line search can no
    longer decrease f). Starts at w = 0 with the intercept at the log-odds of the labels.
    """
    n_probes, n, d = z.shape
    l2_mean = l2 / n
    precondition = Preconditioner(bohning_factor(gram, n, l2_mean) if gram is not None else None,
                                  1.0 / (0.25 + l2_mean))
    theta = torch.zeros(n_probes, d + 1, dtype=z.dtype, device=z.device)
    prior = y.double().mean().clamp(1e-6, 1 - 1e-6)
    theta[:, -1] = float(torch.log(prior / (1 - prior)))
    used = torch.zeros(n_probes, dtype=torch.int64, device=z.device)
    ids = torch.arange(n_probes, device=z.device)                         # working set → probe index
    zw, th = z, theta.clone()
    f, g = _start_loss_grad(z, y, theta[0, -1])
    s_hist = torch.zeros(n_probes, history, d + 1, dtype=z.dtype, device=z.device)
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
            precondition, l2_mean = precondition[keep], l2_mean[keep]
            s_hist, y_hist, rho = s_hist[keep], y_hist[keep], rho[keep]
        if ids.numel() == 0:
            break
        direction = -_two_loop(g, s_hist, y_hist, rho, precondition, it)
        uphill = (g * direction).sum(-1) >= 0                             # fall back to B⁻¹ descent
        if uphill.any():
            direction[uphill] = -precondition[uphill](g[uphill])
        slope = (g * direction).sum(-1).double()
        t = torch.ones(len(ids), dtype=torch.float64, device=z.device)
        accepted = torch.zeros(len(ids), dtype=torch.bool, device=z.device)
        new_th, new_f, new_g = th.clone(), f.clone(), g.clone()
        for _ in range(MAX_HALVINGS):
            todo = ~accepted
            cand = th + (t[:, None] * direction).to(z.dtype)
            cf, cg = (_loss_grad(zw, y, cand, l2_mean) if todo.all()
                      else _loss_grad(zw[todo], y, cand[todo], l2_mean[todo]))
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
              precondition: Preconditioner, it: int) -> torch.Tensor:
    """H·g by the L-BFGS two-loop recursion with H0 = γ·B⁻¹, per probe; empty history slots (rho 0)
    are skipped."""
    history = s_hist.shape[1]
    order = [(it - 1 - k) % history for k in range(min(it, history))]    # newest first
    q, alphas = g.clone(), {}
    for j in order:
        alphas[j] = rho[:, j] * (s_hist[:, j] * q).sum(-1)
        q = q - alphas[j][:, None] * y_hist[:, j]
    q = precondition(q)
    if order:                                     # scale H0 by s·y / (y·B⁻¹y) of the newest pair
        newest = y_hist[:, order[0]]
        yby = (newest * precondition(newest)).sum(-1)
        gamma = torch.where(rho[:, order[0]] > 0, 1.0 / (rho[:, order[0]] * yby).clamp_min(1e-30),
                            torch.ones_like(yby))
        q = q * gamma[:, None]
    for j in reversed(order):
        beta = rho[:, j] * (y_hist[:, j] * q).sum(-1)
        q = q + (alphas[j] - beta)[:, None] * s_hist[:, j]
    return q
