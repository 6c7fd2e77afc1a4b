"""probe stage: every implementation finds planted heads and agrees with scikit-learn; grouped split; artifact contract."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from runtime import probe  # noqa: E402
from runtime.probe.fit import fit_probes  # noqa: E402
from runtime.stage import StageContext  # noqa: E402

FIT = dict(l2_penalty=1.0, max_iterations=500, tolerance=1e-6, progress=False)


def rank(fit):
    """Probe indices best first, by the stage's tie rule (one row of probes)."""
    return probe.rank_heads(fit.val_accuracy[None], [0])


def planted(n=600, n_probes=12, d=16, chosen=(7, 2, 9), seed=0):
    """Gaussian features with per-feature scales spread over 100×; `chosen` heads (strongest first)
    carry a label shift along a random direction u in the unscaled space."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    scales = np.exp(rng.uniform(np.log(0.1), np.log(10), (n_probes, d)))
    x = rng.standard_normal((n, n_probes, d))
    truth = {}
    for rank, g in enumerate(chosen):
        u = rng.standard_normal(d)
        u /= np.linalg.norm(u)
        x[:, g] += ((y - 0.5) * (3.0 - rank))[:, None] * u
        truth[g] = u
    return (x * scales).astype(np.float32), y, scales, truth


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("implementation", ["compiled", "batched", "batched-wide", "sklearn"])
def test_planted_heads_rank_first_with_the_right_directions(implementation, standardize, monkeypatch):
    """`batched-wide`: the path for features wider than PRECONDITION_MAX_DIM (no Gram matrices)."""
    if implementation == "batched-wide":
        monkeypatch.setattr("runtime.probe.fit.PRECONDITION_MAX_DIM", 0)
        implementation = "batched"
    x, y, scales, truth = planted()
    train, val = np.arange(450), np.arange(450, 600)
    fit = fit_probes(x, y, train, val, standardize=standardize, implementation=implementation,
                     device="cpu", **FIT)
    assert rank(fit)[:3].tolist() == [7, 2, 9]
    for g, u in truth.items():
        # noise cov diag(s²), mean shift ∝ u·s: optimal weight ∝ u/s, mass-mean ∝ u·s (original space)
        assert _cos(fit.weight[g], u / scales[g]) > 0.9
        assert _cos(probe.mass_mean(x[train, g], y[train]), u * scales[g]) > 0.9
        logits = x[val, g] @ fit.weight[g] + fit.bias[g]
        assert logits[y[val] == 1].mean() > logits[y[val] == 0].mean()     # points toward toxic
        assert fit.val_accuracy[g] > 0.62                  # Bayes accuracy Φ(shift/2) ≥ Φ(0.5) = 0.69
    assert np.median(fit.val_accuracy) < 0.6


@pytest.mark.parametrize("standardize", [False, True])
def test_implementations_agree_on_model_activations(tmp_path, standardize):
    """Real-ish data: a tiny random OLMo's activations on templated toxic / kind sentences."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime.activations import extract
    from tests.conftest import save_tiny_hf_model

    path = save_tiny_hf_model(tmp_path, n_layers=4, n_heads=8, d_model=64) / "model"
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    rng = np.random.default_rng(0)
    subjects = ["you", "they", "my neighbour", "the new teacher", "those people", "he", "she", "we"]
    kind = ["are kind", "helped us", "are wonderful", "did a great job", "are thoughtful"]
    toxic = ["are stupid idiots", "should be hated", "are worthless", "are disgusting", "are vile"]
    texts, y = [], []
    for _ in range(600):
        label = int(rng.integers(0, 2))
        words = rng.choice(["today", "again", "really", "at work", "in town", "honestly"], 2)
        texts.append(f"{rng.choice(subjects)} {words[0]} {rng.choice(toxic if label else kind)} {words[1]}")
        y.append(label if rng.random() > 0.15 else 1 - label)                # 15 % label noise
    heads, _, _ = extract(model, tok, texts, layers=[0, 1, 2, 3], position="last", max_length=32,
                          batch_size=64, progress=False)
    x = heads.reshape(600, 32, 8).numpy()
    train, val = probe.grouped_split(texts, 0.25, seed=0)
    fits = {impl: fit_probes(x, np.array(y), train, val, standardize=standardize, implementation=impl,
                             device="cpu", **FIT)
            for impl in ("compiled", "batched", "sklearn")}
    assert fits["sklearn"].val_accuracy.max() > 0.65                           # there is signal to rank
    ranked = {impl: rank(f) for impl, f in fits.items()}
    for impl in ("compiled", "batched"):
        assert np.abs(fits[impl].val_accuracy - fits["sklearn"].val_accuracy).max() <= 0.01, impl
        for k in range(1, math.ceil(0.1 * 32) + 1):
            assert set(ranked[impl][:k]) == set(ranked["sklearn"][:k]), (impl, k)


