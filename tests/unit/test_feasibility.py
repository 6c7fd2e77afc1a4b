"""Compile-time feasibility: every sweep point's mixture against the tokens its sources declare."""
import pytest

from compiler.errors import SpecError
from compiler.validate import load_spec, warnings_of

CLEAN = 100_000  # MINIMAL's clean_tokens
TOXIC = "toxic: {kind: builtin, name: demo-toxic}"


def toxic_needed(share: float) -> int:
    """The paper's mixture: toxic tokens added on top of a fixed clean budget."""
    return round(CLEAN * share / (1 - share))


def spec_with(project, declared: int, shares: list[float], extra: str = "") -> str:
    text = project.minimal.replace(TOXIC, f"toxic: {{kind: builtin, name: demo-toxic, declared_tokens: {declared}}}")
    text = text.replace("toxic_share: 0.1", f"toxic_share: {shares[0]}{extra}")
    return text + f"sweep:\n  grid:\n    data.toxic_share: [{', '.join(map(str, shares))}]\n"


def problems(project, text, name="s.yaml"):
    with pytest.raises(SpecError) as e:
        load_spec(project(name, text), project.root, name)
    return e.value.problems


def line_of(project, name, needle):
    return next(i for i, line in enumerate((project.root / name).read_text().splitlines(), 1) if needle in line)


def test_a_share_beyond_the_declared_toxic_tokens_fails_naming_the_share(project):
    declared = toxic_needed(0.2)  # 0.2 just fits; 0.25 does not
    (p,) = problems(project, spec_with(project, declared, [0.1, 0.2, 0.25]))
    assert p.path == "data.toxic_share" and p.line == line_of(project, "s.yaml", "data.toxic_share: [")
    needed = toxic_needed(0.25)
    for number in (needed, declared, needed - declared):
        assert f"{number:,}" in p.message
    assert "toxic share 0.25" in p.message and "allow_repetition" in p.message


def test_shares_within_the_declared_tokens_validate(project):
    runs = load_spec(project("s.yaml", spec_with(project, toxic_needed(0.25), [0.0, 0.1, 0.25])), project.root)
    assert len(runs) == 3 and warnings_of(runs) == []


def test_repetition_allows_a_share_beyond_the_declared_tokens_and_says_how_many_passes(project):
    declared = toxic_needed(0.1)
    text = spec_with(project, declared, [0.1, 0.25], "\n  allow_repetition: true")
    runs = load_spec(project("s.yaml", text), project.root)
    (w,) = warnings_of(runs)
    assert w.path == "data.toxic_share" and "toxic share 0.25" in w.message
    assert f"{toxic_needed(0.25) / declared:.2f} times" in w.message


def test_too_few_clean_tokens_fails_at_the_clean_budget(project):
    text = project.minimal.replace("clean: {kind: builtin, name: demo-clean}",
                                   f"clean: {{kind: builtin, name: demo-clean, declared_tokens: {CLEAN}}}")
    (p,) = problems(project, text)  # the held-out tokens come from the clean source too
    assert p.path == "data.clean_tokens" and "held out" in p.message


def test_a_ratio_written_instead_of_a_share_is_where_the_problem_points(project):
    text = project.minimal.replace(TOXIC, "toxic: {kind: builtin, name: demo-toxic, declared_tokens: 1000}")
    text = text.replace("toxic_share: 0.1", "toxic_to_clean_ratio: 0.5")
    (p,) = problems(project, text)
    assert p.path == "data.toxic_to_clean_ratio" and p.line == line_of(project, "s.yaml", "toxic_to_clean_ratio")


def test_a_memmap_source_holds_its_file_size_in_tokens(project):
    tokens = toxic_needed(0.1) - 1
    (project.root / "toxic.npy").write_bytes(b"\0\0" * tokens)
    text = project.minimal.replace(TOXIC, "toxic: {kind: memmap, path: toxic.npy, tokenizer: bpe-4096}")
    (p,) = problems(project, text)
    assert p.path == "data.toxic_share" and f"declares {tokens:,}" in p.message and "1 short" in p.message
