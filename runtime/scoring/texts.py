"""Scores of texts through the shared score cache: what the score stage, the scorer check and the report's
probe-label check all call, so a text scored once by a scorer is never scored again by any of them."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from compiler.errors import StageError
from compiler.schema.precision import Compute
from runtime.preempt import StopSignals, resumed

if TYPE_CHECKING:
    from runtime.stage import StageContext

SCORE_CACHE = ".cache/scores.sqlite"
"""The score cache, relative to the project root: shared by every spec, job and scorer."""
PROGRESS_CHUNK = 1024
"""Texts per call to the cached scorer: the progress bar's step."""


def score_texts(spec: Any, texts: Sequence[str], ctx: StageContext, stop: StopSignals | None = None,
                compute: Compute | None = None) -> tuple[list[float], dict[str, float]]:
    """Scores of `texts` through the shared cache, and the counts that say what they cost and how many
    texts were longer than the scorer reads at once. The cache key takes the scorer's local files'
    fingerprints from the stage JSON (`ctx.files`). With `stop`: say how many texts the cache already
    holds, and stop between chunks on a stop signal. A model scorer runs in `compute` (None: CPU fp32)."""
    scores, counts, _ = score_and_record(spec, texts, ctx, stop, compute)
    return scores, counts


def score_and_record(spec: Any, texts: Sequence[str], ctx: StageContext, stop: StopSignals | None = None,
                     compute: Compute | None = None) -> tuple[list[float], dict[str, float], dict[str, Any]]:
    """`score_texts` and the scorer's provenance (`runtime.scoring.record`: the stage's `scorer.json`)."""
    from tqdm.auto import tqdm

    from runtime.device import place
    from runtime.scoring import LazyScorer, build_scorer
    from runtime.scoring.cache import TextScoreCache, cached, runs_a_model
    from runtime.scoring.record import long_text_counts, scorer_record

    root = ctx.root
    placement = place(compute or Compute(), "score") if runs_a_model(spec) else None  # what runs: the cache key
    scores: list[float] = []
    with TextScoreCache(root / SCORE_CACHE) as cache:
        def build() -> Any:
            """The scorer, its description stored before any of its scores is committed: a job killed after
            its last score still leaves the provenance a rerun answered from the cache reports."""
            built = build_scorer(spec, root, placement)
            describe = getattr(built, "description", None)
            if describe is not None:
                cache.put_description(scorer.scorer_id, describe())
            return built

        inner = LazyScorer(build)
        scorer = cached(inner, spec, cache, ctx.files, compute=placement.compute if placement else None)
        known = len(cache.get_many(scorer.scorer_id, texts)) if stop is not None else 0
        if known:
            resumed(stop.stage, f"{known} of {len(texts)} texts already scored (in {cache.path})")
        with tqdm(total=len(texts), desc=f"score {spec.label}", unit="text") as bar:
            for start in range(0, len(texts), PROGRESS_CHUNK):
                chunk = texts[start:start + PROGRESS_CHUNK]
                scores.extend(scorer.score(chunk))
                bar.update(len(chunk))
                if stop is not None and stop.requested() and len(scores) < len(texts):
                    stop.stop(f"the scores of {len(scores)} of {len(texts)} texts in {cache.path}")
        flags = cache.long_flags(scorer.scorer_id, texts)
        counts = {"n_texts": float(len(texts)), "cached_texts": float(scorer.hits), "scored_texts": float(inner.scored),
                  **long_text_counts(spec, [flags.get(i) for i in range(len(texts))])}
        record = scorer_record(spec, scorer.scorer_id, cache.description(scorer.scorer_id), counts, texts, ctx)
    bad = [s for s in scores if not 0.0 <= s <= 1.0]
    if bad:
        raise StageError(f"score: scorer {spec.label!r} returned scores outside [0, 1], e.g. {bad[:3]}")
    return scores, counts, record
