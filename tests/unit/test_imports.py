"""The compiler (and every stage's Config) imports without the ML stack: specs validate fast, anywhere."""
import subprocess
import sys

HEAVY = ("torch", "transformers", "trl", "olmo", "datasets", "sklearn", "matplotlib")


def test_compiler_and_stage_configs_do_not_import_the_ml_stack():
    code = (
        "import sys\n"
        "import compiler.cli, runtime.cli, compiler.plan, compiler.workflow, compiler.diff\n"
        "from runtime.registry import STAGES, load_stage\n"
        "[load_stage(k).Config for k in STAGES]\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
