"""Which changes move a stage id (marin-style table) — and which must not."""
from compiler.plan import build_plan
from compiler.validate import load_spec


def plan_of(project, text, name="s.yaml"):
    runs = load_spec(project(name, text), project.root)
    return build_plan("s", runs, project.root)


def roles(project, text):
    plan = plan_of(project, text)
    assert len(plan.runs) == 1
    return plan.runs[0].roles


def assert_same(project, a, b, role):
    assert roles(project, a)[role] == roles(project, b)[role], role


def assert_diff(project, a, b, role):
    assert roles(project, a)[role] != roles(project, b)[role], role


def test_id_table(project):
    base = project.minimal
    # irrelevant: key order, comments, float spelling, an explicit default, NOT_IN_ID fields, resources
    assert_same(project, base, base.replace("toxic_share: 0.1", "toxic_share: 1.0e-1  # comment"), "pretrain")
    assert_same(project, base, base.replace("precision: fp32", "precision: fp32\n  weight_decay: 0.1"), "pretrain")
    assert_same(project, base, base.replace("device_microbatch_size: 8", "device_microbatch_size: 4"), "pretrain")
    assert_same(project, base, base.replace("precision: fp32", "precision: fp32\n  log_interval_steps: 1"), "pretrain")
    assert_same(project, base, base + "resources:\n  pretrain: {gpus: 8, mem_mb: 1}\n", "pretrain")
    head = "\ndescription: minimal\nmodel: {preset: tiny}\n"
    assert_same(project, base, base.replace(head, "\n") + "model: {preset: tiny}\ndescription: other\n", "evaluate/iti")
    share = base.replace("toxic_share: 0.1", "toxic_share: 0.2")
    assert_same(project, share, base.replace("toxic_share: 0.1", "toxic_to_clean_ratio: 0.25"), "mix")
    # relevant: a pretraining field moves pretrain and everything downstream, never upstream
    lr = base.replace("precision: fp32", "precision: fp32\n  learning_rate: 1.0e-3")
    assert_diff(project, base, lr, "pretrain")
    assert_diff(project, base, lr, "evaluate/iti")
    assert_same(project, base, lr, "mix")
    # a steering field moves steer and its evaluation only
    alpha = base.replace("top_k_heads: 4", "top_k_heads: 4\n  alpha: 12.0")
    for role in ("tokenizer", "mix", "pretrain", "probe", "evaluate/base"):
        assert_same(project, base, alpha, role)
    for role in ("steer", "evaluate/iti"):
        assert_diff(project, base, alpha, role)
    # the seed moves data order (OLMo's loader shuffles by it) and everything trained, not the mixture
    seed = "seed: 3\n" + base
    assert_same(project, base, seed, "mix")
    assert_diff(project, base, seed, "pretrain")
    assert_same(project, base, seed, "tokenizer")


