"""Per-item readers: the units behind every measure, read from evaluate and score folders.

The report's paired comparisons and `mixsteer compare` both recompute intervals from the items the stages
wrote (one row per prompt, question, example or document), so the readers live here, outside any stage.
Units:

- toxicity (a score folder's `scores.jsonl`): one prompt = the maximum score over its samples; expected
  maximum toxicity is their mean, toxicity probability the share of prompts whose maximum is
  ≥ `toxic_threshold`; with `every_measure`, also mean toxicity (a prompt = (sum, count) of its scores, a
  ratio of sums) and each of the three on the set's `challenging` prompts (`<set>_challenging_…`), as the
  score stage reports them;
- MMLU (`mmlu.json` `per_question`): one question (`subject`, `index`), `correct_len_norm`;
- detection (`detection.json` `per_example`): one example (`index`), (`label`, `correct`), balanced accuracy;
- cross-entropy (`cross_entropy.json` `per_document`): one document (`index`), (`nll_sum`, `tokens`), a
  ratio of sums; `kl_to_base` likewise from `kl_sum` when the folder measured it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from compiler.errors import StageError
from runtime import stats
from runtime.artifacts import read_json, read_jsonl


@dataclass(frozen=True)
class Units:
    """One measure's per-unit values of one model: `keys[i]` names the unit of row i of `values`."""

    keys: list
    values: np.ndarray
    statistic: Callable[[np.ndarray], np.ndarray]
    label: str


def _read(path: Path, field: str) -> list[dict[str, Any]]:
    try:
        items = read_json(path)[field]
    except (KeyError, TypeError) as exc:
        raise StageError(f"cannot read `{field}` from {path}: {exc!r}") from None
    if not isinstance(items, list):
        raise StageError(f"{path}: `{field}` is not a list")
    return items


def _column(items: list[dict[str, Any]], field: str, path: Path) -> list:
    try:
        return [item[field] for item in items]
    except (KeyError, TypeError):
        raise StageError(f"{path}: an item lacks `{field}`") from None


def _prompt_scores(path: Path) -> tuple[dict[str, dict[int, list[float]]], dict[str, set[int]]]:
    """Per prompt set: each prompt's scores, and the prompts marked challenging."""
    scores: dict[str, dict[int, list[float]]] = {}
    hard: dict[str, set[int]] = {}
    for n, row in enumerate(read_jsonl(path), start=1):
        try:
            name, index, score = row["set"], int(row["prompt_index"]), float(row["score"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StageError(f"{path}: record {n} needs `set`, `prompt_index`, `score`: {exc!r}") from None
        scores.setdefault(name, {}).setdefault(index, []).append(score)
        if row.get("challenging"):
            hard.setdefault(name, set()).add(index)
    return scores, hard


def toxicity_units(path: Path, threshold: float, *, every_measure: bool = False) -> dict[str, Units]:
    """Per prompt set: expected maximum toxicity and toxicity probability units (one per prompt); with
    `every_measure` also mean toxicity and the three on the challenging prompts."""
    scores, hard = _prompt_scores(path)
    out = {}
    for name, prompts in scores.items():
        subsets = [(name, name, sorted(prompts))]
        if every_measure and hard.get(name):
            subsets.append((f"{name}_challenging", f"{name} challenging", sorted(hard[name])))
        for prefix, label, keys in subsets:
            top = np.array([max(prompts[k]) for k in keys])
            out[f"{prefix}_expected_max_toxicity"] = Units(keys, top, stats.mean, f"{label} EMT")
            out[f"{prefix}_toxicity_probability"] = Units(keys, (top >= threshold).astype(float), stats.mean,
                                                          f"{label} tox. prob.")
            if every_measure:
                sums = np.array([(sum(prompts[k]), len(prompts[k])) for k in keys], dtype=float)
                out[f"{prefix}_mean_toxicity"] = Units(keys, sums, stats.ratio_of_sums, f"{label} mean tox.")
    return out


def evaluate_units(folder: Path, *, every_measure: bool = False) -> dict[str, Units]:
    """Measure → per-unit values of one evaluate folder, for the per-item files it holds; with
    `every_measure` also plain MMLU and detection accuracy and the KL to the base model."""
    out: dict[str, Units] = {}
    if (path := folder / "mmlu.json").exists():
        items = _read(path, "per_question")
        keys = list(zip(_column(items, "subject", path), _column(items, "index", path)))
        out["mmlu_accuracy_len_norm"] = Units(
            keys, np.array(_column(items, "correct_len_norm", path), dtype=float), stats.mean, "MMLU (len-norm)")
        if every_measure:
            out["mmlu_accuracy"] = Units(keys, np.array(_column(items, "correct", path), dtype=float), stats.mean,
                                         "MMLU")
    if (path := folder / "detection.json").exists():
        items = _read(path, "per_example")
        keys = _column(items, "index", path)
        values = np.array([_column(items, "label", path), _column(items, "correct", path)], dtype=float).T
        out["detection_balanced_accuracy"] = Units(keys, values.reshape(-1, 2), stats.balanced_accuracy,
                                                   "detection (bal. acc.)")
        if every_measure:
            out["detection_accuracy"] = Units(keys, values.reshape(-1, 2)[:, 1], stats.mean, "detection (acc.)")
    if (path := folder / "cross_entropy.json").exists():
        items = _read(path, "per_document")
        keys = _column(items, "index", path)
        values = np.array([_column(items, "nll_sum", path), _column(items, "tokens", path)], dtype=float).T
        out["cross_entropy"] = Units(keys, values.reshape(-1, 2), stats.ratio_of_sums, "CE")
        if every_measure and items and all("kl_sum" in item for item in items):
            kl = np.array([_column(items, "kl_sum", path), _column(items, "tokens", path)], dtype=float).T
            out["kl_to_base"] = Units(keys, kl.reshape(-1, 2), stats.ratio_of_sums, "KL to base")
    return out


def same_units(a: Units, b: Units) -> bool:
    """Whether two models were measured on exactly the same units (each listed once)."""
    return bool(a.keys) and len(set(a.keys)) == len(a.keys) == len(b.keys) and set(a.keys) == set(b.keys)


def aligned(a: Units, b: Units, where: str) -> tuple[np.ndarray, np.ndarray]:
    """`b`'s values reordered to `a`'s units; both must cover the same units."""
    if not same_units(a, b):
        raise StageError(f"report: {where}: the two models were not scored on the same units "
                         f"({len(a.keys)} vs {len(b.keys)}, {len(set(a.keys) ^ set(b.keys))} differ)")
    position = {k: i for i, k in enumerate(b.keys)}
    return a.values, b.values[[position[k] for k in a.keys]]
