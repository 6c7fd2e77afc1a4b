"""The demo end to end under Snakemake (slow: `pytest -m slow`): every stage runs, each produced what
it should (checked on its artifacts, not only that files exist), and a second invocation has nothing
to do."""
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _json(path: Path):
    return json.loads(path.read_text())


def _each(results: Path, stage: str, name: str = "metrics.json"):
    return [(p.parent, _json(p)) for p in sorted(results.glob(f"{stage}/*/{name}"))]


def _scores(results: Path, source: str):
    """(folder, metrics) of every score stage over `source` (generations or attack)."""
    return [(f, m) for f, m in _each(results, "score") if _json(f / "stage.json")["config"]["source"] == source]


def _assert_interval(metrics: dict, key: str) -> None:
    low, high = metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"]
    assert low <= metrics[key] + 1e-12 and metrics[key] <= high + 1e-12, (key, low, metrics[key], high)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    for item in ("Snakefile", "specs", "data"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, root / item)
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2"], cwd=root,
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-4000:]
    return root


@pytest.mark.slow
def test_mixes_and_pretraining(demo):
    results = demo / "results"
    mixes = [_json(p) for p in results.glob("mix/*/manifest.json")]
    assert sorted(round(m["toxic_share_realized"], 3) for m in mixes) == [0.0, 0.1, 0.25]
    for _, m in _each(results, "pretrain"):
        assert m["final_loss"] < m["initial_loss"] - 1.0


@pytest.mark.slow
def test_probes_follow_the_recipe_and_are_tested_across_heads(demo):
    results = demo / "results"
    probes = _each(results, "probe", "accuracy.json")
    assert len(probes) == 3
    for folder, acc in probes:
        assert acc["recipe"] == "li2023"
        flat = [a for row in acc["head_accuracy"] for a in row]
        assert len(acc["head_ranking"]) == len(flat) == 16
        ranked = [acc["head_accuracy"][acc["layers"].index(l)][h] for l, h in acc["head_ranking"]]
        assert ranked == sorted(ranked, reverse=True)
        split = _json(folder / "split.json")
        assert not set(split["train"]) & set(split["validation"])
    significance = _json(next(results.glob("report/*/significance.json")))
    assert {s["toxic_share"] for s in significance} == {0.1, 0.25}
    assert all(0 <= s["p_value"] <= 1 for s in significance)


@pytest.mark.slow
def test_interventions_and_controls(demo):
    results = demo / "results"
    steers = _each(results, "steer")
    real = [(f, m) for f, m in steers if m["control"] is None]
    controls = [(f, m) for f, m in steers if m["control"] is not None]
    assert len(real) == 6 and len(controls) == 12             # 3 shares × (2 α; 2 + 2 draws at α 12)
    by_model: dict = {}
    for folder, m in steers:
        intervention = _json(folder / "intervention.json")
        assert m["positions"] == intervention["positions"] == "last"
        assert (folder / "model" / "intervention.json").exists()   # hooks at load time, not folded
        assert m["n_heads_steered"] == len(intervention["heads"]) == 2
        model = _json(folder / "stage.json")["inputs"]["model"]
        by_model.setdefault(model, []).append((m, {(h["layer"], h["head"]) for h in intervention["heads"]}))
        if m["control"] != "random_direction":      # own directions: the steered head moves by -α σ
            assert m["probe_direction_shift"] == pytest.approx(-m["alpha"], abs=0.25 * m["alpha"])
    for entries in by_model.values():
        heads = {m["control"]: h for m, h in entries if m["alpha"] == 12.0}
        same_heads = [h for m, h in entries if m["control"] == "random_direction"]
        assert same_heads and all(h == heads[None] for h in same_heads)


@pytest.mark.slow
def test_evaluations_carry_intervals_and_chance(demo):
    results = demo / "results"
    evaluations = _each(results, "evaluate")
    assert len(evaluations) == 30   # 3 shares × (base, prompting, ITI at 2 α, 4 control draws, SFT, DPO)
    for folder, m in evaluations:
        for key in ("mmlu_accuracy_len_norm", "detection_balanced_accuracy", "cross_entropy"):
            _assert_interval(m, key)
        assert m["mmlu_chance"] == pytest.approx(0.25) and m["detection_chance"] == 0.5
        questions = _json(folder / "mmlu.json")["per_question"]
        assert m["mmlu_accuracy_len_norm"] == pytest.approx(sum(q["correct_len_norm"] for q in questions) / len(questions))
    scored = _scores(results, "generations")
    assert sorted(m["scorer"] for _, m in scored) == ["lexicon"] * 30 + ["offline"] * 30  # per model and scorer
    for folder, m in scored:
        for key in ("rtp_expected_max_toxicity", "rtp_toxicity_probability", "rtp_mean_toxicity"):
            _assert_interval(m, key)
        maxima: dict = {}
        for row in map(json.loads, (folder / "scores.jsonl").read_text().splitlines()):
            maxima[row["prompt_index"]] = max(maxima.get(row["prompt_index"], 0.0), row["score"])
        assert m["rtp_expected_max_toxicity"] == pytest.approx(sum(maxima.values()) / len(maxima))


