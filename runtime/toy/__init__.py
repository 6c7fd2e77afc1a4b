"""`toy` stage: the paper's toy model of feature entanglement (Markov chains, 4-d residual).

Trains `toy.seeds` toy OLMo models on a mixture of cyclic Markov chains in which chain 0 appears with
`toy.rare_chain_frequency`, probes each (chain, state) feature (`toy.feature`) on the residual stream
after every block and measures its entanglement (max |cos| with any other feature's probe direction);
the headline is the last block's. The paper's claim: the rarer the chain, the more entangled its
features. Sweep `toy.rare_chain_frequency` in the spec.

Reads: nothing. Writes: `entanglement.json` (per seed and per feature: entanglement (last block and
every block), probe AUC, probe directions, per-chain loss), `metrics.json` (flat means and 95 % CIs
over seeds, `*_block<k>_*` for block k = 1 … n_layers).
Id: every `toy` field (all change results).
"""
from __future__ import annotations

from compiler.errors import StageError
from compiler.stages.toy import Config
from runtime.preempt import pause_point
from runtime.stage import StageContext, write_json


RESTART = "a few tiny toy models on the CPU"
"""Why a stopped run starts over (`runtime.preempt.stage_stops` logs it on the rerun)."""


def run(cfg: Config, ctx: StageContext) -> dict:
    import torch
    from tqdm import tqdm

    from runtime.toy import model as toy_model

    toy = cfg.toy
    if toy.probe_min_position >= toy.sequence_length:
        raise StageError(f"{ctx.stage_id}: toy.probe_min_position {toy.probe_min_position} leaves no "
                         f"position to probe in sequences of {toy.sequence_length} tokens")
    torch.set_num_threads(ctx.threads)
    seeds = range(toy.first_seed, toy.first_seed + toy.seeds)
    per_seed = []
    for s in tqdm(seeds, desc="toy seeds", unit="seed"):
        per_seed.append(toy_model.measure_seed(toy, s))
        pause_point("toy", "seed")   # tests: a stop between seeds (`runtime.preempt`)

    n_features = toy.n_chains * toy.n_tokens
    welch = toy_model.welch_bound(n_features, toy.d_model)
    write_json(ctx.out / "entanglement.json", {
        "welch_bound": welch,
        "feature": toy.feature,
        "features": [{"id": c * toy.n_tokens + s, "chain": c, "state": s, "rare": c == 0}
                     for c in range(toy.n_chains) for s in range(toy.n_tokens)],
        "chain_successors": toy_model.chain_successors(toy.n_chains, toy.n_tokens).tolist(),
        "loss_floor": toy_model.entropy_rate(toy.n_tokens, toy.transition_noise),
        "seeds": per_seed,
    })
    metrics = {"welch_bound": welch, "rare_chain_frequency": toy.rare_chain_frequency,
               "loss_floor": toy_model.entropy_rate(toy.n_tokens, toy.transition_noise)}
    for key in ("rare_entanglement", "common_entanglement", "final_loss", "rare_chain_loss",
                "common_chain_loss", "rare_probe_auc", "common_probe_auc"):
        mean, ci = toy_model.mean_ci95([r[key] for r in per_seed])
        metrics[f"{key}_mean"], metrics[f"{key}_ci95"] = mean, ci
    for group in ("rare", "common"):
        for b in range(toy.n_layers):
            mean, ci = toy_model.mean_ci95([r[f"block_{group}_entanglement"][b] for r in per_seed])
            metrics[f"{group}_entanglement_block{b + 1}_mean"] = mean
            metrics[f"{group}_entanglement_block{b + 1}_ci95"] = ci
    return metrics
