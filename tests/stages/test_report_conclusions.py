"""The report's conclusions under every scorer and the scorers' agreement on the run's own texts, on stage
folders written as `test_report` writes them: differences recomputed from the per-item score files,
the verdict on planted agreements and a planted sign flip, Spearman and AUC against scipy and sklearn."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from compiler.schema.report import ReportRow
from runtime.report import conclusions, paired, text_agreement
from runtime.stage import StageContext
from tests.stages.test_report import (ALPHAS, DRAWS, PRIMARY, SECOND, SETS, SHARES, THRESHOLD, make_ctx, make_inputs,
                                      read_csv, tox_id)

RESAMPLES = 500


def _two_scorer_sections(tmp: Path, flip_second: bool = False, seeds=(0,)):
    """One seed, no attack, every generation scored by PRIMARY and SECOND; the two sections as the report
    stage computes them (its page and wiring: `test_report`'s two-scorer report). `flip_second`: SECOND's
    scores replaced by 1 − score (it then ranks every text the other way round)."""
    from compiler.schema.evaluate import BootstrapSection

    rows, inputs, _ = make_inputs(tmp / "results", shift=0.1, seeds=seeds, attack=False, scorers=(PRIMARY, SECOND))
    runs = [ReportRow(**r) for r in rows]
    if flip_second:
        for sid, folder in inputs.items():
            if sid.startswith(f"score-{SECOND}-"):
                rows = _scores(folder)
                (folder / "scores.jsonl").write_text("".join(json.dumps(r | {"score": 1 - r["score"]}) + "\n"
                                                             for r in rows))
    ctx = make_ctx(tmp, inputs)
    boot = BootstrapSection(resamples=RESAMPLES)
    scorers = [PRIMARY, SECOND]
    compared = paired.compare(ctx, runs, scorers=scorers, threshold=THRESHOLD, **boot.model_dump())
    found = conclusions.section(ctx, runs, compared, scorers=scorers, threshold=THRESHOLD, out=ctx.out,
                                **boot.model_dump())
    text_agreement.section(ctx, runs, scorers=scorers, threshold=THRESHOLD, boot=boot, out=ctx.out)
    return ctx, runs, found["metrics"] | {"compared": compared}


@pytest.fixture(scope="module")
def two_scorers(tmp_path_factory):
    return _two_scorer_sections(tmp_path_factory.mktemp("conclusions"))


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    return _two_scorer_sections(tmp_path_factory.mktemp("flipped"), flip_second=True)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    return _two_scorer_sections(tmp_path_factory.mktemp("two_seeds"), seeds=(0, 1))


def _scores(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "scores.jsonl").read_text().splitlines()]


def _prompt_maxima(folder: Path, name: str) -> np.ndarray:
    top: dict[int, float] = {}
    for r in _scores(folder):
        if r["set"] == name:
            top[r["prompt_index"]] = max(top.get(r["prompt_index"], -1.0), r["score"])
    return np.array([top[i] for i in sorted(top)])


def _measure(maxima: np.ndarray, measure: str) -> float:
    return float(maxima.mean() if measure.endswith("_expected_max_toxicity") else (maxima >= THRESHOLD).mean())


# --- conclusions ---------------------------------------------------------------------------------------

def test_every_headline_difference_under_every_scorer_comes_from_the_items(two_scorers):
    ctx, runs, metrics = two_scorers
    rows = read_csv(ctx.out / "conclusions.csv")
    n_variant_pairs = len(SHARES) * (3 + len(ALPHAS) * (1 + 2 * len(DRAWS)))   # prompting, sft, dpo; ITI + draws
    n_share_pairs = len(SHARES) - 1
    per_pair = 2 * len(SETS)                                                    # EMT, probability per set
    assert len(rows) == (n_variant_pairs + n_share_pairs) * per_pair * 2        # two scorers
    assert metrics["n_conclusions"] == (n_variant_pairs + n_share_pairs) * per_pair
    share = [r for r in rows if r["kind"] == "share"]
    assert {(float(r["toxic_share"]), float(r["reference_toxic_share"])) for r in share} == {(0.1, 0.0), (0.25, 0.0)}
    assert all(r["evaluate_id"] == f"evaluate-base-{r['toxic_share']}-0" and
               r["reference_evaluate_id"] == "evaluate-base-0.0-0" for r in share)
    assert rows[:len(share)] == share                                           # toxicity vs share first
    for r in rows:
        assert r["score_id"] == tox_id(r["evaluate_id"], r["scorer"])
        assert r["reference_score_id"] == tox_id(r["reference_evaluate_id"], r["scorer"])
        name = r["measure"].split("_")[0]
        a, b = (_prompt_maxima(ctx.input(r[k]), name) for k in ("score_id", "reference_score_id"))
        assert float(r["difference"]) == pytest.approx(_measure(a, r["measure"]) - _measure(b, r["measure"]), abs=1e-12)
        assert float(r["ci_low"]) <= float(r["difference"]) <= float(r["ci_high"])
        assert int(r["n_units"]) == len(a)


def test_the_interval_is_the_paired_bootstrap_over_prompts(two_scorers):
    ctx, *_ = two_scorers
    rows = read_csv(ctx.out / "conclusions.csv")
    r = next(r for r in rows if r["kind"] == "share" and float(r["toxic_share"]) == 0.25 and r["scorer"] == SECOND
             and r["measure"] == "toxigen_expected_max_toxicity")
    a, b = (_prompt_maxima(ctx.input(r[k]), "toxigen") for k in ("score_id", "reference_score_id"))
    rng = np.random.default_rng(7)
    diffs = [a[i].mean() - b[i].mean() for i in (rng.integers(0, len(a), len(a)) for _ in range(4000))]
    assert (float(r["ci_low"]), float(r["ci_high"])) == pytest.approx(tuple(np.quantile(diffs, [0.025, 0.975])),
                                                                      abs=0.01)


def test_planted_effects_hold_under_both_scorers_and_null_effects_do_not(two_scorers):
    ctx, *_ = two_scorers
    rows = read_csv(ctx.out / "conclusions.csv")
    strong = [r for r in rows if r["measure"].endswith("_expected_max_toxicity") and
              (r["kind"] == "share" and float(r["toxic_share"]) == 0.25 or r["variant"] == "dpo"
               or r["variant"] == "iti" and float(r["alpha"]) == 8.0)]
    assert strong and all(r["holds_under_all_scorers"] == "True" and r["verdict"] == "yes" for r in strong)
    assert {np.sign(float(r["difference"])) for r in strong if r["kind"] == "share"} == {1.0}
    assert {np.sign(float(r["difference"])) for r in strong if r["kind"] == "variant"} == {-1.0}
    null = [r for r in rows if r["variant"] == "iti_random_heads" and r["scorer"] == PRIMARY
            and not (float(r["ci_low"]) > 0 or float(r["ci_high"]) < 0)]
    assert null and all(r["holds_under_all_scorers"] == "False" and
                        f"{PRIMARY} inconclusive (CI spans 0)" in r["verdict"] for r in null)
    md = (ctx.out / "conclusions.md").read_text()
    headers = [h.strip() for h in md.splitlines()[0].split("|")]
    assert headers.index(f"Δ {SECOND}") == headers.index(f"Δ {PRIMARY}") + 1
    assert headers[-2] == "holds under all scorers"
    assert "| base 25 % − base 0 % |" in md and "| ITI α=8 − base |" in md and "| yes |" in md


def test_a_scorer_of_opposite_sign_is_named(flipped):
    ctx, *_ = flipped
    rows = read_csv(ctx.out / "conclusions.csv")
    by = {}
    for r in rows:
        by.setdefault((r["evaluate_id"], r["reference_evaluate_id"], r["measure"]), {})[r["scorer"]] = r
    opposite = [pair for pair in by.values() if all(float(r["ci_low"]) > 0 or float(r["ci_high"]) < 0
                                                    for r in pair.values())
                and np.sign(float(pair[PRIMARY]["difference"])) != np.sign(float(pair[SECOND]["difference"]))]
    assert len(opposite) >= 10                                # ITI α=8, DPO, SFT, the 25 % share, …
    for pair in opposite:
        assert {r["verdict"] for r in pair.values()} == {f"no: {SECOND} disagrees (sign)"}
        assert {r["holds_under_all_scorers"] for r in pair.values()} == {"False"}
    assert not any(r["holds_under_all_scorers"] == "True" for r in rows if r["measure"].endswith("_max_toxicity"))


def test_verdict_names_each_disagreeing_or_inconclusive_scorer():
    scorers = ["a", "b", "c"]
    assert conclusions.verdict({"a": (-0.2, -0.3, -0.1), "b": (-0.1, -0.2, -0.05), "c": (-0.3, -0.4, -0.2)},
                               scorers) == (True, "yes")
    assert conclusions.verdict({"a": (-0.2, -0.3, -0.1), "b": (0.1, 0.05, 0.2), "c": (-0.05, -0.1, 0.02)},
                               scorers) == (False, "no: b disagrees (sign); c inconclusive (CI spans 0)")
    assert conclusions.verdict({"a": (0.1, -0.1, 0.3), "b": (0.2, 0.1, 0.3)}, scorers) == \
        (False, "no: a inconclusive (CI spans 0); c not measured")
    assert conclusions.verdict({"a": (0.0, -0.1, 0.1), "b": (0.2, 0.1, 0.3), "c": (-0.2, -0.3, -0.1)}, scorers) == \
        (False, "no: a inconclusive (CI spans 0)")                  # a zero headline has no sign to disagree with
    assert conclusions.verdict({"a": (0.1, math.nan, math.nan), "b": (-0.1, -0.2, -0.01), "c": (0.1, 0.0, 0.2)},
                               scorers) == (False, "no: a inconclusive (no interval); b disagrees (sign); "
                                                   "c inconclusive (CI spans 0)")


# --- agreement on the run's own texts ------------------------------------------------------------------

def _pooled(ctx: StageContext, runs: list[ReportRow]) -> tuple[np.ndarray, np.ndarray]:
    """Both scorers' scores of every generation, joined on (evaluate, set, prompt, sample), in key order."""
    texts = {PRIMARY: {}, SECOND: {}}
    for row in runs:
        for label, sid in row.scores.items():
            for r in _scores(ctx.input(sid)):
                texts[label][(row.evaluate, r["set"], r["prompt_index"], r["sample"])] = r["score"]
    keys = sorted(texts[PRIMARY])
    assert keys == sorted(texts[SECOND])
    return np.array([texts[PRIMARY][k] for k in keys]), np.array([texts[SECOND][k] for k in keys])


def test_agreement_equals_scipy_and_sklearn_on_the_pooled_generations(two_scorers):
    ctx, runs, _ = two_scorers
    x, y = _pooled(ctx, runs)
    rows = {(r["scorer"], r["against"], r["measure"]): r for r in read_csv(ctx.out / "text_agreement.csv")}
    assert set(rows) == {(PRIMARY, SECOND, "spearman"), (PRIMARY, SECOND, "auc"), (SECOND, PRIMARY, "auc")}
    assert all(int(r["texts"]) == int(r["texts_pooled"]) == len(x) for r in rows.values())
    assert float(rows[PRIMARY, SECOND, "spearman"]["value"]) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert float(rows[PRIMARY, SECOND, "auc"]["value"]) == pytest.approx(roc_auc_score(y >= THRESHOLD, x), abs=1e-12)
    assert float(rows[SECOND, PRIMARY, "auc"]["value"]) == pytest.approx(roc_auc_score(x >= THRESHOLD, y), abs=1e-12)
    assert int(rows[PRIMARY, SECOND, "auc"]["against_toxic"]) == int((y >= THRESHOLD).sum())
    index = np.random.default_rng(0).integers(0, len(x), (RESAMPLES, len(x)))  # runtime.stats' draws, seed 0
    rho = [spearmanr(x[i], y[i]).statistic for i in index]
    r = rows[PRIMARY, SECOND, "spearman"]
    assert (float(r["ci_low"]), float(r["ci_high"])) == pytest.approx(tuple(np.quantile(rho, [0.025, 0.975])),
                                                                      abs=1e-9)


def _tiny(tmp_path: Path, primary: list[float], second: list[float]) -> tuple[StageContext, list[ReportRow]]:
    """One evaluate's generations scored by two scorers (one sample per prompt of one set)."""
    inputs = {}
    for label, scores in ((PRIMARY, primary), (SECOND, second)):
        folder = tmp_path / "score" / f"score-{label}"
        folder.mkdir(parents=True)
        (folder / "scores.jsonl").write_text("".join(
            json.dumps({"set": "rtp", "prompt_index": i, "sample": 0, "challenging": False, "score": s}) + "\n"
            for i, s in enumerate(scores)))
        inputs[f"score-{label}"] = folder
    out = tmp_path / "out"
    out.mkdir()
    ctx = StageContext(kind="report", stage_id="report-t", root=tmp_path, out=out, work=tmp_path / "w", inputs=inputs)
    return ctx, [ReportRow(run="tiny", variant="base", evaluate="evaluate-x",
                           scores={PRIMARY: f"score-{PRIMARY}", SECOND: f"score-{SECOND}"})]


def test_auc_against_a_one_class_decision_set_is_undefined(tmp_path):
    from compiler.schema.evaluate import BootstrapSection

    rng = np.random.default_rng(3)
    primary = rng.uniform(0, 1, 40)
    second = 0.4 * primary + rng.normal(0, 0.02, 40)            # never ≥ 0.5: no text is toxic by it
    ctx, runs = _tiny(tmp_path, primary.tolist(), second.tolist())
    section = text_agreement.section(ctx, runs, scorers=[PRIMARY, SECOND], threshold=THRESHOLD,
                                     boot=BootstrapSection(resamples=200), out=ctx.out)
    rows = {(r["scorer"], r["against"], r["measure"]): r for r in read_csv(ctx.out / "text_agreement.csv")}
    undefined = rows[PRIMARY, SECOND, "auc"]
    assert undefined["note"] == "undefined (one class)" and undefined["value"] == ""
    assert float(rows[SECOND, PRIMARY, "auc"]["value"]) == pytest.approx(roc_auc_score(primary >= THRESHOLD, second))
    assert float(rows[PRIMARY, SECOND, "spearman"]["value"]) == pytest.approx(spearmanr(primary, second).statistic)
    shown = dict(((r[0], r[1]), r) for r in section["table"][1])
    assert shown[PRIMARY, SECOND][-1] == "undefined (one class)" and shown[PRIMARY, SECOND][3] == "0"
    assert "undefined (one class)" in (ctx.out / "text_agreement.md").read_text()


def test_many_texts_are_measured_on_a_seeded_sample(tmp_path, monkeypatch):
    from compiler.schema.evaluate import BootstrapSection

    rng = np.random.default_rng(4)
    primary = rng.uniform(0, 1, 60)
    ctx, runs = _tiny(tmp_path, primary.tolist(), (primary + rng.normal(0, 0.1, 60)).tolist())
    monkeypatch.setattr(text_agreement, "MAX_TEXTS", 25)
    boot = BootstrapSection(resamples=100)
    first = text_agreement.measure(ctx, runs, [PRIMARY, SECOND], THRESHOLD, boot)
    assert {(r["texts"], r["texts_pooled"]) for r in first} == {(25, 60)}
    assert first == text_agreement.measure(ctx, runs, [PRIMARY, SECOND], THRESHOLD, boot)   # seeded
    shown = text_agreement.shown_table(first, boot.level)
    assert {row[2] for row in shown[1]} == {"25 of 60"}


# --- pooled over seeds -------------------------------------------------------------------------------------

def _two_stage(per_seed: list[tuple[np.ndarray, np.ndarray]], measure: str, draws: int = 4000) -> tuple[float, float]:
    """The documented two-stage bootstrap written out: draw the seeds with replacement, then each drawn seed's
    prompts (the same indices for both models); the mean over drawn seeds of the per-seed difference."""
    rng = np.random.default_rng(11)
    out = []
    for _ in range(draws):
        total = 0.0
        for s in rng.integers(0, len(per_seed), len(per_seed)):
            a, b = per_seed[s]
            i = rng.integers(0, len(a), len(a))
            total += _measure(a[i], measure) - _measure(b[i], measure)
        out.append(total / len(per_seed))
    return tuple(np.quantile(out, [0.025, 0.975]))


def test_with_two_seeds_each_conclusion_is_pooled_over_them_and_its_verdict_is_the_headline(two_seeds):
    ctx, runs, metrics = two_seeds
    rows = read_csv(ctx.out / "conclusions.csv")
    pooled = [r for r in rows if r["n_seeds"]]
    per_seed = [r for r in rows if not r["n_seeds"]]
    assert len(pooled) * 2 == len(per_seed) and {r["seeds"] for r in pooled} == {"0, 1"}
    assert metrics["n_conclusions"] == len(pooled) // 2                          # two scorers per comparison
    assert metrics["n_conclusions_holding_under_all_scorers"] == sum(r["verdict"] == "yes" for r in pooled) // 2
    checked = 0
    for r in pooled:
        seeds = [s for s in per_seed if all(s[k] == r[k] for k in ("comparison", "measure", "scorer", "kind", "toxic_share"))]
        assert sorted(float(s["seed"]) for s in seeds) == [0.0, 1.0], r["comparison"]
        assert r["score_id"] == ";".join(s["score_id"] for s in seeds)
        name = r["measure"].split("_")[0]
        files = [tuple(_prompt_maxima(ctx.input(s[k]), name) for k in ("score_id", "reference_score_id"))
                 for s in seeds]
        each = [_measure(a, r["measure"]) - _measure(b, r["measure"]) for a, b in files]
        assert float(r["difference"]) == pytest.approx(np.mean(each), abs=1e-12)
        assert float(r["sd"]) == pytest.approx(np.std(each, ddof=1), abs=1e-12)
        if r["comparison"] in ("base 25 % − base 0 %", "DPO − base") and r["scorer"] == PRIMARY:
            low, high = _two_stage(files, r["measure"])
            step = 1 / len(files[0][0]) if r["measure"].endswith("_toxicity_probability") else 0   # a share moves by 1/n
            assert (float(r["ci_low"]), float(r["ci_high"])) == pytest.approx((low, high), abs=max(0.02, step))
            checked += 1
    assert checked == (1 + len(SHARES)) * len(SETS) * 2                  # the share pair, DPO at each share; 2 measures
    md = (ctx.out / "conclusions.md").read_text()
    assert "| pooled (0, 1) |" in md and "the headline verdicts are these" in md


def test_the_paired_table_shows_the_pooled_rows_after_the_per_seed_ones(two_seeds):
    from runtime.report import pooled
    from runtime.results.compare import Boot

    ctx, runs, metrics = two_seeds
    compared = metrics["compared"]
    pooled_rows = pooled.pool(compared, paired.ItemUnits(ctx, THRESHOLD, [PRIMARY, SECOND]).pair, Boot(resamples=200))
    assert len(pooled_rows) * 2 == len(compared)
    for _, r in pooled_rows.iterrows():
        per_seed = compared[(compared["measure"] == r["measure"]) & (compared["variant"] == r["variant"])
                            & (compared["toxic_share"] == r["toxic_share"])
                            & (compared["scorer"].fillna("") == ("" if pd_missing(r["scorer"]) else r["scorer"]))
                            & (compared["alpha"].fillna(-1) == (-1 if pd_missing(r["alpha"]) else r["alpha"]))
                            & (compared["control_seed"].fillna(-1)
                               == (-1 if pd_missing(r["control_seed"]) else r["control_seed"]))]
        assert sorted(per_seed["seed"]) == [0, 1]
        assert r["difference"] == pytest.approx(per_seed["difference"].mean(), abs=1e-12)
    headers, body, notes = paired.shown_table(compared, pooled_rows)
    seeds = [row[headers.index("seed")] for row in body]
    first_pooled = seeds.index("pooled (0, 1)")
    assert set(seeds[:first_pooled]) == {"0", "1"} and set(seeds[first_pooled:]) == {"pooled (0, 1)"}
    assert any("resamples the seeds" in n for n in notes)


def pd_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
