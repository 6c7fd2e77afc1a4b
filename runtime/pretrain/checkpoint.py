"""Pretraining checkpoints that survive a crash mid-save, a cut or altered file and a change of world size.

In the stage's work folder (ideas from OLMo-core's checkpointer, `olmo_core/distributed/checkpoint`):
- `step-00000008.pt` (format `full`): one `torch.save` zip of the whole model and optimizer state, gathered
  on rank 0, with the step and every rank's RNG states; fine while one rank can hold a model (1 B).
- `step-00000008.dcp/` (format `sharded`): a `torch.distributed.checkpoint` folder in which every rank
  writes its own shards (it also reshards on load), plus `train.pt` (step, world size, every rank's RNG).
- `<name>.json` beside each: its step, format, world size and every file's size and sha256, written after
  the checkpoint is in place, so a checkpoint with a sidecar was complete when it was saved.

A save writes under a temporary name `.<name>.tmp-<host>-<pid>`, fsyncs each file, renames, fsyncs the
folder, then writes the sidecar the same way, and keeps the two newest complete checkpoints (a damaged
newest one still leaves one to resume from). A resume verifies the newest (sizes and checksums, every rank
hashing a share of the files; a `full` file without sidecar — the save died between rename and sidecar,
or an older version wrote it — by its zip CRCs), moves a damaged one to `damaged/` saying why, and falls
back to the next; with none usable it starts from scratch and says so. Temporary files of saves that died
are removed first: only one attempt of a stage instance runs at a time (Snakemake holds its output), so a
temporary file is stale unless its process is alive on this host.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import socket
import sys
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from compiler.errors import StageError
from runtime.artifacts import fsync_dir
from runtime.pretrain.process_group import Runtime, barrier, distributed

Format = Literal["full", "sharded"]
KEEP = 2
"""Complete checkpoints kept: the newest may be damaged after its save (a disk, a copy), the older one not."""
SUFFIX: dict[str, str] = {".pt": "full", ".dcp": "sharded"}
NAME = re.compile(r"^step-(\d+)(\.pt|\.dcp)$")
TMP = re.compile(r"^\..+\.tmp-(?:(?P<host>.+)-)?(?P<pid>\d+)$")
TRAIN_STATE = "train.pt"
DAMAGED = "damaged"
CHUNK = 8 << 20


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint in the work folder: a `full` file or a `sharded` folder."""

    step: int
    path: Path

    @property
    def name(self) -> str:
        return f"step-{self.step}"

    @property
    def format(self) -> Format:
        return SUFFIX[self.path.suffix]  # type: ignore[return-value]

    @property
    def sidecar(self) -> Path:
        return self.path.with_name(self.path.name + ".json")


@dataclass
class Restored:
    """What a resume restored; `world_size_changes` lists every resume of this run that could not restore
    the per-rank RNG states (carried in each later checkpoint, reported in the stage metrics)."""

    step: int
    world_size_changes: list[dict[str, Any]] = field(default_factory=list)


# --- files ----------------------------------------------------------------------------------------

class _HashingWriter:
    """A write-only file wrapper that counts and hashes what `torch.save` writes (no second read)."""

    def __init__(self, f: BinaryIO):
        self.f, self.size, self.sha = f, 0, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def tmp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}")


def _write_synced(obj: Any, path: Path) -> dict[str, Any]:
    """`torch.save` to `path`, fsynced; its size and sha256."""
    with open(path, "wb") as f:
        writer = _HashingWriter(f)
        torch.save(obj, writer)
        f.flush()
        os.fsync(f.fileno())
    return {"bytes": writer.size, "sha256": writer.sha.hexdigest()}


def _replace_synced(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)
    fsync_dir(final.parent)


def _write_json_synced(path: Path, obj: Any) -> None:
    tmp = tmp_name(path)
    with open(tmp, "w") as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True))
        f.flush()
        os.fsync(f.fileno())
    _replace_synced(tmp, path)


def _digest(path: Path) -> dict[str, Any]:
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": sha.hexdigest()}


