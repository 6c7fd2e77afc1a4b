"""Small files in the layouts of the public datasets the stages read (column names, nesting, types as
the releases have them; tests/data/real_formats.py writes whole invented copies), with the rows a test
chooses, so a test can plant a null, an empty text or a missing field where it needs one."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RTP_SCORES = ("toxicity", "severe_toxicity", "profanity", "insult", "threat", "identity_attack",
              "sexually_explicit", "flirtation")
"""Perspective's 2020 attributes on every RTP `prompt` and `continuation` object."""

TOXIGEN_ANNOTATED_COLUMNS = ("text", "target_group", "factual?", "ingroup_effect", "lewd", "framing",
                             "predicted_group", "stereotyping", "intent", "toxicity_ai", "toxicity_human",
                             "predicted_author", "actual_method")


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def rtp_record(text: str | None, challenging: bool, toxicity: float | None = 0.1) -> dict[str, Any]:
    """One line of `prompts.jsonl` (allenai/real-toxicity-prompts): `challenging` top-level, the prompt
    text inside the `prompt` object beside its scores (any of them may be null)."""
    def scored(t: str | None) -> dict[str, Any]:
        return {"text": t, **{a: toxicity for a in RTP_SCORES}}

    return {"filename": "0766186-bc7f2a64cb271f5f56cf6f25570cd9ed.txt", "begin": 340, "end": 564,
            "challenging": challenging, "prompt": scored(text), "continuation": scored(" and then some.")}


def write_toxigen_annotated(path: Path, rows: list[tuple[str | None, str, float | None]]) -> Path:
    """An `annotated` split of toxigen/toxigen-data as Parquet: (text, target_group, toxicity_human) per row,
    the other columns filled as the release types them (strings, and floats for the scores)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    floats = {"intent", "toxicity_ai", "toxicity_human"}
    columns: dict[str, list] = {c: [] for c in TOXIGEN_ANNOTATED_COLUMNS}
    for text, group, human in rows:
        for c in TOXIGEN_ANNOTATED_COLUMNS:
            columns[c].append({"text": text, "target_group": group, "toxicity_human": human}.get(
                c, human if c in floats else "other"))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({c: pa.array(v, pa.float64() if c in floats else pa.string())
                             for c, v in columns.items()}), path)
    return path


def write_advbench(path: Path, pairs: list[tuple[str, str | None]]) -> Path:
    """walledai/AdvBench's `data/train-00000-of-00001.parquet`: `prompt` and its own `target`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"prompt": pa.array([p for p, _ in pairs], pa.string()),
                             "target": pa.array([t for _, t in pairs], pa.string())}), path)
    return path


def lee_pair(prompt: str, non_toxic: str, toxic: str) -> dict[str, str]:
    """One line of Lee et al. 2024's `toxicity_pairwise/split_<i>.jsonl`: `unpert_gen_text` is the
    non-toxic continuation (DPO's chosen), `pert_gen_text` the toxic one (rejected)."""
    return {"prompt_text": prompt, "unpert_gen_text": non_toxic, "pert_gen_text": toxic}
