"""Reading a probe's heads and applying a saved ITI intervention: what every stage that loads a steered
model needs (generation, teacher-forced scoring, attacks, the report's token view). Building an
intervention (picking heads, controls, folding into o_proj) is the steer stage's own (`runtime.steer.iti`).

An intervention is a plain JSON-safe dict (what `intervention.json` holds):

    {"method": "iti", "direction": "mass_mean", "alpha": 8.0, "top_k_heads": 30, "positions": "last",
     "control": null, "control_seed": null, "n_layers": L, "n_heads": H, "head_dim": Dh,
     "heads": [{"layer": l, "head": h, "direction": [...unit...], "std": s, "alpha": a,
                "accuracy": acc}, ...]}

`layer` is the model's layer index (a probe row is mapped to it through the probe's `layers`). Head h of
layer l gets the shift  -alpha * std * direction  added to its output, i.e. to its slice of the input of
`o_proj` (the probe's direction points toward toxic, so minus lowers toxicity).

Which positions (`positions`):
- `last` (default, closest to the published ITI code): honest_llama's generation-time intervention adds
  the shift to `head_output[:, -1, head, :]` of every forward call, so a cached generation shifts the
  prompt's last token and every generated token. Needs a forward pre-hook at run time
  (`add_last_position_hooks`; `runtime.generate.load_model` registers it when the model folder holds an
  `intervention.json`), a small per-token cost.
- `all`: every position, as honest_llama's pyvene version does. Position-independent, so the steer stage
  folds it into the o_proj bias (`runtime.steer.iti.fold_into_o_proj`): a normal checkpoint, zero run-time
  cost. `add_shift_hooks` applies it with pre-hooks instead (the way pyvene does; the fold's reference).
Which of the two the paper (Li et al. 2023) ran is [open]: its text does not say; the repository has both.

Teacher-forced scoring of a continuation (MMLU, detection, cross-entropy) is one forward call over
context + continuation, where `last` would shift only the final token. `steer_from(model, starts)`
shifts every position p >= starts[b] of row b instead: pass the index of the context's last token to
shift the positions a cached generation would have shifted. It is a no-op on a model without `last`
hooks (unsteered, or folded `all`).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from compiler.errors import StageError
from runtime.artifacts import load_tensors, read_json

INTERVENTION_FILE = "intervention.json"
"""Inside a model folder: a `positions: last` intervention that `load_model` applies with hooks."""



@dataclass(frozen=True)
class ProbeHeads:
    """One direction kind of a probe artifact. Rows are probed layers; `layers[r]` is row r's model layer."""

    layers: list[int]
    accuracy: np.ndarray  # [R, H] validation accuracy
    ranking: list[tuple[int, int]]  # every probed (model layer, head), best first (the probe's tie rule)
    directions: np.ndarray  # [R, H, Dh], toward toxic
    stds: np.ndarray  # [R, H], std of all activations projected on the direction

    def row(self, layer: int) -> int:
        return self.layers.index(layer)

    def unit_direction(self, layer: int, head: int) -> np.ndarray:
        d = self.directions[self.row(layer), head].astype(np.float64)
        norm = float(np.linalg.norm(d))
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError(f"direction of layer {layer} head {head} has norm {norm}")
        return d / norm

    def std(self, layer: int, head: int) -> float:
        return float(self.stds[self.row(layer), head])

    def head_accuracy(self, layer: int, head: int) -> float:
        return float(self.accuracy[self.row(layer), head])


def load_probe_heads(folder: Path, direction: str) -> ProbeHeads:
    """Read `accuracy.json` + `directions.safetensors` for one direction kind; StageError names the bad field."""
    acc_file, dir_file = folder / "accuracy.json", folder / "directions.safetensors"
    meta, tensors = read_json(acc_file), load_tensors(dir_file)
    for name, where, have in (("head_accuracy", acc_file, meta), ("layers", acc_file, meta),
                              ("head_ranking", acc_file, meta), (direction, dir_file, tensors),
                              (f"std_{direction}", dir_file, tensors)):
        if name not in have:
            raise StageError(f"{where}: field {name!r} missing")
    layers = [int(layer) for layer in meta["layers"]]
    accuracy = np.array([[np.nan if v is None else v for v in row] for row in meta["head_accuracy"]],
                        dtype=np.float64)
    directions, stds = np.asarray(tensors[direction]), np.asarray(tensors[f"std_{direction}"])
    n_rows = len(layers)
    if accuracy.ndim != 2 or accuracy.shape[0] != n_rows or directions.shape[:2] != accuracy.shape \
            or stds.shape != accuracy.shape or directions.ndim != 3:
        raise StageError(f"{folder}: shapes disagree: layers {n_rows}, head_accuracy {accuracy.shape}, "
                         f"{direction} {directions.shape}, std_{direction} {stds.shape}")
    ranking = [(int(layer), int(head)) for layer, head in meta["head_ranking"]]
    bad = [(l, h) for l, h in ranking if l not in layers or not 0 <= h < accuracy.shape[1]]
    if bad:
        raise StageError(f"{acc_file}: head_ranking names heads {bad[:3]} outside the probed layers {layers}")
    return ProbeHeads(layers, accuracy, ranking, directions, stds)


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


