"""`python -m runtime.demo_data [folder]`: regenerate the JSONL demo sets (default `data/demo/`)."""
from __future__ import annotations

import sys
from pathlib import Path

from .sets import write_sets

if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "data" / "demo"
    for path in write_sets(folder):
        print(f"wrote {path}")
