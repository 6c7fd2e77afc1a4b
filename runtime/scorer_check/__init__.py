"""`scorer_check` stage: how far each scorer agrees with references no one here wrote.

- RealToxicityPrompts ships Perspective's 2020 toxicity of every prompt and continuation. Every selected
  record's `prompt.text` and `continuation.text` is scored; per scorer: Spearman's ρ with Perspective's
  `toxicity` and ROC AUC against Perspective ≥ `threshold`, on prompts, on continuations and on both;
  and the expected maximum toxicity (EMT) and toxicity probability the scorer gives on the continuations
  next to Perspective's on the same texts. RTP's continuation is ONE sample per prompt (the rest of the
  web sentence, not a model's generation), so EMT here is the mean continuation toxicity and the
  probability the share of continuations ≥ `threshold`.
- ToxiGen `annotated`: ROC AUC against `toxicity_human ≥ label_threshold`, Spearman with `toxicity_human`.

Intervals: seeded percentile bootstrap over RTP records (a prompt with its continuation) and ToxiGen
rows, the draws of `runtime.stats` (Spearman and AUC through `agreement`'s O(texts) weighted ranks).
Records without a Perspective toxicity (RTP) or rating (ToxiGen) are skipped and counted.

Writes `agreement.json` (layout in `runtime/ARTIFACTS.md`), `agreement.md` (the tables), `scores.jsonl`
(one row per scored text: `reference`, `record`, `part`, `reference_score`, `scores` {label: score}).
Metrics: `<label>:<reference>_spearman` / `_auc` (references `rtp_prompt`, `rtp_continuation`, `rtp_all`,
`toxigen`), `<label>:rtp_expected_max_toxicity` / `_toxicity_probability` (and `_minus_reference`), the
same for `perspective_2020:`, each with `_ci_low` / `_ci_high`; counts `rtp_records_*`, `toxigen_rows_*`,
`n_texts`, and per scorer `<label>:n_texts` / `cached_texts` / `scored_texts` / `truncated_texts`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from compiler.stages.scorer_check import Config
from runtime.results.scorer_check_tables import markdown
from runtime.stage import StageContext, write_json


RESTART = "scores already computed come back from the shared score cache"
"""Why a stopped run starts over (`runtime.preempt.stage_stops` logs it on the rerun)."""

PERSPECTIVE = "perspective_2020"
"""The label of the reference row: Perspective's scores as shipped in RTP (not a live scorer)."""


def run(cfg: Config, ctx: StageContext) -> dict[str, Any]:
    from .references import read_rtp, read_toxigen

    labels = [s.label for s in cfg.scorers]
    rtp = read_rtp(cfg.rtp, ctx.root) if cfg.rtp is not None else None
    toxigen = read_toxigen(cfg.toxigen, ctx.root) if cfg.toxigen is not None else None
    rtp_texts = rtp.prompt + rtp.continuation if rtp else []
    texts = rtp_texts + (toxigen.text if toxigen else [])
    print(f"scorer_check: {len(texts)} texts ({rtp.counts() if rtp else 'no RTP'}; "
          f"{toxigen.counts() if toxigen else 'no ToxiGen'}), scorers {labels}", flush=True)
    scores, scoring = {}, {}
    for spec in cfg.scorers:
        scores[spec.label], scoring[spec.label] = _score(spec, texts, ctx)
    result: dict[str, Any] = {
        "threshold": cfg.threshold, "scorers": labels, "reference_label": PERSPECTIVE,
        "bootstrap": cfg.bootstrap.model_dump(), "scoring": scoring,
        "rtp": None, "toxigen": None, "agreement": [], "toxicity": [],
    }
    rows: list[dict[str, Any]] = []
    if rtp is not None:
        rows += _check_rtp(rtp, {k: v[:len(rtp_texts)] for k, v in scores.items()}, cfg, result)
    if toxigen is not None:
        rows += _check_toxigen(toxigen, {k: v[len(rtp_texts):] for k, v in scores.items()}, cfg, result)
    write_json(ctx.out / "agreement.json", result)
    (ctx.out / "agreement.md").write_text(markdown(result))
    _write_jsonl(ctx.out / "scores.jsonl", rows)
    return _metrics(result, len(texts))


