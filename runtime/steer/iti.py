"""Building an ITI intervention (Li et al. 2023) from a probe: pick heads, draw controls, fold `all` into
o_proj. The intervention's format, reading a probe's heads and applying it with hooks are shared with every
stage that loads a steered model (`runtime.intervention`).

Two ways to apply `all`, equal up to float rounding:
- `fold_into_o_proj`: o_proj(x + s) = W x + W s, so the shift becomes the o_proj bias W @ s. HF OLMo
  has biases only through `config.attention_bias`, which gives q/k/v/o all a bias: q/k/v get zeros.
- `runtime.intervention.add_shift_hooks`: a forward pre-hook on each steered o_proj that adds the shift at
  every position (the way pyvene applies ITI); the reference the fold is tested against.

Controls (`control`): `random_direction` keeps the real top-K heads and their σ but replaces each
direction by a random unit vector (normalised Gaussian), so each shift has the same norm α·σ;
`random_heads` draws K heads uniformly without replacement from all probed heads, each with its own
direction and σ. Both are seeded by (run seed, control seed).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from runtime.intervention import (ProbeHeads, add_last_position_hooks, attention, check_shape, layer_shifts,
                                  load_intervention)

Control = Literal["random_direction", "random_heads"]


def control_rng(seed: int, control_seed: int) -> np.random.Generator:
    """The random stream of one control draw: (run seed, control seed) through numpy's SeedSequence."""
    return np.random.default_rng([seed, control_seed])


def chosen_heads(probe: ProbeHeads, k: int, control: Control | None,
                 rng: np.random.Generator | None) -> list[tuple[int, int]]:
    """The probe's top-k heads, or for `random_heads` k heads drawn without replacement from its ranking."""
    if k > len(probe.ranking):
        raise ValueError(f"top_k_heads={k} but only {len(probe.ranking)} heads have a probe accuracy")
    if control == "random_heads":
        picked = rng.choice(len(probe.ranking), size=k, replace=False)
        return [probe.ranking[i] for i in picked]
    return probe.ranking[:k]


def build_intervention(probe: ProbeHeads, *, top_k_heads: int, alpha: float, direction: str,
                       positions: Literal["all", "last"], n_layers: int, control: Control | None = None,
                       control_seed: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """The intervention dict: the top-k heads of `probe` (or a seeded control draw), `n_layers` = the model's."""
    rng = None if control is None else control_rng(seed, control_seed)
    heads = []
    for layer, head in chosen_heads(probe, top_k_heads, control, rng):
        unit = probe.unit_direction(layer, head)
        if control == "random_direction":
            unit = rng.standard_normal(unit.shape[0])
            unit /= np.linalg.norm(unit)
        heads.append({"layer": layer, "head": head, "direction": unit.tolist(),
                      "std": probe.std(layer, head), "alpha": float(alpha),
                      "accuracy": probe.head_accuracy(layer, head)})
    return {"method": "iti", "direction": direction, "alpha": float(alpha), "top_k_heads": top_k_heads,
            "positions": positions, "control": control, "control_seed": control_seed,
            "n_layers": n_layers, "n_heads": probe.directions.shape[1], "head_dim": probe.directions.shape[2],
            "heads": heads}


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
        o_proj = attention(model, layer).o_proj
        bias = o_proj.weight.float() @ shift.to(o_proj.weight.device)
        o_proj.bias.add_(bias.to(o_proj.bias.dtype))
    return model



def apply_intervention(model: nn.Module, intervention: dict[str, Any] | Path) -> nn.Module:
    """Apply an `intervention.json` (path or dict) to an unsteered model, in place: folded for
    `positions: all`, last-position hooks for `last`."""
    if not isinstance(intervention, dict):
        intervention = load_intervention(intervention)
    if intervention["positions"] == "all":
        return fold_into_o_proj(model, intervention)
    if intervention["positions"] == "last":
        add_last_position_hooks(model, intervention)
        return model
    raise ValueError(f"unknown positions {intervention['positions']!r} (all | last)")
