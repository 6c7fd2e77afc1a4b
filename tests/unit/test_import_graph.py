"""No stage imports another stage: what two stages share lives in a module both import (`runtime.stats`,
`runtime.artifacts`, `runtime.sources`, `runtime.scoring`, `runtime.results`, …), so a stage can change
without reaching into another. The compiler never imports the runtime: what both need is the compiler's
(schemas, provenance), and what the compiler needs of the runtime (reading sources) is handed in by the
composition roots (`runtime.cli`, the Snakefile). Read from the source (every import statement, at any
depth)."""
import ast
from pathlib import Path

from compiler.kinds import KIND_ORDER

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"
COMPILER = RUNTIME.parent / "compiler"


def stage_of(module: str) -> str | None:
    """`runtime.score` / `runtime.report.paired` → the stage kind it belongs to, else None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "runtime" and parts[1] in KIND_ORDER else None


def imported(path: Path) -> set[str]:
    module = ".".join(path.relative_to(RUNTIME.parent).with_suffix("").parts)
    return imports_in(path.read_text(encoding="utf-8"), module)


def imports_in(source: str, module: str) -> set[str]:
    """Every module (and imported name) an import statement of `source` names, relative ones resolved
    (`module` of a package's `__init__.py` ends in `.__init__`: its `.x` is a sibling of `__init__`)."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[:-node.level]
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


def runtime_modules(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m == "runtime" or m.startswith("runtime."))


def test_the_compiler_never_imports_the_runtime():
    crossings = [f"{path.relative_to(RUNTIME.parent)} imports {m}" for path in sorted(COMPILER.rglob("*.py"))
                 for m in runtime_modules(imported(path))]
    assert not crossings, "\n".join(crossings)


def test_the_checks_see_a_crossing():
    assert stage_of("runtime.evaluate") == "evaluate" and stage_of("runtime.stats") is None
    assert stage_of("runtime.report.table") == "report"
    inside_a_function = "def peek():\n    from runtime.sources import SOURCE_READER\n    import runtime.stage as s\n"
    assert runtime_modules(imports_in(inside_a_function, "compiler.preflight.local")) == [
        "runtime.sources", "runtime.sources.SOURCE_READER", "runtime.stage"]
    assert runtime_modules(imports_in("from .schema import Spec\nimport runtimes\n", "compiler.cli")) == []
