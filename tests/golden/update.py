"""Regenerate the golden files after an intended change; review the diff before committing.

    python tests/golden/update.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from compiler.render import render_rules  # noqa: E402
from compiler.kinds import KIND_ORDER
from compiler.workflow import compile_spec  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"


def plan_summary(plan) -> dict:
    """Runs and the instance graph. Ids hash every config field, so any change of plan shows here;
    `mixsteer diff` explains it."""
    return {
        "runs": {r.name: r.roles for r in plan.runs},
        "instances": {i.id: {"kind": i.kind, "inputs": i.inputs} for i in plan.instances.values()},
    }


def main() -> None:
    (GOLDEN / "rules.smk").write_text(render_rules(KIND_ORDER, ["demo"], ROOT / "build" / "demo" / "rules.smk"))
    for spec in sorted((ROOT / "specs").glob("*.yaml")):
        plan = compile_spec(spec.relative_to(ROOT), ROOT)
        (GOLDEN / f"{spec.stem}.plan.json").write_text(json.dumps(plan_summary(plan), indent=2, sort_keys=True) + "\n")
    print(f"updated {GOLDEN}")


if __name__ == "__main__":
    main()
