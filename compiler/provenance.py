"""Which code made an output: the git commit of the project and the versions of the packages that shape
results. Recorded in `build/<spec>/lock.json` by the compiler and in every `stage.json` by the runtime
(kept out of stage ids and golden comparisons: the same spec gives the same ids on any checkout)."""
from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

TRACKED_PACKAGES = (
    "mixsteer", "torch", "ai2-olmo", "transformers", "trl", "datasets", "tokenizers",
    "scikit-learn", "numpy", "snakemake", "pydantic",
)


def package_versions() -> dict[str, str]:
    """Installed version of each tracked package (those not installed are left out)."""
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit(root: Path) -> str | None:
    """HEAD of the git checkout at `root`; None outside one (or without git)."""
    try:
        return subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None
