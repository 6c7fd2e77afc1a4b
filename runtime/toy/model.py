"""The toy model behind the `toy` stage: Markov-chain data, a tiny OLMo, probes, entanglement.

Data: `n_chains` cyclic Markov chains over one alphabet of `n_tokens` tokens. Chain c follows its own
cyclic order of the tokens with probability 1 − ε and jumps to a uniform token with probability ε, so
its transition matrix is T_c = (1 − ε) P_c + ε/n · 1 (ε = 0: a deterministic cycle). A sequence is
drawn from one chain; chain 0 is the rare one. The n_chains × n_tokens features are read one of two
ways (`toy.feature`): (chain, current token) at every probed position, which is exactly what the
next-token distribution depends on; or (chain, start state) at the last position, the paper's wording,
which with ε = 0 fixes every token of the sequence.

Model: transformers' `OlmoForCausalLM` at toy size (the OLMo block the study pretrains; no hand-written
transformer). Measurement: one-vs-rest logistic-regression probes on the residual stream after every
block (pre final LayerNorm: with d = 4 the non-affine LayerNorm would project onto 3 dimensions);
entanglement_i = max_{j≠i} |cos(v_i, v_j)| of the probe directions, compared with the Welch bound,
the least maximal coherence N unit vectors in M dimensions can have. The headline number is the last
block's (there a feature need only carry its next token, which 3 features of different chains share);
the other blocks are kept because the level of entanglement depends on where it is read.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

MAX_CYCLE_CANDIDATES = 5040
"""Cyclic orders considered when choosing chains (all of them up to 8 tokens)."""


def chain_successors(n_chains: int, n_tokens: int) -> np.ndarray:
    """(n_chains, n_tokens) successor table: chain c moves from token s to `succ[c, s]`.

    Each chain is a different cyclic order of all tokens (a single n-cycle, no fixed points). Orders
    are picked greedily, each sharing as few transitions as possible with those already chosen, so
    the chains are as distinguishable as the alphabet allows; deterministic, no seed.
    """
    candidates = []
    for rest in itertools.islice(itertools.permutations(range(1, n_tokens)), MAX_CYCLE_CANDIDATES):
        order = (0, *rest)
        succ = np.empty(n_tokens, dtype=np.int64)
        succ[list(order)] = list(order[1:] + order[:1])
        candidates.append(succ)
    if len(candidates) < n_chains:
        raise ValueError(f"{n_tokens} tokens have only {len(candidates)} cyclic orders; "
                         f"cannot build {n_chains} distinct chains")
    chosen = [candidates.pop(0)]
    while len(chosen) < n_chains:
        shared = [sum(int((c == s).sum()) for s in chosen) for c in candidates]
        chosen.append(candidates.pop(int(np.argmin(shared))))
    return np.stack(chosen)


def transition_matrices(succ: np.ndarray, noise: float) -> np.ndarray:
    """(n_chains, n_tokens, n_tokens) row-stochastic T_c = (1 − noise) P_c + noise / n_tokens."""
    n_chains, n_tokens = succ.shape
    trans = np.full((n_chains, n_tokens, n_tokens), noise / n_tokens)
    for c in range(n_chains):
        trans[c, np.arange(n_tokens), succ[c]] += 1.0 - noise
    return trans


def chain_probabilities(n_chains: int, rare_frequency: float) -> np.ndarray:
    """Chain 0 has `rare_frequency`; the other chains share the rest equally."""
    rest = (1.0 - rare_frequency) / (n_chains - 1)
    return np.array([rare_frequency] + [rest] * (n_chains - 1))


def sample_sequences(rng: np.random.Generator, trans: np.ndarray, chain_probs: np.ndarray,
                     n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` sequences of `length` tokens and the chain each came from; start token uniform."""
    n_tokens = trans.shape[1]
    chains = rng.choice(len(chain_probs), size=n, p=chain_probs)
    tokens = np.empty((n, length), dtype=np.int64)
    tokens[:, 0] = rng.integers(n_tokens, size=n)
    cum = trans.cumsum(axis=-1)
    for t in range(1, length):
        u = rng.random(n)[:, None]
        rows = cum[chains, tokens[:, t - 1]]
        tokens[:, t] = np.minimum((u >= rows).sum(axis=-1), n_tokens - 1)
    return tokens, chains


