"""The face every stage shares: a stage JSON in, an output folder out, written atomically.

A stage JSON (written by `compiler.render`) is an envelope around the stage's `Config` dump:

    {"kind": "probe", "id": "probe-…", "version": 1, "config": {…},
     "inputs": {"activations": "results/activations/activations-…"},
     "output": "results/probe/probe-…", "resources": {…}}

Where it runs and publishes is not read from it: `runtime.stage_paths` derives every path from the
verified id and the project the JSON lives in (`<root>/build/stages/<id>.json`).

`execute` re-validates `config` with the stage's own `Config` class, runs `run(cfg, ctx)` inside
`results/.tmp/<kind>/<id>/`, writes `metrics.json` and then `stage.json` (the provenance manifest, and
the file Snakemake waits for) and finally renames the folder into place. A failure leaves no output that
looks finished; a stage that can resume keeps its checkpoints in `ctx.work` (`results/.work/…`), which
survives failures and is removed after success. A stop signal (SIGTERM, SIGUSR1) during `run` ends the
attempt with exit 75 and no output folder (`runtime.preempt.stage_stops`: a resuming stage saves first, a
stage declaring `RESTART` says on its rerun that it restarted); once `run` has returned, a stop waits for
the publish.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from compiler.errors import StageError
from compiler.provenance import git_commit, package_versions
from runtime.device import require_resources
from runtime.launch_worker import exit_if_orphaned
from runtime.preempt import StopSignals, pause_point, stage_stops
from runtime.stage_paths import stage_paths


@dataclass(frozen=True)
class StageContext:
    """Everything a stage may touch besides its config: resolved paths and the thread budget."""

    kind: str
    stage_id: str
    root: Path
    out: Path
    work: Path
    inputs: dict[str, Path]
    threads: int = 1
    resources: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    """The stage JSON's `files`: each local file the config reads → its content fingerprint at compile time."""

    def resolve(self, path: str | os.PathLike) -> Path:
        """A path from a config: relative paths are relative to the project root."""
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def input(self, name: str) -> Path:
        try:
            return self.inputs[name]
        except KeyError:
            raise StageError(f"{self.kind} {self.stage_id}: missing input {name!r} "
                             f"(have {sorted(self.inputs)})") from None


def strict_json(obj: Any) -> Any:
    """`obj` with every non-finite float (an interval over one unit, an undefined measure) as None,
    so the file is JSON that strict readers accept (`NaN` is not JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write strict JSON atomically (temp file + rename) with sorted keys; NaN and ±inf become null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(strict_json(obj), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n")
    os.replace(tmp, path)


def read_envelope(path: Path) -> dict[str, Any]:
    try:
        env = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StageError(f"cannot read stage config {path}: {exc}") from None
    for key in ("kind", "id", "version", "config", "inputs"):
        if key not in env:
            raise StageError(f"stage config {path} lacks {key!r}")
    return env


def execute(envelope: dict[str, Any], module: Any, *, root: Path | None = None,
            rank_zero: Callable[[], bool] = lambda: True) -> Path:
    """Validate, run and publish one stage instance; returns the final output folder. `root` is the
    project (`stage_paths.project_root` of the stage JSON file); an envelope built in memory may carry it
    as `root` instead. Every path comes from `stage_paths`, never from the envelope's fields."""
    kind, stage_id = envelope["kind"], envelope["id"]
    if envelope["version"] != module.VERSION:
        raise StageError(
            f"{stage_id} was planned with {kind} VERSION {envelope['version']} but the code is "
            f"VERSION {module.VERSION}: recompile the spec (snakemake does it on its next parse)"
        )
    cfg = validated_config(envelope, module)
    require_resources(envelope.get("resources", {}), kind)  # GPUs asked for, no CUDA: fail (runtime.device)
    if root is None and "root" not in envelope:
        raise StageError(f"{stage_id}: no project root (run it as `python -m runtime {kind} --config <stage JSON>`)")
    paths = stage_paths(envelope, Path(envelope["root"]) if root is None else root)
    root, final, tmp, work = paths.root, paths.final, paths.tmp, paths.work
    if rank_zero():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        work.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(
        kind=kind, stage_id=stage_id, root=root, out=tmp, work=work,
        inputs=paths.inputs,
        threads=int(envelope.get("resources", {}).get("threads", 1)),
        resources=envelope.get("resources", {}), files=envelope.get("files", {}),
    )
    started = time.time()
    with stage_stops(kind, getattr(module, "RESTART", None), tmp, work):  # a stop: exit 75, tmp removed
        metrics = module.run(cfg, ctx) or {}
    if not rank_zero():
        return final
    with StopSignals(kind, doing="publishing the finished output first") as stop:  # milliseconds: finish
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "stage.json", {
            "kind": kind, "id": stage_id, "version": module.VERSION,
            "config": envelope["config"], "inputs": envelope["inputs"], "files": envelope.get("files", {}),
            "git_commit": git_commit(root), "packages": package_versions(),
            "python": sys.version.split()[0], "started_unix": started,
            "seconds": round(time.time() - started, 3), **peak_memory(),
        })
        pause_point(kind, "publish", stop)
        publish(tmp, final)
        shutil.rmtree(work, ignore_errors=True)
        pause_point(kind, "published", stop)
    return final


def validated_config(envelope: dict[str, Any], module: Any) -> Any:
    """The stage config, validated by the stage's own model, and proven to be the config its id names: an
    edited stage JSON (a value the spec would reject, or any other change to what the id covers) must not
    run and publish under the original id."""
    from pydantic import ValidationError

    from compiler.ids import stage_id

    kind, claimed = envelope["kind"], envelope["id"]
    try:
        cfg = module.Config.model_validate(envelope["config"])
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise StageError(f"{claimed}: its stage config is not valid ({problems}); recompile the spec") from None
    inputs = {name: Path(path).name for name, path in envelope["inputs"].items()}
    actual = stage_id(kind, module.VERSION, cfg.id_json(), inputs, envelope.get("files", {}))
    if actual != claimed:
        raise StageError(f"{claimed}: its stage config was changed after compilation (its content is {actual}); "
                         "edit the spec and recompile instead of the stage JSON")
    return cfg


def peak_memory() -> dict[str, int]:
    """Peak resident memory of this process (rank 0 under torchrun) and, if CUDA was used, peak
    GPU memory allocated: what `resources.mem_mb` / GPU sizing should be calibrated against."""
    import resource

    peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}  # KiB on Linux
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["peak_gpu_mb"] = torch.cuda.max_memory_allocated() // 2**20
    return peak


def publish(tmp: Path, final: Path) -> None:
    """Move a finished folder into place; Snakemake may have pre-created an empty `final`."""
    if final.exists():
        if (final / "stage.json").exists():
            raise StageError(f"{final} is already complete; refusing to overwrite a finished output")
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    exit_if_orphaned()  # a stage whose launcher was killed never publishes (runtime.launch_worker)
    os.replace(tmp, final)
