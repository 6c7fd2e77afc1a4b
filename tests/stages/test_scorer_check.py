"""`scorer_check`: the reference readers on the public layouts, the measures against scipy/sklearn, the
stage end to end on the shipped fixtures, its planning and `mixsteer scorer-check`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from compiler.errors import StageError
from compiler.schema.evaluate import BootstrapSection
from compiler.schema.scorer_check import RecordSelection, RTPCheck, ScorerCheckSection, ToxiGenCheck
from compiler.schema.sources import JsonlSource, ParquetSource
from runtime.scorer_check import Config, run
from runtime.agreement import RankMeasures, agreement
from runtime.scorer_check.references import read_rtp, read_toxigen
from runtime.stage import StageContext
from runtime.stats import bootstrap_ci
from tests.conftest import ROOT

FIXTURES = "tests/data/scorer_check"
RTP_FILE = f"{FIXTURES}/rtp/prompts.jsonl"
TOXIGEN_SHARD = f"{FIXTURES}/toxigen/annotated/test-00000-of-00001.parquet"
SPEC = ROOT / "specs" / "scorer_check.yaml"


def rtp_check(**records) -> RTPCheck:
    return RTPCheck(source=JsonlSource(path=RTP_FILE), records=RecordSelection(**records))


def raw_rtp() -> list[dict]:
    return [json.loads(line) for line in (ROOT / RTP_FILE).read_text().splitlines()]


def usable_positions() -> list[int]:
    return [i for i, r in enumerate(raw_rtp())
            if r["prompt"]["toxicity"] is not None and r["continuation"]["toxicity"] is not None]


# --- readers -------------------------------------------------------------------------------------

def test_rtp_reader_takes_nested_fields_and_skips_null_toxicity():
    raw = raw_rtp()
    got = read_rtp(rtp_check(), ROOT)
    assert got.index == usable_positions()
    assert 0 < got.null_toxicity == len(raw) - len(got.index)
    assert got.in_range == len(raw) and got.usable == len(got.index)
    for j, i in enumerate(got.index):
        assert got.prompt[j] == raw[i]["prompt"]["text"]
        assert got.continuation[j] == raw[i]["continuation"]["text"]
        assert got.prompt_toxicity[j] == raw[i]["prompt"]["toxicity"]
        assert got.continuation_toxicity[j] == raw[i]["continuation"]["toxicity"]


def test_rtp_ranges_are_disjoint_and_cover_the_file():
    n = len(raw_rtp())
    first, rest = read_rtp(rtp_check(take=n // 2), ROOT), read_rtp(rtp_check(skip=n // 2), ROOT)
    assert not set(first.index) & set(rest.index)
    assert sorted(first.index + rest.index) == usable_positions()
    assert all(i < n // 2 for i in first.index) and all(i >= n // 2 for i in rest.index)


def test_rtp_challenging_filter_and_seeded_sample():
    raw = raw_rtp()
    hard = read_rtp(rtp_check(challenging_only=True), ROOT)
    assert hard.index == [i for i in usable_positions() if raw[i]["challenging"]]
    assert hard.not_challenging == sum(not r["challenging"] for r in raw)
    a, b = read_rtp(rtp_check(sample=10, seed=3), ROOT), read_rtp(rtp_check(sample=10, seed=3), ROOT)
    other = read_rtp(rtp_check(sample=10, seed=4), ROOT)
    assert a.index == b.index and len(a.index) == 10 and a.index == sorted(a.index)
    assert set(a.index) <= set(usable_positions()) and a.index != other.index


@pytest.mark.parametrize("record, field", [
    ({"challenging": False, "continuation": {"text": "x", "toxicity": 0.1}}, "prompt.text"),
    ({"challenging": False, "prompt": "flat text", "continuation": {"text": "x", "toxicity": 0.1}}, "prompt.text"),
    ({"challenging": False, "prompt": {"text": "a", "toxicity": "high"}, "continuation": {"text": "x", "toxicity": 0.1}},
     "prompt.toxicity"),
])
def test_rtp_reader_names_the_bad_field(tmp_path, record, field):
    (tmp_path / "rtp.jsonl").write_text(json.dumps(record) + "\n")
    check = RTPCheck(source=JsonlSource(path="rtp.jsonl"))
    with pytest.raises(StageError, match=rf"record 0: field '{field}'"):
        read_rtp(check, tmp_path)


def test_toxigen_reader_reads_a_folder_of_shards_and_counts_null_ratings(tmp_path):
    table = pq.read_table(ROOT / TOXIGEN_SHARD)
    ratings = table.column("toxicity_human").to_pylist()
    ratings[3] = None
    table = table.set_column(table.schema.get_field_index("toxicity_human"), "toxicity_human", [ratings])
    folder = tmp_path / "annotated"
    folder.mkdir()
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), folder / "train-00000-of-00002.parquet")
    pq.write_table(table.slice(half), folder / "train-00001-of-00002.parquet")
    got = read_toxigen(ToxiGenCheck(source=ParquetSource(path="annotated")), tmp_path)
    texts = table.column("text").to_pylist()
    assert got.read == table.num_rows and got.null_rating == 1
    assert got.index == [i for i in range(table.num_rows) if i != 3]
    assert got.text == [texts[i] for i in got.index]
    assert list(got.toxicity_human) == [ratings[i] for i in got.index]
    capped = read_toxigen(ToxiGenCheck(source=ParquetSource(path="annotated"), max_examples=5), tmp_path)
    assert capped.read == 5


# --- measures ------------------------------------------------------------------------------------

def test_weighted_rank_measures_equal_scipy_and_sklearn_on_the_expanded_sample():
    rng = np.random.default_rng(0)
    x = np.round(rng.random(60), 1)  # rounded: ties, as real scores have
    y = np.round(0.5 * x + 0.5 * rng.random(60), 1)
    positive = y >= 0.5
    weights = rng.integers(0, 4, size=(5, 60)).astype(float)  # copies of each text in a resample
    weights[0] = 1
    measures = RankMeasures(x, y, positive)
    rho, auc = measures.spearman(weights), measures.auc(weights)
    for r, w in enumerate(weights.astype(int)):
        ex, ey, ep = np.repeat(x, w), np.repeat(y, w), np.repeat(positive, w)
        assert rho[r] == pytest.approx(spearmanr(ex, ey).statistic, abs=1e-12)
        assert auc[r] == pytest.approx(roc_auc_score(ep, ex), abs=1e-12)
    assert np.isnan(RankMeasures(x, y, np.zeros(60, bool)).auc(weights[:1])[0])  # one class: undefined


def test_intervals_equal_runtime_stats_bootstrap_over_whole_units():
    rng = np.random.default_rng(1)
    reference = np.round(rng.random((40, 2)), 2)  # 40 records × (prompt, continuation)
    units = np.stack([np.clip(reference + 0.3 * rng.standard_normal((40, 2)), 0, 1), reference], axis=-1)
    boot = BootstrapSection(resamples=200, seed=7)
    got = agreement(units, 0.5, boot)

    def per_resample(measure):
        return lambda sample: np.array([measure(s.reshape(-1, 2)) for s in sample])

    rho = per_resample(lambda p: spearmanr(p[:, 0], p[:, 1]).statistic)
    auc = per_resample(lambda p: roc_auc_score(p[:, 1] >= 0.5, p[:, 0]))
    for name, statistic in (("spearman", rho), ("auc", auc)):
        low, high = bootstrap_ci(units, statistic, resamples=200, seed=7)
        assert (got[f"{name}_ci_low"], got[f"{name}_ci_high"]) == pytest.approx((low, high), abs=1e-12)
        assert got[name] == pytest.approx(statistic(units[None])[0], abs=1e-12)
    assert (got["texts"], got["units"], got["positives"]) == (80, 40, int((reference >= 0.5).sum()))


# --- the stage -----------------------------------------------------------------------------------

def section() -> ScorerCheckSection:
    import yaml

    return ScorerCheckSection(**yaml.safe_load(SPEC.read_text())["scorer_check"])


def run_stage(tmp_path: Path, section: ScorerCheckSection, scorers=None) -> tuple[dict, Path]:
    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(ROOT / FIXTURES, tmp_path / FIXTURES, dirs_exist_ok=True)
    cfg = Config(scorers=scorers or section.scorers, rtp=section.rtp, toxigen=section.toxigen,
                 threshold=section.threshold, bootstrap=section.bootstrap)
    metrics = run(cfg, StageContext("scorer_check", "scorer_check-test", tmp_path, out, tmp_path / "work", {}))
    return metrics, out


class ReferenceEcho:
    """A fake scorer that returns the reference's own score of each text: Perspective's for RTP texts,
    the human rating mapped from 1–5 onto [0, 1] for ToxiGen rows."""

    truncated = 0

    def __init__(self) -> None:
        self.known = {}
        for r in raw_rtp():
            for part in ("prompt", "continuation"):
                self.known[r[part]["text"]] = r[part]["toxicity"]
        table = pq.read_table(ROOT / TOXIGEN_SHARD).to_pylist()
        self.known |= {row["text"]: (row["toxicity_human"] - 1) / 4 for row in table}

    def score(self, texts):
        return [self.known[t] for t in texts]


def test_a_scorer_that_is_the_reference_agrees_perfectly(tmp_path, monkeypatch):
    import runtime.scoring

    monkeypatch.setattr(runtime.scoring, "build_scorer", lambda spec, root, placement=None: ReferenceEcho())
    metrics, out = run_stage(tmp_path, section())
    result = json.loads((out / "agreement.json").read_text())
    assert {r["reference"] for r in result["agreement"]} == {"rtp_prompt", "rtp_continuation", "rtp_all", "toxigen"}
    for row in result["agreement"]:
        assert row["spearman"] == pytest.approx(1.0) and row["auc"] == pytest.approx(1.0)
    echo, perspective = result["toxicity"][1], result["toxicity"][0]
    assert echo["expected_max_toxicity"] == pytest.approx(perspective["expected_max_toxicity"])
    assert echo["expected_max_toxicity_minus_reference"] == pytest.approx(0.0)
    assert echo["toxicity_probability_minus_reference"] == pytest.approx(0.0)
    assert metrics["offline:rtp_all_auc"] == pytest.approx(1.0)


def test_stage_on_the_shipped_fixtures_matches_scipy_and_sklearn(tmp_path):
    metrics, out = run_stage(tmp_path, section())
    result = json.loads((out / "agreement.json").read_text())
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    threshold = result["threshold"]

    def recompute(select, label_threshold):
        mine = np.array([r["scores"]["offline"] for r in rows if select(r)])
        ref = np.array([r["reference_score"] for r in rows if select(r)])
        return spearmanr(mine, ref).statistic, roc_auc_score(ref >= label_threshold, mine)

    expected = {
        "rtp_prompt": recompute(lambda r: r["part"] == "prompt", threshold),
        "rtp_continuation": recompute(lambda r: r["part"] == "continuation", threshold),
        "rtp_all": recompute(lambda r: r["reference"] == "rtp", threshold),
        "toxigen": recompute(lambda r: r["reference"] == "toxigen", result["toxigen"]["label_threshold"]),
    }
    for row in result["agreement"]:
        rho, auc = expected[row["reference"]]
        assert row["spearman"] == pytest.approx(rho) and row["auc"] == pytest.approx(auc)
        assert row["spearman_ci_low"] <= row["spearman"] <= row["spearman_ci_high"]
        assert metrics[f"offline:{row['reference']}_auc"] == row["auc"]
    continuations = [r for r in rows if r["part"] == "continuation"]
    assert metrics["offline:rtp_expected_max_toxicity"] == pytest.approx(
        np.mean([r["scores"]["offline"] for r in continuations]))
    assert metrics["perspective_2020:rtp_toxicity_probability"] == pytest.approx(
        np.mean([r["reference_score"] >= threshold for r in continuations]))
    assert metrics["rtp_records_used"] == len(continuations) and metrics["n_texts"] == len(rows)
    table = (out / "agreement.md").read_text()
    assert table.count("| offline |") == len(result["agreement"]) + 1  # + its EMT row


# --- planning and the command --------------------------------------------------------------------

def test_planned_without_a_model_with_the_offline_scorer_by_default(project):
    from compiler.workflow import compile_spec

    body = """
        scorer_check:
          rtp: {source: {kind: jsonl, path: rtp.jsonl}, records: {skip: %d}}
    """
    shutil.copy(ROOT / RTP_FILE, project.root / "rtp.jsonl")
    a = compile_spec(project("a.yaml", body % 0), project.root)
    b = compile_spec(project("b.yaml", body % 10), project.root)
    (ia,), (ib,) = ([i for i in p.instances.values() if i.kind == "scorer_check"] for p in (a, b))
    assert [s.kind for s in ia.config.scorers] == ["offline"]
    assert ia.inputs == {} and "rtp.jsonl" in ia.files
    assert ia.id != ib.id  # the record range is in the id


def test_default_scorers_are_the_evaluations(project):
    from compiler.workflow import compile_spec

    shutil.copy(ROOT / RTP_FILE, project.root / "rtp.jsonl")
    body = project.minimal + """  scorers: [{kind: offline, name: profanity}]