def test_ids_are_stable_across_processes(project):
    import subprocess
    import sys

    spec = project("s.yaml", project.minimal)
    code = ("from compiler.validate import load_spec; from compiler.plan import build_plan; from pathlib import Path; "
            f"p = build_plan('s', load_spec(Path({str(spec)!r}), Path({str(project.root)!r}))); print(sorted(p.instances))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(s), "PATH": ""}).stdout for s in (1, 2)}
    assert len(outs) == 1


def test_alpha_sweep_shares_pretraining(project):
    plan = plan_of(project, project.minimal + "sweep:\n  grid:\n    steer.alpha: [4.0, 8.0, 12.0]\n")
    kinds = [i.kind for i in plan.instances.values()]
    assert kinds.count("pretrain") == 1 and kinds.count("probe") == 1
    assert kinds.count("steer") == 3
    # evaluate: base + prompting shared, one iti per alpha
    assert kinds.count("evaluate") == 2 + 3


def test_editing_a_data_file_makes_new_ids_downstream_only(project):
    before = roles(project, project.minimal)
    (project.root / "probe.jsonl").write_text('{"text": "b", "label": 0}\n')
    after = roles(project, project.minimal)
    assert before["pretrain"] == after["pretrain"]
    assert before["activations"] != after["activations"] and before["steer"] != after["steer"]
    (project.root / "probe.jsonl").write_text('{"text": "a", "label": 1}\n')
    assert roles(project, project.minimal) == before  # same bytes, same ids


def test_changing_only_the_scorer_reruns_only_scoring_and_the_report():
    """specs/demo_rescore.yaml changes the demo's scorer: every generation artifact keeps its id."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    demo, rescore = (build_plan(name, load_spec(root / "specs" / f"{name}.yaml", root), root)
                     for name in ("demo", "demo_rescore"))
    assert [r.name for r in demo.runs] == [r.name for r in rescore.runs]
    for a, b in zip(demo.runs, rescore.runs):
        kept = {role for role in a.roles if role.split("/")[0] not in ("score", "report")}
        assert kept == {role for role in b.roles if role.split("/")[0] not in ("score", "report")}
        assert {"pretrain", "steer", "posttrain/sft", "evaluate/base", "attack/base"} <= kept
        for role in kept:
            assert a.roles[role] == b.roles[role], role
        assert a.roles["report"] != b.roles["report"]
    new = {i.kind for sid, i in rescore.instances.items() if sid not in demo.instances}
    assert new == {"score", "report"}
    scores = {kind: [i for i in plan.instances.values() if i.kind == "score"] for kind, plan in
              (("demo", demo), ("rescore", rescore))}
    assert len(scores["demo"]) == 2 * len(scores["rescore"]) > 0   # the demo scores with two scorers, the rescore one
    assert not {i.id for i in scores["demo"]} & {i.id for i in scores["rescore"]}


def test_one_score_instance_per_text_set_and_scorer(project):
    (project.root / "words.txt").write_text("idiot\n")
    two = project.minimal + """\
  scorers:
    - {kind: offline}
    - {kind: lexicon, path: words.txt}
attack:
  prompts: {kind: jsonl, path: prompts.jsonl}
  variants: [base]
resources:
  default: {gpus: 2}
"""
    plan = plan_of(project, two)
    (run,) = plan.runs
    evaluated = [r for r in run.roles if r.startswith("evaluate/")]
    scores = [r for r in run.roles if r.startswith("score/")]
    assert len(scores) == 2 * (len(evaluated) + 1)  # both scorers on every evaluate and the one attack
    for label in ("offline", "lexicon"):
        inst = plan.instances[run.roles[f"score/{label}/attack/base"]]
        assert inst.inputs == {"texts": run.roles["attack/base"]} and inst.config.source == "attack"
        assert inst.resources.gpus == 0  # scoring never asks for a GPU unless resources.score says so
    rows = plan.instances[run.roles["report"]].config.runs
    base = next(r for r in rows if r.variant == "base")
    assert list(base.scores) == ["offline", "lexicon"]  # the primary first
    assert base.scores["lexicon"] == run.roles["score/lexicon/evaluate/base"]
    assert base.attack_scores == {l: run.roles[f"score/{l}/attack/base"] for l in ("offline", "lexicon")}
    assert next(r for r in rows if r.variant == "iti").attack_scores == {}
    # the word list's content is in the lexicon's score ids, and in nothing upstream
    (project.root / "words.txt").write_text("moron\n")
    after = plan_of(project, two).runs[0].roles
    assert after["score/lexicon/evaluate/base"] != run.roles["score/lexicon/evaluate/base"]
    assert after["score/offline/evaluate/base"] == run.roles["score/offline/evaluate/base"]
    assert after["evaluate/base"] == run.roles["evaluate/base"] and after["attack/base"] == run.roles["attack/base"]


def test_scorers_need_distinct_names(project):
    import pytest

    from compiler.errors import SpecError

    with pytest.raises(SpecError, match="distinct `name`"):
        plan_of(project, project.minimal + "  scorers: [{kind: offline}, {kind: offline}]\n")
    plan_of(project, project.minimal + "  scorers: [{kind: offline}, {kind: offline, name: svm}]\n")
