"""The committed spec reference is generated from the models and must be current."""
from pathlib import Path

from compiler.reference import render

ROOT = Path(__file__).resolve().parents[2]


def test_spec_reference_is_current():
    committed = (ROOT / "docs" / "spec-reference.md").read_text()
    assert committed == render(), "regenerate: python -m compiler.reference > docs/spec-reference.md"


def test_every_field_is_documented():
    text = render()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    undocumented = [r for r in rows if r.rstrip().endswith("|  |")]
    assert len(rows) > 100
    assert len(undocumented) < len(rows) // 4, undocumented[:10]
