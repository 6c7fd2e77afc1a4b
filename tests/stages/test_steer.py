"""`steer` stage on a tiny random HF OLMo: fold == hooks, alpha 0 is a no-op, shifts have the right size
and sign, and the steered checkpoint reloads with plain `from_pretrained`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from runtime import steer
from runtime.intervention import INTERVENTION_FILE, add_shift_hooks, load_intervention
from runtime.steer.iti import apply_intervention
from runtime.stage import StageContext

TOXIC = ["you are a stupid idiot and i hate you", "i hate you, you stupid dog", "stupid idiot"]
KIND = ["thank you for the kind and helpful answer", "what a wonderful day to learn something new",
        "thank you, what a kind day"]


def head_ranking(accuracy: np.ndarray, layers: list[int]) -> list[list[int]]:
    """Every probed (model layer, head), best first; ties to the higher flat index (the probe's rule)."""
    n_heads = accuracy.shape[1]
    order = np.argsort(accuracy.ravel(), kind="stable")[::-1]
    return [[layers[i // n_heads], int(i % n_heads)] for i in order]


def write_probe(folder: Path, accuracy: np.ndarray, directions: np.ndarray, stds: np.ndarray, *,
                layers: list[int] | None = None, ranking: list[list[int]] | None = None) -> Path:
    """A probe artifact as the probe stage writes it (rows = probed layers; both direction kinds get the
    same tensors) and its held-out split over `TOXIC + KIND`."""
    folder.mkdir(parents=True, exist_ok=True)
    layers = list(range(accuracy.shape[0])) if layers is None else layers
    (folder / "accuracy.json").write_text(json.dumps({
        "head_accuracy": accuracy.tolist(), "layer_accuracy": accuracy.max(1).tolist(), "layers": layers,
        "head_ranking": head_ranking(accuracy, layers) if ranking is None else ranking,
        "n_train": 8, "n_validation": 2}))
    (folder / "split.json").write_text(json.dumps({"train": [0, 3], "validation": [1, 2, 4, 5]}))
    unit = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    save_file({"mass_mean": unit.astype(np.float32), "probe_weight": unit.astype(np.float32),
               "std_mass_mean": stds.astype(np.float32), "std_probe_weight": stds.astype(np.float32),
               "layers": np.asarray(layers, dtype=np.int64)},
              str(folder / "directions.safetensors"))
    return folder


def write_activations(folder: Path, texts: list[str] = TOXIC + KIND) -> Path:
    """The part of an activations folder steer reads: `examples.jsonl`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "examples.jsonl").write_text("".join(
        json.dumps({"index": i, "text": t, "label": int(i < len(TOXIC))}) + "\n" for i, t in enumerate(texts)))
    return folder


def random_probe(folder: Path, shape=(2, 4, 8), seed: int = 0, layers: list[int] | None = None) -> Path:
    rng = np.random.default_rng(seed)
    n_layers, n_heads, head_dim = shape
    return write_probe(folder, rng.uniform(0.5, 1.0, (n_layers, n_heads)),
                       rng.normal(size=shape), rng.uniform(0.5, 2.0, (n_layers, n_heads)), layers=layers)


def run_steer(tmp: Path, model_dir: Path, probe_dir: Path, out: str = "out", **cfg) -> tuple[Path, dict]:
    ctx = StageContext(kind="steer", stage_id="steer-test", root=tmp, out=tmp / out, work=tmp / "work",
                       inputs={"model": model_dir, "probe": probe_dir,
                               "activations": write_activations(tmp / "activations")})
    config = {"top_k_heads": 3, "direction": "mass_mean", "alpha": 4.0, "positions": "all", **cfg}
    return ctx.out, steer.run(steer.Config(**config), ctx)


def load(path: Path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@torch.no_grad()
def logits(model, tokenizer, texts=TOXIC + KIND) -> torch.Tensor:
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    return model(**batch).logits


@torch.no_grad()
def o_proj_io(model, tokenizer, layer: int, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and output of one layer's o_proj at each text's last token: [N, H*Dh], [N, D]."""
    seen = {}
    hook = model.model.layers[layer].self_attn.o_proj.register_forward_hook(
        lambda m, args, out: seen.update(x=args[0][0, -1], y=out[0, -1]))
    xs, ys = [], []
    for text in texts:
        model(**tokenizer(text, return_tensors="pt"))
        xs.append(seen["x"].clone())
        ys.append(seen["y"].clone())
    hook.remove()
    return torch.stack(xs), torch.stack(ys)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir / "model")


def test_steers_the_probe_ranking_not_a_re_ranking(tmp_path, tiny_model_dir):
    """Steer takes `head_ranking[:K]` as the probe wrote it, even where it disagrees with the accuracies."""
    acc = np.full((2, 4), 0.6)
    ranking = [[1, 3], [0, 0], [1, 1]] + [[l, h] for l in range(2) for h in range(4)
                                          if [l, h] not in ([1, 3], [0, 0], [1, 1])]
    probe = write_probe(tmp_path / "probe", acc, np.random.default_rng(0).normal(size=(2, 4, 8)),
                        np.ones((2, 4)), ranking=ranking)
    out, _ = run_steer(tmp_path, tiny_model_dir, probe, top_k_heads=3)
    inter = json.loads((out / "intervention.json").read_text())
    assert [[h["layer"], h["head"]] for h in inter["heads"]] == ranking[:3]


def test_stage_writes_reloadable_checkpoint_and_intervention(tmp_path, tiny_model_dir, tokenizer):
    probe = random_probe(tmp_path / "probe")
    out, metrics = run_steer(tmp_path, tiny_model_dir, probe, top_k_heads=3, alpha=4.0)
    model = load(out / "model")
    assert model.config.attention_bias
    assert AutoTokenizer.from_pretrained(out / "model").get_vocab() == tokenizer.get_vocab()
    inter = json.loads((out / "intervention.json").read_text())
    acc = np.array(json.loads((probe / "accuracy.json").read_text())["head_accuracy"])
    chosen = [(h["layer"], h["head"]) for h in inter["heads"]]
    assert sorted(acc[l, h] for l, h in chosen) == sorted(acc.ravel())[-3:]
    assert inter["positions"] == "all" and inter["control"] is None
    assert not (out / "model" / INTERVENTION_FILE).exists()  # folded: a plain checkpoint
    assert all(np.isclose(np.linalg.norm(h["direction"]), 1.0) for h in inter["heads"])
    assert metrics["n_heads_steered"] == 3 and metrics["alpha"] == 4.0
    assert metrics["mean_shift_norm"] == pytest.approx(np.mean([4.0 * h["std"] for h in inter["heads"]]))


def test_folded_equals_hooks_and_apply_intervention(tmp_path, tiny_model_dir, tokenizer):
    out, _ = run_steer(tmp_path, tiny_model_dir, random_probe(tmp_path / "probe"), top_k_heads=5, alpha=6.0)
    intervention = load_intervention(out / "intervention.json")
    folded = logits(load(out / "model"), tokenizer)

    hooked_model = load(tiny_model_dir / "model")
    base = logits(hooked_model, tokenizer)
    handles = add_shift_hooks(hooked_model, intervention)
    hooked = logits(hooked_model, tokenizer)
    for h in handles:
        h.remove()
    assert torch.equal(logits(hooked_model, tokenizer), base)  # hooks removed cleanly

    assert (folded - hooked).abs().max() <= 1e-5
    assert (folded - base).abs().max() > 1e-2  # nonzero alpha changes the logits
    reapplied = apply_intervention(load(tiny_model_dir / "model"), out / "intervention.json")
    assert (logits(reapplied, tokenizer) - folded).abs().max() <= 1e-6


def test_alpha_zero_reproduces_base_logits_exactly(tmp_path, tiny_model_dir, tokenizer):
    out, metrics = run_steer(tmp_path, tiny_model_dir, random_probe(tmp_path / "probe"), alpha=0.0)
    assert metrics["mean_shift_norm"] == 0.0
    assert torch.equal(logits(load(out / "model"), tokenizer),
                       logits(load(tiny_model_dir / "model"), tokenizer))


def test_planted_direction_drops_by_alpha_times_std(tmp_path, tiny_model_dir, tokenizer):
    """Steer one head along a known direction: its projection drops by exactly alpha × std, and
    nothing orthogonal to it (other heads, other directions of the same head) moves."""
    layer, head, head_dim, alpha = 1, 2, 8, 3.0
    base = load(tiny_model_dir / "model")
    x, _ = o_proj_io(base, tokenizer, layer, TOXIC + KIND)
    d = torch.tensor(np.random.default_rng(1).normal(size=head_dim), dtype=torch.float32)
    d /= d.norm()
    head_x = x[:, head * head_dim:(head + 1) * head_dim]
    std = float((head_x @ d).std())

    accuracy = np.full((2, 4), 0.5)
    accuracy[layer, head] = 0.9
    directions = np.random.default_rng(2).normal(size=(2, 4, head_dim))
    directions[layer, head] = d.numpy()
    stds = np.ones((2, 4))
    stds[layer, head] = std
    probe = write_probe(tmp_path / "probe", accuracy, directions, stds)
    out, _ = run_steer(tmp_path, tiny_model_dir, probe, top_k_heads=1, alpha=alpha)

    # The folded o_proj computes W (x + s); recover x + s by solving with W (square in the tiny model).
    steered = load(out / "model")
    x_same, y = o_proj_io(steered, tokenizer, layer, TOXIC + KIND)
    assert torch.equal(x_same, x)  # nothing upstream of the steered o_proj changed
    w = steered.model.layers[layer].self_attn.o_proj.weight.double()
    x_eff = torch.linalg.solve(w, y.double().T).T
    delta = x_eff - x.double()
    head_slice = slice(head * head_dim, (head + 1) * head_dim)
    torch.testing.assert_close(delta[:, head_slice] @ d.double(),
                               torch.full((len(x),), -alpha * std, dtype=torch.float64),
                               atol=1e-4 * alpha * std, rtol=0)
    orthogonal = delta[:, head_slice] - torch.outer(delta[:, head_slice] @ d.double(), d.double())
    assert orthogonal.abs().max() < 1e-4 * alpha * std
    others = torch.cat([delta[:, :head_slice.start], delta[:, head_slice.stop:]], dim=1)
    assert others.abs().max() < 1e-4 * alpha * std


def test_shift_moves_toxic_activations_toward_the_clean_side(tmp_path, tiny_model_dir, tokenizer):
    """With a mass-mean direction toward toxic (from the model's own activations), steering lowers the
    projection of every toxic text and brings the toxic mean closer to the clean mean."""
    layer, head, head_dim = 0, 1, 8
    base = load(tiny_model_dir / "model")
    x, _ = o_proj_io(base, tokenizer, layer, TOXIC + KIND)
    hx = x[:, head * head_dim:(head + 1) * head_dim]
    toxic_mean, kind_mean = hx[:len(TOXIC)].mean(0), hx[len(TOXIC):].mean(0)
    d = (toxic_mean - kind_mean) / (toxic_mean - kind_mean).norm()
    gap = float((toxic_mean - kind_mean) @ d)
    std = float((hx @ d).std())
    alpha = 0.5 * gap / std  # moves the toxic mean halfway toward the clean mean

    accuracy = np.full((2, 4), 0.5)
    accuracy[layer, head] = 0.9
    directions = np.ones((2, 4, head_dim))
    directions[layer, head] = d.numpy()
    probe = write_probe(tmp_path / "probe", accuracy, directions, np.full((2, 4), std))
    out, _ = run_steer(tmp_path, tiny_model_dir, probe, top_k_heads=1, alpha=alpha)

    # Steering applied the reference way (hooks), observed at the head's own output.
    seen = []
    handles = add_shift_hooks(base, load_intervention(out / "intervention.json"))
    probe_hook = base.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(
        lambda m, args: seen.append(args[0][0, -1, head * head_dim:(head + 1) * head_dim].clone()))
    with torch.no_grad():
        for text in TOXIC:
            base(**tokenizer(text, return_tensors="pt"))
    probe_hook.remove()  # registered last, so it saw the shifted input
    for h in handles:
        h.remove()
    before, after = hx[:len(TOXIC)] @ d, torch.stack(seen) @ d
    assert torch.all(after < before)
    assert abs(float(after.mean() - kind_mean @ d)) == pytest.approx(gap / 2, rel=1e-4)


def test_probe_of_another_architecture_is_refused(tmp_path, tiny_model_dir):
    from compiler.errors import StageError

    with pytest.raises(StageError, match="does not fit"):
        run_steer(tmp_path, tiny_model_dir, random_probe(tmp_path / "probe", shape=(3, 4, 8)), top_k_heads=12)
    with pytest.raises(StageError, match="does not fit"):
        run_steer(tmp_path, tiny_model_dir, random_probe(tmp_path / "probe1", shape=(2, 4, 6)))
    with pytest.raises(StageError, match="only 8 heads"):
        run_steer(tmp_path, tiny_model_dir, random_probe(tmp_path / "probe2"), top_k_heads=9)


def test_missing_probe_field_is_named(tmp_path, tiny_model_dir):
    from compiler.errors import StageError

    probe = random_probe(tmp_path / "probe")
    meta = json.loads((probe / "accuracy.json").read_text())
    del meta["head_ranking"]
    (probe / "accuracy.json").write_text(json.dumps(meta))
    with pytest.raises(StageError, match="accuracy.json: field 'head_ranking' missing"):
        run_steer(tmp_path, tiny_model_dir, probe)
