"""The `toy` section: the paper's toy model of feature entanglement.

Data: `n_chains` cyclic Markov chains over one shared alphabet of `n_tokens` tokens; a feature is a
(chain, state) pair, the state being the current token or the sequence's start state (`feature`), so
3 × 4 = 12 features share a `d_model` = 4 residual stream. The swept quantity is
how often the rare chain appears. Entanglement of feature i = max_{j≠i} |cos(v_i, v_j)| of probe
directions; Welch floor sqrt((N−M)/((N−1)M)) ≈ 0.43 for N = 12, M = 4.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import StrictModel


class ToySection(StrictModel):
    """Synthetic Markov-chain model; sweep `toy.rare_chain_frequency`."""

    enabled: bool = Field(False, description="Run the toy experiment.")
    n_chains: int = Field(3, ge=2, description="Cyclic Markov chains.")
    n_tokens: int = Field(4, ge=2, description="Shared alphabet size.")
    d_model: int = Field(4, gt=0, description="Residual stream width.")
    n_layers: int = Field(4, gt=0, description="Transformer blocks.")
    n_heads: int = Field(1, gt=0, description="Heads per block.")
    rare_chain_frequency: float = Field(0.1, gt=0, lt=1, description="Share of sequences from the rare chain.")
    sequence_length: int = Field(32, gt=1, description="Tokens per sequence.")
    train_steps: int = Field(2000, gt=0, description="Optimizer steps.")
    batch_size: int = Field(64, gt=0, description="Sequences per step.")
    learning_rate: float = Field(3e-3, gt=0, description="Adam learning rate.")
    seeds: int = Field(10, gt=0, description="Independent seeds per setting (paper: 10).")
    first_seed: int = Field(0, ge=0, description="Seeds run are first_seed … first_seed + seeds − 1.")
    transition_noise: float = Field(
        0.1, ge=0, lt=1,
        description="Probability ε that a chain jumps to a uniform token instead of its cyclic "
                    "successor: T_c = (1 − ε) P_c + ε/n_tokens.")
    probe_sequences: int = Field(
        512, gt=0, description="Held-out sequences whose residual stream (after each block) trains and tests "
                                 "the probes.")
    probe_min_position: int = Field(
        8, ge=0,
        description="First token position (0-based) used for probing: earlier positions have too "
                    "little context to tell the chains apart.")
    probe_balanced_chains: bool = Field(
        True,
        description="Draw probe sequences with every chain equally often, so rare features get as many "
                    "probe examples as common ones (False: the training mixture).")
    feature: Literal["chain_token", "chain_start"] = Field(
        "chain_token",
        description="What a feature is. chain_token: (chain, current token) at every position ≥ "
                    "probe_min_position, what the next-token distribution depends on. chain_start: "
                    "(chain, start state) at the last position, one probe example per sequence (the "
                    "paper's wording; needs transition_noise 0, where the start state fixes every token; "
                    "use ≥ 2048 probe_sequences).")

    @model_validator(mode="after")
    def _start_state_needs_cycles(self) -> "ToySection":
        """With noise the start state is forgotten along the sequence: its probes would measure noise."""
        if self.feature == "chain_start" and self.transition_noise > 0:
            raise ValueError("feature chain_start needs transition_noise 0 (deterministic cycles); "
                             f"got {self.transition_noise}")
        return self
