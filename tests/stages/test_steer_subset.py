"""A probe over a layer subset that is not a prefix (layers [1, 3] of a 4-layer model): steer and the
token view map each probe row to its model layer."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from runtime.report import token_view
from runtime.intervention import INTERVENTION_FILE, load_intervention

sys.path.insert(0, str(Path(__file__).parent))
from test_steer import TOXIC, load, run_steer, write_probe  # noqa: E402

LAYERS, N_HEADS, HEAD_DIM = [1, 3], 4, 8


@pytest.fixture(scope="module")
def four_layer_model(tmp_path_factory) -> Path:
    from conftest import save_tiny_hf_model

    return save_tiny_hf_model(tmp_path_factory.mktemp("four_layers"), n_layers=4)


@pytest.fixture
def subset_probe(tmp_path) -> tuple[Path, np.ndarray]:
    """Rows 0 and 1 = model layers 1 and 3; the best heads are (3, 2) then (1, 0)."""
    rng = np.random.default_rng(0)
    acc = np.full((2, N_HEADS), 0.55)
    acc[1, 2], acc[0, 0] = 0.95, 0.9
    directions = rng.normal(size=(2, N_HEADS, HEAD_DIM))
    return write_probe(tmp_path / "probe", acc, directions, rng.uniform(0.5, 2, (2, N_HEADS)),
                       layers=LAYERS), directions


def test_steer_puts_each_row_on_its_model_layer(tmp_path, four_layer_model, subset_probe):
    probe, directions = subset_probe
    out, _ = run_steer(tmp_path, four_layer_model, probe, top_k_heads=2, alpha=5.0, positions="all")
    inter = load_intervention(out / "intervention.json")
    assert [(h["layer"], h["head"]) for h in inter["heads"]] == [(3, 2), (1, 0)]
    assert inter["n_layers"] == 4
    for h, row in zip(inter["heads"], (1, 0)):
        unit = directions[row, h["head"]] / np.linalg.norm(directions[row, h["head"]])
        np.testing.assert_allclose(h["direction"], unit, atol=1e-6)
    steered = load(out / "model")
    bias_norms = [float(steered.model.layers[l].self_attn.o_proj.bias.detach().norm()) for l in range(4)]
    assert bias_norms[0] == bias_norms[2] == 0.0 and bias_norms[1] > 0 and bias_norms[3] > 0


def test_token_view_reads_the_model_layer_of_each_row(four_layer_model, subset_probe):
    """The top head (model layer 3, head 2) is read at layer 3 and projected on probe row 1's direction."""
    from transformers import AutoTokenizer

    probe, directions = subset_probe
    model_dir = four_layer_model / "model"
    (view,) = token_view.model_views(model_dir, probe, [TOXIC[0]], top_k=1)

    model, tok = load(model_dir), AutoTokenizer.from_pretrained(model_dir)
    seen = {}
    hook = model.model.layers[3].self_attn.o_proj.register_forward_pre_hook(
        lambda m, args: seen.update(x=args[0][0].reshape(-1, N_HEADS, HEAD_DIM)[:, 2]))
    with torch.no_grad():
        model(**tok(TOXIC[0], return_tensors="pt"))
    hook.remove()
    unit = directions[1, 2] / np.linalg.norm(directions[1, 2])
    p = seen["x"].double().numpy() @ unit
    std = float(load_file(str(probe / "directions.safetensors"))["std_probe_weight"][1, 2])
    want = 1.0 / (1.0 + np.exp(-(p - p.mean()) / std))
    np.testing.assert_allclose(view["scores"], want, atol=1e-5)


def test_activations_probe_steer_chain_on_a_subset(tmp_path, four_layer_model):
    """The real activations and probe stages on layers [3, 1] (planned sorted), then steer with `last`:
    the steered heads are the probe ranking's model layers and the metric runs on the held-out rows."""
    from compiler.schema.probe import ProbeSection
    from runtime import activations, probe, steer
    from runtime.stage import StageContext

    texts = [f"{w} {n}" for n in range(20) for w in ("you stupid idiot", "what a kind day")]
    (tmp_path / "probe.jsonl").write_text("".join(
        json.dumps({"text": t, "label": int("stupid" in t)}) + "\n" for t in texts))
    section = ProbeSection(data={"source": {"kind": "jsonl", "path": "probe.jsonl"}}, layers=[3, 1])

    def stage(module, name, inputs, **cfg):
        out = tmp_path / name
        out.mkdir()
        ctx = StageContext(name, f"{name}-test", tmp_path, out, tmp_path / "work", inputs)
        return out, module.run(module.Config(**cfg), ctx)

    acts, _ = stage(activations, "activations", {"model": four_layer_model}, data=section.data,
                 token_position="last", max_length_tokens=32, layers=sorted(section.layers))
    fields = {k: getattr(section, k) for k in probe.Config.model_fields if hasattr(section, k)}
    probe_dir, _ = stage(probe, "probe", {"activations": acts}, **fields)
    out, metrics = stage(steer, "steer", {"model": four_layer_model, "probe": probe_dir, "activations": acts},
                top_k_heads=3, direction="mass_mean", alpha=2.0, positions="last")
    ranking = json.loads((probe_dir / "accuracy.json").read_text())["head_ranking"]
    inter = load_intervention(out / "model" / INTERVENTION_FILE)
    assert [[h["layer"], h["head"]] for h in inter["heads"]] == ranking[:3]
    assert {h["layer"] for h in inter["heads"]} <= {1, 3}
    n_validation = len(json.loads((probe_dir / "split.json").read_text())["validation"])
    assert metrics["n_texts_mechanistic"] == n_validation > 0
    assert metrics["probe_direction_shift"] == pytest.approx(-2.0 + metrics["probe_direction_shift_downstream"])
