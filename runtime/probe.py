"""`probe` stage: logistic probes per head and per layer; accuracies, directions, entanglement.

Reads an activations artifact (`activations.safetensors`, `examples.jsonl`). Writes
`accuracy.json` (`head_accuracy` L×H, `layer_accuracy` L, `layers`, `head_ranking` [[layer, head], …]
best first, `n_train`, `n_validation`), `directions.safetensors` (`mass_mean`, `probe_weight`
[L, H, Dh] and `resid_mass_mean`, `resid_probe_weight` [L, D]: unit vectors in the original activation
space pointing toward toxic; `std_*` the std of the training activations projected on each;
`layers`), `entanglement.json` and `heatmap.png`. Everything in `Config` changes the id.

Split: examples are grouped by normalised text (`examples.jsonl` `group`) and the groups are split by
scikit-learn's `GroupShuffleSplit(test_size=validation_fraction, random_state=split_seed)`, so one text
never lands on both sides. Probes: `runtime.probe_fit` (L2 logistic regression on standardised
features, C = 1/l2_penalty; `batched` torch L-BFGS or the `sklearn` reference).

Measures (validation accuracy acc_g of head g over all L·H heads; rank = accuracy, then lower
validation log-loss):
- `best_head_accuracy` = max_g acc_g (`best_head_layer`, `best_head` its model layer and head index)
- `mean_head_accuracy`, `median_head_accuracy`, `std_head_accuracy` (population std) of acc_g
- `top_decile_head_accuracy` = mean of acc_g over the ceil(10 %) best heads (the right tail)
- `heads_above_threshold` = #{g : acc_g > accuracy_threshold}; `heads_above_threshold_fraction`
- `best_layer_accuracy` = max over layers of the residual-stream probe accuracy (`best_layer`)
- `entanglement_<attribute>`: for each value v of the attribute (≥ `min_attribute_examples` training
  examples with and without it), the one-vs-rest mass-mean direction a_v = mean(x | v) − mean(x | ¬v);
  per head e_g = max_v |cos(t_g, a_v)| with t_g the toxicity mass-mean direction; the metric is the
  mean of e_g over the `entanglement_heads` best heads. `entanglement_<attribute>_resid` is the same
  max_v |cos| at the best residual layer. (a_v also absorbs any toxicity difference between groups:
  it measures how the data's attribute directions align with toxicity, not a causal entanglement.)
- `head_accuracies`: the flat L·H list (row-major, layer by layer), for the report's test across heads
  (toxic-data vs clean models: higher accuracies, fatter right tail).
"""
from __future__ import annotations

import math
import re

from pydantic import Field

from compiler.schema.base import StrictModel
from typing import Literal

from runtime.stage import StageContext

VERSION = 2
"""Bump by hand whenever a change of this module changes results (it changes every id)."""


class Config(StrictModel):
    validation_fraction: float
    split_seed: int
    implementation: Literal["compiled", "batched", "sklearn"]
    l2_penalty: float
    max_iterations: int
    accuracy_threshold: float
    gradient_tolerance: float = Field(
        1e-6, gt=0, description="Stop a probe when max |gradient of the mean loss| is below this.")
    entanglement_heads: int = Field(
        10, gt=0, description="Entanglement is averaged over this many best heads.")
    min_attribute_examples: int = Field(
        10, gt=0, description="Attribute values with fewer training examples (either side) are skipped.")


