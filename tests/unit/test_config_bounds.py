"""One definition of each bound: a stage config refuses what the spec refuses, so an edited stage JSON fails
with a clear error naming the field instead of running (or ending in a traceback)."""
from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from compiler.ids import stage_id
from compiler.schema.spec import Spec
from compiler.stages import steer
from runtime import __main__ as runtime_cli
from runtime.registry import STAGES, load_stage

SECTION_OF = {"activations": "probe", "mix": "data", "tokenize": "data", "tokenizer": "data", "score": "evaluate"}
"""Stage kinds whose spec section is not named like the kind (the others: `Spec.<kind>`, if any)."""


def spec_models(kind: str) -> list[type[BaseModel]]:
    """The spec models a stage's config restates fields of: its section, then the spec's top level."""
    section = Spec.model_fields.get(SECTION_OF.get(kind, kind))
    model = _model_in(section.annotation) if section is not None else None
    return [m for m in (model, Spec) if m is not None]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class of `Section` or `Section | None`."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _literal_values(annotation: Any) -> set[Any]:
    """Every value a `Literal[...]` anywhere in `annotation` allows (empty: no Literal)."""
    if typing.get_origin(annotation) is typing.Literal:
        return set(typing.get_args(annotation))
    return set().union(*(_literal_values(a) for a in typing.get_args(annotation)))


def constraints(field: FieldInfo) -> dict[str, Any]:
    """What a field refuses: its bounds and patterns, its allowed literals, whether it is in the id."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return {"metadata": field.metadata, "literals": _literal_values(field.annotation),
            "not_in_id": bool(extra.get("not_in_id"))}


def restated_fields() -> list[tuple[str, str, type[BaseModel]]]:
    """(kind, field, spec model) for every stage config field named like a field of its spec models."""
    out = []
    for kind in STAGES:
        models = spec_models(kind)
        for name in load_stage(kind).Config.model_fields:
            owner = next((m for m in models if name in m.model_fields), None)
            if owner is not None:
                out.append((kind, name, owner))
    return out


@pytest.mark.parametrize("kind, name, owner", restated_fields(),
                         ids=lambda v: v.__name__ if isinstance(v, type) else str(v))
def test_a_restated_spec_field_has_the_spec_constraints(kind: str, name: str, owner: type[BaseModel]) -> None:
    runtime_field = load_stage(kind).Config.model_fields[name]
    assert constraints(runtime_field) == constraints(owner.model_fields[name]), (
        f"{kind}.Config.{name} restates {owner.__name__}.{name} with other bounds: declare it with "
        f"`same_as({owner.__name__}, {name!r})`")


def test_every_stage_kind_restates_some_spec_field() -> None:
    """Guards the mapping above: a kind whose section moved would otherwise check nothing."""
    assert {kind for kind, _, _ in restated_fields()} == set(STAGES)


STEER_CONFIG = {"top_k_heads": 3, "direction": "mass_mean", "alpha": 4.0, "positions": "last"}
STEER_INPUTS = {"model": "results/pretrain/pretrain-x", "probe": "results/probe/probe-x",
                "activations": "results/activations/activations-x"}


def write_steer_stage(root: Path, config: dict[str, Any]) -> Path:
    """A compiled-looking steer stage JSON whose id is that of the valid STEER_CONFIG, holding `config`."""
    sid = stage_id("steer", steer.VERSION, steer.Config(**STEER_CONFIG).id_json(),
                   {k: Path(v).name for k, v in STEER_INPUTS.items()}, {})
    path = root / "stage.json"
    path.write_text(json.dumps({"kind": "steer", "id": sid, "version": steer.VERSION, "config": config,
                                "inputs": STEER_INPUTS, "output": f"results/steer/{sid}", "root": str(root)}))
    return path


@pytest.mark.parametrize("edit, field", [
    ({"top_k_heads": 0}, "top_k_heads"),
    ({"alpha": -5}, "alpha"),
    ({"alpha": "strong"}, "alpha"),
    ({"layer_count": 2}, "layer_count"),
])
def test_an_edited_stage_json_is_refused_naming_the_field(tmp_path, capsys, edit, field) -> None:
    path = write_steer_stage(tmp_path, {**STEER_CONFIG, **edit})
    assert runtime_cli.main(["steer", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert f"{field}:" in err and "not valid" in err
    assert not (tmp_path / "results" / "steer").exists()