# --- collectives (no-ops without a process group) -------------------------------------------------

def _broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(obj: Any, world_size: int) -> list[Any]:
    if not distributed():
        return [obj]
    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out




@contextmanager
def _quiet_sharded_tensor() -> Iterator[None]:
    """FSDP's sharded state dicts still use ShardedTensor and warn about it on every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ShardedTensor.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*(Multiple backends|_get_pg_default_device).*")
        yield


# --- RNG ------------------------------------------------------------------------------------------

def rng_state(rt: Runtime) -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if rt.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(rt.device)
    return state


def restore_rng_state(state: dict[str, Any], rt: Runtime) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and rt.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], rt.device)


def full_state_options(rt: Runtime) -> StateDictOptions:
    """Unsharded state dicts; offloading to CPU only from GPUs (FSDP's offload segfaults on CPU tensors)."""
    return StateDictOptions(full_state_dict=True, cpu_offload=rt.device.type != "cpu")


SHARDED = StateDictOptions(full_state_dict=False)


# --- the work folder ------------------------------------------------------------------------------

def checkpoints(work: Path) -> list[Checkpoint]:
    """Every checkpoint in `work`, newest first."""
    found = [Checkpoint(int(m[1]), p) for p in work.iterdir() if (m := NAME.match(p.name))]
    return sorted(found, key=lambda c: (c.step, c.path.name), reverse=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale(work: Path) -> list[Path]:
    """Remove the temporary files and folders of saves whose process is gone (rank 0, before resuming)."""
    removed = []
    host = socket.gethostname()
    for path in sorted(work.iterdir()):
        m = TMP.match(path.name)
        if m is None or (m["host"] in (None, host) and _alive(int(m["pid"]))):
            continue
        _remove(path)
        removed.append(path)
        print(f"pretrain: removed {path}, left by a save that did not finish (process {m['pid']} is gone)",
              file=sys.stderr, flush=True)
    return removed


def prune(work: Path) -> None:
    """Keep the KEEP newest complete checkpoints (with a sidecar); remove the rest and orphan sidecars."""
    kept = [c for c in checkpoints(work) if c.sidecar.is_file()][:KEEP]
    for c in checkpoints(work):
        if c not in kept:
            c.sidecar.unlink(missing_ok=True)  # first: a checkpoint without sidecar is never trusted more
            _remove(c.path)
    for sidecar in work.glob("step-*.json"):
        if not sidecar.with_suffix("").exists():
            sidecar.unlink()
    fsync_dir(work)


def move_aside(c: Checkpoint, work: Path) -> Path:
    """Move a damaged checkpoint (and its sidecar) to `work/damaged/`, for whoever wants to look at it."""
    aside = work / DAMAGED
    aside.mkdir(exist_ok=True)
    for path in (c.path, c.sidecar):
        if path.exists():
            target = aside / path.name
            if target.exists():
                _remove(target)
            os.replace(path, target)
    return aside / c.path.name


# --- save -----------------------------------------------------------------------------------------

def save_checkpoint(work: Path, step: int, dist_model: torch.nn.Module, optim: torch.optim.Optimizer,
                    rt: Runtime, *, fmt: Format = "full",
                    world_size_changes: list[dict[str, Any]] | None = None) -> None:
    """Save model, optimizer, step and every rank's RNG (a collective: every rank calls it).

    A save that fails (a full disk, a file size limit) removes its temporary files and stops the stage
    with a clear error: the checkpoints saved before it are untouched, and a rerun resumes from them."""
    train_state = {"step": step, "world_size": rt.world_size, "rng": _gather(rng_state(rt), rt.world_size),
                   "world_size_changes": list(world_size_changes or [])}
    try:
        if fmt == "full":
            final, files = _save_full(work, step, dist_model, optim, rt, train_state)
        else:
            final, files = _save_sharded(work, step, dist_model, optim, rt, train_state)
        if rt.is_main:
            _write_json_synced(final.with_name(final.name + ".json"),
                               {"step": step, "format": fmt, "world_size": rt.world_size, "files": files})
            prune(work)
    except (OSError, RuntimeError, CheckpointException) as exc:
        for tmp in work.glob(f".step-{step:08d}.*.tmp-{socket.gethostname()}-{os.getpid()}"):
            _remove(tmp)
        raise StageError(f"pretrain: saving the checkpoint of step {step} in {work} failed "
                         f"({type(exc).__name__}: {exc}); the checkpoints saved before it are intact: free "
                         "space (or fix the error) and rerun to resume from them") from None
    barrier()


def _save_full(work: Path, step: int, dist_model: torch.nn.Module, optim: torch.optim.Optimizer,
               rt: Runtime, train_state: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    model_sd, optim_sd = get_state_dict(dist_model, optim, options=full_state_options(rt))
    final = work / f"step-{step:08d}.pt"
    if not rt.is_main:
        return final, {}
    tmp = tmp_name(final)
    record = _write_synced({**train_state, "model": model_sd, "optim": optim_sd}, tmp)
    _replace_synced(tmp, final)
    return final, {final.name: record}


def _save_sharded(work: Path, step: int, dist_model: torch.nn.Module, optim: torch.optim.Optimizer,
                  rt: Runtime, train_state: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Every rank writes its shards into one temporary folder (`sync_files` fsyncs each); every rank
    hashes a share of the files; rank 0 renames the folder into place."""
    final = work / f"step-{step:08d}.dcp"
    tmp: Path = _broadcast(tmp_name(final) if rt.is_main else None)
    with _quiet_sharded_tensor():
        model_sd, optim_sd = get_state_dict(dist_model, optim, options=SHARDED)
        dcp.save({"model": model_sd, "optim": optim_sd},
                 storage_writer=dcp.FileSystemWriter(tmp, sync_files=True))
    if rt.is_main:
        _write_synced(train_state, tmp / TRAIN_STATE)
    barrier()
    names: list[str] = _broadcast(sorted(p.name for p in tmp.iterdir()) if rt.is_main else None)
    shares = _gather({n: _digest(tmp / n) for n in names[rt.rank::rt.world_size]}, rt.world_size)
    if rt.is_main:
        fsync_dir(tmp)
        _replace_synced(tmp, final)
    return final, {name: record for share in shares for name, record in share.items()}


# --- verify and resume ----------------------------------------------------------------------------

def _zip_problem(path: Path, *, scan: bool) -> str | None:
    """Why `path` is not a complete torch.save zip (its directory comes last, so a cut file fails)."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip() if scan else None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f"not a complete torch.save zip: {exc}"
    return f"zip record {bad} fails its CRC" if bad else None


def _file_problem(path: Path, record: dict[str, Any]) -> str | None:
    if not path.is_file():
        return f"{path.name} is missing"
    size = path.stat().st_size
    if size != record["bytes"]:
        return f"{path.name} holds {size} bytes, its sidecar says {record['bytes']}: cut short or grown"
    if _digest(path)["sha256"] != record["sha256"]:
        return f"the sha256 of {path.name} differs from its sidecar's: its bytes changed after the save"
    return None


def _my_problem(c: Checkpoint, rt: Runtime) -> str | None:
    """This rank's share of the verification of `c`."""
    if not c.sidecar.is_file():
        if c.format == "sharded":
            return "no sidecar: its save did not finish"
        return _zip_problem(c.path, scan=True) if rt.is_main else None
    try:
        files = json.loads(c.sidecar.read_text())["files"]
        items = sorted((str(k), dict(v)) for k, v in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"its sidecar {c.sidecar.name} is unreadable: {exc}"
    base = c.path.parent if c.format == "full" else c.path
    for name, record in items[rt.rank::rt.world_size]:
        try:
            if (problem := _file_problem(base / name, record)) is not None:
                return problem
        except (OSError, KeyError) as exc:
            return f"{name} cannot be checked: {exc}"
    if c.format == "full" and rt.is_main:
        return _zip_problem(c.path, scan=False)
    return None


def verify(c: Checkpoint, rt: Runtime) -> str | None:
    """Why `c` is damaged, or None (a collective: every rank checks its share of the files)."""
    return next((p for p in _gather(_my_problem(c, rt), rt.world_size) if p is not None), None)


def usable_checkpoint(work: Path, rt: Runtime) -> Checkpoint | None:
    """The newest checkpoint that verifies; the damaged ones before it are reported and moved aside.

    Rank 0 lists (and first clears stale temporary files); every rank takes part in each verification."""
    if rt.is_main:
        clear_stale(work)
    found: list[Checkpoint] = _broadcast(checkpoints(work) if rt.is_main else None)
    damaged: list[tuple[Checkpoint, str]] = []
    chosen = None
    for c in found:
        if (problem := verify(c, rt)) is None:
            chosen = c
            break
        damaged.append((c, problem))
    if rt.is_main:
        then = f"resuming from {chosen.name}" if chosen else "no usable checkpoint is left; starting from scratch"
        for c, problem in damaged:
            aside = move_aside(c, work)
            print(f"pretrain: checkpoint {c.name} is damaged ({problem}); {then} (moved it to {aside})",
                  file=sys.stderr, flush=True)
    barrier()
    return chosen


def load_checkpoint(c: Checkpoint, dist_model: torch.nn.Module, optim: torch.optim.Optimizer,
                    rt: Runtime) -> Restored:
    """Restore a verified checkpoint of either format onto any world size (a collective).

    Model, optimizer, step and data position always come back; the per-rank RNG states only on the world
    size that saved them: otherwise that is logged, and recorded in the result."""
    try:
        if c.format == "full":
            # Our own file, holding numpy/python RNG objects: the torch ≥ 2.6 weights_only default refuses them.
            state = torch.load(c.path, map_location="cpu", weights_only=False)
            set_state_dict(dist_model, optim, model_state_dict=state["model"], optim_state_dict=state["optim"],
                           options=StateDictOptions(full_state_dict=True))
        else:
            state = _load_sharded(c, dist_model, optim)
    except (RuntimeError, OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile,
            CheckpointException) as exc:
        raise StageError(f"pretrain: checkpoint {c.path} passed its checks but cannot be restored "
                         f"({type(exc).__name__}: {exc}); move it away to resume from an older one") from None
    step, saved_world = int(state["step"]), int(state["world_size"])
    changes = list(state.get("world_size_changes", []))
    if saved_world == rt.world_size:
        restore_rng_state(state["rng"][rt.rank], rt)
    else:
        kinds = ", ".join(state["rng"][0]) if state["rng"] else "python, numpy, torch"
        changes.append({"step": step, "from_world_size": saved_world, "to_world_size": rt.world_size,
                        "not_restored": f"per-rank RNG states ({kinds})"})
        if rt.is_main:
            print(f"pretrain: {c.name} was saved on {saved_world} process(es), this run has {rt.world_size}: "
                  f"restored the model, optimizer, step and data position; not restored: the per-rank RNG "
                  f"states ({kinds}) of the saving run; this run is no longer bit-identical to an "
                  f"uninterrupted one", file=sys.stderr, flush=True)
    return Restored(step=step, world_size_changes=changes)


def _load_sharded(c: Checkpoint, dist_model: torch.nn.Module, optim: torch.optim.Optimizer) -> dict[str, Any]:
    """Load the shards into this rank's (sharded) state dicts, resharding if the world size changed."""
    with _quiet_sharded_tensor():
        model_sd, optim_sd = get_state_dict(dist_model, optim, options=SHARDED)
        states = {"model": model_sd, "optim": optim_sd}
        dcp.load(states, checkpoint_id=c.path)
        set_state_dict(dist_model, optim, model_state_dict=states["model"], optim_state_dict=states["optim"],
                       options=SHARDED)
    return torch.load(c.path / TRAIN_STATE, map_location="cpu", weights_only=False)
