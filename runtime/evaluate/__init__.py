"""`evaluate` stage: generations, detection, MMLU, cross-entropy and KL for one model (no scoring).

Reads: `model` (HF checkpoint folder), optional `base` (the unsteered model, for KL) and `mix` (its
`heldout/clean.npy` tokens, for cross-entropy when `cross_entropy.source` is null), the prompt sets,
labelled data and cross-entropy documents named in the config, each through the source's reader
(`runtime.sources`: dotted fields such as RTP's `prompt.text`, cleaning, filters, sampling).
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

Metrics: `<set>_generations` (rows written per prompt set); the reader's counts of each source read,
`source_<role>_<count>` with roles `prompts_<set>`, `detection` and `cross_entropy` (a source only) and
counts `read`, `exploded`, `skipped_missing`, `skipped_null`, `skipped_empty`, `filtered_out`,
`sampled_out`, `kept` (reading stops once a set's `max_prompts`, the detection data's `max_examples` or
the documents CE needs are taken, so what lies beyond is not counted); every capability metric `m` has
`m_ci_low` / `m_ci_high`: a seeded percentile bootstrap (`bootstrap`) over MMLU questions, detection examples or
held-out documents (CE and KL as ratios of sums); `mmlu_chance` and `detection_chance` (0.5, balanced)
give the floor to read them by.

Batches: generation's are planned by `runtime.generate.plan_batches` (consecutive prompts of one set, as
many as the memory budget and `generation.batch_size` allow; each prompt prefilled once); MMLU's are
`mmlu.batch_size` (context, choice) pairs, longest first; cross-entropy and detection use
`generation.batch_size`.

Stops (`runtime.preempt`): generation resumes per chunk of prompts. Each chunk is one batch of one prompt
set; its rows are appended to `generations.jsonl` in the work folder and fsynced before the next
(`runtime.evaluate.row_log`). On SIGTERM / SIGUSR1 the chunk in flight is finished and saved and the stage exits 75;
the rerun keeps the verified whole chunks (a torn or partial tail is dropped, rows that are not the prompts
they claim stop the kept prefix; rows from other batches, memory budget, device or library version are
discarded),
logs `evaluate: resumed from <n> of <N> prompts` and generates the rest. Chunks are whole batches, and
each row draws from its own seed (`row_seed`), so the resumed file is byte-identical to an uninterrupted
run's. MMLU, cross-entropy and detection (one pass each) are not checkpointed: a stop during them exits 75
at once and the rerun redoes them after the saved generations, and says so.
"""
from __future__ import annotations

import sys
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compiler.errors import StageError
from compiler.schema.evaluate import PromptSet
from compiler.stages.evaluate import Config
from runtime.preempt import StopSignals, pause_point, resumed
from runtime.stage import StageContext, write_json

if TYPE_CHECKING:
    from runtime.sources import SourceCounts


CAPABILITY_RESTART = "MMLU, cross-entropy and detection are one pass each over at most a few thousand items"
"""Why the measurements after generation are redone, not resumed, after a stop."""


def load_prompts(ps: PromptSet, root: Path, counts: SourceCounts | None = None) -> tuple[list[str], list[bool] | None]:
    """Prompt texts of a set (the source's reader: dotted `text_field`, cleaning, filters, sampling) and,
    when `challenging_field` is given, its challenging flags (RTP's top-level `challenging`)."""
    from runtime.sources import required_value
    from runtime.sources import describe, field_value, iter_records

    text_field = getattr(ps.source, "text_field", "text")  # a memmap has none: iter_records rejects it
    texts, flags = [], []
    records = islice(iter_records(ps.source, root, counts, text_fields=(text_field,)), ps.max_prompts)
    for i, rec in enumerate(records):
        texts.append(field_value(rec, text_field))
        if ps.challenging_field:
            where = f"prompt set {ps.name!r}, {describe(ps.source)}: record {i} (after its filters and sample)"
            flag = required_value(rec, ps.challenging_field, where)
            if flag not in (True, False):  # 0 / 1 too
                raise StageError(f"{where}: field {ps.challenging_field!r} is {flag!r}, not a boolean")
            flags.append(bool(flag))
    if not texts:
        raise StageError(f"prompt set {ps.name!r} is empty ({describe(ps.source)})")
    return texts, (flags if ps.challenging_field else None)