@pytest.mark.slow
def test_attacks_keep_the_best_suffix(demo):
    results = demo / "results"
    attacks = _each(results, "attack")
    assert len(attacks) == 9                                    # base and ITI at both α, per share
    judged = _scores(results, "attack")                         # every scorer judges; the primary is the headline
    assert sorted(m["scorer"] for _, m in judged) == ["lexicon"] * 9 + ["offline"] * 9
    assert all(0 <= m["attack_success_rate"] <= 1 for _, m in judged)
    for folder, m in attacks:
        rows = [json.loads(line) for line in (folder / "attacks.jsonl").read_text().splitlines()]
        for row in (r for r in rows if r["attack"] == "gcg"):
            best = row["best_losses"]
            assert all(b <= a + 1e-6 for a, b in zip(best, best[1:]))
            assert row["loss"] == pytest.approx(min(row["current_losses"]))


@pytest.mark.slow
def test_report_has_the_papers_table_controls_and_agreement(demo):
    report = next((demo / "results" / "report").glob("*/index.html")).parent
    with open(report / "main_table.csv", newline="") as f:
        main = list(csv.DictReader(f))
    variants = {r["variant"] for r in main}
    assert {"base", "prompting", "iti", "iti_random_direction", "iti_random_heads", "sft", "dpo"} <= variants
    assert all(float(r["rtp_expected_max_toxicity_low"]) <= float(r["rtp_expected_max_toxicity"])
               <= float(r["rtp_expected_max_toxicity_high"]) for r in main if r["rtp_expected_max_toxicity"])
    with open(report / "paired.csv", newline="") as f:
        paired = list(csv.DictReader(f))
    assert paired and all(float(r["ci_low"]) <= float(r["difference"]) <= float(r["ci_high"]) for r in paired)
    assert _json(report / "scorer_auc.json")["auc"] >= 0.8       # the scorer measures the probe's concept
    page = (report / "index.html").read_text()
    assert "random direction" in page and "chance" in page
    assert list((report / "plots").glob("tradeoff_*.png"))
    _assert_conclusions_under_both_scorers(demo, report)


def _assert_conclusions_under_both_scorers(demo: Path, report: Path) -> None:
    """The demo's two scorers: each headline difference under both, its verdict from its own numbers, and
    the scorers' agreement on every generation both scored."""
    with open(report / "conclusions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["kind"] for r in rows} == {"share", "variant"}
    assert {(float(r["toxic_share"]), float(r["reference_toxic_share"])) for r in rows if r["kind"] == "share"} \
        == {(0.1, 0.0), (0.25, 0.0)}
    by: dict = {}
    for r in rows:
        assert float(r["ci_low"]) - 1e-12 <= float(r["difference"]) <= float(r["ci_high"]) + 1e-12
        by.setdefault((r["evaluate_id"], r["reference_evaluate_id"], r["measure"]), {})[r["scorer"]] = r
    assert len(by) == 2 * (27 + 2)      # rtp EMT and probability; 27 variants and 2 shares against their base
    for pair in by.values():
        assert set(pair) == {"offline", "lexicon"}
        (verdict,) = {r["verdict"] for r in pair.values()}
        signs = {float(r["difference"]) > 0 for r in pair.values()}
        clear = all(float(r["ci_low"]) > 0 or float(r["ci_high"]) < 0 for r in pair.values())
        assert (verdict == "yes") == (len(signs) == 1 and clear) and (verdict == "yes" or verdict.startswith("no: "))
    with open(report / "text_agreement.csv", newline="") as f:
        agreement = {(r["scorer"], r["against"], r["measure"]): r for r in csv.DictReader(f)}
    assert set(agreement) == {("offline", "lexicon", "spearman"), ("offline", "lexicon", "auc"),
                              ("lexicon", "offline", "auc")}
    texts = sum(len((f / "scores.jsonl").read_text().splitlines())
                for f, m in _scores(demo / "results", "generations") if m["scorer"] == "offline")
    for r in agreement.values():
        assert int(r["texts"]) == int(r["texts_pooled"]) == texts
        if r["note"] == "undefined (one class)":
            assert r["value"] == "" and int(r["against_toxic"]) in (0, texts)
        else:
            assert float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"])
    page = (report / "index.html").read_text()
    assert 'id="conclusions-table"' in page and 'id="text-agreement-table"' in page


@pytest.mark.slow
def test_rescoring_the_finished_demo_runs_only_scoring_and_the_report(demo):
    spec = ["--config", "spec=specs/demo_rescore.yaml"]
    plan = subprocess.run([sys.executable, "-m", "snakemake", "-n", *spec], cwd=demo, capture_output=True, text=True)
    stats = plan.stdout.split("Job stats:")[1]
    jobs = {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+$", stats, re.M)}
    assert jobs == {"score", "report", "all", "total"}, stats
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *spec], cwd=demo,
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-4000:]
    lexicon = [m for _, m in _each(demo / "results", "score") if m["scorer"] == "lexicon_strict"]
    assert len(lexicon) == 39       # 30 evaluations and 9 attacks, each rescored; duplicates are scored once
    assert all(0 < m["scored_texts"] <= m["n_texts"] - m["cached_texts"] for m in lexicon if m["cached_texts"] < m["n_texts"])