def feature_labels(tokens: np.ndarray, chains: np.ndarray, n_tokens: int) -> np.ndarray:
    """Feature id of every position: chain * n_tokens + current token (rare chain = ids 0..n−1)."""
    return chains[:, None] * n_tokens + tokens


def probe_examples(acts: np.ndarray, tokens: np.ndarray, chains: np.ndarray, n_tokens: int,
                   feature: str, min_position: int) -> tuple[np.ndarray, np.ndarray]:
    """Probe inputs (n_blocks, m, d) and feature ids (m,) for one `toy.feature` reading.

    `acts` is (n_blocks, n, length, d). "chain_token": every position ≥ `min_position`, labelled by
    (chain, current token). "chain_start": the last position only, one example per sequence,
    labelled by (chain, start state): the sequence as a whole is the feature.
    """
    n_blocks, _, _, d = acts.shape
    if feature == "chain_token":
        labels = feature_labels(tokens, chains, n_tokens)[:, min_position:].reshape(-1)
        return acts[:, :, min_position:].reshape(n_blocks, -1, d), labels
    if feature == "chain_start":
        return acts[:, :, -1], chains * n_tokens + tokens[:, 0]
    raise ValueError(f"unknown toy feature reading {feature!r}")


def entropy_rate(n_tokens: int, noise: float) -> float:
    """Loss floor in nats per token for a model that knows the chain: entropy of one row of T_c."""
    p = np.full(n_tokens, noise / n_tokens)
    p[0] += 1.0 - noise
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def build_model(n_tokens: int, d_model: int, n_layers: int, n_heads: int, length: int, seed: int):
    """A randomly initialised toy `OlmoForCausalLM` (vocabulary = the chain alphabet, tied embedding)."""
    import torch
    from transformers import OlmoConfig, OlmoForCausalLM

    if d_model % n_heads:
        raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
    torch.manual_seed(seed)
    config = OlmoConfig(
        vocab_size=n_tokens, hidden_size=d_model, intermediate_size=4 * d_model,
        num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_heads,
        max_position_embeddings=length, pad_token_id=None, bos_token_id=None, eos_token_id=None,
        tie_word_embeddings=True,
    )
    return OlmoForCausalLM(config)


def train(model, rng: np.random.Generator, trans: np.ndarray, chain_probs: np.ndarray, *,
          steps: int, batch_size: int, length: int, learning_rate: float) -> list[float]:
    """Next-token prediction with Adam on fresh batches; returns the loss of every step."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.train()
    losses = []
    for _ in range(steps):
        tokens, _ = sample_sequences(rng, trans, chain_probs, batch_size, length)
        x = torch.from_numpy(tokens)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def residuals_and_losses(model, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residual stream after every block (n_blocks, n, length, d_model), pre final norm, and
    per-sequence mean loss (nats)."""
    import torch

    captured = []

    def hook(_module, _args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_hook(hook) for layer in model.model.layers]
    model.eval()
    try:
        with torch.no_grad():
            x = torch.from_numpy(tokens)
            logits = model(input_ids=x).logits
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), x[:, 1:], reduction="none").mean(dim=1)
    finally:
        for handle in handles:
            handle.remove()
    return np.stack([h.numpy().astype(np.float64) for h in captured]), nll.numpy()


@dataclass(frozen=True)
class Probes:
    """Unit probe directions (n_features, d) and each probe's held-out ROC AUC."""

    directions: np.ndarray
    auc: np.ndarray


