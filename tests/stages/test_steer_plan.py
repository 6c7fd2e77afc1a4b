"""Planning of ITI controls: seeded steer instances, evaluated but never attacked, and the report rows
that name them; probed layers reach the activations stage sorted."""
from __future__ import annotations

from compiler.plan import build_plan
from compiler.validate import load_spec

CONTROLS = """
  controls: {random_directions: 2, random_heads: 1}
attack:
  variants: [base, iti]
  prompts: {kind: jsonl, path: prompts.jsonl}
"""


def plan_of(project, text: str):
    return build_plan("s", load_spec(project("s.yaml", text), project.root), project.root)


def with_controls(minimal: str) -> str:
    head, tail = minimal.split("evaluate:")
    return head + CONTROLS.lstrip("\n") + "evaluate:" + tail


def test_controls_are_seeded_steer_instances_evaluated_not_attacked(project):
    plan = plan_of(project, with_controls(project.minimal))
    roles = plan.runs[0].roles
    controls = {r: roles[r] for r in roles if r.startswith("steer/")}
    assert sorted(controls) == ["steer/random_direction/0", "steer/random_direction/1", "steer/random_heads/0"]
    assert len(set(controls.values()) | {roles["steer"]}) == 4
    for role, sid in controls.items():
        cfg = plan.instances[sid].config
        _, kind, draw = role.split("/")
        assert (cfg.control, cfg.control_seed, cfg.seed) == (kind, int(draw), plan.runs[0].spec.seed)
        assert plan.instances[sid].inputs == plan.instances[roles["steer"]].inputs
        assert roles[f"evaluate/iti_{kind}/{draw}"]
    assert set(plan.instances[roles["steer"]].inputs) == {"model", "probe", "activations"}
    assert sorted(r for r in roles if r.startswith("attack/")) == ["attack/base", "attack/iti"]


def test_report_rows_name_variant_control_and_steering(project):
    plan = plan_of(project, with_controls(project.minimal))
    report = plan.instances[plan.report_id].config
    rows = {(r.variant, r.control_seed): r for r in report.runs}
    assert sorted(rows, key=str) == sorted([("base", None), ("prompting", None), ("iti", None),
                                            ("iti_random_direction", 0), ("iti_random_direction", 1),
                                            ("iti_random_heads", 0)], key=str)
    spec = plan.runs[0].spec
    for (variant, _), row in rows.items():
        steered = variant.startswith("iti")
        assert row.control == (variant.removeprefix("iti_") if variant.startswith("iti_") else None)
        assert (row.alpha, row.positions, row.top_k_heads) == (
            (spec.steer.alpha, spec.steer.positions, spec.steer.top_k_heads) if steered else (None, None, None))
        assert (row.steer is not None) == steered
        assert (row.attack is not None) == (variant in ("base", "iti"))


def test_probed_layers_reach_activations_sorted(project):
    text = project.minimal.replace("probe:\n", "probe:\n  layers: [1, 0]\n")
    plan = plan_of(project, text)
    assert plan.instances[plan.runs[0].roles["activations"]].config.layers == [0, 1]
