"""Per-head probe accuracies by toxic share, and the across-heads significance test.

A probe's `accuracy.json` holds `head_accuracy` [n probed layers][H] and `layers`, the model layer of
each row (a subset of the model's layers when `probe.layers` names one): every figure labels rows with
`layers`, never with the row index.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compiler.errors import StageError
from compiler.schema.report import ReportRow
from runtime.artifacts import read_json
from runtime.stage import StageContext


@dataclass(frozen=True)
class ProbeAccuracy:
    """Validation accuracy of every probed head: `accuracy[i, h]` is head h of model layer `layers[i]`."""

    accuracy: np.ndarray
    layers: list[int]


def read_probe_accuracy(path: Path) -> ProbeAccuracy:
    """`head_accuracy` (NaN for skipped heads) and `layers` of an `accuracy.json`; `layers` defaults to
    0…n−1 when absent."""
    try:
        raw = read_json(path)
        acc = np.array([[math.nan if v is None else v for v in layer] for layer in raw["head_accuracy"]],
                       dtype=float)
    except StageError as exc:
        raise StageError(f"report: cannot read head_accuracy: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise StageError(f"report: cannot read head_accuracy from {path}: {exc!r}") from None
    layers = [int(l) for l in raw.get("layers", range(len(acc)))]
    if acc.ndim != 2 or len(layers) != len(acc):
        raise StageError(f"report: {path}: head_accuracy has shape {acc.shape} but `layers` names "
                         f"{len(layers)} layers")
    return ProbeAccuracy(acc, layers)


def probes_by_share(ctx: StageContext, rows: list[ReportRow]) -> dict[float, list[ProbeAccuracy]]:
    """Toxic share → the accuracies of its distinct probes (one per seed), shares ascending."""
    seen, out = set(), {}
    for r in rows:
        if r.probe is None or r.probe in seen or r.toxic_share is None:
            continue
        seen.add(r.probe)
        out.setdefault(float(r.toxic_share), []).append(read_probe_accuracy(ctx.input(r.probe) / "accuracy.json"))
    return dict(sorted(out.items()))


def significance_tests(by_share: dict[float, list[np.ndarray]], alpha: float) -> list[dict[str, Any]]:
    """One-sided Mann–Whitney U: are head accuracies at each toxic share larger than at the reference?

    The reference is the smallest toxic share (0 % in the paper). Heads of every seed of a share are
    pooled; non-finite accuracies (layers not probed) are dropped. H1: accuracy(share) is
    stochastically greater than accuracy(reference).
    """
    from scipy.stats import mannwhitneyu

    if len(by_share) < 2:
        return []
    pooled = {s: np.concatenate([a[np.isfinite(a)] for a in arrays]) for s, arrays in by_share.items()}
    ref_share = min(pooled)
    ref = pooled[ref_share]
    results = []
    for share, acc in pooled.items():
        if share == ref_share:
            continue
        res = mannwhitneyu(acc, ref, alternative="greater")
        results.append({
            "toxic_share": share, "reference_toxic_share": ref_share, "n_heads": int(acc.size),
            "n_heads_reference": int(ref.size), "median_accuracy": float(np.median(acc)),
            "median_accuracy_reference": float(np.median(ref)), "u_statistic": float(res.statistic),
            "p_value": float(res.pvalue), "alpha": alpha, "significant": bool(res.pvalue < alpha),
        })
    return results


def significance_metrics(results: list[dict[str, Any]]) -> dict[str, float]:
    """Flat metrics keys, e.g. `significance_p_value_toxic_share_0.1`."""
    out: dict[str, float] = {}
    for r in results:
        tag = f"toxic_share_{r['toxic_share']:g}"
        out[f"significance_p_value_{tag}"] = r["p_value"]
        out[f"significance_u_statistic_{tag}"] = r["u_statistic"]
        out[f"significance_reject_{tag}"] = float(r["significant"])
    if results:
        out["significance_reference_toxic_share"] = results[0]["reference_toxic_share"]
    return out
