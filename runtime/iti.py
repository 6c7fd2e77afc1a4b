"""ITI maths (Li et al. 2023): pick heads, build per-head shifts, apply them by folding or by hooks.

An intervention is a plain JSON-safe dict (what `intervention.json` holds):

    {"method": "iti", "direction": "mass_mean", "alpha": 8.0, "top_k_heads": 30,
     "n_layers": L, "n_heads": H, "head_dim": Dh,
     "heads": [{"layer": l, "head": h, "direction": [...unit, toward toxic...], "std": s,
                "alpha": a, "accuracy": acc}, ...]}

Head h of layer l gets the shift  -alpha * std * direction  added to its output, i.e. to its slice of
the input of `o_proj` (the direction points toward toxic, so minus lowers toxicity), at every position.

Two ways to apply it, equal up to float rounding:
- `fold_into_o_proj`: o_proj(x + s) = W x + W s, so the shift becomes the o_proj bias W @ s. HF OLMo
  has biases only through `config.attention_bias`, which gives q/k/v/o all a bias: q/k/v get zeros.
  The result is a normal checkpoint that `from_pretrained` reloads with no custom code.
- `add_shift_hooks`: a forward pre-hook on each steered o_proj that adds the shift to its input (the
  way honest_llama / pyvene apply ITI); the reference the fold is tested against.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def select_top_heads(head_accuracy: np.ndarray, k: int) -> list[tuple[int, int]]:
    """The k (layer, head) pairs of highest validation accuracy; ties broken by (layer, head) order.

    Heads with a non-finite accuracy (e.g. layers the probe skipped) are never chosen.
    """
    acc = np.asarray(head_accuracy, dtype=np.float64)
    if acc.ndim != 2:
        raise ValueError(f"head_accuracy must be [layers, heads], got shape {acc.shape}")
    finite = np.flatnonzero(np.isfinite(acc.ravel()))
    if k > finite.size:
        raise ValueError(f"top_k_heads={k} but only {finite.size} heads have a probe accuracy")
    order = finite[np.argsort(-acc.ravel()[finite], kind="stable")[:k]]
    return [divmod(int(i), acc.shape[1]) for i in order]


def build_intervention(head_accuracy: np.ndarray, directions: np.ndarray, stds: np.ndarray, *,
                       top_k_heads: int, alpha: float, direction: str) -> dict[str, Any]:
    """The intervention dict for the top-k heads; `directions` [L, H, Dh], `stds` [L, H]."""
    directions = np.asarray(directions, dtype=np.float64)
    stds = np.asarray(stds, dtype=np.float64)
    acc = np.asarray(head_accuracy, dtype=np.float64)
    n_layers, n_heads, head_dim = directions.shape
    if acc.shape != (n_layers, n_heads) or stds.shape != (n_layers, n_heads):
        raise ValueError(f"shape mismatch: directions {directions.shape}, accuracy {acc.shape}, "
                         f"stds {stds.shape}")
    heads = []
    for layer, head in select_top_heads(acc, top_k_heads):
        d = directions[layer, head]
        norm = float(np.linalg.norm(d))
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError(f"direction of layer {layer} head {head} has norm {norm}")
        heads.append({"layer": layer, "head": head, "direction": (d / norm).tolist(),
                      "std": float(stds[layer, head]), "alpha": float(alpha),
                      "accuracy": float(acc[layer, head])})
    return {"method": "iti", "direction": direction, "alpha": float(alpha), "top_k_heads": top_k_heads,
            "n_layers": n_layers, "n_heads": n_heads, "head_dim": head_dim, "heads": heads}


def head_shift(entry: dict[str, Any]) -> np.ndarray:
    """-alpha * std * unit direction: the vector added to one head's output."""
    d = np.asarray(entry["direction"], dtype=np.float64)
    return -entry["alpha"] * entry["std"] * d / np.linalg.norm(d)


def layer_shifts(intervention: dict[str, Any]) -> dict[int, torch.Tensor]:
    """Per steered layer, the float32 shift of the whole o_proj input [H * Dh] (zeros off the heads)."""
    n_heads, head_dim = intervention["n_heads"], intervention["head_dim"]
    out: dict[int, np.ndarray] = {}
    for entry in intervention["heads"]:
        vec = out.setdefault(entry["layer"], np.zeros(n_heads * head_dim))
        vec[entry["head"] * head_dim:(entry["head"] + 1) * head_dim] += head_shift(entry)
    return {layer: torch.tensor(vec, dtype=torch.float32) for layer, vec in sorted(out.items())}


def _attention(model: nn.Module, layer: int) -> nn.Module:
    return model.model.layers[layer].self_attn


def check_shape(model: nn.Module, intervention: dict[str, Any]) -> None:
    """Fail loudly when the intervention was built for another architecture."""
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    want = (cfg.num_hidden_layers, cfg.num_attention_heads, head_dim)
    got = (intervention["n_layers"], intervention["n_heads"], intervention["head_dim"])
    if want != got:
        raise ValueError(f"intervention is for (layers, heads, head_dim) = {got}, model has {want}")


def _give_attention_biases(model: nn.Module) -> None:
    """Turn on `attention_bias` and add zero q/k/v/o biases, so the checkpoint reloads as-is."""
    if model.config.attention_bias:
        return
    for layer in model.model.layers:
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                     layer.self_attn.o_proj):
            w = proj.weight
            proj.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device),
                                     requires_grad=w.requires_grad)
    model.config.attention_bias = True


@torch.no_grad()
def fold_into_o_proj(model: nn.Module, intervention: dict[str, Any]) -> nn.Module:
    """Add W_o @ shift to each steered layer's o_proj bias, in place; returns the model."""
    check_shape(model, intervention)
    _give_attention_biases(model)
    for layer, shift in layer_shifts(intervention).items():
        o_proj = _attention(model, layer).o_proj
        bias = o_proj.weight.float() @ shift.to(o_proj.weight.device)
        o_proj.bias.add_(bias.to(o_proj.bias.dtype))
    return model


def add_shift_hooks(model: nn.Module, intervention: dict[str, Any]) -> list[Any]:
    """Register pre-hooks on o_proj that add the shift to its input; returns the handles to remove."""
    check_shape(model, intervention)
    handles = []
    for layer, shift in layer_shifts(intervention).items():
        o_proj = _attention(model, layer).o_proj
        shift = shift.to(device=o_proj.weight.device, dtype=o_proj.weight.dtype)

        def pre_hook(module: nn.Module, args: tuple, shift: torch.Tensor = shift) -> tuple:
            return (args[0] + shift, *args[1:])

        handles.append(o_proj.register_forward_pre_hook(pre_hook))
    return handles


def load_intervention(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def apply_intervention(model: nn.Module, intervention: dict[str, Any] | Path) -> nn.Module:
    """Fold an `intervention.json` (path or dict) into an unsteered model, in place."""
    if not isinstance(intervention, dict):
        intervention = load_intervention(intervention)
    return fold_into_o_proj(model, intervention)
