"""The error family: callers catch "your spec is wrong" apart from real crashes.

The CLI prints a `MixsteerError` without a traceback (exit 2 for spec problems), and lets anything
else raise with its traceback, because that is a bug.
"""
from __future__ import annotations

from dataclasses import dataclass


class MixsteerError(Exception):
    """Base of every error mixsteer raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec, located."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.path or '<root>'}: {self.message}"


class SpecError(MixsteerError):
    """The spec is invalid; carries every problem found in one pass."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PlanError(MixsteerError):
    """A valid spec that cannot be planned (e.g. a stage input that no section provides)."""


class StageError(MixsteerError):
    """A stage failed for a reason the user can fix (missing data, bad checkpoint)."""