def _generations(cfg: Config, ctx: StageContext, model, tok, stop: StopSignals) -> tuple[dict[str, float], bool]:
    """Sample every prompt set into `generations.jsonl`, one batch a chunk through a `RowLog` in the work
    folder; returns the rows written per set (and the reader's counts), and whether it resumed."""
    import shutil

    import torch
    import transformers
    from tqdm.auto import tqdm

    from runtime.generate import Sampling, memory_budget, plan_batches, row_seed, sample_continuations
    from runtime.evaluate.row_log import RowLog
    from runtime.sources import SourceCounts

    g = cfg.generation
    sampling = Sampling(g.samples_per_prompt, g.max_new_tokens, g.temperature, g.top_p, g.batch_size, cfg.seed,
                        None if g.memory_budget_mb is None else g.memory_budget_mb * 2 ** 20)
    metrics: dict[str, float] = {}
    chunks: list[tuple[PromptSet, int, list[str]]] = []   # (set, first prompt index, prompts): one batch each
    planned: list[list[dict[str, Any]]] = []
    for ps in cfg.prompt_sets:
        counts = SourceCounts()
        prompts, challenging = load_prompts(ps, ctx.root, counts)
        start = 0
        for size in plan_batches(model, tok, prompts, sampling, cfg.prefix):
            chunks.append((ps, start, prompts[start:start + size]))
            planned.append([_planned_row(cfg, ps.name, i, prompts[i], j, row_seed(cfg.seed, f"{ps.name}/{i}", j),
                                         challenging)
                            for i in range(start, start + size) for j in range(g.samples_per_prompt)])
            start += size
        metrics[f"{ps.name}_generations"] = float(len(prompts) * g.samples_per_prompt)
        metrics |= counts.metrics(f"prompts_{ps.name}")
    device = next(model.parameters()).device
    header = {"batches": [len(c[2]) for c in chunks], "memory_budget": memory_budget(model, sampling),
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
              "torch": torch.__version__, "transformers": transformers.__version__}
    ctx.work.mkdir(parents=True, exist_ok=True)
    log = RowLog(ctx.work / "generations.jsonl", planned, ("continuation",), header)
    done, dropped = log.resume()
    total = sum(len(c[2]) for c in chunks)
    prompts_done = sum(len(c[2]) for c in chunks[:done])
    if dropped:
        print(f"evaluate: dropped from the saved generations: {dropped}", file=sys.stderr, flush=True)
    if prompts_done:
        resumed("evaluate", f"{prompts_done} of {total} prompts")
    for (ps, start, prompts), rows in tqdm(list(zip(chunks, planned))[done:], desc="generate", unit="batch"):
        if stop.requested():
            stop.stop(f"the continuations of {prompts_done} of {total} prompts in {log.path}")
        keys = [f"{ps.name}/{i}" for i in range(start, start + len(prompts))]
        conts = sample_continuations(model, tok, prompts, keys, sampling, prefix=cfg.prefix, progress=False)
        log.append([_with_continuation(row, c) for row, c in zip(rows, (c for cs in conts for c in cs))])
        prompts_done += len(prompts)
    if stop.requested():
        stop.stop(f"the continuations of all {total} prompts in {log.path}")
    shutil.copyfile(log.path, ctx.out / "generations.jsonl")
    return metrics, done > 0


def _planned_row(cfg: Config, name: str, i: int, prompt: str, sample: int, seed: int,
                 challenging: list[bool] | None) -> dict[str, Any]:
    """A `generations.jsonl` row without its continuation."""
    row = {"set": name, "prompt_index": i, "prompt": prompt, "prefix": cfg.prefix, "sample": sample, "seed": seed}
    if challenging is not None:
        row["challenging"] = challenging[i]
    return row


def _with_continuation(row: dict[str, Any], continuation: str) -> dict[str, Any]:
    """The row as written: its continuation after `seed`, `challenging` (when marked) last."""
    out = {k: v for k, v in row.items() if k != "challenging"} | {"continuation": continuation}
    return out | ({"challenging": row["challenging"]} if "challenging" in row else {})


def _mmlu_metrics(cfg: Config, ctx: StageContext, model, tok) -> dict[str, float]:
    from runtime import stats
    from runtime.evaluate import capability

    m = cfg.mmlu
    subjects = m.subjects or capability.mmlu_subjects()[:m.max_subjects]
    items = capability.mmlu_items(subjects, split=m.split, shots=m.shots, max_questions=m.max_questions_per_subject)
    res = capability.multiple_choice_accuracy(model, tok, items, m.batch_size)
    write_json(ctx.out / "mmlu.json", {**res, "shots": m.shots, "split": m.split,
                                       "prompt_variant": capability.mmlu_prompt_variant(m.shots)})
    questions, boot = res["per_question"], cfg.bootstrap
    return (stats.with_interval("mmlu_accuracy", [q["correct"] for q in questions], stats.mean, boot)
            | stats.with_interval("mmlu_accuracy_len_norm", [q["correct_len_norm"] for q in questions], stats.mean,
                                  boot)
            | {"mmlu_chance": res["chance"], "mmlu_questions": float(res["questions"])})


