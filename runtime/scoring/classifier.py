"""Toxicity from any Hugging Face `AutoModelForSequenceClassification` checkpoint (the `classifier` scorer).

The checkpoint comes from a local folder (`path`, relative to the project root) or from the Hub at a
pinned `revision`. The toxic label(s) are found by name in the model's `config.id2label`; their
probabilities (sigmoid for multi-label models, softmax otherwise, or as the spec says) are combined by
max or by sum (capped at 1). Texts are scored in length-sorted batches (little padding: several times
the throughput of one text at a time, see bench/score_throughput.py) and returned in input order.
Device and dtype come from the score stage's `compute` (`runtime.device`: the spec's `precision` on
CUDA, fp32 on CPU); they are in the score cache key (`runtime.scoring.cache.scorer_id`).

Texts longer than the window (`max_length_tokens`, else the model's maximum, special tokens included)
follow `long_texts`: `truncate` scores the first window (what open-instruct and Detoxify do);
`max_windows` cuts the text into windows of that length overlapping by half their text tokens (Hugging
Face's overflow windows, `stride` = the overlap), scores each like a text of its own and keeps the
highest score. `long_texts(texts)` flags them; the score stage counts them.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from compiler.errors import StageError
from compiler.schema.precision import Compute
from compiler.schema.scoring import ClassifierScorer

if TYPE_CHECKING:
    from runtime.device import Placement

UNBOUNDED_MAX_LENGTH = 1_000_000
"""Tokenizers without a known limit report ~1e30 as `model_max_length`; anything above this is 'unset'."""
OFFSET_POSITION_MODELS = {"roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text", "xmod"}
"""Architectures whose position ids start after `pad_token_id`: usable length = positions - pad - 1."""


class HFClassifierScorer:
    """`score(texts)` → the toxic probability of each text in [0, 1]; `long_texts(texts)` says which texts are
    longer than the window (`max_length`), scored by the spec's `long_texts` rule."""

    def __init__(self, spec: ClassifierScorer, root: Path, placement: Placement | None = None,
                 progress: bool = True) -> None:
        from runtime.device import Placement

        placement = placement or Placement(Compute())
        self.spec = spec
        self.progress = progress
        self.device = placement.device
        self.tokenizer, self.model = _load(spec, root, placement.dtype)
        self.model.to(self.device).eval()
        config = self.model.config
        self.toxic_columns = toxic_columns(config.id2label, spec.toxic_labels, _describe(spec))
        self.sigmoid = uses_sigmoid(spec.activation, config)
        self.max_length = max_length(spec, self.tokenizer, config)
        self.overlap = window_overlap(self.max_length, self.tokenizer, spec) if spec.long_texts == "max_windows" else 0

    def _lengths(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]]

    def long_texts(self, texts: Sequence[str]) -> list[bool]:
        return [n > self.max_length for n in self._lengths(texts)]

    def description(self) -> dict[str, Any]:
        """What was resolved at load time: the commit actually loaded, activation, window, labels."""
        from transformers import __version__

        config = self.model.config
        out = {"activation": "sigmoid" if self.sigmoid else "softmax", "max_length_tokens": self.max_length,
               "long_texts": self.spec.long_texts, "model_type": config.model_type,
               "labels": [config.id2label[i] for i in sorted(config.id2label)], "transformers": __version__}
        if self.spec.long_texts == "max_windows":
            out["window_overlap_tokens"] = self.overlap
        if getattr(config, "_commit_hash", None):
            out["commit"] = config._commit_hash
        return out

    def score(self, texts: Sequence[str]) -> list[float]:
        import torch
        from tqdm.auto import tqdm

        if not texts:
            return []
        lengths = self._lengths(texts)
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])  # longest first: memory peaks at once
        scores = [0.0] * len(texts)
        batch_size = self.spec.batch_size
        with torch.inference_mode(), tqdm(total=len(texts), desc=f"score {self.spec.label}", unit="text",
                                          leave=False, disable=not self.progress) as bar:
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                for i, value in zip(batch, self._score_batch([texts[i] for i in batch])):
                    scores[i] = value
                bar.update(len(batch))
        return scores

    def _score_batch(self, texts: list[str]) -> list[float]:
        """One score per text: of its first window (`truncate`), or the max over its windows."""
        import torch

        windows = self.spec.long_texts == "max_windows"
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt",
                             **({"stride": self.overlap, "return_overflowing_tokens": True} if windows else {}))
        owner = enc.pop("overflow_to_sample_mapping") if windows else torch.arange(len(texts))
        enc = enc.to(self.device)
        rows = []
        for start in range(0, len(owner), self.spec.batch_size):  # windows of long texts: more rows than texts
            part = {k: v[start:start + self.spec.batch_size] for k, v in enc.items()}
            rows.append(self._toxicity(self.model(**part).logits.float()))
        best = torch.full((len(texts),), -1.0, device=self.device)
        best.scatter_reduce_(0, owner.to(self.device), torch.cat(rows), reduce="amax")
        return best.tolist()

    def _toxicity(self, logits: Any) -> Any:
        import torch

        probs = torch.sigmoid(logits) if self.sigmoid else torch.softmax(logits, dim=-1)
        toxic = probs[:, self.toxic_columns]
        return toxic.max(dim=-1).values if self.spec.combine == "max" else toxic.sum(dim=-1).clamp(max=1.0)