def attention(model: nn.Module, layer: int) -> nn.Module:
    return model.model.layers[layer].self_attn


def check_shape(model: nn.Module, intervention: dict[str, Any]) -> None:
    """Fail loudly when the intervention was built for another architecture."""
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    want = (cfg.num_hidden_layers, cfg.num_attention_heads, head_dim)
    got = (intervention["n_layers"], intervention["n_heads"], intervention["head_dim"])
    if want != got:
        raise ValueError(f"intervention is for (layers, heads, head_dim) = {got}, model has {want}")
    outside = [(h["layer"], h["head"]) for h in intervention["heads"]
               if not (0 <= h["layer"] < want[0] and 0 <= h["head"] < want[1])]
    if outside:
        raise ValueError(f"heads {outside[:3]} are outside the model's {want[0]} layers × {want[1]} heads")


def add_shift_hooks(model: nn.Module, intervention: dict[str, Any]) -> list[Any]:
    """Pre-hooks on o_proj that add the shift at every position; returns the handles to remove."""
    check_shape(model, intervention)
    handles = []
    for layer, shift in layer_shifts(intervention).items():
        o_proj = attention(model, layer).o_proj
        shift = shift.to(device=o_proj.weight.device, dtype=o_proj.weight.dtype)

        def pre_hook(module: nn.Module, args: tuple, shift: torch.Tensor = shift) -> tuple:
            return (args[0] + shift.to(args[0].dtype), *args[1:])  # the model may be cast after hooking

        handles.append(o_proj.register_forward_pre_hook(pre_hook))
    return handles


class LastPositionHooks:
    """The `positions: last` pre-hooks of one model. By default each forward call's last position is
    shifted; `starts` (set by `steer_from`) shifts every position p >= starts[b] of row b instead."""

    ATTR = "_iti_last_position_hooks"

    def __init__(self, model: nn.Module, intervention: dict[str, Any]) -> None:
        check_shape(model, intervention)
        self.starts: torch.Tensor | None = None
        self.handles = []
        for layer, shift in layer_shifts(intervention).items():
            o_proj = attention(model, layer).o_proj
            shift = shift.to(device=o_proj.weight.device, dtype=o_proj.weight.dtype)
            self.handles.append(o_proj.register_forward_pre_hook(
                lambda module, args, shift=shift: (self._shifted(args[0], shift), *args[1:])))
        setattr(model, self.ATTR, self)
        self._model = model

    def _shifted(self, x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        shift = shift.to(x.dtype)  # the model may be cast (runtime.device) after the hooks were added
        if self.starts is None:
            x = x.clone()
            x[..., -1, :] += shift
            return x
        columns = torch.arange(x.shape[-2], device=x.device)
        mask = columns.view(1, -1) >= self.starts.to(x.device).view(-1, 1)  # [B or 1, T]
        return x + mask.unsqueeze(-1).to(x.dtype) * shift

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        delattr(self._model, self.ATTR)


def add_last_position_hooks(model: nn.Module, intervention: dict[str, Any]) -> LastPositionHooks:
    return LastPositionHooks(model, intervention)


@contextmanager
def steer_from(model: nn.Module, starts: torch.LongTensor | int | None) -> Iterator[None]:
    """Under this, a `last`-steered model shifts every position p >= starts[b] of row b of each forward
    call (`starts` [B], or one int for all rows; None or 0 = every position). Positions count columns of
    the call's input, padding included, so use it for single full-sequence (teacher-forced) calls, not
    inside a cached `generate`. No-op on a model without `last` hooks."""
    hooks: LastPositionHooks | None = getattr(model, LastPositionHooks.ATTR, None)
    if hooks is None:
        yield
        return
    previous = hooks.starts
    hooks.starts = torch.as_tensor(0 if starts is None else starts, dtype=torch.long)
    try:
        yield
    finally:
        hooks.starts = previous


def load_intervention(path: Path) -> dict[str, Any]:
    return read_json(path)
