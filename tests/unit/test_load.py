"""YAML loading: positions, duplicate keys, unsafe tags, syntax errors — all as file:line:col."""
import pytest

from compiler.errors import SpecError
from compiler.load import dotted, load_yaml


def test_positions_of_keys_and_items(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("a:\n  b: 1\n  c:\n    - x\n    - y\n")
    data, pos = load_yaml(f)
    assert data == {"a": {"b": 1, "c": ["x", "y"]}}
    assert (pos[("a", "b")].line, pos[("a", "b")].column) == (2, 3)
    assert pos[("a", "c", 1)].line == 5


def test_duplicate_key_is_an_error_naming_both_lines(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("seed: 1\nmodel: {}\nseed: 2\n")
    with pytest.raises(SpecError) as e:
        load_yaml(f)
    (p,) = e.value.problems
    assert (p.line, p.column, p.path) == (3, 1, "seed")
    assert "duplicate key" in p.message and "line 1" in p.message


def test_object_constructing_tag_is_refused(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError) as e:
        load_yaml(f)
    assert e.value.problems[0].line == 1
    assert "tag" in e.value.problems[0].message


def test_syntax_error_has_line(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(SpecError) as e:
        load_yaml(f)
    assert e.value.problems[0].line >= 2
    assert "YAML syntax" in e.value.problems[0].message


def test_dotted_paths():
    assert dotted(("probe", "layers", 2)) == "probe.layers[2]"
    assert dotted(()) == ""
