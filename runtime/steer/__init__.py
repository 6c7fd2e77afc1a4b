"""`steer` stage: ITI on the probe's top-K heads (or a seeded control draw), plus a mechanistic check.

Reads: a model folder (`model/`), a probe artifact (`accuracy.json`, `directions.safetensors`,
`split.json`) and its activations (`examples.jsonl`, for the held-out texts).
Writes: `model/` and `intervention.json` (see `runtime.steer.iti` and `runtime.intervention`). With `positions: all` the shift is folded
into the o_proj bias of a normal HF checkpoint; with `last` `model/` holds the unsteered weights plus
`model/intervention.json`, which `runtime.generate.load_model` applies with last-position hooks.
Controls (`control: random_direction | random_heads`, seeded by (seed, control_seed)) are built the
same way; see `runtime.steer.iti`.

Mechanistic metric: did the intervention move what it meant to move? On the probe's validation texts
(`split.json` rows of `examples.jsonl`), one forward pass of the unsteered and one of the steered
model (steering as configured: every position, or the last) read each steered head k's o_proj input at
the text's last token: x_k (unsteered) and x'_k (steered, before the head's own shift s_k is added, so
o_proj sees x'_k + s_k). With d_k the head's REAL unit probe direction (the configured direction kind
of that head in the probe artifact, also for `random_direction` controls) and σ_k its σ:

    probe_direction_shift            = mean_{texts, k} (x'_k + s_k − x_k) · d_k / σ_k
    probe_direction_shift_downstream = mean_{texts, k} (x'_k − x_k) · d_k / σ_k

Negative = toward non-toxic. For real ITI the head's own term s_k·d_k/σ_k is exactly −α, so the first
is −α plus what earlier steered heads did to the later ones (the second, the part that arrives from
upstream); for a random direction s_k·d_k/σ_k is −α·cos(random, d_k) ≈ 0.
"""
from __future__ import annotations

from pathlib import Path

from compiler.stages.steer import Config
from runtime.stage import StageContext


RESTART = "it reads the probe and writes one steered checkpoint, no training"
"""Why a stopped run starts over (`runtime.preempt.stage_stops` logs it on the rerun)."""


def run(cfg: Config, ctx: StageContext) -> dict:
    import numpy as np
    import torch

    from compiler.errors import StageError
    from runtime.intervention import INTERVENTION_FILE, check_shape, load_probe_heads
    from runtime.steer import iti
    from runtime.artifacts import load_causal_lm, load_tokenizer, save_model_folder
    from runtime.device import place
    from runtime.stage import write_json

    torch.set_num_threads(ctx.threads)
    probe_dir, model_dir = ctx.input("probe"), ctx.input("model") / "model"
    probe = load_probe_heads(probe_dir, cfg.direction)
    texts = validation_texts(probe_dir, ctx.input("activations"))
    placement = place(cfg.compute, "steer")
    model = load_causal_lm(model_dir, dtype="auto").to(placement.device).eval()  # saved as stored: never cast
    tok = load_tokenizer(model_dir)
    try:
        intervention = iti.build_intervention(
            probe, top_k_heads=cfg.top_k_heads, alpha=cfg.alpha, direction=cfg.direction,
            positions=cfg.positions, n_layers=model.config.num_hidden_layers, control=cfg.control,
            control_seed=cfg.control_seed, seed=cfg.seed)
        check_shape(model, intervention)
    except ValueError as exc:
        raise StageError(f"steer {ctx.stage_id}: probe {probe_dir} does not fit {model_dir}: {exc}") from None

    with placement.autocast():
        mechanistic = probe_direction_shift(model, tok, texts, intervention, probe, cfg.batch_size)
    if cfg.positions == "all":
        iti.fold_into_o_proj(model, intervention)
    save_model_folder(model, model_dir, ctx.out / "model")
    if cfg.positions == "last":
        write_json(ctx.out / "model" / INTERVENTION_FILE, intervention)
    write_json(ctx.out / "intervention.json", intervention)

    shift_norms = [abs(h["alpha"] * h["std"]) for h in intervention["heads"]]
    return {"n_heads_steered": len(shift_norms), "alpha": cfg.alpha, "positions": cfg.positions,
            "control": cfg.control, "control_seed": cfg.control_seed, "computed_in": placement.compute.label,
            "mean_shift_norm": float(np.mean(shift_norms)), **mechanistic}


