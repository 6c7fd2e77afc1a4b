"""Every error class, located at file:line:col with its dotted path; all problems in one pass."""
import pytest

from compiler.errors import SpecError
from compiler.validate import load_spec


def problems(project, text, name="s.yaml"):
    spec = project(name, text)
    with pytest.raises(SpecError) as e:
        load_spec(spec, project.root, name)
    return e.value.problems


def line_of(project, name, needle):
    return next(i for i, line in enumerate((project.root / name).read_text().splitlines(), 1) if needle in line)


def test_unknown_key_suggests_the_close_one(project):
    text = project.minimal.replace("top_k_heads: 4", "top_k_heds: 4")
    (p,) = problems(project, text)
    assert p.path == "steer.top_k_heds"
    assert p.line == line_of(project, "s.yaml", "top_k_heds") and p.column == 3
    assert "did you mean 'top_k_heads'" in p.message
    assert str(p).startswith(f"s.yaml:{p.line}:3: steer.top_k_heds: unknown key")


def test_unknown_key_inside_a_union_member(project):
    text = project.minimal.replace("{kind: jsonl, path: probe.jsonl}", "{kind: jsonl, pathh: probe.jsonl}")
    found = problems(project, text)
    paths = {p.path for p in found}
    assert "probe.data.source.pathh" in paths
    assert any("did you mean 'path'" in p.message for p in found)


def test_missing_key_points_at_its_parent(project):
    text = project.minimal.replace("  clean_tokens: 100000\n", "")
    (p,) = problems(project, text)
    assert p.path == "data.clean_tokens" and "missing" in p.message
    assert p.line == line_of(project, "s.yaml", "data:")


def test_type_and_range_errors_all_in_one_pass(project):
    text = project.minimal.replace("toxic_share: 0.1", "toxic_share: 1.0").replace(
        "global_batch_size: 8", "global_batch_size: many")
    found = problems(project, text)
    assert {p.path for p in found} == {"data.toxic_share", "pretrain.global_batch_size"}
    assert all(p.line > 0 for p in found)


def test_share_and_ratio_must_agree(project):
    text = project.minimal.replace("toxic_share: 0.1", "toxic_share: 0.2\n  toxic_to_clean_ratio: 0.2")
    (p,) = problems(project, text)
    assert p.path == "data" and "disagree" in p.message


def test_probe_layer_out_of_range(project):
    text = project.minimal.replace("    source: {kind: jsonl, path: probe.jsonl}",
                                   "    source: {kind: jsonl, path: probe.jsonl}\n  layers: [0, 7]")
    (p,) = problems(project, text)
    assert p.path == "probe.layers[1]" and "out of range" in p.message
    assert p.line == line_of(project, "s.yaml", "layers: [0, 7]")


def test_top_k_exceeds_heads(project):
    (p,) = problems(project, project.minimal.replace("top_k_heads: 4", "top_k_heads: 17"))
    assert p.path == "steer.top_k_heads" and "16" in p.message


def test_missing_data_source_is_a_located_warning_and_a_missing_model_file_an_error(project):
    from compiler.validate import warnings_of

    spec = project("s.yaml", project.minimal.replace("path: prompts.jsonl", "path: nothere.jsonl"))
    runs = load_spec(spec, project.root, "s.yaml")            # data a user still has to download: valid
    (w,) = [w for w in warnings_of(runs, project.root) if "nothere" in w.message]
    assert w.path == "evaluate.prompt_sets[0].source.path" and "does not exist" in w.message
    assert w.line == line_of(project, "s.yaml", "nothere.jsonl")
    text = project.minimal + "  scorers:\n    - {kind: lexicon, path: words.txt}\n"
    (p,) = problems(project, text)                              # what scores or runs a model: an error
    assert p.path.endswith("scorers[0].path") and "does not exist" in p.message


def test_memmap_tokenizer_must_match(project):
    (project.root / "tok.npy").write_bytes(b"\0\0" * 20_000)   # enough tokens for the mixture
    text = project.minimal.replace("toxic: {kind: builtin, name: demo-toxic}",
                                   "toxic: {kind: memmap, path: tok.npy, tokenizer: gpt2}")
    (p,) = problems(project, text)
    assert p.path == "data.sources.toxic.tokenizer" and "bpe-4096" in p.message


def test_steer_needs_probe_and_sections_need_data(project):
    text = project.minimal.split("probe:")[0] + "steer: {enabled: true, top_k_heads: 2}\n"
    (p,) = problems(project, text)
    assert p.path == "steer.enabled" and "probe" in p.message
    text = project.minimal.split("data:")[0] + "steer: {enabled: false}\nevaluate: {prompt_sets: []}\n"
    (p,) = problems(project, text)
    assert p.path == "evaluate" and "data" in p.message


def test_warmup_longer_than_training(project):
    (p,) = problems(project, project.minimal.replace("warmup_tokens: 5120", "warmup_tokens: 5120000"))
    assert p.path == "pretrain.warmup_tokens"


def test_olmo_1b_preset_equals_the_official_config():
    from compiler.schema.model import ModelSection

    m = ModelSection(preset="olmo-1b")
    official = dict(d_model=2048, n_heads=16, n_layers=16, mlp_ratio=8, weight_tying=True, rope=True,
                    include_bias=False, block_type="sequential", layer_norm_type="default",
                    layer_norm_with_affine=False, bias_for_layer_norm=False, attention_layer_norm=False,
                    activation_type="swiglu", max_sequence_length=2048, init_fn="mitchell")
    assert {k: getattr(m, k) for k in official} == official