def _cross_entropy_documents(cfg: Config, ctx: StageContext, tok) -> tuple[list, dict[str, int]]:
    """The documents CE and KL are measured on, and the source counts when they come from a source."""
    from runtime.evaluate import capability
    from runtime.sources import SourceCounts, describe, iter_texts

    ce = cfg.cross_entropy
    if ce.source is None:
        return capability.heldout_documents(ctx.input("mix") / "heldout" / "clean.npy", tok.eos_token_id,
                                            ce.documents, ce.tokens_per_document), {}
    counts = SourceCounts()
    docs = capability.source_documents(iter_texts(ce.source, ctx.root, counts), tok, ce.documents,
                                       ce.tokens_per_document, f"evaluate.cross_entropy.source ({describe(ce.source)})")
    return docs, counts.metrics("cross_entropy")


def _cross_entropy_metrics(cfg: Config, ctx: StageContext, model, tok, placement) -> dict[str, float]:
    from runtime import stats
    from runtime.evaluate import capability
    from runtime.generate import load_model

    docs, source_counts = _cross_entropy_documents(cfg, ctx, tok)
    base = None
    if cfg.cross_entropy.kl_to_base and "base" in ctx.inputs:
        base, _ = load_model(ctx.input("base") / "model", placement)
    res = capability.cross_entropy_and_kl(model, docs, cfg.generation.batch_size, base=base)
    write_json(ctx.out / "cross_entropy.json", res)
    rows, boot = res["per_document"], cfg.bootstrap
    metrics = stats.with_interval("cross_entropy", [(d["nll_sum"], d["tokens"]) for d in rows],
                                  stats.ratio_of_sums, boot)
    if base is not None:
        metrics |= stats.with_interval("kl_to_base", [(d["kl_sum"], d["tokens"]) for d in rows],
                                       stats.ratio_of_sums, boot)
    return metrics | {"cross_entropy_tokens": res["cross_entropy_tokens"]} | source_counts


def _detection_metrics(cfg: Config, ctx: StageContext, model, tok) -> dict[str, float]:
    from runtime import stats
    from runtime.evaluate import capability
    from runtime.sources.labelled import load_examples
    from runtime.sources import SourceCounts

    det = cfg.detection
    data = det.data or cfg.detection_data
    if data is None:
        raise StageError("evaluate.detection is enabled but has no data: set evaluate.detection.data, "
                         "add a probe section, or set evaluate.detection.enabled: false")
    counts = SourceCounts()
    examples = [(e["text"], e["label"]) for e in load_examples(data, ctx, counts)]
    res = capability.detection_accuracy(model, tok, examples, shots=det.shots, max_examples=det.max_examples,
                                        seed=cfg.seed, batch_size=cfg.generation.batch_size)
    write_json(ctx.out / "detection.json", res)
    rows, boot = res["per_example"], cfg.bootstrap
    return (stats.with_interval("detection_accuracy", [e["correct"] for e in rows], stats.mean, boot)
            | stats.with_interval("detection_balanced_accuracy", [(e["label"], e["correct"]) for e in rows],
                            stats.balanced_accuracy, boot)
            | {"detection_chance": res["chance"], "detection_examples": float(res["examples"])}
            | counts.metrics("detection"))


def run(cfg: Config, ctx: StageContext) -> dict:
    import torch

    from runtime.device import place
    from runtime.generate import load_model

    torch.set_num_threads(max(1, ctx.threads))
    torch.manual_seed(cfg.seed)
    has_documents = cfg.cross_entropy.source is not None or "mix" in ctx.inputs
    if cfg.cross_entropy.kl_to_base and "base" in ctx.inputs and not has_documents:
        raise StageError("kl_to_base needs documents: set evaluate.cross_entropy.source, or give this evaluate "
                         "the mix's held-out tokens (a `mix` input)")
    with StopSignals("evaluate") as stop:
        placement = place(cfg.compute, "evaluate")
        model, tok = load_model(ctx.input("model") / "model", placement)
        metrics, resuming = _generations(cfg, ctx, model, tok, stop)
        with stop.interrupting(f"the generations are saved; {CAPABILITY_RESTART}"):
            pause_point("evaluate", "capability", stop)
            if resuming:
                print("evaluate: restarted MMLU, cross-entropy and detection "
                      f"(nothing to resume: {CAPABILITY_RESTART})", file=sys.stderr, flush=True)
            if cfg.mmlu.enabled:
                metrics |= _mmlu_metrics(cfg, ctx, model, tok)
            if has_documents:
                metrics |= _cross_entropy_metrics(cfg, ctx, model, tok, placement)
            if cfg.detection.enabled:
                metrics |= _detection_metrics(cfg, ctx, model, tok)
    return metrics | {"computed_in": placement.compute.label}
