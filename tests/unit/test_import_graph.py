"""No stage imports another stage: what two stages share lives in a module both import (`runtime.stats`,
`runtime.artifacts`, `runtime.sources`, `runtime.scoring`, `runtime.results`, …), so a stage can change
without reaching into another. Read from the source (every import statement, at any depth)."""
import ast
from pathlib import Path

from compiler.kinds import KIND_ORDER

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"


def stage_of(module: str) -> str | None:
    """`runtime.score` / `runtime.report.paired` → the stage kind it belongs to, else None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "runtime" and parts[1] in KIND_ORDER else None


def imported(path: Path) -> set[str]:
    package = ".".join(path.relative_to(RUNTIME.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0] + ".__init__"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:-node.level]
                base = ".".join(anchor + ([base] if base else []))
            out |= {base} | {f"{base}.{a.name}" for a in node.names}
    return out


def test_no_stage_module_imports_another_stage():
    crossings = []
    for path in RUNTIME.rglob("*.py"):
        me = stage_of(".".join(path.relative_to(RUNTIME.parent).with_suffix("").parts))
        if me is None:
            continue
        crossings += [f"{path.relative_to(RUNTIME.parent)} imports {m}" for m in sorted(imported(path))
                      if stage_of(m) not in (None, me)]
    assert not crossings, "\n".join(crossings)


def test_the_check_sees_a_crossing():
    assert stage_of("runtime.evaluate") == "evaluate" and stage_of("runtime.stats") is None
    assert stage_of("runtime.report.table") == "report"
