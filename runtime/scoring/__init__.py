"""Every toxicity scorer behind one face: `build_scorer(spec, root).score(texts) -> list[float]` in [0, 1],
`.long_texts(texts)`: which texts are longer than it reads at once (all False for scorers that read whole
texts; what happens to them is the scorer's long-text rule), and `.description()`: the settings it
resolved when built (model version, activation, window), recorded as the scores' provenance.

`offline` is alt-profanity-check (ships its model, no network); `lexicon` counts the words of a word list
(`runtime.scoring.lexicon`); `classifier` is any Hugging Face sequence-classification checkpoint
(`runtime.scoring.classifier`); `detoxify` loads a local Detoxify checkpoint (the `detoxify` package is
optional: install it yourself); `perspective` calls Google's Perspective API through the rate-limited,
retrying, caching client in `runtime.scoring.perspective`. The `score` stage puts every scorer behind the
shared score cache (`runtime.scoring.cache`) and builds it only if a text is missing there (`LazyScorer`):
a spec whose texts were all scored before loads no model and needs no key.
"""
from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from compiler.errors import StageError
from compiler.schema.scoring import (ClassifierScorer, DetoxifyScorer, LexiconScorer, OfflineScorer,
                                     PerspectiveScorer)

if TYPE_CHECKING:
    from runtime.device import Placement


class Scorer(Protocol):
    def score(self, texts: Sequence[str]) -> list[float]:
        """Toxicity of each text in [0, 1], in order."""
        ...

    def long_texts(self, texts: Sequence[str]) -> list[bool]:
        """Whether each text is longer than the scorer reads at once (truncated or windowed)."""
        ...

    def description(self) -> dict[str, Any]:
        """What the scorer resolved when built (JSON-safe): the provenance of its scores."""
        ...


def long_text_flags(scorer: Any, texts: Sequence[str]) -> list[bool | None]:
    """`scorer.long_texts(texts)`, or None per text for a scorer that cannot say (a test double)."""
    flags = getattr(scorer, "long_texts", None)
    return list(flags(texts)) if flags is not None else [None] * len(texts)


class OfflineProfanityScorer:
    """alt-profanity-check's linear SVM probability (a profanity detector: crude but offline)."""

    def __init__(self) -> None:
        from profanity_check import predict_prob

        self._predict_prob = predict_prob

    def score(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        return [float(p) for p in self._predict_prob(list(texts))]

    def long_texts(self, texts: Sequence[str]) -> list[bool]:
        return [False] * len(texts)  # reads whole texts

    def description(self) -> dict[str, Any]:
        return {"model": "alt-profanity-check", "version": metadata.version("alt-profanity-check"),
                "long_texts": "whole text"}


class DetoxifyLocalScorer:
    """Detoxify's `toxicity` head from a local checkpoint (no hub download)."""

    def __init__(self, checkpoint: Path, variant: str, device: str = "cpu", batch_size: int = 64) -> None:
        if not checkpoint.is_file():
            raise StageError(f"Detoxify checkpoint {checkpoint} does not exist (scorer.checkpoint_path)")
        try:
            from detoxify import Detoxify
        except ImportError:
            raise StageError(
                "scorer kind `detoxify` needs the `detoxify` package, which mixsteer does not install: "
                "`pip install detoxify`, or use scorer kind `classifier` / `offline` / `perspective`"
            ) from None
        self._model = Detoxify(variant, checkpoint=str(checkpoint), device=device)
        self._batch_size = batch_size
        self._variant = variant

    def long_texts(self, texts: Sequence[str]) -> list[bool]:
        tokenizer = self._model.tokenizer  # Detoxify tokenizes with truncation at the model's maximum
        return [len(ids) > tokenizer.model_max_length
                for ids in tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]]

    def description(self) -> dict[str, Any]:
        return {"model": f"detoxify {self._variant}", "version": metadata.version("detoxify"),
                "max_length_tokens": int(self._model.tokenizer.model_max_length), "long_texts": "truncate"}

    def score(self, texts: Sequence[str]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(texts), self._batch_size):
            out.extend(float(v) for v in self._model.predict(list(texts[i:i + self._batch_size]))["toxicity"])
        return out


class LazyScorer:
    """A scorer built on its first `score` or `long_texts` call: behind the cache, a run with no misses never loads a
    model or asks for an API key."""

    def __init__(self, build: Callable[[], Scorer]) -> None:
        self._build = build
        self._inner: Scorer | None = None
        self.scored = 0
        """Texts passed to the real scorer (what this process paid for)."""

    def _scorer(self) -> Scorer:
        if self._inner is None:
            self._inner = self._build()
        return self._inner

    def score(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        self.scored += len(texts)
        return self._scorer().score(texts)

    def long_texts(self, texts: Sequence[str]) -> list[bool | None]:
        return long_text_flags(self._scorer(), texts) if texts else []


def _at_root(path: str, root: Path) -> Path:
    return Path(path) if Path(path).is_absolute() else root / path


def build_scorer(spec: OfflineScorer | LexiconScorer | DetoxifyScorer | PerspectiveScorer | ClassifierScorer,
                 root: Path, placement: Placement | None = None) -> Scorer:
    """The scorer a spec names; relative paths are relative to the project `root`. Model scorers run in
    `placement` (`runtime.device.place`; None = CPU fp32)."""
    if isinstance(spec, OfflineScorer):
        return OfflineProfanityScorer()
    if isinstance(spec, LexiconScorer):
        from runtime.scoring.lexicon import WordListScorer, read_word_list

        return WordListScorer(read_word_list(_at_root(spec.path, root)), spec.saturation)
    if isinstance(spec, ClassifierScorer):
        from runtime.scoring.classifier import HFClassifierScorer

        return HFClassifierScorer(spec, root, placement)
    if isinstance(spec, DetoxifyScorer):
        return DetoxifyLocalScorer(_at_root(spec.checkpoint_path, root), spec.variant,
                                   "cpu" if placement is None else placement.compute.device)
    if isinstance(spec, PerspectiveScorer):
        from runtime.scoring.perspective import perspective_scorer

        return perspective_scorer(spec, root)
    raise StageError(f"unknown scorer kind {spec!r}")
