"""Every toxicity scorer behind one face: `build_scorer(spec, root).score(texts) -> list[float]` in [0, 1].

`offline` is alt-profanity-check (ships its model, no network); `detoxify` loads a local Detoxify
checkpoint (the `detoxify` package is optional: install it yourself); `perspective` calls Google's
Perspective API through the rate-limited, retrying, caching client in `runtime.scoring.perspective`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, Sequence

from compiler.errors import StageError
from compiler.schema.scoring import DetoxifyScorer, OfflineScorer, PerspectiveScorer


class Scorer(Protocol):
    def score(self, texts: Sequence[str]) -> list[float]:
        """Toxicity of each text in [0, 1], in order."""
        ...


class OfflineProfanityScorer:
    """alt-profanity-check's linear SVM probability (a profanity detector: crude but offline)."""

    def __init__(self) -> None:
        from profanity_check import predict_prob

        self._predict_prob = predict_prob

    def score(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        return [float(p) for p in self._predict_prob(list(texts))]


class DetoxifyLocalScorer:
    """Detoxify's `toxicity` head from a local checkpoint (no hub download)."""

    def __init__(self, checkpoint: Path, variant: str, batch_size: int = 64) -> None:
        if not checkpoint.is_file():
            raise StageError(f"Detoxify checkpoint {checkpoint} does not exist (scorer.checkpoint_path)")
        try:
            from detoxify import Detoxify
        except ImportError:
            raise StageError(
                "scorer kind `detoxify` needs the `detoxify` package, which mixsteer does not install: "
                "`pip install detoxify`, or use scorer kind `offline` / `perspective`"
            ) from None
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model = Detoxify(variant, checkpoint=str(checkpoint), device=device)
        self._batch_size = batch_size

    def score(self, texts: Sequence[str]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(texts), self._batch_size):
            out.extend(float(v) for v in self._model.predict(list(texts[i:i + self._batch_size]))["toxicity"])
        return out


def build_scorer(spec: OfflineScorer | DetoxifyScorer | PerspectiveScorer, root: Path) -> Scorer:
    """The scorer a spec names; relative paths are relative to the project `root`."""
    if isinstance(spec, OfflineScorer):
        return OfflineProfanityScorer()
    if isinstance(spec, DetoxifyScorer):
        path = Path(spec.checkpoint_path)
        return DetoxifyLocalScorer(path if path.is_absolute() else root / path, spec.variant)
    if isinstance(spec, PerspectiveScorer):
        from runtime.scoring.perspective import PerspectiveClient

        key = os.environ.get(spec.api_key_env)
        if not key:
            raise StageError(f"scorer kind `perspective` needs an API key in ${spec.api_key_env}")
        cache = Path(spec.cache_path)
        return PerspectiveClient(
            endpoint=spec.endpoint, api_key=key, cache_path=cache if cache.is_absolute() else root / cache,
            queries_per_second=spec.queries_per_second, max_retries=spec.max_retries,
            timeout_s=spec.timeout_s, backoff_initial_s=spec.backoff_initial_s,
        )
    raise StageError(f"unknown scorer kind {spec!r}")