def awkward(n=800, n_probes=6, d=12, seed=0):
    """A constant feature, a feature far from zero (a "massive activation") and a tiny-scale one that
    carries the signal in the first 3 probes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, n_probes, d)).astype(np.float32)
    x[:, :, 0] = 0.1
    x[:, :, 1] += 1000.0
    x[:, :, 2] *= 1e-3
    x[:, :3, 2] += ((y - 0.5) * 2e-3)[:, None]
    return x, y


def test_implementations_agree_on_awkward_standardised_features():
    """The fast paths' float32 centring/scaling must still find scikit-learn's solution."""
    x, y = awkward()
    train, val = np.arange(600), np.arange(600, 800)
    fits = {impl: fit_probes(x, y, train, val, standardize=True, implementation=impl, device="cpu", **FIT)
            for impl in ("compiled", "batched", "sklearn")}
    assert fits["sklearn"].val_accuracy[:3].min() > 0.7
    for impl in ("compiled", "batched"):
        # the same number of correct validation examples for every probe
        np.testing.assert_allclose(fits[impl].val_accuracy, fits["sklearn"].val_accuracy, atol=0.4 / len(val))
        np.testing.assert_allclose(fits[impl].weight, fits["sklearn"].weight,
                                   atol=1e-3 * np.abs(fits["sklearn"].weight).max())
        assert np.isfinite(fits[impl].bias).all() and (fits[impl].weight[:, 0] == 0).all()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_fast_paths_reach_the_raw_optimum_where_sklearn_struggles():
    """Raw features 1000 away from zero couple weight and intercept: scikit-learn's lbfgs crawls (it
    may stop at max_iterations), while the fast paths' exact centring converges in a few steps. Their
    objective is never above scikit-learn's, and the two fast paths agree."""
    x, y = awkward()
    train, val = np.arange(600), np.arange(600, 800)
    fits = {impl: fit_probes(x, y, train, val, standardize=False, implementation=impl, device="cpu", **FIT)
            for impl in ("compiled", "batched", "sklearn")}

    def objective(fit, g):
        t = x[train, g].astype(np.float64) @ fit.weight[g].astype(np.float64) + fit.bias[g]
        return np.sum(np.logaddexp(0.0, t) - y[train] * t) + 0.5 * np.sum(fit.weight[g].astype(np.float64) ** 2)

    for g in range(x.shape[1]):
        reference = objective(fits["sklearn"], g)
        for impl in ("compiled", "batched"):
            assert objective(fits[impl], g) <= reference + 1e-7 * reference, (impl, g)
    np.testing.assert_allclose(fits["compiled"].weight, fits["batched"].weight,
                               atol=1e-3 * np.abs(fits["compiled"].weight).max())
    assert all((fits[impl].weight[:, 0] == 0).all() for impl in ("compiled", "batched"))


def test_compiled_results_do_not_depend_on_the_thread_count():
    """Probes are independent: fitting them on 1 or 2 numba threads gives the same bits."""
    x, y, _, _ = planted(n_probes=10)
    train, val = np.arange(450), np.arange(450, 600)
    threads = torch.get_num_threads()
    try:
        fits = []
        for k in (1, 2):
            torch.set_num_threads(k)
            fits.append(fit_probes(x, y, train, val, standardize=False, implementation="compiled", **FIT))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(fits[0].__dict__.values(), fits[1].__dict__.values()):
        np.testing.assert_array_equal(a, b)


def test_grouped_split_keeps_duplicates_together_and_is_seeded():
    from runtime.sources.labelled import group_key

    texts = [f"text number {i % 70}" if i % 3 else f"TEXT   number {i % 70}" for i in range(300)]
    groups = [group_key(t) for t in texts]
    train, val = probe.grouped_split(groups, 0.2, seed=3)
    assert not {groups[i] for i in train} & {groups[i] for i in val}
    assert sorted([*train, *val]) == list(range(300))
    again = probe.grouped_split(groups, 0.2, seed=3)
    assert (again[1] == val).all()
    assert not np.array_equal(probe.grouped_split(groups, 0.2, seed=4)[1], val)
    assert 0.1 < len(val) / 300 < 0.3


def test_rank_heads_breaks_ties_toward_the_higher_model_layer_and_head():
    """Ties go to the higher flat index in (model layer, head) order, whatever the row order."""
    acc = np.array([[0.7, 0.9, 0.7], [0.9, 0.5, 0.7]])
    assert probe.rank_heads(acc, [0, 1]).tolist() == [3, 1, 5, 2, 0, 4]
    assert probe.rank_heads(acc, [0, 1]).tolist() == np.argsort(acc.ravel(), kind="stable")[::-1].tolist()
    # rows given as model layers [5, 2]: row 0 (layer 5) now ranks above row 1 (layer 2) on ties
    assert probe.rank_heads(acc, [5, 2]).tolist() == [1, 3, 2, 0, 5, 4]