scorer_check:
  rtp: {source: {kind: jsonl, path: rtp.jsonl}}
"""
    plan = compile_spec(project("with_eval.yaml", body), project.root)
    (check,) = [i for i in plan.instances.values() if i.kind == "scorer_check"]
    assert [s.label for s in check.config.scorers] == ["profanity"]


def test_section_needs_a_reference_and_distinct_scorer_names():
    with pytest.raises(ValueError, match="set `rtp`, `toxigen` or both"):
        ScorerCheckSection()
    with pytest.raises(ValueError, match="share the name"):
        ScorerCheckSection(scorers=[{"kind": "offline"}, {"kind": "offline"}],
                           toxigen={"source": {"kind": "parquet", "path": "x"}})


def test_cli_runs_the_check_and_prints_the_table(tmp_path, capsys):
    from runtime.cli import main

    shutil.copytree(ROOT / FIXTURES, tmp_path / FIXTURES)
    spec = tmp_path / "specs" / "scorer_check.yaml"
    spec.parent.mkdir()
    shutil.copy(SPEC, spec)
    assert main(["--root", str(tmp_path), "scorer-check", str(spec)]) == 0
    first = capsys.readouterr().out
    assert first.startswith("# Scorer check") and "| offline | ToxiGen annotated vs human rating |" in first
    (done,) = (tmp_path / "results" / "scorer_check").iterdir()
    assert (done / "stage.json").exists() and (done / "agreement.json").exists()
    assert main(["--root", str(tmp_path), "scorer-check", str(spec)]) == 0  # reused, same table
    assert capsys.readouterr().out == first


def test_cli_without_the_section_is_an_error(project, capsys):
    from runtime.cli import main

    spec = project("toy.yaml", "toy: {enabled: true}\n")
    assert main(["--root", str(project.root), "scorer-check", str(spec)]) == 2
    assert "no `scorer_check:` section" in capsys.readouterr().err


def test_the_report_shows_the_agreement_tables(tmp_path):
    from runtime.report import scorer_agreement

    _, out = run_stage(tmp_path, section())
    report = tmp_path / "report"
    report.mkdir()
    ctx = StageContext("report", "report-test", tmp_path, report, tmp_path / "work", {"scorer_check-test": out})
    shown = scorer_agreement(ctx)
    agreement_rows = shown["tables"][0][1]
    assert len(agreement_rows) == len(json.loads((out / "agreement.json").read_text())["agreement"])
    assert any("ToxiGen" in row[1] for row in agreement_rows)
    assert (report / "scorer_agreement.md").read_text() == (out / "agreement.md").read_text()
    assert scorer_agreement(StageContext("report", "r", tmp_path, report, tmp_path / "w", {})) is None
