"""Shared base for every spec and stage-config model.

Every model forbids unknown keys (a typo is an error, never a silent default) and is frozen (a
validated spec is a value: the planner hashes it, nobody mutates it afterwards).

Fields that do not change a stage's results (worker counts, logging cadence, batch sizes of pure
inference) are marked with ``NotInId``: the planner leaves them out of the content id, so changing
them never reruns anything. The marker is opt-out on purpose: a field someone forgets to mark costs a
rerun, never a stale cache hit.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_core import to_jsonable_python

NOT_IN_ID = {"not_in_id": True}
"""Pass as ``Field(json_schema_extra=NOT_IN_ID)`` on fields that must not enter the content id."""


class StrictModel(BaseModel):
    """Forbid unknown keys, freeze instances, validate defaults and assignments."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @classmethod
    def id_excluded_fields(cls) -> set[str]:
        """Names of this model's own fields marked ``NOT_IN_ID``."""
        out = set()
        for name, field in cls.model_fields.items():
            extra = field.json_schema_extra
            if isinstance(extra, dict) and extra.get("not_in_id"):
                out.add(name)
        return out

    def id_dump(self) -> Any:
        """JSON-safe dump of the fields that enter the content id (recursively)."""
        return _id_dump(self)


def _id_dump(value: Any) -> Any:
    if isinstance(value, StrictModel):
        skip = type(value).id_excluded_fields()
        return {
            name: _id_dump(getattr(value, name))
            for name in type(value).model_fields
            if name not in skip
        }
    if isinstance(value, (list, tuple)):
        return [_id_dump(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _id_dump(v) for k, v in value.items()}
    return to_jsonable_python(value)
