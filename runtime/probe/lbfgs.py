"""The settings both probe fitters share (the batched torch one, `runtime.probe.fit`, and the compiled
numba one, `runtime.probe.kernel`), so that they solve the same problem the same way."""
from __future__ import annotations

import numpy as np

MAX_HALVINGS = 30
"""Backtracking line-search halvings before a probe is declared unable to improve (converged)."""

ARMIJO_SLACK = 1e-6
"""Relative slack on the Armijo test (Hager–Zhang's approximate Armijo): near the optimum the decrease
is below float32 rounding of f, and an exact test would reject every step."""

HISTORY = 10
"""L-BFGS curvature pairs kept per probe (scipy's default `maxcor` is 10)."""

CONSTANT_STD = 10 * float(np.finfo(np.float32).eps)
"""A feature whose std is below this × max(|mean|, 1) is constant (below float32 resolution): it gets
std 1, as in `StandardScaler`, and its weight is exactly 0."""