def fit_probes(acts: np.ndarray, labels: np.ndarray, n_features: int, seed: int,
               test_fraction: float = 0.25) -> Probes:
    """One-vs-rest logistic regression per feature; direction = normalised weight vector."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.multiclass import OneVsRestClassifier

    missing = sorted(set(range(n_features)) - set(np.unique(labels).tolist()))
    if missing:
        raise ValueError(f"probe data has no example of features {missing}: use more probe sequences")
    x_tr, x_te, y_tr, y_te = train_test_split(acts, labels, test_size=test_fraction,
                                              random_state=seed, stratify=labels)
    clf = OneVsRestClassifier(LogisticRegression(max_iter=1000)).fit(x_tr, y_tr)
    weights = np.stack([est.coef_[0] for est in clf.estimators_])
    scores = clf.decision_function(x_te)
    auc = np.array([roc_auc_score(y_te == i, scores[:, i]) for i in range(n_features)])
    return Probes(directions=weights / np.linalg.norm(weights, axis=1, keepdims=True), auc=auc)


def entanglement(directions: np.ndarray) -> np.ndarray:
    """max_{j≠i} |cos(v_i, v_j)| for each row v_i of `directions`."""
    unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    cos = np.abs(unit @ unit.T)
    np.fill_diagonal(cos, -np.inf)
    return cos.max(axis=1)


def welch_bound(n_vectors: int, dim: int) -> float:
    """sqrt((N − M) / ((N − 1) M)): the least possible max |cos| of N unit vectors in M dims (0 if N ≤ M)."""
    if n_vectors <= dim:
        return 0.0
    return math.sqrt((n_vectors - dim) / ((n_vectors - 1) * dim))


def mean_ci95(values) -> tuple[float, float | None]:
    """Mean and the half-width of its Student-t 95 % interval (None with fewer than 2 values)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float(v.mean()), None
    half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return float(v.mean()), float(half)


def measure_seed(toy, seed: int) -> dict:
    """Train one toy model (`toy`: a `ToySection`) and measure its feature geometry; JSON-safe."""
    n_features = toy.n_chains * toy.n_tokens
    rng = np.random.default_rng(seed)
    trans = transition_matrices(chain_successors(toy.n_chains, toy.n_tokens), toy.transition_noise)
    train_probs = chain_probabilities(toy.n_chains, toy.rare_chain_frequency)
    model = build_model(toy.n_tokens, toy.d_model, toy.n_layers, toy.n_heads, toy.sequence_length, seed)
    losses = train(model, rng, trans, train_probs, steps=toy.train_steps, batch_size=toy.batch_size,
                   length=toy.sequence_length, learning_rate=toy.learning_rate)

    probe_probs = np.full(toy.n_chains, 1.0 / toy.n_chains) if toy.probe_balanced_chains else train_probs
    tokens, chains = sample_sequences(rng, trans, probe_probs, toy.probe_sequences, toy.sequence_length)
    acts, seq_loss = residuals_and_losses(model, tokens)
    block_acts, labels = probe_examples(acts, tokens, chains, toy.n_tokens, toy.feature,
                                        toy.probe_min_position)
    blocks = [fit_probes(a, labels, n_features, seed) for a in block_acts]
    block_ent = [entanglement(p.directions) for p in blocks]
    probes, ent = blocks[-1], block_ent[-1]
    chain_loss = [float(seq_loss[chains == c].mean()) for c in range(toy.n_chains)]
    rare = slice(0, toy.n_tokens)
    common = slice(toy.n_tokens, None)
    return {
        "seed": seed,
        "entanglement": ent.tolist(),
        "probe_auc": probes.auc.tolist(),
        "directions": probes.directions.tolist(),
        "rare_entanglement": float(ent[rare].mean()),
        "common_entanglement": float(ent[common].mean()),
        "rare_probe_auc": float(probes.auc[rare].mean()),
        "common_probe_auc": float(probes.auc[common].mean()),
        "block_entanglement": [e.tolist() for e in block_ent],
        "block_rare_entanglement": [float(e[rare].mean()) for e in block_ent],
        "block_common_entanglement": [float(e[common].mean()) for e in block_ent],
        "chain_loss": chain_loss,
        "rare_chain_loss": chain_loss[0],
        "common_chain_loss": float(np.mean(chain_loss[1:])),
        "final_loss": float(np.dot(train_probs, chain_loss)),
        "train_loss_last": losses[-1],
    }