def window_overlap(length: int, tokenizer: Any, spec: ClassifierScorer) -> int:
    """Tokens two neighbouring windows share under `max_windows`: half a window's text tokens (its length
    less the special tokens the tokenizer adds). Needs a fast tokenizer (Hugging Face's overflow windows)."""
    if not getattr(tokenizer, "is_fast", False):
        raise StageError(f"scorer.long_texts = max_windows needs a fast tokenizer; {_describe(spec)} has a slow "
                         f"one ({type(tokenizer).__name__}): use `long_texts: truncate`")
    text_tokens = length - tokenizer.num_special_tokens_to_add(pair=False)
    if text_tokens < 1:
        raise StageError(f"scorer.max_length_tokens = {length} leaves no room for text next to the special tokens")
    return text_tokens // 2


def toxic_columns(id2label: dict[int, str], wanted: Sequence[str], source: str) -> list[int]:
    """Logit columns of the toxic labels, found by exact name; a missing one lists the model's labels."""
    by_name = {name: int(i) for i, name in id2label.items()}
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise StageError(f"scorer.toxic_labels: {source} has no label(s) {missing}; its labels "
                         f"(config.id2label) are: {', '.join(map(repr, by_name))}")
    return [by_name[name] for name in wanted]


def uses_sigmoid(activation: str, config: Any) -> bool:
    """`auto`: sigmoid for multi-label models and single-logit models, softmax over the logits otherwise."""
    if activation != "auto":
        return activation == "sigmoid"
    return config.problem_type == "multi_label_classification" or config.num_labels == 1


def max_length(spec: ClassifierScorer, tokenizer: Any, config: Any) -> int:
    """Tokens per text: `spec.max_length_tokens`, else the smaller of the tokenizer's and the model's limit."""
    limits = []
    if tokenizer.model_max_length < UNBOUNDED_MAX_LENGTH:
        limits.append(int(tokenizer.model_max_length))
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        offset = (config.pad_token_id or 0) + 1 if config.model_type in OFFSET_POSITION_MODELS else 0
        limits.append(positions - offset)
    model_limit = min(limits) if limits else None
    if spec.max_length_tokens is not None:
        if model_limit is not None and spec.max_length_tokens > model_limit:
            raise StageError(f"scorer.max_length_tokens = {spec.max_length_tokens} exceeds what "
                             f"{_describe(spec)} takes ({model_limit} tokens)")
        return spec.max_length_tokens
    if model_limit is None:
        raise StageError(f"{_describe(spec)} states no maximum input length: set scorer.max_length_tokens")
    return model_limit


def _describe(spec: ClassifierScorer) -> str:
    return f"classifier {spec.model}@{spec.revision}" if spec.model else f"classifier folder {spec.path}"


def _load(spec: ClassifierScorer, root: Path, dtype: Any) -> tuple[Any, Any]:
    """Tokenizer and model from the local folder or the pinned Hub revision, with errors that say what to do."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if spec.path is not None:
        folder = Path(spec.path) if Path(spec.path).is_absolute() else root / spec.path
        if not folder.is_dir():
            raise StageError(f"scorer.path: classifier folder {folder} does not exist (a folder saved with "
                             f"`save_pretrained`, holding config.json, the weights and the tokenizer)")
        source, kwargs = str(folder), {"local_files_only": True}
    else:
        source, kwargs = spec.model, {"revision": spec.revision}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForSequenceClassification.from_pretrained(source, dtype=dtype, **kwargs)
    except (OSError, ValueError) as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        if spec.path is not None:
            raise StageError(f"scorer.path: cannot load a sequence classifier from {source} ({reason})") from None
        raise StageError(
            f"scorer.model: cannot load {spec.model} at revision {spec.revision} ({reason}). "
            f"Offline runs need the files in the local Hugging Face cache: on a machine with network run "
            f"`hf download {spec.model} --revision {spec.revision}` (and copy the cache), or save the model "
            f"to a folder and point `scorer.path:` at it instead of `model:`"
        ) from None
    if tokenizer.pad_token is None:  # decoder-style classifiers (GPT-2) ship no pad token
        if tokenizer.eos_token is None:
            raise StageError(f"{_describe(spec)}: the tokenizer has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model
