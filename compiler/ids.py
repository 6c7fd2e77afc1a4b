"""Content ids: what makes a stage instance new.

id = `<kind>-<first 12 hex of sha256(canonical JSON)>` of
    {"kind", "version" (the stage module's hand-bumped VERSION),
     "config" (its Config dump less NOT_IN_ID fields), "inputs" ({name: upstream id})}
— a Merkle hash: an upstream change changes every id downstream of it, nothing else does.

Canonical JSON: sorted keys, no whitespace, floats in Python's shortest round-trip spelling (so 0.10
and 0.1 hash alike; YAML `1e-3` and `0.001` too), -0.0 as 0.0, tuples as lists. Hashing validated
configs, never raw YAML text, means key order, comments and a default written out explicitly change
nothing. Code is not hashed: bump VERSION when a change of a stage changes its results.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any

ID_HEX = 12


def _normalize(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"non-finite float {value!r} cannot enter a stage id")
        return 0.0 if value == 0 else value
    if isinstance(value, dict):
        return {str(k): _normalize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(_normalize(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def stage_id(kind: str, version: int, config: Any, inputs: dict[str, str]) -> str:
    payload = {"kind": kind, "version": version, "config": config, "inputs": dict(sorted(inputs.items()))}
    digest = hashlib.sha256(canonical_json(payload).encode()).hexdigest()
    return f"{kind}-{digest[:ID_HEX]}"
