"""extends (deep merge, origins, cycles) and sweeps (grid × zip, names, unknown paths)."""
import pytest

from compiler.errors import SpecError
from compiler.validate import load_spec


def test_extends_deep_merges_and_keeps_child_positions(project):
    project("base.yaml", project.minimal)
    child = project("child.yaml", """
        extends: base.yaml
        steer:
          alpha: 12.0
        pretrain:
          learning_rate: 123.0x
    """)
    with pytest.raises(SpecError) as e:
        load_spec(child, project.root, "child.yaml")
    (p,) = e.value.problems
    assert (p.file, p.line, p.path) == ("child.yaml", 5, "pretrain.learning_rate")


def test_extends_merge_values(project):
    project("base.yaml", project.minimal)
    child = project("child.yaml", "extends: base.yaml\nsteer:\n  alpha: 12.0\n")
    [(run, spec)] = load_spec(child, project.root)
    assert spec.steer.alpha == 12.0
    assert spec.steer.top_k_heads == 4  # kept from base
    assert spec.name == "child"


def test_error_in_base_points_at_base_file(project):
    project("base.yaml", project.minimal.replace("top_k_heads: 4", "top_k_heads: -1"))
    child = project("child.yaml", "extends: base.yaml\n")
    with pytest.raises(SpecError) as e:
        load_spec(child, project.root, "child.yaml")
    assert e.value.problems[0].file == "base.yaml"
    assert e.value.problems[0].path == "steer.top_k_heads"


def test_extends_cycle_is_detected(project):
    project("a.yaml", "extends: b.yaml\n")
    b = project("b.yaml", "extends: a.yaml\n")
    with pytest.raises(SpecError) as e:
        load_spec(b, project.root)
    assert "cycle" in e.value.problems[0].message


def test_grid_times_zip_and_run_names(project):
    spec = project("s.yaml", project.minimal + """
sweep:
  grid:
    data.toxic_share: [0.0, 0.1]
  zip:
    steer.alpha: [4.0, 8.0, 12.0]
    seed: [0, 1, 2]
""")
    runs = load_spec(spec, project.root)
    assert len(runs) == 6
    names = [r.name for r, _ in runs]
    assert names[0] == "toxic_share=0.0,alpha=4.0,seed=0"
    assert {(s.data.toxic_share, s.steer.alpha, s.seed) for _, s in runs} == {
        (t, a, sd) for t in (0.0, 0.1) for a, sd in ((4.0, 0), (8.0, 1), (12.0, 2))}


def test_unknown_sweep_path_names_it_and_suggests(project):
    spec = project("s.yaml", project.minimal + "sweep:\n  grid:\n    steer.alpah: [1.0]\n")
    with pytest.raises(SpecError) as e:
        load_spec(spec, project.root, "s.yaml")
    (p,) = e.value.problems
    assert p.path == "sweep.grid.steer.alpah" and p.line == _line_of(spec, "steer.alpah")
    assert "'alpah'" in p.message and "did you mean 'alpha'" in p.message


def test_zip_lengths_must_agree(project):
    spec = project("s.yaml", project.minimal + "sweep:\n  zip:\n    seed: [0, 1]\n    steer.alpha: [1.0]\n")
    with pytest.raises(SpecError) as e:
        load_spec(spec, project.root)
    assert "equal lengths" in e.value.problems[0].message


def test_bad_sweep_value_points_at_the_list_item(project):
    spec = project("s.yaml", project.minimal + "sweep:\n  grid:\n    data.toxic_share: [0.1, 1.5]\n")
    with pytest.raises(SpecError) as e:
        load_spec(spec, project.root, "s.yaml")
    (p,) = e.value.problems
    assert (p.line, p.path) == (_line_of(spec, "data.toxic_share"), "data.toxic_share")
    assert p.column > 20  # the item, not the key


def test_null_axis_in_child_removes_it(project):
    project("base.yaml", project.minimal + "sweep:\n  grid:\n    seed: [0, 1]\n    steer.alpha: [1.0, 2.0]\n")
    child = project("child.yaml", "extends: base.yaml\nsweep:\n  grid:\n    seed: null\n")
    runs = load_spec(child, project.root)
    assert [r.name for r, _ in runs] == ["alpha=1.0", "alpha=2.0"]


def _line_of(path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)
