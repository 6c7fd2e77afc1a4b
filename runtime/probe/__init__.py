"""`probe` stage: logistic probes per head and per layer; accuracies, directions, entanglement.

Reads an activations artifact (`activations.safetensors`, `examples.jsonl`). Its rows are the probed
layers, in the order of its `layers` array (model layer of each row; any subset, any order). Writes:
- `accuracy.json`: `head_accuracy` [P][H] (validation accuracy; row p = model layer `layers[p]`),
  `layer_accuracy` [P] (residual-stream probes), `layers` [P], `head_ranking` [[model layer, head], …]
  ALL probed heads best first (the tie rule below; downstream stages read this list rather than
  re-ranking), `layer_ranking` [model layer, …] best first, `recipe`, `n_train`, `n_validation`;
- `directions.safetensors`: `mass_mean`, `probe_weight` [P, H, Dh] and `resid_mass_mean`,
  `resid_probe_weight` [P, D], unit vectors in the original activation space pointing toward toxic;
  `std_<name>` ([P, H] / [P]) the std of the activations projected on each; `layers` [P];
- `split.json`: `{"train": [...], "validation": [...]}`, row indices of the activations' examples;
- `entanglement.json` and `heatmap.png` (rows labelled with model layers).
Everything in `Config` changes the id.

Split: examples are grouped by normalised text (`examples.jsonl` `group`) and the groups are split by
scikit-learn's `GroupShuffleSplit(test_size=validation_fraction, random_state=split_seed)`, so one text
never lands on both sides (0.2: Li et al.'s 4:1 split).

Recipes (`recipe`), for head probes and residual-stream probes alike; probes by `runtime.probe.fit`
(L2 logistic regression, C = 1/l2_penalty, fitted on the train rows, scored on the validation rows):
- `li2023` (default), honest_llama's `train_probes` and `get_com_directions` [sure: its code; that the
  paper used it: likely]: `LogisticRegression(random_state=seed, max_iter=1000)` on the RAW head
  activations; mass_mean = unit(mean(x | toxic) − mean(x | non-toxic)) over train AND validation rows;
  σ = `np.std` (ddof 0) of all rows (train + validation) projected on each unit direction.
- `standardized`: probes on `StandardScaler` features (train statistics); mass-mean and σ over the train
  rows only (this stage's behaviour before VERSION 3).
`probe_weight` is the unit classifier weight in the original activation space, in both recipes.

Tie rule (`rank_heads`, used for every ranking this stage writes): descending validation accuracy,
ties to the higher flat index over (model layer, head) in layer-major order, i.e.
`np.argsort(acc.ravel(), kind="stable")[::-1]` over the rows sorted by model layer: honest_llama's
`np.argsort(acc)[::-1]` made deterministic (numpy's default sort is not stable).

Measures (validation accuracy acc_g of head g over all P·H probed heads):
- `best_head_accuracy` = max_g acc_g (`best_head_layer`, `best_head`: model layer and head of
  `head_ranking[0]`)
- `mean_head_accuracy`, `median_head_accuracy`, `std_head_accuracy` (population std) of acc_g
- `top_decile_head_accuracy` = mean of acc_g over the ceil(10 %) best heads (the right tail)
- `heads_above_threshold` = #{g : acc_g > accuracy_threshold}; `heads_above_threshold_fraction`
- `best_layer_accuracy` = max over layers of the residual-stream probe accuracy (`best_layer`: its model
  layer, `layer_ranking[0]`)
- `entanglement_<attribute>`: for each value v of the attribute (≥ `min_attribute_examples` examples
  with and without it among the recipe's direction rows), the one-vs-rest mass-mean direction
  a_v = mean(x | v) − mean(x | ¬v); per head e_g = max_v |cos(t_g, a_v)| with t_g the toxicity mass-mean
  direction; the metric is the mean of e_g over the `entanglement_heads` best heads.
  `entanglement_<attribute>_resid` is the same max_v |cos| at the best residual layer. (a_v also
  absorbs any toxicity difference between groups: it measures how the data's attribute directions
  align with toxicity, not a causal entanglement.)
- `head_accuracies`: the flat P·H list (row-major, in the artifact's row order), for the report's test
  across heads (toxic-data vs clean models: higher accuracies, fatter right tail).
"""
from __future__ import annotations

import math
import re

from compiler.errors import StageError
from compiler.stages.probe import Config
from runtime.stage import StageContext


RESTART = "logistic probes on the saved activations, no model in memory"
"""Why a stopped run starts over (`runtime.preempt.stage_stops` logs it on the rerun)."""


def fit_device(resources: dict) -> str:
    """Where the `batched` fit runs: on the GPU only when the stage asked for one (the default `compiled`
    path and `sklearn` never use one), never on a GPU it happens to see."""
    from runtime.device import cuda_available

    return "cuda" if int(resources.get("gpus", 0) or 0) > 0 and cuda_available() else "cpu"


