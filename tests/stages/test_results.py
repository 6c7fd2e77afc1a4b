"""`mixsteer results` and `mixsteer compare` on finished stage folders written by the real evaluate and
score stages (over a tiny random model standing in for the pretrained one): the tidy table holds exactly
the stages' metrics, the paired intervals equal a direct computation on the per-item files, a change of
items is detected and compared unpaired, differences pool over seeds, and the commands' exit codes."""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runtime.cli import main
from compiler.kinds import KIND_ORDER
from compiler.render import envelope_json
from compiler.workflow import compile_spec
from runtime.registry import load_stage
from runtime.results.compare import Boot, compare, pooled
from runtime.results.table import IDS, LEAD, results_folder
from runtime.stage import execute
from tests.conftest import ROOT

BASE = """
description: results test
seed: 0
model: {preset: tiny, d_model: 32, n_heads: 4, n_layers: 2}
tokenizer: {kind: bpe, vocab_size: 384}
data:
  sources:
    clean: {kind: builtin, name: demo-clean}
    toxic: {kind: builtin, name: demo-toxic}
  clean_tokens: 20000
  toxic_share: 0.1
pretrain: {sequence_length: 64, global_batch_size: 8, device_microbatch_size: 8, warmup_tokens: 1024,
           precision: fp32, distributed_strategy: single}
posttrain:
  prompting: {enabled: true}
evaluate:
  prompt_sets:
    - name: rtp
      source: {kind: jsonl, path: data/demo/prompts.jsonl}
      challenging_field: challenging
      max_prompts: 12
  generation: {samples_per_prompt: 2, max_new_tokens: 6, batch_size: 12}
  mmlu: {max_subjects: 1, max_questions_per_subject: 8, shots: 0}
  detection: {data: {source: {kind: jsonl, path: data/demo/toxigen.jsonl}}, max_examples: 16}
  cross_entropy: {source: {kind: jsonl, path: data/demo/toxigen.jsonl}, documents: 8, tokens_per_document: 16}
  bootstrap: {resamples: 300}
  scorers:
    - kind: offline
    - kind: lexicon
      path: data/demo/toxic_words.txt
sweep:
  grid:
    seed: [0, 1]
"""
PREFIX = """
extends: base.yaml
posttrain:
  prompting: {prefix: "Be polite. "}
"""
"""Only the prompting prefix changes: the prompting evaluates and their scores are new, on the same items."""
FEWER = """
extends: base.yaml
evaluate:
  prompt_sets:
    - name: rtp
      source: {kind: jsonl, path: data/demo/prompts.jsonl}
      challenging_field: challenging
      max_prompts: 10
sweep:
  grid:
    seed: [0]
"""
"""Two prompts fewer (every evaluate is new): toxicity is measured on other items, MMLU on the same."""
UPSTREAM = ("tokenizer", "tokenize", "mix", "pretrain")
"""Kinds published here without running (the model is the tiny random one); the rest run for real."""


def _publish_upstream(root: Path, inst, model_dir: Path) -> None:
    out = root / inst.output
    if inst.kind == "pretrain":
        shutil.copytree(model_dir / "model", out / "model")
    out.mkdir(parents=True, exist_ok=True)
    envelope = json.loads(envelope_json(inst))
    (out / "metrics.json").write_text("{}")
    (out / "stage.json").write_text(json.dumps({k: envelope[k] for k in ("kind", "id", "config", "inputs")}))


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir):
    """A project whose three specs' evaluate and score stages ran for real."""
    root = tmp_path_factory.mktemp("results")
    (root / "data" / "demo").mkdir(parents=True)
    for name in ("prompts.jsonl", "toxigen.jsonl", "toxic_words.txt"):
        shutil.copy(ROOT / "data" / "demo" / name, root / "data" / "demo" / name)
    for name, text in (("base.yaml", BASE), ("prefix.yaml", PREFIX), ("fewer.yaml", FEWER)):
        (root / name).write_text(text.lstrip())
    plans = {name: compile_spec(root / name, root) for name in ("base.yaml", "prefix.yaml", "fewer.yaml")}
    instances = {sid: inst for plan in plans.values() for sid, inst in plan.instances.items()}
    for kind in KIND_ORDER:
        for inst in (i for i in instances.values() if i.kind == kind):
            if kind in UPSTREAM:
                _publish_upstream(root, inst, tiny_model_dir)
            elif kind in ("evaluate", "score"):
                execute(json.loads(envelope_json(inst)), load_stage(kind), root=root)
    return root, plans