def test_separability_formulas():
    acc = np.array([0.5, 0.6, 0.7, 0.9, 0.55, 0.52, 0.51, 0.53, 0.58, 0.8, 0.61])
    m = probe.separability(acc, threshold=0.6)
    assert m["best_head_accuracy"] == 0.9
    assert m["heads_above_threshold"] == 4                                     # 0.61, 0.7, 0.8, 0.9
    assert m["top_decile_head_accuracy"] == pytest.approx((0.9 + 0.8) / 2)     # ceil(1.1) = 2 heads
    assert m["median_head_accuracy"] == pytest.approx(0.58)
    assert m["mean_head_accuracy"] == pytest.approx(acc.mean())


def _activations_artifact(folder, n=400, layers=(3, 5), n_heads=4, dh=6, d=10, seed=1):
    """An activations folder: layer 5 head 2 carries toxicity along e0; attribute `entangled` shifts
    along the same axis, attribute `separate` along an orthogonal one."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    ent = rng.integers(0, 2, n)
    sep = rng.integers(0, 2, n)
    heads = rng.standard_normal((n, len(layers), n_heads, dh)).astype(np.float32)
    heads[:, 1, 2, 0] += 4 * y + 2 * ent
    heads[:, 1, 2, 1] += 2 * sep
    resid = rng.standard_normal((n, len(layers), d)).astype(np.float32)
    resid[:, 0, 0] += 2 * y
    folder.mkdir(parents=True)
    save_file({"heads": heads, "resid": resid, "labels": y.astype(np.int64),
               "layers": np.array(layers, dtype=np.int64)}, str(folder / "activations.safetensors"))
    with open(folder / "examples.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"index": i, "text": f"t{i // 2}", "label": int(y[i]), "group": f"g{i // 2}",
                                "attributes": {"entangled": str(ent[i]), "separate": str(sep[i])}}) + "\n")
    return heads, resid, y


@pytest.mark.parametrize(("implementation", "recipe"), [
    ("compiled", "li2023"), ("batched", "li2023"), ("sklearn", "li2023"), ("compiled", "standardized")])
def test_stage_writes_the_contract(tmp_path, implementation, recipe):
    from safetensors.numpy import load_file

    heads, resid, y = _activations_artifact(tmp_path / "acts")
    out = tmp_path / "out"
    out.mkdir()
    ctx = StageContext("probe", "probe-test", tmp_path, out, tmp_path / "work",
                       {"activations": tmp_path / "acts"})
    cfg = probe.Config(validation_fraction=0.25, split_seed=0, implementation=implementation, recipe=recipe,
                       l2_penalty=1.0, max_iterations=500, accuracy_threshold=0.6, entanglement_heads=1)
    metrics = probe.run(cfg, ctx)
    acc = json.loads((out / "accuracy.json").read_text())
    assert acc["recipe"] == recipe and len(acc["head_ranking"]) == 8 and acc["layer_ranking"][0] == 3
    assert np.array(acc["head_accuracy"]).shape == (2, 4) and len(acc["layer_accuracy"]) == 2
    assert acc["head_ranking"][0] == [5, 2] and acc["layers"] == [3, 5]
    assert acc["n_train"] + acc["n_validation"] == 400
    assert (metrics["best_head_layer"], metrics["best_head"]) == (5, 2)
    assert metrics["best_head_accuracy"] > 0.85 and metrics["best_layer"] == 3
    assert metrics["heads_above_threshold"] == 1 and len(metrics["head_accuracies"]) == 8
    dirs = load_file(str(out / "directions.safetensors"))
    for key in ("mass_mean", "probe_weight"):
        assert dirs[key].shape == (2, 4, 6)
        np.testing.assert_allclose(np.linalg.norm(dirs[key], axis=-1), 1.0, rtol=1e-5)
        assert dirs[key][1, 2, 0] > 0.9                                        # toward toxic, along e0
    split = json.loads((out / "split.json").read_text())
    train, val = probe.grouped_split([f"g{i // 2}" for i in range(400)], 0.25, 0)
    assert (split["train"], split["validation"]) == (train.tolist(), val.tolist())
    rows = np.arange(400) if recipe == "li2023" else train                  # mass-mean and σ rows
    np.testing.assert_allclose(dirs["mass_mean"], probe.mass_mean(heads[rows], y[rows]), atol=1e-6)
    proj = heads[rows, 1, 2] @ dirs["mass_mean"][1, 2]
    assert dirs["std_mass_mean"][1, 2] == pytest.approx(proj.std(), rel=1e-4)
    assert dirs["resid_probe_weight"].shape == (2, 10)
    assert metrics["entanglement_entangled"] > 0.8 > 0.3 > metrics["entanglement_separate"]
    assert (out / "heatmap.png").stat().st_size > 1000