def run(cfg: Config, ctx: StageContext) -> dict:
    import json

    import numpy as np
    import torch
    from safetensors.numpy import load_file, save_file

    from runtime.probe_fit import fit_probes, rank_probes
    from runtime.stage import write_json

    torch.set_num_threads(max(1, ctx.threads))
    src = ctx.input("activations")
    acts = load_file(str(src / "activations.safetensors"))
    with open(src / "examples.jsonl", encoding="utf-8") as f:
        examples = [json.loads(line) for line in f]
    heads, resid, y, layers = acts["heads"], acts["resid"], acts["labels"], acts["layers"].tolist()
    n, n_layers, n_heads, head_dim = heads.shape
    train, val = grouped_split([e["group"] for e in examples], cfg.validation_fraction, cfg.split_seed)
    fit_kw = dict(l2_penalty=cfg.l2_penalty, max_iterations=cfg.max_iterations,
                  tolerance=cfg.gradient_tolerance, implementation=cfg.implementation)
    head_x = heads.reshape(n, n_layers * n_heads, head_dim)
    head_fit = fit_probes(head_x, y, train, val, **fit_kw)
    resid_fit = fit_probes(resid, y, train, val, **fit_kw)

    head_train, resid_train = head_x[train], resid[train]
    head_mm, head_pw = mass_mean(head_train, y[train]), unit(head_fit.weight)
    resid_mm, resid_pw = mass_mean(resid_train, y[train]), unit(resid_fit.weight)
    ranking = rank_probes(head_fit)
    acc = head_fit.val_accuracy.reshape(n_layers, n_heads)
    save_file({
        "mass_mean": head_mm.reshape(n_layers, n_heads, head_dim),
        "probe_weight": head_pw.reshape(n_layers, n_heads, head_dim),
        "std_mass_mean": projected_std(head_train, head_mm).reshape(n_layers, n_heads),
        "std_probe_weight": projected_std(head_train, head_pw).reshape(n_layers, n_heads),
        "resid_mass_mean": resid_mm, "resid_probe_weight": resid_pw,
        "std_resid_mass_mean": projected_std(resid_train, resid_mm),
        "std_resid_probe_weight": projected_std(resid_train, resid_pw),
        "layers": np.asarray(layers, dtype=np.int64),
    }, str(ctx.out / "directions.safetensors"))
    head_ranking = [[layers[g // n_heads], int(g % n_heads)] for g in ranking]
    write_json(ctx.out / "accuracy.json", {
        "head_accuracy": acc.tolist(), "layer_accuracy": resid_fit.val_accuracy.tolist(),
        "layers": layers, "head_ranking": head_ranking,
        "n_train": int(len(train)), "n_validation": int(len(val)),
    })
    best_layer = int(rank_probes(resid_fit)[0])
    entangled = entanglement(
        examples, train, head_x, resid[:, best_layer], head_mm, resid_mm[best_layer],
        ranking[:cfg.entanglement_heads], cfg.min_attribute_examples,
    )
    write_json(ctx.out / "entanglement.json", {
        "heads": head_ranking[:cfg.entanglement_heads], "resid_layer": layers[best_layer],
        "attributes": entangled,
    })
    plot_heatmap(acc, resid_fit.val_accuracy, layers, ctx.out / "heatmap.png",
                 title=f"{ctx.stage_id}: validation accuracy per head, % (n={len(val)})")
    return {
        **separability(head_fit.val_accuracy, cfg.accuracy_threshold),
        "best_head_layer": head_ranking[0][0], "best_head": head_ranking[0][1],
        "best_layer_accuracy": float(resid_fit.val_accuracy.max()), "best_layer": layers[best_layer],
        **{f"entanglement_{metric_name(a)}": v["heads_mean"] for a, v in entangled.items()},
        **{f"entanglement_{metric_name(a)}_resid": v["resid"] for a, v in entangled.items()},
        "n_train": int(len(train)), "n_validation": int(len(val)),
        "head_accuracies": [float(a) for a in head_fit.val_accuracy],
    }


def grouped_split(groups: list[str], validation_fraction: float, seed: int):
    """Sorted train and validation row indices; rows sharing a group key stay on one side."""
    import numpy as np
    from sklearn.model_selection import GroupShuffleSplit

    idx = np.arange(len(groups))
    splitter = GroupShuffleSplit(n_splits=1, test_size=validation_fraction, random_state=seed)
    train, val = next(splitter.split(idx, groups=groups))
    return np.sort(train), np.sort(val)


def unit(v):
    """Rows scaled to unit L2 norm (a zero row stays zero)."""
    import numpy as np

    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return (v / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def mass_mean(x, y):
    """Unit mean(toxic) − mean(non-toxic) along the last axis; x [n, …, d], y [n] in {0, 1}."""
    y = y.astype(bool)
    return unit(x[y].mean(0, dtype="float64") - x[~y].mean(0, dtype="float64"))


def projected_std(x, directions):
    """Std over examples of x projected on each direction: x [n, G, d], directions [G, d] → [G]."""
    import numpy as np

    return np.einsum("n...d,...d->n...", x, directions, dtype=np.float64).std(0).astype(np.float32)


def separability(accuracies, threshold: float) -> dict:
    """Summary of the per-head validation accuracies (formulas in the module docstring)."""
    import numpy as np

    a = np.sort(np.asarray(accuracies, dtype=np.float64))[::-1]
    top = a[: max(1, math.ceil(0.1 * len(a)))]
    above = int((a > threshold).sum())
    return {
        "best_head_accuracy": float(a[0]), "mean_head_accuracy": float(a.mean()),
        "median_head_accuracy": float(np.median(a)), "std_head_accuracy": float(a.std()),
        "top_decile_head_accuracy": float(top.mean()), "heads_above_threshold": above,
        "heads_above_threshold_fraction": above / len(a),
    }


def entanglement(examples, train, head_x, resid_x, head_tox, resid_tox, best_heads, min_examples) -> dict:
    """Per attribute: max over values of |cos(toxicity, one-vs-rest attribute direction)|."""
    import numpy as np

    out = {}
    best_x, resid_train = head_x[:, best_heads][train], resid_x[train]
    for name in sorted(examples[0]["attributes"]) if examples else []:
        values = np.array([examples[i]["attributes"][name] for i in train])
        kept = [v for v in sorted(set(values))
                if min((values == v).sum(), (values != v).sum()) >= min_examples]
        head_cos = {v: np.abs((mass_mean(best_x, values == v)
                               * head_tox[best_heads]).sum(-1)) for v in kept}
        resid_cos = {v: float(abs(mass_mean(resid_train, values == v) @ resid_tox)) for v in kept}
        per_head = np.max(np.stack(list(head_cos.values())), 0) if kept else np.full(len(best_heads), np.nan)
        out[name] = {
            "values": kept, "heads_mean": float(per_head.mean()),
            "heads": [float(c) for c in per_head],
            "heads_by_value": {v: [float(c) for c in cs] for v, cs in head_cos.items()},
            "resid": float(max(resid_cos.values())) if kept else float("nan"),
            "resid_by_value": resid_cos,
        }
    return out


def metric_name(attribute: str) -> str:
    """An attribute field as a flat metric-key fragment: lowercase letters, digits and `_`."""
    return re.sub(r"[^a-z0-9]+", "_", attribute.lower()).strip("_")


def plot_heatmap(acc, layer_acc, layers: list[int], path, *, title: str) -> None:
    """Layers × heads accuracy map, a residual-stream column beside it and one shared colorbar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n_layers, n_heads = acc.shape
    lo, hi = min(0.5, float(np.min(acc)), float(np.min(layer_acc))), 1.0
    fig = plt.figure(figsize=(2.5 + 0.45 * n_heads, 1.5 + 0.38 * n_layers))
    grid = fig.add_gridspec(1, 3, width_ratios=[n_heads, 1.2, 0.5], wspace=0.15)
    ax, ax_r, ax_c = fig.add_subplot(grid[0]), fig.add_subplot(grid[1]), fig.add_subplot(grid[2])
    im = ax.imshow(acc, vmin=lo, vmax=hi, cmap="viridis", aspect="auto", origin="lower")
    ax_r.imshow(np.asarray(layer_acc)[:, None], vmin=lo, vmax=hi, cmap="viridis", aspect="auto",
                origin="lower")
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers), [str(i) for i in layers])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9, loc="left")
    ax_r.set_xticks([0], ["resid"])
    ax_r.set_yticks([])
    if n_layers * n_heads <= 400:
        for (i, j), a in np.ndenumerate(acc):
            ax.text(j, i, f"{100 * a:.0f}", ha="center", va="center", fontsize=6,
                    color="black" if a > (lo + hi) / 2 else "white")
    for i, a in enumerate(layer_acc):
        ax_r.text(0, i, f"{100 * a:.0f}", ha="center", va="center", fontsize=6,
                  color="black" if a > (lo + hi) / 2 else "white")
    best = np.unravel_index(np.argmax(acc), acc.shape)
    ax.add_patch(plt.Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False, ec="red", lw=1.5))
    fig.colorbar(im, cax=ax_c, label="validation accuracy")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