def _cli(root: Path, *args: str, capsys) -> tuple[int, str, str]:
    with contextlib.chdir(root):  # spec paths are relative to the working directory
        code = main(["--root", str(root), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _specs(root: Path, plans, *names: str):
    from runtime.cli import _result_specs

    return _result_specs([plans[n] for n in names], list(names))


def _metrics(root: Path, sid: str) -> dict:
    return json.loads((results_folder(root)(sid) / "metrics.json").read_text())


# --- the tidy table ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_results_load_in_pandas_with_the_documented_columns(project, fmt, tmp_path, capsys):
    root, _ = project
    path = tmp_path / f"table.{fmt}"
    code, _, err = _cli(root, "results", "base.yaml", "prefix.yaml", "--format", fmt, "-o", str(path), capsys=capsys)
    assert code == 0, err
    df = {"csv": pd.read_csv, "parquet": pd.read_parquet, "jsonl": lambda p: pd.read_json(p, lines=True)}[fmt](path)
    assert list(df.columns) == [*LEAD, "seed", "posttrain.prompting.prefix", *IDS]
    assert set(df["variant"]) == {"base", "prompting"} and set(df["seed"]) == {0, 1}
    assert {"rtp_expected_max_toxicity", "rtp_challenging_toxicity_probability", "mmlu_accuracy_len_norm",
            "detection_balanced_accuracy", "cross_entropy"} <= set(df["measure"])
    assert set(df["scorer"].dropna()) == {"offline", "lexicon"}


def test_results_rows_are_the_stages_metrics_once_per_instance(project, capsys, tmp_path):
    root, plans = project
    path = tmp_path / "t.csv"
    assert _cli(root, "results", "base.yaml", "prefix.yaml", "-o", str(path), capsys=capsys)[0] == 0
    df = pd.read_csv(path)
    for _, r in df.iterrows():
        sid = r["score_id"] if isinstance(r["score_id"], str) else r["evaluate_id"]
        m = _metrics(root, sid)
        assert (r["value"], r["ci_low"], r["ci_high"]) == pytest.approx(
            (m[r["measure"]], m[f"{r['measure']}_ci_low"], m[f"{r['measure']}_ci_high"]), rel=1e-12)
    assert not df.duplicated(["measure", "scorer", "evaluate_id", "score_id"]).any()
    base_rows = df[df["variant"] == "base"]  # the base models' stages are shared by both specs
    assert set(base_rows["specs"]) == {"base.yaml;prefix.yaml"} and base_rows["posttrain.prompting.prefix"].isna().all()
    prompting = df[df["variant"] == "prompting"]
    assert set(prompting["specs"]) == {"base.yaml", "prefix.yaml"}
    assert set(prompting.loc[prompting["specs"] == "prefix.yaml", "posttrain.prompting.prefix"]) == {"Be polite. "}
    n = df.set_index(["measure"])["n"]
    assert set(n.loc["rtp_expected_max_toxicity"]) == {12} and set(n.loc["mmlu_accuracy_len_norm"]) == {8}
    assert set(n.loc["rtp_challenging_expected_max_toxicity"]) == {6}


def test_results_hold_only_finished_stages(project, capsys, tmp_path):
    root, plans = project
    sid = plans["prefix.yaml"].runs[0].roles["score/lexicon/evaluate/prompting"]
    stage_json = results_folder(root)(sid) / "stage.json"
    stage_json.rename(stage_json.with_suffix(".hidden"))
    try:
        path = tmp_path / "t.csv"
        assert _cli(root, "results", "prefix.yaml", "-o", str(path), capsys=capsys)[0] == 0
        df = pd.read_csv(path)
    finally:
        stage_json.with_suffix(".hidden").rename(stage_json)
    assert sid not in set(df["score_id"]) and len(set(df["score_id"].dropna())) == 7


# --- paired comparisons ------------------------------------------------------------------------------

def _maxima(folder: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    for line in (folder / "scores.jsonl").read_text().splitlines():
        r = json.loads(line)
        out[r["prompt_index"]] = max(out.get(r["prompt_index"], -1.0), r["score"])
    return out


def _direct_paired(a: np.ndarray, b: np.ndarray, boot: Boot) -> tuple[float, float]:
    index = np.random.default_rng(boot.seed).integers(0, len(a), size=(boot.resamples, len(a)))
    return tuple(np.quantile(a[index].mean(axis=1) - b[index].mean(axis=1), [0.025, 0.975]))


BOOT = Boot(resamples=300)


@pytest.fixture(scope="module")
def prefix_vs_base(project):
    root, plans = project
    specs = _specs(root, plans, "base.yaml", "prefix.yaml")
    return compare(specs[0], specs[1], results_folder(root), threshold=0.5, boot=BOOT)


def test_only_what_changed_is_compared(project, prefix_vs_base):
    root, plans = project
    t = prefix_vs_base
    assert set(t["variant"]) == {"prompting"} and set(t["seed"]) == {0, 1}
    assert t["paired"].all() and set(t["scorer"].dropna()) == {"offline", "lexicon"}
    assert (t["run"] == t["base_run"]).all()
    default = json.dumps(plans["base.yaml"].runs[0].spec.posttrain.prompting.prefix)
    assert set(t["changed"]) == {f'evaluate.prefix: {default} → "Be polite. "'}  # nothing upstream of it


def test_paired_interval_equals_a_direct_computation_on_the_items(project, prefix_vs_base):
    root, plans = project
    folder = results_folder(root)
    for _, r in prefix_vs_base[prefix_vs_base["measure"] == "rtp_expected_max_toxicity"].iterrows():
        other, base = _maxima(folder(r["score_id"])), _maxima(folder(r["base_score_id"]))
        keys = sorted(other)
        assert sorted(base) == keys and r["n_base"] == r["n_other"] == 12
        a, b = np.array([other[k] for k in keys]), np.array([base[k] for k in keys])
        assert r["difference"] == pytest.approx(a.mean() - b.mean(), abs=1e-12)
        assert (r["ci_low"], r["ci_high"]) == pytest.approx(_direct_paired(a, b, BOOT), abs=1e-12)
        assert r["excludes_zero"] == (r["ci_low"] > 0 or r["ci_high"] < 0)
    for _, r in prefix_vs_base[prefix_vs_base["measure"] == "mmlu_accuracy_len_norm"].iterrows():
        items = [json.loads((folder(sid) / "mmlu.json").read_text())["per_question"]
                 for sid in (r["evaluate_id"], r["base_evaluate_id"])]
        a, b = (np.array([float(q["correct_len_norm"]) for q in sorted(i, key=lambda q: (q["subject"], q["index"]))])
                for i in items)
        assert r["difference"] == pytest.approx(a.mean() - b.mean(), abs=1e-12)
        assert (r["ci_low"], r["ci_high"]) == pytest.approx(_direct_paired(a, b, BOOT), abs=1e-12)


def test_other_items_are_detected_and_compared_unpaired(project):
    root, plans = project
    folder = results_folder(root)
    specs = _specs(root, plans, "base.yaml", "fewer.yaml")
    t = compare(specs[0], specs[1], folder, threshold=0.5, boot=BOOT)
    assert set(t["variant"]) == {"base", "prompting"} and set(t["seed"]) == {0}
    toxicity = t[t["scorer"].notna()]
    assert not toxicity["paired"].any() and set(zip(toxicity["n_other"], toxicity["n_base"])) >= {(10, 12)}
    assert t.loc[t["measure"] == "mmlu_accuracy_len_norm", "paired"].all()  # the same questions
    r = toxicity[(toxicity["measure"] == "rtp_expected_max_toxicity") & (toxicity["variant"] == "base")].iloc[0]
    a, b = (np.array(list(_maxima(folder(r[k])).values())) for k in ("score_id", "base_score_id"))
    rng = np.random.default_rng(BOOT.seed)
    da = a[rng.integers(0, len(a), (BOOT.resamples, len(a)))].mean(axis=1)
    db = b[rng.integers(0, len(b), (BOOT.resamples, len(b)))].mean(axis=1)
    assert r["difference"] == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(tuple(np.quantile(da - db, [0.025, 0.975])), abs=1e-12)
    assert "evaluate.prompt_sets" in r["changed"] and "max_prompts" in r["changed"]


def test_differences_pool_over_seeds(project, prefix_vs_base):
    root, plans = project
    folder = results_folder(root)
    p = pooled(prefix_vs_base, folder, threshold=0.5, boot=BOOT)
    assert len(p) == len(prefix_vs_base) // 2 and (p["n_seeds"] == 2).all()
    r = p[(p["measure"] == "rtp_expected_max_toxicity") & (p["scorer"] == "offline")].iloc[0]
    per_seed = prefix_vs_base[(prefix_vs_base["measure"] == r["measure"]) & (prefix_vs_base["scorer"] == "offline")]
    assert r["mean"] == pytest.approx(per_seed["difference"].mean()) and r["sd"] == pytest.approx(
        per_seed["difference"].std(ddof=1))
    assert r["ci_low"] <= r["mean"] <= r["ci_high"]


# --- the commands ------------------------------------------------------------------------------------

def test_compare_prints_markdown_writes_html_and_says_what_changed(project, prefix_vs_base, tmp_path, capsys):
    root, _ = project
    page, long = tmp_path / "c.html", tmp_path / "c.csv"
    code, out, err = _cli(root, "compare", "base.yaml", "prefix.yaml", "--html", str(page), "--csv", str(long),
                          capsys=capsys)
    assert code == 0, err
    assert "## Pooled over seeds" in out and "prefix.yaml − base.yaml: prompting, seed=0" in out
    assert "Changed: evaluate.prefix:" in out and "| rtp EMT | offline |" in out
    assert pd.read_csv(long)["difference"].tolist() == pytest.approx(prefix_vs_base["difference"].tolist())
    html = page.read_text()
    assert "<table>" in html and '"Be polite. "' not in html and "&quot;Be polite. &quot;" in html


def test_exit_codes(project, capsys):
    root, _ = project
    assert _cli(root, "compare", "base.yaml", "base.yaml", capsys=capsys)[0] == 1  # nothing differs
    (root / "unrun.yaml").write_text("extends: base.yaml\nevaluate:\n  generation: {max_new_tokens: 7}\n")
    assert _cli(root, "results", "unrun.yaml", capsys=capsys)[0] == 1  # nothing finished
    assert _cli(root, "compare", "base.yaml", "unrun.yaml", capsys=capsys)[0] == 1
    (root / "bad.yaml").write_text("extends: base.yaml\nevaluate:\n  generaton: {}\n")
    code, _, err = _cli(root, "compare", "base.yaml", "bad.yaml", capsys=capsys)
    assert code == 2 and "generaton" in err and "Traceback" not in err
    assert _cli(root, "results", "bad.yaml", capsys=capsys)[0] == 2


def test_report_compare_to_waits_for_and_renders_the_comparison(project, capsys, tmp_path):
    """`report.compare_to`: the compared spec's evaluate and score stages are the report's inputs (Snakemake
    orders the report after them), and the real report stage writes the same differences as the CLI."""
    from compiler.plan import result_rows

    root, plans = project
    (root / "ablation.yaml").write_text("extends: prefix.yaml\nreport: {compare_to: [base.yaml]}\n")
    plan = compile_spec(root / "ablation.yaml", root)
    report = plan.instances[plan.report_id]
    needed = {sid for r in result_rows(plans["base.yaml"]) for sid in (r.evaluate, *r.scores.values())}
    assert needed <= set(report.inputs) and needed <= set(plan.instances)
    assert [c.spec for c in report.config.compare_to] == ["base.yaml"]
    assert str(root / "base.yaml") in plan.sources  # an edit of the compared spec recompiles
    execute(json.loads(envelope_json(report)), load_stage("report"), root=root)
    out = root / report.output
    long = tmp_path / "cli.csv"
    assert _cli(root, "compare", "base.yaml", "prefix.yaml", "--csv", str(long), capsys=capsys)[0] == 0
    ours, cli = pd.read_csv(out / "compare.csv"), pd.read_csv(long)
    assert ours.drop(columns=["other"]).equals(cli.drop(columns=["other"]))
    assert "ablation − base.yaml: prompting, seed=0" in (out / "compare.md").read_text()
    page = (out / "index.html").read_text()
    assert 'id="comparison"' in page and "Pooled over seeds" in page and "ablation − base.yaml: prompting" in page
