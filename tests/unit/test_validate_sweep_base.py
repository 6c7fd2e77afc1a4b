"""Spec mistakes that used to pass: an empty spec, and a base value that a sweep overrides in every run."""
import pytest

from compiler.errors import SpecError
from compiler.validate import NOTHING_TO_RUN, load_spec

SHARE_SWEEP = "sweep:\n  grid:\n    data.toxic_share: [0.0, 0.1]\n"


def problems(project, text, name="s.yaml"):
    spec = project(name, text)
    with pytest.raises(SpecError) as e:
        load_spec(spec, project.root, name)
    return e.value.problems


def line_of(project, needle, name="s.yaml"):
    return next(i for i, line in enumerate((project.root / name).read_text().splitlines(), 1) if needle in line)


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "description: d\nresources: {}\n",
                                  "toy: {enabled: false}\nseed: 3\n"])
def test_a_spec_that_plans_nothing_is_an_error_saying_what_a_spec_needs(project, text):
    (p,) = problems(project, text)
    assert p.message == NOTHING_TO_RUN and "`data:`" in p.message and "toy" in p.message


def test_a_toy_only_spec_is_enough(project):
    spec = project("s.yaml", "toy: {enabled: true}\n")
    assert len(load_spec(spec, project.root, "s.yaml")) == 1


def test_an_invalid_base_value_hidden_by_the_sweep_is_reported_at_its_line(project):
    text = project.minimal.replace("toxic_share: 0.1", "toxic_share: [1, 2]") + SHARE_SWEEP
    (p,) = problems(project, text)
    assert p.path == "data.toxic_share" and p.line == line_of(project, "toxic_share: [1, 2]")
    assert "sweep overrides" in p.message


def test_an_invalid_sweep_value_is_reported_once_at_the_sweep(project):
    text = project.minimal + "sweep:\n  grid:\n    data.toxic_share: [0.0, 2.0]\n"
    (p,) = problems(project, text)
    assert p.path == "data.toxic_share" and p.line == line_of(project, "data.toxic_share: [0.0, 2.0]")


def test_both_wrong_two_problems_one_each(project):
    text = project.minimal.replace("toxic_share: 0.1", "toxic_share: -1") + \
        "sweep:\n  grid:\n    data.toxic_share: [0.0, 2.0]\n"
    found = problems(project, text)
    assert sorted(p.line for p in found) == sorted([line_of(project, "toxic_share: -1"),
                                                    line_of(project, "data.toxic_share: [0.0, 2.0]")])


def test_a_base_that_leaves_the_swept_value_to_the_sweep_is_fine(project):
    text = project.minimal.replace("  toxic_share: 0.1\n", "") + SHARE_SWEEP
    assert len(load_spec(project("s.yaml", text), project.root, "s.yaml")) == 2


def test_an_unswept_mistake_under_a_sweep_is_reported_once(project):
    text = project.minimal.replace("top_k_heads: 4", "top_k_heads: 0") + SHARE_SWEEP
    (p,) = problems(project, text)
    assert p.path == "steer.top_k_heads"


def test_a_whole_swept_section_keeps_its_base_checked(project):
    """Sweeping a mapping (`probe.data`) hides every base value under it."""
    text = project.minimal.replace("source: {kind: jsonl, path: probe.jsonl}",
                                   "source: {kind: jsonl, path: probe.jsonl, text_feld: t}") + \
        "sweep:\n  grid:\n    probe.data:\n      - {source: {kind: jsonl, path: probe.jsonl}}\n"
    (p,) = problems(project, text)
    assert p.path == "probe.data.source.text_feld" and p.line == line_of(project, "text_feld")