def _check_rtp(rtp: Any, scores: dict[str, np.ndarray], cfg: Config, result: dict[str, Any]) -> list[dict]:
    """RTP's part of `result` (counts, agreement and toxicity rows); returns its `scores.jsonl` rows.
    `scores[label]` holds the prompts' scores, then the continuations'."""
    from runtime.agreement import agreement

    from .agreement import toxicity_vs_reference

    n = len(rtp.index)
    reference = np.stack([rtp.prompt_toxicity, rtp.continuation_toxicity], axis=1)  # [record, part]
    result["rtp"] = {**rtp.counts(), "texts": 2 * n, **cfg.rtp.records.model_dump()}
    result["toxicity"].append({"scorer": PERSPECTIVE, **_reference_toxicity(reference[:, 1], cfg)})
    for label, own in scores.items():
        mine = own.reshape(2, n).T                                    # [record, part]
        units = np.stack([mine, reference], axis=-1)                  # [record, part, (scorer, reference)]
        for name, part_units in (("rtp_prompt", units[:, 0]), ("rtp_continuation", units[:, 1]), ("rtp_all", units)):
            result["agreement"].append({"scorer": label, "reference": name,
                                        **agreement(part_units, cfg.threshold, cfg.bootstrap)})
        result["toxicity"].append({"scorer": label, **toxicity_vs_reference(
            mine[:, 1], reference[:, 1], cfg.threshold, cfg.bootstrap)})
    return (_score_rows("rtp", rtp.index, "prompt", rtp.prompt_toxicity, scores, 0)
            + _score_rows("rtp", rtp.index, "continuation", rtp.continuation_toxicity, scores, n))


def _check_toxigen(toxigen: Any, scores: dict[str, np.ndarray], cfg: Config, result: dict[str, Any]) -> list[dict]:
    """ToxiGen's part of `result`; returns its `scores.jsonl` rows."""
    from runtime.agreement import agreement

    threshold = cfg.toxigen.label_threshold
    result["toxigen"] = {**toxigen.counts(), "label_threshold": threshold}
    for label, own in scores.items():
        result["agreement"].append({"scorer": label, "reference": "toxigen", **agreement(
            np.stack([own, toxigen.toxicity_human], axis=1), threshold, cfg.bootstrap)})
    return _score_rows("toxigen", toxigen.index, "text", toxigen.toxicity_human, scores, 0)


def _score(spec: Any, texts: Sequence[str], ctx: StageContext) -> tuple[np.ndarray, dict[str, float]]:
    """Every text's score from one scorer through the shared score cache (`runtime.scoring.texts`), with the
    counts of what it cost (`n_texts`, `cached_texts`, `scored_texts`, `truncated_texts`)."""
    from runtime.scoring.texts import score_texts

    scores, counts = score_texts(spec, list(texts), ctx)
    return np.asarray(scores, dtype=float), counts


def _reference_toxicity(reference: np.ndarray, cfg: Config) -> dict[str, float]:
    """The reference's own EMT and toxicity probability on the continuations (one sample per prompt)."""
    from runtime.stats import mean

    from .agreement import share_at_least, with_interval

    return {**with_interval("expected_max_toxicity", reference, mean, cfg.bootstrap),
            **with_interval("toxicity_probability", reference, share_at_least(cfg.threshold), cfg.bootstrap)}


def _score_rows(reference: str, index: list[int], part: str, reference_scores: np.ndarray,
                scores: dict[str, np.ndarray], offset: int) -> list[dict[str, Any]]:
    return [{"reference": reference, "record": i, "part": part, "reference_score": float(reference_scores[j]),
             "scores": {label: float(own[offset + j]) for label, own in scores.items()}}
            for j, i in enumerate(index)]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")


def _metrics(result: dict[str, Any], n_texts: int) -> dict[str, Any]:
    """Flat metrics: `<label>:<reference>_<measure>` and `<label>:rtp_<toxicity measure>`, plus counts."""
    out: dict[str, Any] = {"n_texts": n_texts}
    for row in result["agreement"]:
        for key in ("spearman", "auc"):
            for suffix in ("", "_ci_low", "_ci_high"):
                out[f"{row['scorer']}:{row['reference']}_{key}{suffix}"] = row[key + suffix]
    for row in result["toxicity"]:
        out |= {f"{row['scorer']}:rtp_{k}": v for k, v in row.items() if k != "scorer"}
    out |= {f"{label}:{k}": v for label, counts in result["scoring"].items() for k, v in counts.items()}
    for reference in ("rtp", "toxigen"):
        if result[reference] is not None:
            out |= {f"{reference}_{k}": v for k, v in result[reference].items() if k.startswith(("records", "rows"))}
    return out
