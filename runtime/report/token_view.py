"""Token-level view of the probe: how toxic each token of a text looks to the model's best heads.

Definition (for one model and its probe). Let x_t^{l,h} ∈ R^Dh be the output of head h of layer l at
token t, i.e. its slice [h·Dh, (h+1)·Dh) of the input of that layer's `o_proj` (captured with a forward
pre-hook); d^{l,h} the probe's unit `probe_weight` direction (pointing toward toxic) and σ^{l,h} its
`std_probe_weight` (std of the probe's training activations projected on d). Then

    p_t^{l,h} = x_t^{l,h} · d^{l,h}                                   (projection)
    z_t^{l,h} = (p_t^{l,h} − μ^{l,h}) / σ^{l,h}                         (standardised projection)
    score_t   = (1/K) Σ_{(l,h) ∈ top-K} sigmoid(z_t^{l,h})             (in (0, 1))

where top-K are the first K heads of the probe's `head_ranking` (`accuracy.json`: best validation
accuracy first, the probe's one tie rule, as steer picks them; l is a model layer, mapped to its probe
row through the probe's `layers`, so a probed subset works) and μ^{l,h} is the mean projection over
every token of every text shown for this model. The probe stage stores no activation mean, so the
centre is this shared pool: 0.5 marks a token as toxic-looking as the average token shown, and scores
are comparable across the texts of one model, not across models.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from compiler.errors import StageError
from compiler.schema.report import ReportRow

SPECIAL_OFFSET = (0, 0)


@torch.no_grad()
def head_projections(model, tok, text: str, heads: list[tuple[int, int]], directions: np.ndarray):
    """Projections p_t of each chosen (model layer, head) output on its unit direction (`directions`
    [K, Dh]): ([T, K] array, token offsets)."""
    enc = tok(text, return_offsets_mapping=True, return_tensors="pt", truncation=True,
              max_length=model.config.max_position_embeddings)
    offsets = [tuple(o) for o in enc.pop("offset_mapping")[0].tolist()]
    n_heads = model.config.num_attention_heads
    head_dim = model.config.hidden_size // n_heads
    captured: dict[int, torch.Tensor] = {}

    def hook(layer: int):
        def pre_hook(_module, args):
            captured[layer] = args[0][0].detach().float().reshape(-1, n_heads, head_dim)
        return pre_hook

    layers = sorted({l for l, _ in heads})
    handles = [model.model.layers[l].self_attn.o_proj.register_forward_pre_hook(hook(l)) for l in layers]
    try:
        device = next(model.parameters()).device
        model(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device))
    finally:
        for h in handles:
            h.remove()
    cols = [captured[l][:, h].cpu().numpy() @ d for (l, h), d in zip(heads, directions)]
    return np.stack(cols, axis=1).astype(np.float64), offsets


def scores(projections: list[np.ndarray], stds: np.ndarray) -> list[np.ndarray]:
    """score_t per text from per-text projections [T, K] and the heads' σ [K] (μ pooled over texts)."""
    mu = np.concatenate(projections, axis=0).mean(axis=0)
    return [(1.0 / (1.0 + np.exp(-(p - mu) / stds))).mean(axis=1) for p in projections]


def colour(score: float) -> tuple[str, str]:
    """(background, text colour) for a score in [0, 1]: blue below the 0.5 centre, white at it, red above."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    return to_hex(colormaps["RdBu_r"](float(score))), ("#ffffff" if abs(score - 0.5) > 0.32 else "#1f2933")


def spans(text: str, offsets: list[tuple[int, int]], score: np.ndarray) -> list[dict[str, str]]:
    """Consecutive pieces of `text`: each token's characters with its score; gaps unscored."""
    out, cursor = [], 0
    for (start, end), s in zip(offsets, score):
        if (start, end) == SPECIAL_OFFSET or end <= cursor:
            continue
        start = max(start, cursor)
        if start > cursor:
            out.append({"text": text[cursor:start], "background": "transparent", "color": "inherit", "score": ""})
        bg, fg = colour(s)
        out.append({"text": text[start:end], "background": bg, "color": fg, "score": f"{s:.3f}"})
        cursor = end
    if cursor < len(text):
        out.append({"text": text[cursor:], "background": "transparent", "color": "inherit", "score": ""})
    return out


def model_views(model_dir: Path, probe_dir: Path, texts: list[str], top_k: int) -> list[dict[str, Any]]:
    """Per text: spans, the top token and the score array, for one model and its probe."""
    from runtime.generate import load_model
    from runtime.intervention import load_probe_heads

    try:
        probe = load_probe_heads(probe_dir, "probe_weight")
        heads = probe.ranking[:top_k]
        directions = np.stack([probe.unit_direction(l, h) for l, h in heads])
    except (StageError, ValueError) as exc:
        raise StageError(f"token view: cannot use the probe in {probe_dir}: {exc}") from None
    model, tok = load_model(model_dir)
    projected = [head_projections(model, tok, t, heads, directions) for t in texts]
    sigma = np.array([probe.std(l, h) for l, h in heads], dtype=np.float64)
    out = []
    for text, (_, offsets), score in zip(texts, projected, scores([p for p, _ in projected], sigma)):
        pieces = spans(text, offsets, score)
        scored = [p for p in pieces if p["score"]]
        top = max(scored, key=lambda p: float(p["score"])) if scored else {"text": "", "score": ""}
        out.append({"spans": pieces, "top_token": top["text"], "top_score": top["score"], "scores": score})
    return out


def token_views(ctx, rows: list[ReportRow], texts: list[str], *, top_k: int) -> list[dict[str, Any]]:
    """For each text, one highlighted rendering per distinct (base model, probe) of the spec."""
    from tqdm.auto import tqdm

    pairs = list(dict.fromkeys((r.pretrain, r.probe, r.toxic_share, r.seed) for r in rows if r.pretrain and r.probe))
    pairs.sort(key=lambda p: (p[2] is None, p[2], p[3] is None, p[3]))
    views = [{"text": t, "models": []} for t in texts]
    for pretrain, probe, share, seed in tqdm(pairs, desc="token view", unit="model"):
        per_text = model_views(ctx.input(pretrain) / "model", ctx.input(probe), texts, top_k)
        label = "base model" + (f", toxic share {100 * share:g} %" if share is not None else "") + \
            (f", seed {seed}" if seed is not None else "")
        for view, m in zip(views, per_text):
            view["models"].append({"label": label, **m})
    return views
