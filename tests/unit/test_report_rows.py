"""The report's rows are one typed model (`compiler.schema.report.ReportRow`): it serialises to the JSON the
planner's dicts gave (the rows enter the report's id, so ids depend on it), a stage JSON's rows validate back
into it with the same id, and every stage kind whose metrics the report tabulates is a row field."""
import json

from compiler.kinds import KINDS
from compiler.schema.report import STEER_FIELDS, ReportRow, SteerSettings
from compiler.stages.report import Config
from runtime.report.table import METRIC_STAGES

ITI = {"run": "toxic_share=0.1,alpha=4.0", "axes": {"data.toxic_share": 0.1, "steer.alpha": 4.0}, "seed": 0,
       "toxic_share": 0.1, "pretrain": "pretrain-a", "mix": "mix-a", "probe": "probe-a", "toy": None,
       "steer": "steer-a", "alpha": 4.0, "positions": "last", "top_k_heads": 2, "control": "random_heads",
       "control_seed": 1, "variant": "iti_random_heads", "evaluate": "evaluate-a", "scores": {"offline": "score-a"},
       "attack": None, "attack_scores": {}}


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_a_row_serialises_as_the_planners_dict():
    row = ReportRow(**ITI)
    assert row.id_json() == row.full_json() == canonical(ITI)
    config = Config(spec_name="s", title="t", significance_alpha=0.05, token_view_texts=[], runs=[ITI],
                    compare_to=[{"spec": "other.yaml", "runs": [ITI]}])
    assert json.loads(config.id_json())["runs"] == [ITI]
    assert json.loads(config.id_json())["compare_to"] == [{"spec": "other.yaml", "runs": [ITI]}]
    again = Config.model_validate(json.loads(config.full_json()))
    assert again.id_json() == config.id_json()
    assert [(c.spec, [r.model_dump() for r in c.runs]) for c in again.compare_to] == [("other.yaml", [ITI])]


def test_steer_settings_are_none_off_iti_rows():
    assert STEER_FIELDS == tuple(SteerSettings.model_fields) == ("alpha", "positions", "top_k_heads", "control_seed")
    assert ReportRow(**ITI).steer_settings() == {"alpha": 4.0, "positions": "last", "top_k_heads": 2, "control_seed": 1}
    assert ReportRow(**(ITI | {"variant": "base"})).steer_settings() == dict.fromkeys(STEER_FIELDS)


def test_a_replaced_row_is_a_new_value():
    row = ReportRow(**ITI)
    row.id_json()
    moved = row.replaced(run="merged")
    assert moved.run == "merged" and json.loads(moved.id_json())["run"] == "merged" and row.run == ITI["run"]


def test_metric_stages_are_the_ranked_kinds_and_row_fields():
    assert METRIC_STAGES == ("evaluate", "steer", "attack", "probe", "pretrain", "mix", "toy")
    assert {k.name for k in KINDS if k.metrics_rank is not None} <= set(ReportRow.model_fields)
