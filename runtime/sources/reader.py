"""The runtime's readers as preflight uses them (`compiler.preflight.local.SourceReader`): the CLI and
the Snakefile hand `SOURCE_READER` to the compiler, which never imports the runtime itself."""
from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

from compiler.preflight.local import SourceReader

from .pipeline import iter_records
from .records import field_value


def peek_records(source: Any, root: Path, n: int) -> list[dict[str, Any]]:
    """The first `n` records of a source through the stages' own pipeline (no text checks)."""
    return list(islice(iter_records(source, root, text_fields=()), n))


SOURCE_READER = SourceReader(peek=peek_records, field=field_value)
