"""Reads of upstream stage artifacts that end, for a missing, truncated or corrupt file, in one clear error.

A finished stage folder (`results/<kind>/<id>/`) can still be damaged afterwards: a copy cut short, a full
disk, a file edited by hand. Every read here turns that into a `StageError` naming the file, why it cannot
be read, and the stage folder to delete so the workflow rebuilds it, instead of a raw traceback from
safetensors, json or transformers deep inside a stage.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from compiler.errors import StageError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def stage_folder(path: Path) -> Path:
    """The stage output folder that holds `path` (`…/results/<kind>/<id>`), else the folder `path` is in."""
    path = Path(path)
    for folder in path.parents:
        if folder.parent.parent.name == "results":
            return folder
    return path.parent


def broken_artifact(path: Path, reason: str) -> StageError:
    """The error for an artifact that cannot be read: what is wrong and what to delete."""
    what = "is missing" if reason == "missing" else f"is truncated or corrupt ({reason})"
    return StageError(f"{path} {what}: delete {stage_folder(path)} and rerun to rebuild it")


def read_problem(exc: BaseException) -> str:
    """What a failed read of an artifact says in its error: "missing", else the OS or format error."""
    return "missing" if isinstance(exc, FileNotFoundError) else str(exc)


def read_json(path: Path) -> Any:
    """A JSON file written by a stage."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise broken_artifact(path, read_problem(exc)) from None
    except json.JSONDecodeError as exc:
        raise broken_artifact(path, f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def read_jsonl(path: Path) -> list[Any]:
    """The records of a JSON-lines file written by a stage (blank lines skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")   # not splitlines: U+2028 may sit in a text
    except (OSError, UnicodeDecodeError) as exc:
        raise broken_artifact(path, read_problem(exc)) from None
    records = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise broken_artifact(path, f"line {number} is not JSON: {exc.msg}") from None
    return records


def load_tensors(path: Path, framework: Literal["numpy", "pt"] = "numpy") -> dict[str, Any]:
    """Every tensor of a safetensors file, as numpy arrays or torch tensors."""
    from safetensors import SafetensorError

    if framework == "numpy":
        from safetensors.numpy import load_file
    else:
        from safetensors.torch import load_file
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise broken_artifact(path, read_problem(exc)) from None


def check_token_file(path: Path, dtype: str = "uint16") -> None:
    """A raw token file (a memmap without header) exists and holds whole tokens of `dtype`; a cut at a token
    boundary cannot be seen without a recorded length."""
    import numpy as np

    try:
        size = Path(path).stat().st_size
    except FileNotFoundError:
        raise broken_artifact(path, "missing") from None
    itemsize = np.dtype(dtype).itemsize
    if size % itemsize:
        raise broken_artifact(path, f"{size} bytes is not a whole number of {dtype} tokens")


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be read (missing, or a header that does not parse or promises more
    bytes than the file holds), or None; reads the header only."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            return None
    except (OSError, SafetensorError) as exc:
        return read_problem(exc)


def check_model_folder(folder: Path) -> None:
    """An HF model folder has its `config.json`, and each of its JSON files parses and each safetensors
    header matches its file's length (reads headers only: cheap next to loading the weights)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise broken_artifact(folder / "config.json", "missing")
    for path in sorted(folder.glob("*.json")):
        read_json(path)
    for path in sorted(folder.glob("*.safetensors")):
        if (problem := safetensors_problem(path)) is not None:
            raise broken_artifact(path, problem)


def load_causal_lm(folder: Path, **kwargs: Any) -> "PreTrainedModel":
    """`AutoModelForCausalLM.from_pretrained(folder, **kwargs)` of a stage's model folder, never from the Hub."""
    from transformers import AutoModelForCausalLM

    check_model_folder(folder)
    return _from_folder(AutoModelForCausalLM, folder, "model", kwargs)


def load_tokenizer(folder: Path, **kwargs: Any) -> "PreTrainedTokenizerBase":
    """`AutoTokenizer.from_pretrained(folder, **kwargs)` of a stage's model folder, never from the Hub."""
    from transformers import AutoTokenizer

    for path in sorted(Path(folder).glob("*.json")):
        read_json(path)
    return _from_folder(AutoTokenizer, folder, "tokenizer", kwargs)


def _from_folder(auto: Any, folder: Path, what: str, kwargs: dict[str, Any]) -> Any:
    """`auto.from_pretrained` of a local folder; a folder that does not load ends in `broken_artifact`."""
    from safetensors import SafetensorError

    try:
        return auto.from_pretrained(folder, local_files_only=True, **kwargs)
    except (OSError, ValueError, SafetensorError) as exc:
        raise broken_artifact(Path(folder), f"the {what} does not load: {exc}") from None


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable (the entry lives in the folder, not the file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


WEIGHT_FILES = ("config.json", "generation_config.json", "model.safetensors",
                "model.safetensors.index.json", "pytorch_model.bin")
"""Files of the input model folder that `save_pretrained` rewrites; every other file is copied."""


def save_model_folder(model: Any, model_dir: Path, out: Path) -> None:
    """`model` in HF format plus every non-weight file of `model_dir` (the tokenizer), byte for byte."""
    out.mkdir(parents=True)
    for f in model_dir.iterdir():
        if f.is_file() and f.name not in WEIGHT_FILES:
            shutil.copy2(f, out / f.name)
    model.save_pretrained(out)
