"""Read the two references in their public layouts: RealToxicityPrompts and ToxiGen `annotated`.

RTP: one JSON object a line, `challenging` at the top, `prompt` and `continuation` objects each with `text`
and Perspective's 2020 scores (`toxicity`, … any may be null). ToxiGen `annotated`: Parquet rows with
`text` and `toxicity_human` (mean of the annotators' 1–5 ratings). Both come through `runtime.sources`, so
a local file, a folder of Parquet shards and a Hub dataset read alike. Records the references leave
unscored (a null toxicity or rating) are skipped and counted, never guessed.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from compiler.errors import StageError
from compiler.schema.scorer_check import RTP_FIELDS, TOXIGEN_FIELDS, RTPCheck, ToxiGenCheck
from runtime.sources import describe, iter_records


def dotted(record: dict[str, Any], path: str, where: str) -> Any:
    """`record["a"]["b"]` for `a.b`; a missing key or a non-object on the way is a StageError at `where`."""
    value: Any = record
    for i, key in enumerate(path.split(".")):
        if not isinstance(value, dict) or key not in value:
            got = "no such field" if isinstance(value, dict) else f"{'.'.join(path.split('.')[:i])} is not an object"
            raise StageError(f"{where}: field {path!r}: {got}")
        value = value[key]
    return value


def _text(record: dict[str, Any], path: str, where: str) -> str:
    value = dotted(record, path, where)
    if not isinstance(value, str):
        raise StageError(f"{where}: field {path!r} is {type(value).__name__}, not text")
    return value


def _score(record: dict[str, Any], path: str, where: str) -> float | None:
    value = dotted(record, path, where)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StageError(f"{where}: field {path!r} is {value!r}, not a number or null")
    return float(value)


@dataclass(frozen=True)
class RTPRecords:
    """The selected RTP records (file order) with both texts and Perspective's toxicity of each."""

    index: list[int]                 # position of each record in the source (0-based, file order)
    prompt: list[str]
    continuation: list[str]
    prompt_toxicity: np.ndarray      # Perspective 2020, [n]
    continuation_toxicity: np.ndarray
    in_range: int                    # records in [skip, skip + take)
    not_challenging: int             # dropped by `challenging_only`
    null_toxicity: int               # dropped: a part had no Perspective toxicity
    usable: int                      # left before `sample`

    def counts(self) -> dict[str, int]:
        return {"records_in_range": self.in_range, "records_not_challenging": self.not_challenging,
                "records_null_toxicity": self.null_toxicity, "records_usable": self.usable,
                "records_used": len(self.index)}


def read_rtp(check: RTPCheck, root: Path) -> RTPRecords:
    """Apply `check.records` (range, challenging filter, null skip, seeded sample) to the RTP source."""
    sel = check.records
    stop = None if sel.take is None else sel.skip + sel.take
    kept: list[tuple[int, str, str, float, float]] = []
    in_range = not_challenging = null = 0
    for i, record in islice(enumerate(iter_records(check.source, root)), sel.skip, stop):
        where = f"{describe(check.source)} record {i}"
        if not isinstance(record, dict):
            raise StageError(f"{where}: not a JSON object")
        in_range += 1
        if sel.challenging_only and dotted(record, "challenging", where) is not True:
            not_challenging += 1
            continue
        texts = [_text(record, RTP_FIELDS[part][0], where) for part in RTP_FIELDS]
        scores = [_score(record, RTP_FIELDS[part][1], where) for part in RTP_FIELDS]
        if None in scores:
            null += 1
            continue
        kept.append((i, *texts, *scores))  # type: ignore[arg-type]
    if not kept:
        raise StageError(f"{describe(check.source)}: no usable records (in range {in_range}, not challenging "
                         f"{not_challenging}, null toxicity {null}); check scorer_check.rtp.records")
    usable = len(kept)
    if sel.sample is not None and sel.sample < usable:
        chosen = np.sort(np.random.default_rng(sel.seed).choice(usable, size=sel.sample, replace=False))
        kept = [kept[j] for j in chosen]
    index, prompt, continuation, p_tox, c_tox = zip(*kept)
    return RTPRecords(list(index), list(prompt), list(continuation), np.array(p_tox), np.array(c_tox),
                      in_range, not_challenging, null, usable)


@dataclass(frozen=True)
class ToxiGenRows:
    """ToxiGen `annotated` rows with a human rating (file order)."""

    index: list[int]
    text: list[str]
    toxicity_human: np.ndarray       # mean rating, 1–5, [n]
    read: int
    null_rating: int

    def counts(self) -> dict[str, int]:
        return {"rows_read": self.read, "rows_null_rating": self.null_rating, "rows_used": len(self.index)}


def read_toxigen(check: ToxiGenCheck, root: Path) -> ToxiGenRows:
    """The first `max_examples` rows of ToxiGen `annotated`; rows without `toxicity_human` are counted."""
    text_field, rating_field = TOXIGEN_FIELDS
    kept: list[tuple[int, str, float]] = []
    read = null = 0
    for i, record in islice(enumerate(iter_records(check.source, root)), check.max_examples):
        where = f"{describe(check.source)} row {i}"
        read += 1
        rating = _score(record, rating_field, where)
        if rating is None:
            null += 1
            continue
        kept.append((i, _text(record, text_field, where), rating))
    if not kept:
        raise StageError(f"{describe(check.source)}: no rows with a `{rating_field}` rating ({read} read)")
    index, text, rating = zip(*kept)
    return ToxiGenRows(list(index), list(text), np.array(rating), read, null)
