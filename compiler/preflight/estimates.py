"""Disk and GPU-hours a plan will cost, per stage instance, from the plan alone (nothing is read).

Rough by design: enough to know before a run whether a file system or an allocation holds it.

    tokenize     tokens it reads × 2 bytes (uint16 token shards; 4 when the vocabulary exceeds 65,536):
                 the sum of its fills (held-out + clean, or the largest toxic budget), or for a whole
                 source its `declared_tokens`; once per source, shared by every mix
    mix          (held-out + each budget smaller than its tokenize instance's fill: min(budget, 1 shard))
                 tokens × 2 bytes: a mix lists the shards it takes whole by reference and copies the
                 held-out tokens and the partial shard at a cut (`data.tokens_per_file` tokens a shard);
                 at its tokenize instance's own budget a cut falls between shards and copies one document
    pretrain     parameters × 8 bytes kept (ai2-olmo `model.pt` + the HF export, both fp32); while it
                 runs, 2 resumable checkpoints × parameters × 12 bytes (fp32 weights + AdamW's two moments:
                 the next one is written before the last is deleted)
    posttrain    parameters × 4 bytes kept (an fp32 HF checkpoint); while it runs, TRL's 2 kept
                 checkpoints × parameters × 12 bytes
    steer        parameters × 4 bytes (a steered HF copy of the model)
    activations  examples × probed layers × 2 × d_model × 4 bytes (per-head outputs and the residual
                 stream, float32)
    evaluate     prompts × samples per prompt × 512 bytes (generations.jsonl rows); + a small allowance
    other kinds  a small allowance (tokenizer, probe, attack, score, report, …): 5 MiB
    GPU-hours    resources: gpus × nodes × runtime_minutes / 60, as `mixsteer diff` counts them

Parameters = the model's non-embedding parameters + embedding rows × d_model (twice without weight
tying). A count the spec does not fix (examples, prompts) is the first of: the section's cap, the
source's `sample.n`, `max_documents`, `declared_documents`; else ASSUMED_DOCUMENTS.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI's help reads this module's docstring: keep it light
    from ..plan import Plan
    from ..planning import StageInstance

SMALL_STAGE_BYTES = 5 << 20
"""Allowance for a stage whose outputs are tables, plots and small JSON files."""

BYTES_PER_GENERATION = 512
"""One generations.jsonl row (prompt, continuation and bookkeeping)."""

ASSUMED_DOCUMENTS = 10_000
"""Examples or prompts assumed when neither the spec nor the source says how many."""

CHECKPOINT_BYTES_PER_PARAMETER = 12
"""fp32 weights + AdamW's first and second moments."""


@dataclass(frozen=True)
class Estimate:
    """What one stage instance costs."""

    disk_bytes: int      # kept under results/<kind>/<id>/
    scratch_bytes: int   # peak under results/.work/ while it runs (resume checkpoints), deleted on success
    gpu_hours: float


@dataclass
class KindEstimate:
    """The instances of one stage kind, summed."""

    kind: str
    instances: int = 0
    disk_bytes: int = 0
    scratch_bytes: int = 0  # the largest single instance's: scratch is freed when an instance ends
    gpu_hours: float = 0.0

    def add(self, e: Estimate) -> None:
        self.instances += 1
        self.disk_bytes += e.disk_bytes
        self.scratch_bytes = max(self.scratch_bytes, e.scratch_bytes)
        self.gpu_hours += e.gpu_hours


def estimate_plan(plan: Plan) -> dict[str, Estimate]:
    """Every instance's estimate, by id."""
    return {sid: estimate(inst, plan.instances) for sid, inst in plan.instances.items()}


def by_kind(estimates: dict[str, Estimate], instances: dict[str, StageInstance]) -> list[KindEstimate]:
    """Per stage kind, in plan order."""
    kinds: dict[str, KindEstimate] = {}
    for sid, e in estimates.items():
        kinds.setdefault(instances[sid].kind, KindEstimate(instances[sid].kind)).add(e)
    return list(kinds.values())


