"""`steer` stage: ITI folded into the o_proj bias of a normal HF checkpoint.

Reads: a model folder (`model/`) and a probe artifact (`accuracy.json`, `directions.safetensors`).
Writes: `model/` (steered HF checkpoint + the input's tokenizer files) and `intervention.json` (per
steered head: layer, head, unit direction, std, alpha, accuracy), which `runtime.iti.apply_intervention`
folds into the unsteered model again. Its id changes with top_k_heads, direction and alpha.
"""
from __future__ import annotations

from typing import Literal

from compiler.schema.base import StrictModel
from runtime.stage import StageContext

VERSION = 1
"""Bump by hand whenever a change of this module changes results (it changes every id)."""

class Config(StrictModel):
    top_k_heads: int
    direction: Literal["mass_mean", "probe_weight"]
    alpha: float


def run(cfg: Config, ctx: StageContext) -> dict:
    import json

    import numpy as np
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    from compiler.errors import StageError
    from runtime import iti
    from runtime.posttrain import save_model_folder
    from runtime.stage import write_json

    torch.set_num_threads(ctx.threads)
    probe_dir, model_dir = ctx.input("probe"), ctx.input("model") / "model"
    accuracy = np.asarray(json.loads((probe_dir / "accuracy.json").read_text())["head_accuracy"],
                          dtype=np.float64)
    tensors = load_file(str(probe_dir / "directions.safetensors"))
    try:
        intervention = iti.build_intervention(
            accuracy, tensors[cfg.direction], tensors[f"std_{cfg.direction}"],
            top_k_heads=cfg.top_k_heads, alpha=cfg.alpha, direction=cfg.direction,
        )
    except (KeyError, ValueError) as exc:
        raise StageError(f"steer {ctx.stage_id}: bad probe artifact {probe_dir}: {exc}") from None

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    try:
        iti.fold_into_o_proj(model, intervention)
    except ValueError as exc:
        raise StageError(f"steer {ctx.stage_id}: probe {probe_dir} does not fit {model_dir}: {exc}") from None

    save_model_folder(model, model_dir, ctx.out / "model")
    write_json(ctx.out / "intervention.json", intervention)

    shift_norms = [abs(h["alpha"] * h["std"]) for h in intervention["heads"]]
    return {"n_heads_steered": len(shift_norms), "alpha": cfg.alpha,
            "mean_shift_norm": float(np.mean(shift_norms))}
