"""Where a stage instance reads and writes: decided by the runtime from its verified id, never by an
editable field of its stage JSON.

A stage JSON's `output`, `root` and the folders of its input paths are not part of the content id, so an
edited one could point anywhere (`output: "../victim"` once replaced a folder outside the project). Here:
- the project root is where the stage JSON lives: `<root>/build/stages/<id>.json` as compiled, or a JSON
  placed directly in `<root>`; a `root` field, if the JSON still has one, must name that same folder;
- the output is `results/<kind>/<id>`, its scratch `results/.tmp/<kind>/<id>` and `results/.work/<kind>/<id>`;
  an `output` field must say exactly that;
- an input is `results/<kind>/<name>`, `name` being the upstream id the content id covers, and must be
  published (its `stage.json` exists);
and every one of these must still lie inside `<root>/results` after resolving symlinks (`results/` itself
may be a link to a scratch disk; a link inside it pointing elsewhere is refused).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from compiler.errors import StageError
from compiler.ids import ID_HEX
from runtime.registry import STAGES

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""An input folder name: one plain path component (no `..`, no separators, no hidden names)."""
ID = re.compile(rf"^(?P<kind>[a-z_]+)-[0-9a-f]{{{ID_HEX}}}$")


@dataclass(frozen=True)
class StagePaths:
    """The folders one stage instance may touch, all checked to lie inside `root/results`."""

    root: Path
    final: Path
    tmp: Path
    work: Path
    inputs: dict[str, Path]


def project_root(config: Path, envelope: dict[str, Any]) -> Path:
    """The project a stage JSON file belongs to: the folder above `build/stages/`, else its own folder."""
    here = Path(config).resolve().parent
    root = here.parent.parent if (here.name, here.parent.name) == ("stages", "build") else here
    claimed = envelope.get("root")
    if claimed is not None and Path(str(claimed)).resolve() != root:
        raise StageError(
            f"{envelope.get('id')}: its stage JSON names root {claimed!r}, but it lives in the project {root}; "
            "a stage writes only into the project its JSON belongs to (recompile instead of editing the JSON)")
    return root


def stage_paths(envelope: dict[str, Any], root: Path) -> StagePaths:
    """The checked paths of a stage instance whose config its id was proven to name."""
    kind, sid = envelope["kind"], envelope["id"]
    if kind not in STAGES or not ID.match(sid) or ID.match(sid)["kind"] != kind:
        raise StageError(f"{sid!r} is not a {kind!r} stage id (`<kind>-<{ID_HEX} hex>` of a known kind)")
    own = f"results/{kind}/{sid}"
    if envelope.get("output", own) != own:
        raise StageError(
            f"{sid}: its stage JSON says output {envelope['output']!r}, but a stage writes only to {own} "
            "(the runtime decides where; recompile the spec instead of editing the stage JSON)")
    results = root / "results"
    inside = os.path.realpath(results)
    return StagePaths(
        root=root, final=_inside(results / kind / sid, inside, sid, "its output folder"),
        tmp=_inside(results / ".tmp" / kind / sid, inside, sid, "its scratch folder"),
        work=_inside(results / ".work" / kind / sid, inside, sid, "its work folder"),
        inputs={name: _input(sid, name, path, results, inside) for name, path in envelope["inputs"].items()},
    )


def _input(sid: str, name: str, path: Any, results: Path, inside: str) -> Path:
    """`results/<kind>/<upstream id>`, inside results/ once resolved, and published."""
    parts = PurePosixPath(str(path)).parts
    ok = len(parts) == 3 and parts[0] == "results" and parts[1] in STAGES and NAME.match(parts[2])
    named = ID.match(parts[2]) if ok else None
    if not ok or (named is not None and named["kind"] != parts[1]):
        raise StageError(f"{sid}: input {name!r} is {path!r}, not results/<kind>/<upstream id>; "
                         "recompile the spec instead of editing the stage JSON")
    folder = _inside(results / parts[1] / parts[2], inside, sid, f"input {name!r}")
    if not (folder / "stage.json").is_file():
        raise StageError(f"{sid}: input {name!r} ({folder}) is not a published stage output (no stage.json): "
                         "run its stage first")
    return folder


def _inside(path: Path, inside: str, sid: str, what: str) -> Path:
    """`path` itself, after checking that symlinks along it do not lead out of `inside`."""
    real = os.path.realpath(path)
    if os.path.commonpath([real, inside]) != inside:
        raise StageError(f"{sid}: {what} {path} resolves to {real}, outside {inside}; a stage writes and "
                         "reads only inside results/ (remove the link)")
    return path
