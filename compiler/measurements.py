"""What a spec will measure, in words: the probe recipe, where ITI acts, its controls, the MMLU protocol
and the intervals. `mixsteer validate` prints these notes under each valid spec, so a reader sees the
choices that decide whether the numbers are comparable with the paper's, and what each one means."""
from __future__ import annotations

from typing import Any

from .schema import Spec

RECIPES = {
    "li2023": "honest_llama's probes: scikit-learn-default logistic regression (C = 1/l2_penalty) on raw "
              "head outputs, mass-mean direction over train + validation, σ over all rows "
              "[sure: ITI's code; likely: the paper]",
    "standardized": "standardised features (StandardScaler), mass-mean and σ over the training rows "
                    "[ours: not the published recipe]",
}
POSITIONS = {
    "last": "the prompt's last token and every generated token (honest_llama's generation-time edit; "
            "a run-time hook) [open: which the paper used]",
    "all": "every position (honest_llama's pyvene version; folded into the o_proj bias, free at run time) "
           "[open: which the paper used]",
}


def measurement_notes(runs: list[tuple[Any, Spec]]) -> list[str]:
    """One line per measurement choice of the spec's runs (empty for a spec without models)."""
    spec = runs[0][1]
    notes = []
    if spec.probe is not None:
        p = spec.probe
        notes.append(f"probe.recipe {p.recipe}: {RECIPES[p.recipe]}; validation {p.validation_fraction:g} of "
                     "the texts (grouped); heads ranked by validation accuracy, ties to the higher (layer, head)")
        if spec.steer.enabled:
            notes += _steer_notes(runs)
    if spec.evaluate is not None:
        ev = spec.evaluate
        if ev.mmlu.enabled:
            notes.append(f"evaluate.mmlu: {ev.mmlu.shots}-shot, ai2-olmo's prompt and len_norm "
                         "(log-likelihood / characters of the answer without its leading space); chance 0.25")
        b = ev.bootstrap
        notes.append(f"intervals: {b.level:.0%} percentile bootstrap over prompts / questions / documents, "
                     f"{b.resamples} resamples, seed {b.seed}; paired for model − base on the same items")
    return notes


def _steer_notes(runs: list[tuple[Any, Spec]]) -> list[str]:
    spec = runs[0][1]
    s, m = spec.steer, spec.model
    layers = len(spec.probe.layers) if spec.probe.layers is not None else m.n_layers
    heads = layers * m.n_heads
    alphas = sorted({r.steer.alpha for _, r in runs})
    notes = [f"steer: K = {s.top_k_heads} of {heads} probed heads ({s.top_k_heads / heads:.1%}; the paper: "
             f"30 of 256 = 11.7 %), {s.direction} direction, α {', '.join(f'{a:g}' for a in alphas)}; "
             f"steer.positions {s.positions}: {POSITIONS[s.positions]}"]
    c = s.controls
    draws = c.random_directions + c.random_heads
    if draws:
        at = "every α" if c.alphas is None else "α " + ", ".join(f"{a:g}" for a in c.alphas)
        notes.append(f"steer.controls: {c.random_directions} random-direction draws (same heads, same α·σ) and "
                     f"{c.random_heads} random-head draws (own directions) at {at}: {draws} more steered and "
                     "evaluated models per pretrained model")
    else:
        notes.append("steer.controls: none — without random-direction and random-head controls, 'ITI lowers "
                     "toxicity' cannot be told from 'ITI damages the model'")
    return notes
