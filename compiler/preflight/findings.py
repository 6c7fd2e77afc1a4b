"""What a preflight check finds: a problem (the run would fail), a warning (it would run, but not as
meant) or an info line, tied to the spec key it comes from."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["problem", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    path: tuple[Any, ...]  # spec key path; ("disk",) or ("gpus",): about this machine, no spec key
    message: str