def validation_texts(probe_dir: Path, activations_dir: Path) -> list[str]:
    """The probe's held-out texts: `split.json` validation rows of the activations' `examples.jsonl`."""
    from compiler.errors import StageError
    from runtime.artifacts import read_json, read_jsonl

    split_file, examples_file = probe_dir / "split.json", activations_dir / "examples.jsonl"
    split, examples = read_json(split_file), read_jsonl(examples_file)
    try:
        texts = [examples[i]["text"] for i in split["validation"]]
    except KeyError as exc:
        raise StageError(f"steer: field {exc} missing in {split_file} or {examples_file}") from None
    except IndexError:
        raise StageError(f"steer: {split_file} 'validation' names rows beyond the "
                         f"{len(examples)} of {examples_file}") from None
    if not texts:
        raise StageError(f"steer: {split_file} has no validation rows")
    return texts


def probe_direction_shift(model, tok, texts: list[str], intervention: dict, probe, batch_size: int) -> dict:
    """The mechanistic metric of the module docstring (both forms) and the number of texts."""
    import numpy as np

    from runtime.intervention import add_last_position_hooks, add_shift_hooks, head_shift

    heads = [(h["layer"], h["head"]) for h in intervention["heads"]]
    real = np.stack([probe.unit_direction(l, h) for l, h in heads])  # [K, Dh]
    sigma = np.array([probe.std(l, h) for l, h in heads])  # [K]
    own_shift = np.stack([head_shift(h) for h in intervention["heads"]])  # [K, Dh]
    before = last_token_head_outputs(model, tok, texts, heads, batch_size)
    if intervention["positions"] == "all":
        handles = add_shift_hooks(model, intervention)
        try:
            after = last_token_head_outputs(model, tok, texts, heads, batch_size)
        finally:
            for h in handles:
                h.remove()
    else:
        hooks = add_last_position_hooks(model, intervention)
        try:
            after = last_token_head_outputs(model, tok, texts, heads, batch_size)
        finally:
            hooks.remove()
    upstream = np.einsum("nkd,kd->nk", after - before, real) / sigma
    own = np.einsum("kd,kd->k", own_shift, real) / sigma  # each head's own shift on its real direction
    return {"probe_direction_shift": float((upstream + own).mean()),
            "probe_direction_shift_downstream": float(upstream.mean()),
            "n_texts_mechanistic": len(texts)}


def last_token_head_outputs(model, tok, texts: list[str], heads: list[tuple[int, int]],
                            batch_size: int):
    """[N, K, Dh] float64: each head's o_proj input at each text's last token, before any shift hook."""
    import numpy as np
    import torch

    n_heads = model.config.num_attention_heads
    head_dim = getattr(model.config, "head_dim", None) or model.config.hidden_size // n_heads
    layers = sorted({l for l, _ in heads})
    captured: dict[int, torch.Tensor] = {}

    def capture(layer: int):
        return lambda module, args: captured.__setitem__(layer, args[0][:, -1].reshape(-1, n_heads, head_dim))

    handles = [model.model.layers[l].self_attn.o_proj.register_forward_pre_hook(capture(l), prepend=True)
               for l in layers]
    tok.padding_side, tok.truncation_side = "left", "left"  # the last token sits in the last column
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    device = next(model.parameters()).device
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                enc = tok(texts[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                          max_length=model.config.max_position_embeddings).to(device)
                mask = enc["attention_mask"]
                model(input_ids=enc["input_ids"], attention_mask=mask,
                      position_ids=(mask.cumsum(-1) - 1).clamp_min(0), use_cache=False)
                out.append(torch.stack([captured[l][:, h] for l, h in heads], dim=1).double().cpu().numpy())
    finally:
        for h in handles:
            h.remove()
    return np.concatenate(out)
