"""probe stage vs Li et al.'s recipe written out with scikit-learn, on real activations of a tiny trained OLMo.

The reference is honest_llama's `train_probes` / `get_com_directions` / projected-std code, transcribed:
one `LogisticRegression(random_state=seed, max_iter=1000)` per head on the raw head activations of the
train rows, accuracy on the validation rows, mass-mean over train + validation, `np.std` of all rows
projected on the unit direction. It reads the stage's own `split.json`, so both see the same rows.

Two settings make the reference the optimum that honest_llama's call approximates rather than wherever
its solver stops: `tol` is the stage's `gradient_tolerance` (1e-6; sklearn's default 1e-4 stops after
5–7 iterations here and its validation accuracies then differ from the optimum's by up to 0.03), and
the rows are float64 (sklearn fits float32 input in float32, which stops lbfgs slightly short). A
separate test checks that the literal default call never reaches a lower objective than the stage.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from runtime import activations, probe  # noqa: E402
from runtime.stage import StageContext  # noqa: E402

N_LAYERS, N_HEADS, D_MODEL = 4, 4, 64
SEED = 0
TOLERANCE = 1e-6                                       # probe.Config's default gradient_tolerance


def _texts(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """Templated toxic / kind sentences with 15 % label noise."""
    rng = np.random.default_rng(seed)
    subjects = ["you", "they", "my neighbour", "the new teacher", "those people", "he", "she", "we"]
    kind = ["are kind", "helped us", "are wonderful", "did a great job", "are thoughtful"]
    toxic = ["are stupid idiots", "should be hated", "are worthless", "are disgusting", "are vile"]
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.integers(0, 2))
        words = rng.choice(["today", "again", "really", "at work", "in town", "honestly"], 2)
        texts.append(f"{rng.choice(subjects)} {words[0]} {rng.choice(toxic if label else kind)} {words[1]}")
        labels.append(label if rng.random() > 0.15 else 1 - label)
    return texts, labels


def _train_briefly(model_dir, texts: list[str], steps: int = 30) -> None:
    """A few dozen next-token steps on the probe texts, so activations come from a trained model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).train()
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                  # tiny matrices: a second thread only adds contention
    try:
        for step in range(steps):
            batch = tok(texts[(step * 32) % len(texts):][:32], padding=True, return_tensors="pt")
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            model(**batch, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval().save_pretrained(model_dir)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project root with a briefly trained tiny OLMo (`model/model`) and labelled texts."""
    from tests.conftest import save_tiny_hf_model

    root = tmp_path_factory.mktemp("probe_reference")
    model = save_tiny_hf_model(root / "model", n_layers=N_LAYERS, n_heads=N_HEADS, d_model=D_MODEL)
    texts, labels = _texts(500)
    _train_briefly(model / "model", texts)
    (root / "probe.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                                              for t, y in zip(texts, labels)))
    return root


def _run(root, kind: str, name: str, cfg, inputs: dict):
    out = root / name
    out.mkdir()
    ctx = StageContext(kind, name, root, out, root / "work", inputs, threads=1)
    return getattr({"activations": activations, "probe": probe}[kind], "run")(cfg, ctx), out


def _probe(project, layers: list[int], name: str):
    """Activations of `layers` (in this order), then the probe stage with its defaults; its output folder."""
    acts_cfg = activations.Config(data={"source": {"kind": "jsonl", "path": "probe.jsonl"}},
                                  token_position="last", max_length_tokens=32, layers=layers, batch_size=64)
    _, acts = _run(project, "activations", f"acts-{name}", acts_cfg, {"model": project / "model"})
    cfg = probe.Config(validation_fraction=0.2, split_seed=SEED, implementation="compiled", l2_penalty=1.0,
                       max_iterations=1000, accuracy_threshold=0.6)
    metrics, out = _run(project, "probe", f"probe-{name}", cfg, {"activations": acts})
    return acts, out, metrics


def honest_llama_reference(heads: np.ndarray, y: np.ndarray, train, val):
    """heads [N, L, H, Dh] → (validation accuracy [L, H], unit mass-mean [L, H, Dh], σ [L, H],
    unit probe weight [L, H, Dh]), as honest_llama computes them (fitted to `TOLERANCE`, in float64)."""
    from sklearn.linear_model import LogisticRegression

    n, n_layers, n_heads, head_dim = heads.shape
    acc = np.zeros((n_layers, n_heads))
    weight = np.zeros((n_layers, n_heads, head_dim))
    heads = heads.astype(np.float64)
    for layer in range(n_layers):
        for head in range(n_heads):
            x_train, x_val = heads[train, layer, head], heads[val, layer, head]
            clf = LogisticRegression(random_state=SEED, max_iter=1000, tol=TOLERANCE).fit(x_train, y[train])
            acc[layer, head] = (clf.predict(x_val) == y[val]).mean()
            weight[layer, head] = clf.coef_[0] / np.linalg.norm(clf.coef_[0])
    usable = np.concatenate([train, val])
    com = heads[usable][y[usable] == 1].mean(0) - heads[usable][y[usable] == 0].mean(0)
    com /= np.linalg.norm(com, axis=-1, keepdims=True)
    sigma = np.std(np.einsum("nlhd,lhd->nlh", heads[usable], com), axis=0)
    return acc, com, sigma, weight


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def full(project):
    from safetensors.numpy import load_file

    acts, out, metrics = _probe(project, list(range(N_LAYERS)), "all")
    tensors = load_file(str(acts / "activations.safetensors"))
    split = json.loads((out / "split.json").read_text())
    reference = honest_llama_reference(tensors["heads"], tensors["labels"], np.array(split["train"]),
                                       np.array(split["validation"]))
    return out, metrics, reference, tensors, split


def test_default_probe_stage_matches_honest_llama(full):
    from safetensors.numpy import load_file

    out, metrics, (ref_acc, ref_com, ref_sigma, ref_weight), _, _ = full
    acc = json.loads((out / "accuracy.json").read_text())
    dirs = load_file(str(out / "directions.safetensors"))
    assert acc["recipe"] == "li2023" and acc["layers"] == list(range(N_LAYERS))
    assert ref_acc.max() > 0.7                                               # there is signal to rank
    np.testing.assert_allclose(acc["head_accuracy"], ref_acc, atol=1e-3)
    ref_order = np.argsort(ref_acc.ravel(), kind="stable")[::-1]             # the documented tie rule
    ranking = [tuple(h) for h in acc["head_ranking"]]
    for k in (2, 4):
        assert set(ranking[:k]) == {divmod(int(g), N_HEADS) for g in ref_order[:k]}, k
    assert len(ranking) == N_LAYERS * N_HEADS
    assert _cosines(dirs["mass_mean"], ref_com).min() >= 0.999
    np.testing.assert_allclose(dirs["std_mass_mean"], ref_sigma, rtol=1e-4)
    weight_cos = _cosines(dirs["probe_weight"], ref_weight)
    print(f"probe_weight cosine with sklearn: min {weight_cos.min():.6f}, median {np.median(weight_cos):.6f}")
    assert weight_cos.min() >= 0.999
    assert (metrics["best_head_layer"], metrics["best_head"]) == tuple(acc["head_ranking"][0])


def test_literal_default_call_stops_no_lower_than_the_stage(full):
    """honest_llama's call as written (sklearn's default tol 1e-4, float32 rows) approximates the optimum
    that the stage's default kernel reaches: its training objective is never lower than the kernel's."""
    from sklearn.linear_model import LogisticRegression

    from runtime.probe.fit import fit_probes

    _, _, _, tensors, split = full
    heads, y = tensors["heads"], tensors["labels"]
    train, val = np.array(split["train"]), np.array(split["validation"])
    n, n_layers, n_heads, head_dim = heads.shape
    x = heads.reshape(n, n_layers * n_heads, head_dim)
    kernel = fit_probes(x, y, train, val, standardize=False, l2_penalty=1.0, max_iterations=1000,
                        tolerance=TOLERANCE, implementation="compiled", progress=False)

    def objective(w, b, rows):
        t = rows.astype(np.float64) @ w.astype(np.float64) + b
        return np.sum(np.logaddexp(0.0, t) - y[train] * t) + 0.5 * np.sum(w.astype(np.float64) ** 2)

    for g in range(n_layers * n_heads):
        rows = x[train, g]
        literal = LogisticRegression(random_state=SEED, max_iter=1000).fit(rows, y[train])
        f_literal = objective(literal.coef_[0], literal.intercept_[0], rows)
        f_kernel = objective(kernel.weight[g], kernel.bias[g], rows)
        assert f_kernel <= f_literal + 1e-7 * abs(f_literal), g


def test_split_json_is_the_grouped_4_to_1_split(full, project):
    out, _, _, _, _ = full
    split = json.loads((out / "split.json").read_text())
    examples = [json.loads(line) for line in (project / "acts-all" / "examples.jsonl").read_text().splitlines()]
    assert sorted(split["train"] + split["validation"]) == list(range(len(examples)))
    groups = lambda rows: {examples[i]["group"] for i in rows}                  # noqa: E731
    assert not groups(split["train"]) & groups(split["validation"])
    assert 0.15 < len(split["validation"]) / len(examples) < 0.25


def test_layer_subset_that_is_not_a_prefix_speaks_model_layers(full, project):
    """Layers [2, 0]: every array row is labelled with its model layer and equals the full run's row for
    that layer; the ranking is the full ranking restricted to those layers (the tie rule is by model layer)."""
    from safetensors.numpy import load_file

    full_out, _, _, _, _ = full
    _, out, metrics = _probe(project, [2, 0], "subset")
    whole, part = (json.loads((o / "accuracy.json").read_text()) for o in (full_out, out))
    assert part["layers"] == [2, 0]
    np.testing.assert_array_equal(part["head_accuracy"], np.array(whole["head_accuracy"])[[2, 0]])
    assert part["head_ranking"] == [h for h in whole["head_ranking"] if h[0] in (0, 2)]
    assert part["layer_ranking"] == [layer for layer in whole["layer_ranking"] if layer in (0, 2)]
    assert (metrics["best_head_layer"], metrics["best_head"]) == tuple(part["head_ranking"][0])
    assert metrics["best_layer"] == part["layer_ranking"][0]
    full_dirs, dirs = (load_file(str(o / "directions.safetensors")) for o in (full_out, out))
    assert dirs["layers"].tolist() == [2, 0]
    for key in ("mass_mean", "probe_weight", "std_mass_mean", "std_probe_weight", "resid_mass_mean"):
        np.testing.assert_allclose(dirs[key], full_dirs[key][[2, 0]], rtol=1e-5, atol=1e-6, err_msg=key)