def disk_needed(estimates: list[Estimate]) -> int:
    """Bytes a set of instances needs at its peak: everything kept, plus the largest scratch (instances
    running at once each hold their own; the largest alone is the floor)."""
    return sum(e.disk_bytes for e in estimates) + max((e.scratch_bytes for e in estimates), default=0)


def estimate(inst: StageInstance, instances: dict[str, StageInstance]) -> Estimate:
    """One instance (its upstream instances give the model it reads)."""
    disk, scratch = _disk(inst, instances)
    return Estimate(disk, scratch, inst.resources.gpu_hours)


def _disk(inst: StageInstance, instances: dict[str, StageInstance]) -> tuple[int, int]:
    cfg = inst.config
    if inst.kind == "tokenize":
        tokens = sum(cfg.fills) if cfg.fills is not None else cfg.source.declared_tokens or 0
        return tokens * token_bytes(cfg.tokenizer.vocab_size), 0
    if inst.kind == "mix":
        data = cfg.data
        budgets = (("clean", data.clean_tokens), ("toxic", data.toxic_tokens))
        tokens = data.heldout_clean_tokens + sum(
            min(budget, data.tokens_per_file) for role, budget in budgets
            if role in inst.inputs and _cut_inside_shard(instances[inst.inputs[role]].config, budget))
        return tokens * token_bytes(cfg.tokenizer.vocab_size), 0
    if inst.kind == "pretrain":
        params = parameters(cfg)
        return params * 8, 2 * params * CHECKPOINT_BYTES_PER_PARAMETER
    pretrain = _pretrain_of(inst, instances)
    if inst.kind == "posttrain" and pretrain is not None:
        params = parameters(pretrain.config)
        return params * 4, 2 * params * CHECKPOINT_BYTES_PER_PARAMETER
    if inst.kind == "steer" and pretrain is not None:
        return parameters(pretrain.config) * 4, 0
    if inst.kind == "activations" and pretrain is not None:
        examples = count(cfg.data.source, cfg.data.max_examples)
        return examples * len(cfg.layers) * 2 * pretrain.config.model.d_model * 4, 0
    if inst.kind == "evaluate":
        prompts = sum(count(s.source, s.max_prompts) for s in cfg.prompt_sets)
        return SMALL_STAGE_BYTES + prompts * cfg.generation.samples_per_prompt * BYTES_PER_GENERATION, 0
    return SMALL_STAGE_BYTES, 0


def _cut_inside_shard(tokenize_config: Any, budget: int) -> bool:
    """A mix's budget ends inside a shard (a partial shard to copy) unless it is the tokenize instance's
    last fill, where a document of its own ends the shards."""
    fills = tokenize_config.fills
    return fills is None or fills[-1] != budget


def token_bytes(vocab_size: int) -> int:
    """Bytes a token takes on disk (`runtime.mix_tokens.token_dtype`: uint16 while every id fits)."""
    return 2 if vocab_size <= 65536 else 4


def parameters(pretrain_config: Any) -> int:
    """Parameters of the pretrained model: non-embedding + embedding (+ output layer if untied)."""
    model, vocab = pretrain_config.model, pretrain_config.vocab
    embedding = vocab.embedding_size * model.d_model
    return model.n_params_estimate + embedding * (1 if model.weight_tying else 2)


def count(source: Any, cap: int | None) -> int:
    """How many records a section reads from a source (see the module docstring)."""
    sample = getattr(source, "sample", None)
    for known in (cap, sample.n if sample else None, getattr(source, "max_documents", None),
                  getattr(source, "declared_documents", None)):
        if known is not None:
            return known
    return ASSUMED_DOCUMENTS


def _pretrain_of(inst: StageInstance, instances: dict[str, StageInstance]) -> StageInstance | None:
    """The pretrain instance upstream of a model-reading stage (through `model` inputs)."""
    seen = inst
    while seen.kind != "pretrain":
        upstream = seen.inputs.get("model")
        if upstream is None or upstream not in instances:
            return None
        seen = instances[upstream]
    return seen


def human_bytes(n: float) -> str:
    """1536 → `1.5 KiB`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