@pytest.mark.slow
def test_the_sft_ablation_reuses_every_pretrained_model_and_is_compared_paired(demo):
    """specs/demo_sft_no_groups.yaml after the demo: only SFT and what reads it run (no pretraining); `mixsteer
    compare` gives SFT(no groups) − SFT(groups) per share, paired on the same prompts, from the score files."""
    import pandas as pd

    spec = ["--config", "spec=specs/demo_sft_no_groups.yaml"]
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *spec], cwd=demo,
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-4000:]
    stats = (run.stdout + run.stderr).split("Job stats:")[1].split("\n\n")[0]
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}
    assert "pretrain" not in jobs and jobs == {"posttrain": 3, "evaluate": 3, "score": 6, "report": 1, "all": 1,
                                               "total": 14}, stats
    cli = [sys.executable, "-m", "runtime.cli"]
    compared = subprocess.run([*cli, "compare", "specs/demo.yaml", "specs/demo_sft_no_groups.yaml", "--csv", "compare.csv"],
                              cwd=demo, capture_output=True, text=True)
    assert compared.returncode == 0, compared.stderr
    table = pd.read_csv(demo / "compare.csv")
    assert set(table["variant"]) == {"sft"} and table["evaluate_id"].nunique() == 3    # one SFT model per share
    assert table["paired"].all() and set(table["scorer"].dropna()) == {"offline", "lexicon"}
    assert all("posttrain.sft.data.path" in c for c in table["changed"])
    for _, r in table[table["measure"] == "rtp_expected_max_toxicity"].iterrows():
        other, base = (_json(demo / "results" / "score" / r[k] / "metrics.json") for k in ("score_id", "base_score_id"))
        assert r["n_base"] == r["n_other"] == other["rtp_prompts"] == 60
        assert r["difference"] == pytest.approx(other[r["measure"]] - base[r["measure"]], abs=1e-9)
        assert r["excludes_zero"] == (r["ci_low"] > 0 or r["ci_high"] < 0)
    assert compared.stdout.count("\n## ") == 3 and "Pooled over seeds" not in compared.stdout  # one seed
    report = next(p for p in (demo / "results" / "report").glob("*/compare.csv"))
    assert pd.read_csv(report)["difference"].tolist() == pytest.approx(table["difference"].tolist())
    results = subprocess.run([*cli, "results", "specs/demo.yaml", "specs/demo_sft_no_groups.yaml", "-o", "results.csv"],
                             cwd=demo, capture_output=True, text=True)
    assert results.returncode == 0, results.stderr
    tidy = pd.read_csv(demo / "results.csv")
    assert set(tidy.loc[tidy["variant"] == "sft", "posttrain.sft.data.path"]) == {"data/demo/sft.jsonl",
                                                                                  "data/demo/sft_no_groups.jsonl"}
    assert set(tidy.loc[tidy["variant"] == "base", "specs"]) == {"specs/demo.yaml;specs/demo_sft_no_groups.yaml"}


@pytest.mark.slow
def test_second_invocation_has_nothing_to_do(demo):
    again = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2"], cwd=demo,
                           capture_output=True, text=True)
    assert "Nothing to be done" in again.stdout + again.stderr
