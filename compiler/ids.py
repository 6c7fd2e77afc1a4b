"""Content ids: what makes a stage instance new.

id = `<kind>-<first 12 hex of sha256(canonical JSON)>` of
    {"kind", "version" (the stage module's hand-bumped VERSION),
     "config" (its Config dump less NOT_IN_ID fields), "inputs" ({name: upstream id}),
     "files" ({local file it reads: content fingerprint})}
— a Merkle hash: an upstream change changes every id downstream of it, nothing else does.

Canonical JSON: sorted keys, no whitespace, floats in Python's shortest round-trip spelling (so 0.10
and 0.1 hash alike; YAML `1e-3` and `0.001` too), -0.0 as 0.0, tuples as lists (normalised by
`StrictModel.id_dump`, which caches per frozen instance). Hashing validated
configs, never raw YAML text, means key order, comments and a default written out explicitly change
nothing. Code is not hashed: bump VERSION when a change of a stage changes its results.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

ID_HEX = 12


def plain_json(value: Any) -> str | None:
    """JSON of a plain string or int without json.dumps (called ~100,000 times for a 1,000-run
    sweep), or None for anything else. Same bytes as json.dumps(value, ensure_ascii=False), which
    escapes only quotes, backslashes and control characters."""
    kind = type(value)
    if kind is str and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    if kind is int:
        return str(value)
    return None


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace; values come from `StrictModel.id_dump`, already normalised.
    Ids, kinds and field names (plain strings, ints) and flat dicts of them take the fast path."""
    plain = plain_json(value)
    if plain is not None:
        return plain
    if type(value) is dict:                       # {input name: id}, {file: fingerprint}
        parts = [(plain_json(k), plain_json(v)) for k, v in sorted(value.items())]
        if all(k is not None and v is not None for k, v in parts):
            return "{" + ",".join(f"{k}:{v}" for k, v in parts) + "}"
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def stage_id(kind: str, version: int, config_json: str, inputs: dict[str, str],
             files: dict[str, str] | None = None) -> str:
    """`config_json` is the config's canonical JSON (`StrictModel.id_json()`); `files` maps the local
    files the stage reads to content fingerprints (`compiler.fingerprint`)."""
    payload = (f'{{"config":{config_json},"files":{canonical_json(files or {})},"inputs":{canonical_json(inputs)},'
               f'"kind":{canonical_json(kind)},"version":{canonical_json(version)}}}')
    digest = hashlib.sha256(payload.encode()).hexdigest()
    return f"{kind}-{digest[:ID_HEX]}"
