"""Control interventions (random directions on the same heads, random heads) and the mechanistic metric
(`probe_direction_shift`) against a direct computation on the steered checkpoint."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from runtime.intervention import head_shift, load_intervention

sys.path.insert(0, str(Path(__file__).parent))
from test_steer import KIND, TOXIC, load, random_probe, run_steer  # noqa: E402

VALIDATION = [TOXIC[1], TOXIC[2], KIND[1], KIND[2]]  # the split.json validation rows write_probe writes


def control(tmp, model_dir, probe, kind: str, control_seed: int, seed: int = 0, out: str = "", **cfg):
    out, metrics = run_steer(tmp, model_dir, probe, out=f"{kind}-{control_seed}-{seed}{out}", control=kind,
                             control_seed=control_seed, seed=seed, **cfg)
    return load_intervention(out / "intervention.json"), metrics


def test_random_direction_keeps_heads_and_size(tmp_path, tiny_model_dir):
    probe = random_probe(tmp_path / "probe")
    real_out, _ = run_steer(tmp_path, tiny_model_dir, probe, out="real", top_k_heads=4)
    real = load_intervention(real_out / "intervention.json")
    a, _ = control(tmp_path, tiny_model_dir, probe, "random_direction", 0, top_k_heads=4)
    again, _ = control(tmp_path, tiny_model_dir, probe, "random_direction", 0, out="again", top_k_heads=4)
    other, _ = control(tmp_path, tiny_model_dir, probe, "random_direction", 1, top_k_heads=4)
    other_run, _ = control(tmp_path, tiny_model_dir, probe, "random_direction", 0, seed=1, top_k_heads=4)
    assert a["control"] == "random_direction" and a["control_seed"] == 0
    assert [(h["layer"], h["head"], h["std"]) for h in a["heads"]] == \
        [(h["layer"], h["head"], h["std"]) for h in real["heads"]]
    for h, r in zip(a["heads"], real["heads"]):
        assert np.linalg.norm(h["direction"]) == pytest.approx(1.0)
        assert np.linalg.norm(head_shift(h)) == pytest.approx(np.linalg.norm(head_shift(r)))
        assert abs(np.dot(h["direction"], r["direction"])) < 0.99
    assert a == again  # seeded
    assert a["heads"] != other["heads"] and a["heads"] != other_run["heads"]


def test_random_heads_draw_distinct_probed_heads_with_their_own_directions(tmp_path, tiny_model_dir):
    from safetensors.numpy import load_file

    probe = random_probe(tmp_path / "probe")
    tensors = load_file(str(probe / "directions.safetensors"))
    drawn = set()
    for s in range(4):
        inter, metrics = control(tmp_path, tiny_model_dir, probe, "random_heads", s, top_k_heads=3)
        heads = [(h["layer"], h["head"]) for h in inter["heads"]]
        assert len(set(heads)) == 3 and metrics["control"] == "random_heads"
        for h in inter["heads"]:
            np.testing.assert_allclose(h["direction"], tensors["mass_mean"][h["layer"], h["head"]], atol=1e-6)
            assert h["std"] == pytest.approx(float(tensors["std_mass_mean"][h["layer"], h["head"]]))
        drawn.add(tuple(sorted(heads)))
    assert len(drawn) > 1  # not always the same (top) heads


@torch.no_grad()
def direct_shift(base, steered, tok, intervention, probe_dir, direction="mass_mean") -> tuple[float, float]:
    """The metric computed the long way: each validation text alone, folded checkpoint vs base, the
    steered head's effective o_proj input recovered from o_proj's output (W square in the tiny model)."""
    from safetensors.numpy import load_file

    tensors = load_file(str(probe_dir / "directions.safetensors"))
    head_dim = intervention["head_dim"]
    total, downstream = [], []
    for text in VALIDATION:
        enc = tok(text, return_tensors="pt")
        for h in intervention["heads"]:
            layer, head = h["layer"], h["head"]
            d = tensors[direction][layer, head].astype(np.float64)
            d /= np.linalg.norm(d)
            sigma = float(tensors[f"std_{direction}"][layer, head])
            x = {}
            for name, model in (("base", base), ("steered", steered)):
                o_proj = model.model.layers[layer].self_attn.o_proj
                handle = o_proj.register_forward_hook(lambda m, a, y, name=name: x.update(
                    {name: a[0][0, -1].double(), name + "_y": y[0, -1].double()}))
                model(**enc)
                handle.remove()
            # the base has no o_proj bias, so the folded one is W s: o_proj's input, as seen, is W⁻¹ y
            effective = torch.linalg.solve(steered.model.layers[layer].self_attn.o_proj.weight.double(),
                                           x["steered_y"])
            sl = slice(head * head_dim, (head + 1) * head_dim)
            total.append(float((effective[sl] - x["base"][sl]).numpy() @ d) / sigma)
            downstream.append(float((x["steered"][sl] - x["base"][sl]).numpy() @ d) / sigma)
    return float(np.mean(total)), float(np.mean(downstream))


@pytest.mark.parametrize("kind", [None, "random_direction", "random_heads"])
def test_probe_direction_shift_matches_a_direct_computation(tmp_path, tiny_model_dir, kind):
    probe = random_probe(tmp_path / "probe")
    extra = {} if kind is None else {"control": kind, "control_seed": 0, "seed": 0}
    out, metrics = run_steer(tmp_path, tiny_model_dir, probe, top_k_heads=5, alpha=4.0, **extra)
    intervention = load_intervention(out / "intervention.json")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir / "model")
    total, downstream = direct_shift(load(tiny_model_dir / "model"), load(out / "model"), tok, intervention, probe)
    assert metrics["n_texts_mechanistic"] == len(VALIDATION)
    assert metrics["probe_direction_shift"] == pytest.approx(total, abs=1e-4)
    assert metrics["probe_direction_shift_downstream"] == pytest.approx(downstream, abs=1e-4)
    if kind != "random_direction":
        assert metrics["probe_direction_shift"] == pytest.approx(-4.0 + downstream, abs=1e-4)


def test_single_head_moves_exactly_alpha_with_either_positions(tmp_path, tiny_model_dir):
    """One steered head, nothing upstream of it: its own shift is the whole effect, −α, at the last token."""
    probe = random_probe(tmp_path / "probe")
    for positions in ("all", "last"):
        _, metrics = run_steer(tmp_path, tiny_model_dir, probe, out=positions, top_k_heads=1, alpha=3.0,
                               positions=positions)
        assert metrics["probe_direction_shift"] == pytest.approx(-3.0, abs=1e-6)
        assert metrics["probe_direction_shift_downstream"] == 0.0
        assert metrics["positions"] == positions


def test_config_refuses_a_control_without_seeds():
    from runtime.steer import Config

    with pytest.raises(ValueError, match="go together"):
        Config(top_k_heads=1, direction="mass_mean", alpha=1.0, positions="last", control="random_heads")
    with pytest.raises(ValueError, match="go together"):
        Config(top_k_heads=1, direction="mass_mean", alpha=1.0, positions="last", control_seed=0, seed=0)