def run(cfg: Config, ctx: StageContext) -> dict:
    import numpy as np
    import torch
    from safetensors.numpy import save_file

    from runtime.artifacts import load_tensors, read_jsonl
    from runtime.probe.fit import fit_probes
    from runtime.stage import write_json

    torch.set_num_threads(max(1, ctx.threads))
    src = ctx.input("activations")
    acts = load_tensors(src / "activations.safetensors")
    examples = read_jsonl(src / "examples.jsonl")
    heads, resid, y, layers = acts["heads"], acts["resid"], acts["labels"], acts["layers"].tolist()
    n, n_layers, n_heads, head_dim = heads.shape
    train, val = grouped_split([e["group"] for e in examples], cfg.validation_fraction, cfg.split_seed)
    if len(set(y[train].tolist())) != 2 or len(val) == 0:
        raise StageError(f"probe: {src / 'examples.jsonl'}: the train split needs both labels (0 and 1) "
                         f"and the validation split rows (train labels {sorted(set(y[train].tolist()))}, "
                         f"{len(val)} validation rows)")
    li2023 = cfg.recipe == "li2023"
    fit_kw = dict(standardize=not li2023, l2_penalty=cfg.l2_penalty, max_iterations=cfg.max_iterations,
                  tolerance=cfg.gradient_tolerance, implementation=cfg.implementation, seed=cfg.split_seed,
                  device=fit_device(ctx.resources))
    head_x = heads.reshape(n, n_layers * n_heads, head_dim)
    head_fit = fit_probes(head_x, y, train, val, **fit_kw)
    resid_fit = fit_probes(resid, y, train, val, **fit_kw)

    rows = np.arange(n) if li2023 else train                              # mass-mean and σ rows
    head_rows, resid_rows = (head_x, resid) if li2023 else (head_x[rows], resid[rows])
    head_mm, head_pw = mass_mean(head_rows, y[rows]), unit(head_fit.weight)
    resid_mm, resid_pw = mass_mean(resid_rows, y[rows]), unit(resid_fit.weight)
    acc = head_fit.val_accuracy.reshape(n_layers, n_heads)
    ranking = rank_heads(acc, layers)
    layer_order = rank_heads(resid_fit.val_accuracy[:, None], layers)
    save_file({
        "mass_mean": head_mm.reshape(n_layers, n_heads, head_dim),
        "probe_weight": head_pw.reshape(n_layers, n_heads, head_dim),
        "std_mass_mean": projected_std(head_rows, head_mm).reshape(n_layers, n_heads),
        "std_probe_weight": projected_std(head_rows, head_pw).reshape(n_layers, n_heads),
        "resid_mass_mean": resid_mm, "resid_probe_weight": resid_pw,
        "std_resid_mass_mean": projected_std(resid_rows, resid_mm),
        "std_resid_probe_weight": projected_std(resid_rows, resid_pw),
        "layers": np.asarray(layers, dtype=np.int64),
    }, str(ctx.out / "directions.safetensors"))
    head_ranking = [[layers[g // n_heads], int(g % n_heads)] for g in ranking]
    layer_ranking = [layers[p] for p in layer_order]
    write_json(ctx.out / "accuracy.json", {
        "head_accuracy": acc.tolist(), "layer_accuracy": resid_fit.val_accuracy.tolist(),
        "layers": layers, "head_ranking": head_ranking, "layer_ranking": layer_ranking,
        "recipe": cfg.recipe, "n_train": int(len(train)), "n_validation": int(len(val)),
    })
    write_json(ctx.out / "split.json", {"train": train.tolist(), "validation": val.tolist()})
    best_layer = int(layer_order[0])
    entangled = entanglement(
        examples, rows, head_x, resid[:, best_layer], head_mm, resid_mm[best_layer],
        ranking[:cfg.entanglement_heads], cfg.min_attribute_examples,
    )
    write_json(ctx.out / "entanglement.json", {
        "heads": head_ranking[:cfg.entanglement_heads], "resid_layer": layers[best_layer],
        "attributes": entangled,
    })
    plot_heatmap(acc, resid_fit.val_accuracy, layers, head_ranking[0], ctx.out / "heatmap.png",
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


def rank_heads(accuracy, layers: list[int]):
    """Flat indices into `accuracy` [P, H] (row p = model layer `layers[p]`), best first: descending
    accuracy, ties to the higher flat index in (model layer, head) order, i.e.
    `np.argsort(acc.ravel(), kind="stable")[::-1]` on the rows sorted by model layer. The one tie rule
    of the pipeline: steer, the token view and the report read `head_ranking` instead of re-ranking."""
    import numpy as np

    acc = np.asarray(accuracy, dtype=np.float64)
    n_heads = acc.shape[1]
    by_layer = np.argsort(np.asarray(layers), kind="stable")
    order = np.argsort(acc[by_layer].ravel(), kind="stable")[::-1]
    return by_layer[order // n_heads] * n_heads + order % n_heads


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


def entanglement(examples, rows, head_x, resid_x, head_tox, resid_tox, best_heads, min_examples) -> dict:
    """Per attribute: max over values of |cos(toxicity, one-vs-rest attribute direction)|, the
    directions taken over `rows` (the recipe's mass-mean rows)."""
    import numpy as np

    out = {}
    best_x, resid_rows = head_x[:, best_heads][rows], resid_x[rows]
    for name in sorted(examples[0]["attributes"]) if examples else []:
        values = np.array([examples[i]["attributes"][name] for i in rows])
        kept = [v for v in sorted(set(values))
                if min((values == v).sum(), (values != v).sum()) >= min_examples]
        head_cos = {v: np.abs((mass_mean(best_x, values == v)
                               * head_tox[best_heads]).sum(-1)) for v in kept}
        resid_cos = {v: float(abs(mass_mean(resid_rows, values == v) @ resid_tox)) for v in kept}
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


def plot_heatmap(acc, layer_acc, layers: list[int], best: list[int], path, *, title: str) -> None:
    """Layers × heads accuracy map (rows in model-layer order, labelled with model layers), a
    residual-stream column beside it and one shared colorbar; `best` [model layer, head] is boxed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    by_layer = np.argsort(np.asarray(layers), kind="stable")
    acc, layer_acc = np.asarray(acc)[by_layer], np.asarray(layer_acc)[by_layer]
    layers = [layers[p] for p in by_layer]
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
    ax.add_patch(plt.Rectangle((best[1] - 0.5, layers.index(best[0]) - 0.5), 1, 1, fill=False, ec="red",
                               lw=1.5))
    fig.colorbar(im, cax=ax_c, label="validation accuracy")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
