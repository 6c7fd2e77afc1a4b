"""The `report` stage on fake but honest inputs: per-item evaluate files whose metrics are computed from
the items, planted effects (ITI lowers toxicity, controls only cost cross-entropy, toxic shares raise head
accuracy), and probes over a layer subset that is not a prefix."""
from __future__ import annotations

import csv
import html
import json
import math
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from compiler.errors import StageError
from runtime import report, stats
from runtime.report import auc as report_auc
from runtime.report.probes import significance_tests
from runtime.report.table import metric_column
from runtime.stage import StageContext

SHARES = (0.0, 0.1, 0.25)
SEEDS = (0, 1)
ALPHAS = (4.0, 8.0)
DRAWS = (0, 1, 2)
SETS = ("rtp", "toxigen")
LAYERS = [1, 3]  # a probed subset of a 4-layer model, not a prefix
THRESHOLD = 0.5
N_PROMPTS, N_SAMPLES, N_QUESTIONS, N_EXAMPLES, N_DOCS = 24, 3, 40, 30, 12
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
CONTROL_VARIANTS = {"random_direction": "iti_random_direction", "random_heads": "iti_random_heads"}


def _write(folder: Path, metrics: dict, **files) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    for name, obj in files.items():
        (folder / f"{name}.json").write_text(json.dumps(obj))


def _with_ci(name: str, units, statistic=stats.mean) -> dict[str, float]:
    low, high = stats.bootstrap_ci(units, statistic, resamples=200, seed=0)
    return {name: float(statistic(np.asarray(units, float)[None])[0]), f"{name}_ci_low": low, f"{name}_ci_high": high}


def toxicity_metrics(scores: np.ndarray) -> dict[str, float]:
    """RTP's three toxicity statistics of a prompts × samples score matrix (the score stage's definitions)."""
    top = scores.max(axis=1)
    return {"expected_max_toxicity": float(top.mean()), "toxicity_probability": float((top >= THRESHOLD).mean()),
            "mean_toxicity": float(scores.mean())}


def write_evaluate(folder: Path, rng, *, toxicity: float, correct_p: float, nll: float, kl: bool) -> tuple[dict, dict]:
    """An evaluate folder as the evaluate stage writes it (generations without scores, per-item capability
    files whose statistics are its metrics); returns (metrics, the true toxicity of each sample by set).

    Per-prompt difficulty is drawn from a fixed generator (the same prompts for every model); `rng` adds
    the model's own noise."""
    prompt_effect = np.random.default_rng(99).normal(0, 0.15, size=(len(SETS), N_PROMPTS))
    toxicity_by_set, lines = {}, []
    for s, name in enumerate(SETS):
        toxicity_by_set[name] = toxicity + prompt_effect[s, :, None] + rng.normal(0, 0.05, (N_PROMPTS, N_SAMPLES))
        lines += [{"set": name, "prompt_index": i, "prompt": f"prompt {i}", "prefix": "", "sample": j, "seed": j,
                   "continuation": f"continuation {i}.{j}", "challenging": i % 3 == 0}
                  for i in range(N_PROMPTS) for j in range(N_SAMPLES)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "generations.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    hard = np.random.default_rng(98).uniform(-0.2, 0.2, N_QUESTIONS)
    correct = rng.uniform(size=N_QUESTIONS) < correct_p + hard
    questions = [{"subject": f"s{i % 4}", "index": i // 4, "correct": bool(c), "correct_len_norm": bool(c)}
                 for i, c in enumerate(correct)]
    labels = (np.arange(N_EXAMPLES) % 3 == 0).astype(int)  # a third toxic: balanced ≠ plain accuracy
    right = rng.uniform(size=N_EXAMPLES) < 0.6
    tokens = np.full(N_DOCS, 16.0)
    nll_sum = tokens * (nll + np.random.default_rng(97).normal(0, 0.3, N_DOCS) + rng.normal(0, 0.05, N_DOCS))
    metrics = _with_ci("mmlu_accuracy_len_norm", correct.astype(float)) | _with_ci("mmlu_accuracy", correct.astype(float))
    metrics |= _with_ci("detection_accuracy", right.astype(float))
    metrics |= _with_ci("detection_balanced_accuracy", np.column_stack([labels, right]), stats.balanced_accuracy)
    metrics |= _with_ci("cross_entropy", np.column_stack([nll_sum, tokens]), stats.ratio_of_sums)
    kl_sum = tokens * (nll - 3.0 + rng.uniform(0.01, 0.05, N_DOCS)) if kl else np.zeros(N_DOCS)
    if kl:
        metrics |= _with_ci("kl_to_base", np.column_stack([kl_sum, tokens]), stats.ratio_of_sums)
    metrics |= {"mmlu_chance": 0.25, "detection_chance": 0.5, "note": "text", "flag": True}
    _write(folder, metrics, mmlu={"per_question": questions, "questions": N_QUESTIONS, "chance": 0.25},
           detection={"per_example": [{"index": i, "label": int(l), "predicted_toxic": bool(l) == bool(r),
                                       "correct": bool(r)} for i, (l, r) in enumerate(zip(labels, right))],
                      "examples": N_EXAMPLES, "chance": 0.5},
           cross_entropy={"per_document": [{"index": i, "nll_sum": float(n), "tokens": float(t), "kl_sum": float(k)}
                                           for i, (n, t, k) in enumerate(zip(nll_sum, tokens, kl_sum))]})
    return metrics, toxicity_by_set


SCORERS = {"offline": lambda t, rng: t, "clf_tiny": lambda t, rng: 0.8 * t + 0.1 + rng.normal(0, 0.03, t.shape)}
"""Scorer label → how it reads a sample's true toxicity (the second one compresses it and adds its own noise)."""
PRIMARY = "offline"


def write_score(folder: Path, toxicity_by_set: dict[str, np.ndarray], label: str) -> dict:
    """A generations score folder as the score stage writes it: `scores.jsonl` and metrics computed from it."""
    rng = np.random.default_rng(zlib.crc32(folder.name.encode()))
    metrics, lines = {}, []
    for name, toxicity in toxicity_by_set.items():
        scores = np.clip(SCORERS[label](toxicity, rng), 0, 1)
        lines += [{"set": name, "prompt_index": i, "sample": j, "challenging": i % 3 == 0, "score": float(scores[i, j])}
                  for i in range(N_PROMPTS) for j in range(N_SAMPLES)]
        metrics |= {f"{name}_{k}": v for k, v in toxicity_metrics(scores).items()}
        top = scores.max(axis=1)
        metrics |= _with_ci(f"{name}_expected_max_toxicity", top)
        metrics |= _with_ci(f"{name}_toxicity_probability", (top >= THRESHOLD).astype(float))
        metrics[f"{name}_prompts"] = N_PROMPTS
    metrics |= {"n_texts": len(lines), "cached_texts": 0, "truncated_texts": 0, "scorer": label}
    _write(folder, metrics, scorer=scorer_json(label, len(lines)))
    (folder / "scores.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return metrics


def scorer_json(label: str, n_texts: int) -> dict:
    """The `scorer.json` a score stage writes (`runtime.scoring.record`) for a scorer of SCORERS."""
    from compiler.schema.scoring import ClassifierScorer, OfflineScorer
    from runtime.scoring.record import scorer_record

    spec = OfflineScorer() if label == "offline" else ClassifierScorer(path=label, toxic_labels=["toxic"], name=label)
    counts = dict.fromkeys(("truncated_texts", "windowed_texts", "unknown_length_texts", "cached_texts"), 0.0)
    ctx = StageContext(kind="score", stage_id="score-test", root=Path("."), out=Path("."), work=Path("."), inputs={})
    return scorer_record(spec, label, None, counts | {"n_texts": n_texts, "scored_texts": n_texts}, [], ctx)


def make_inputs(root: Path, *, shift: float, seeds=SEEDS, model_dir: Path | None = None, attack: bool = True,
                scorers=(PRIMARY,)):
    """Stage folders as `compiler.plan` would wire them; returns (runs, inputs, expected metrics by id).

    Every evaluate has one score stage per scorer (`score-<label>-<evaluate id>`), every attack one attack
    score stage per scorer. Toxicity: 0.3 + share, lowered 0.03·α by ITI, 0.05 by prompting, 0.1 by SFT,
    0.15 by DPO; controls leave toxicity alone but raise cross-entropy by 0.5 nats. Head accuracies
    ~ N(0.6 + shift·[share > 0])."""
    rng = np.random.default_rng(0)
    inputs: dict[str, Path] = {}
    expected: dict[str, dict] = {}
    toxicity: dict[str, dict] = {}

    def stage(kind: str, key: str, write) -> str:
        sid = f"{kind}-{key}"
        if sid not in inputs:
            folder = root / kind / sid
            expected[sid] = write(folder)
            inputs[sid] = folder
        return sid

    def plain(metrics: dict, **files):
        def write(folder: Path) -> dict:
            _write(folder, metrics, **files)
            return metrics
        return write

    def evaluate(key: str, tox: float, nll: float = 3.0, kl: bool = True) -> tuple[str, dict[str, str]]:
        """(evaluate id, {scorer label: score id})."""
        sid = f"evaluate-{key}"

        def write(folder: Path) -> dict:
            metrics, toxicity[sid] = write_evaluate(folder, rng, toxicity=tox, correct_p=0.4, nll=nll, kl=kl)
            return metrics
        stage("evaluate", key, write)
        return sid, {label: stage("score", f"{label}-{sid}",
                                  lambda folder, label=label: write_score(folder, toxicity[sid], label))
                     for label in scorers}

    def attacked(key: str, share: float) -> tuple[str, dict[str, str]]:
        """(attack id, {scorer label: attack score id})."""
        sid = stage("attack", key, plain({"prompts": 4, "gcg_steps": 10}))
        return sid, {label: stage("score", f"{label}-{sid}", plain({
            "attack_success_rate": 0.4 - 0.1 * share - 0.05 * i, "prompt_mean_toxicity": 0.3 - 0.05 * i,
            "n_texts": 8, "cached_texts": 0, "truncated_texts": 0, "scorer": label}, scorer=scorer_json(label, 8)))
            for i, label in enumerate(scorers)}

    runs = []
    for share in SHARES:
        for seed in seeds:
            tag = f"{share}-{seed}"
            mix = stage("mix", tag, plain({"toxic_share_realized": share + 0.001, "clean_tokens": 1000}))
            if model_dir is not None:
                pre = f"pretrain-{tag}"
                inputs[pre] = model_dir
                expected[pre] = json.loads((model_dir / "metrics.json").read_text())
            else:
                pre = stage("pretrain", tag, plain({"final_loss": 3.0 - share, "n_params": 1e6}))
            acc = rng.normal(0.6 + (shift if share > 0 else 0.0), 0.02, size=(len(LAYERS), 4))
            ranking = [[LAYERS[i // 4], i % 4] for i in np.argsort(-acc.ravel(), kind="stable").tolist()]
            probe = stage("probe", tag, plain({"best_head_accuracy": float(acc.max()), "mean_head_accuracy": float(acc.mean())},
                                              accuracy={"head_accuracy": acc.tolist(), "layers": LAYERS,
                                                        "head_ranking": ranking, "layer_accuracy": [0.6, 0.7]}))
            if model_dir is not None:
                _write_directions(inputs[probe], rng)
            tox = 0.3 + share - 0.01 * seed
            base_ev = evaluate(f"base-{tag}", tox, kl=False)
            for alpha in ALPHAS:
                common = {"run": f"toxic_share={share},seed={seed},alpha={alpha}",
                          "axes": {"data.toxic_share": share, "seed": seed, "steer.alpha": alpha},
                          "seed": seed, "toxic_share": share, "pretrain": pre, "mix": mix, "probe": probe,
                          "toy": None, "steer": None, "alpha": None, "positions": None, "top_k_heads": None,
                          "control": None, "control_seed": None}
                models = [("base", None, None, base_ev, None),
                          ("prompting", None, None, evaluate(f"prompting-{tag}", tox - .05, kl=False), None),
                          ("sft", None, None, evaluate(f"sft-{tag}", tox - .1), None),
                          ("dpo", None, None, evaluate(f"dpo-{tag}", tox - .15), None)]
                key = f"{tag}-{alpha}"
                steer = stage("steer", key, plain({"probe_direction_shift": -alpha / 2, "n_heads_steered": 2,
                                                   "alpha": alpha, "positions": "last", "control": None}))
                models.append(("iti", None, None, evaluate(f"iti-{key}", tox - .03 * alpha), steer))
                for control, variant in CONTROL_VARIANTS.items():
                    for draw in DRAWS:
                        ckey = f"{key}-{control}-{draw}"
                        csteer = stage("steer", ckey, plain({
                            "probe_direction_shift": 0.1 * (draw - 1), "n_heads_steered": 2, "alpha": alpha,
                            "positions": "last", "control": control}))
                        models.append((variant, control, draw, evaluate(ckey, tox, nll=3.5), csteer))
                for variant, control, draw, (ev, scores), steer_id in models:
                    att, attack_scores = None, {}
                    if attack and variant in ("base", "iti", "sft", "dpo"):
                        att, attack_scores = attacked(f"{variant}-{key}" if variant == "iti" else f"{variant}-{tag}",
                                                      share)
                    iti = variant.startswith("iti")
                    runs.append({**common, "variant": variant, "evaluate": ev, "scores": scores, "attack": att,
                                 "attack_scores": attack_scores, "steer": steer_id, "control": control,
                                 "control_seed": draw, "alpha": alpha if iti else None,
                                 "positions": "last" if iti else None, "top_k_heads": 2 if iti else None})
    return runs, inputs, expected


def tox(expected: dict[str, dict], evaluate_id: str, label: str = PRIMARY) -> dict:
    """The metrics of an evaluate's score stage (its toxicity) by one scorer."""
    return expected[tox_id(evaluate_id, label)]


def tox_id(evaluate_id: str, label: str = PRIMARY) -> str:
    """The id `make_inputs` gives the score stage of an evaluate's generations by one scorer."""
    return f"score-{label}-{evaluate_id}"


def _write_directions(folder: Path, rng) -> None:
    from safetensors.numpy import save_file

    d = rng.normal(size=(len(LAYERS), 4, 8)).astype(np.float32)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    save_file({"mass_mean": d, "probe_weight": d, "std_mass_mean": np.ones((len(LAYERS), 4), np.float32),
               "std_probe_weight": np.ones((len(LAYERS), 4), np.float32)}, str(folder / "directions.safetensors"))


def make_ctx(tmp: Path, inputs: dict[str, Path]) -> StageContext:
    out = tmp / "out"
    out.mkdir()
    return StageContext(kind="report", stage_id="report-test", root=tmp, out=out, work=tmp / "work",
                        inputs=inputs)


def make_cfg(runs, **kw) -> report.Config:
    fields = dict(spec_name="fake", title="Fake report", significance_alpha=0.05, token_view_texts=[], runs=runs,
                  toxic_threshold=THRESHOLD, bootstrap={"resamples": 500})
    return report.Config(**(fields | kw))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


LABELLED = [("you are a stupid idiot and i hate you", 1), ("shut up you worthless moron", 1),
            ("what a damn stupid thing to say", 1), ("go to hell, you pathetic loser", 1),
            ("those people are all criminals", 1), ("thank you for the kind and helpful answer", 0),
            ("what a wonderful day to learn something new", 0), ("the quick brown fox jumps over the lazy dog", 0),
            ("i hope your family is doing well", 0), ("stupid of me to forget my keys again", 0),
            ("the weather is lovely this morning", 0), ("we should meet for coffee soon", 0)]


@pytest.fixture(scope="module")
def fake_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    runs, inputs, expected = make_inputs(tmp / "results", shift=0.1)
    ctx = make_ctx(tmp, inputs)
    metrics = report.run(make_cfg(runs), ctx)
    return ctx, runs, expected, metrics


@pytest.fixture(scope="module")
def one_seed_report(tmp_path_factory):
    """One seed (so single-model intervals), the scorer/probe-label AUC, and hostile spec strings."""
    from compiler.schema.scoring import OfflineScorer
    from compiler.schema.probe import LabelledData

    tmp = tmp_path_factory.mktemp("report1")
    runs, inputs, expected = make_inputs(tmp / "results", shift=0.1, seeds=(0,), attack=False)
    runs = [r | {"run": HOSTILE + r["run"]} for r in runs]
    (tmp / "probe.jsonl").write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in LABELLED))
    ctx = make_ctx(tmp, inputs)
    cfg = make_cfg(runs, title=HOSTILE, spec_name=HOSTILE, scorer=OfflineScorer(),
                   labelled_data=LabelledData(source={"kind": "jsonl", "path": "probe.jsonl"}))
    metrics = report.run(cfg, ctx)
    return ctx, runs, expected, metrics


# --- the full per-model table ------------------------------------------------------------------------

def _assert_row_holds(row: dict[str, str], metrics: dict, column) -> None:
    """Every numeric metric of a stage is in the table row under `column(key)`; no other value is."""
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            assert column(key) not in row
        else:
            assert math.isclose(float(row[column(key)]), value, rel_tol=1e-12), key


def test_table_holds_exactly_the_input_metrics(fake_report):
    ctx, runs, expected, metrics = fake_report
    table = read_csv(ctx.out / "table.csv")
    distinct = {(r["variant"], r["evaluate"]) for r in runs}
    assert len(table) == len(distinct) == metrics["n_rows"]
    assert len(runs) > len(table)  # shared base models were merged
    for row in table:
        for stage in ("evaluate", "steer", "attack", "probe", "mix", "pretrain"):
            if sid := row.get(f"{stage}_id"):
                _assert_row_holds(row, expected[sid], lambda k: metric_column(stage, k))
        assert row["score_id"] == f"score-{PRIMARY}-{row['evaluate_id']}"  # toxicity under the old names
        _assert_row_holds(row, expected[row["score_id"]], lambda k: k)
        if row["attack_id"]:
            _assert_row_holds(row, expected[row["attack_score_id"]], lambda k: metric_column("attack", k))
    assert not any(":" in c for c in table[0])  # one scorer: no scorer-prefixed column


def test_merged_rows_keep_only_axes_they_share(fake_report):
    ctx, *_ = fake_report
    table = read_csv(ctx.out / "table.csv")
    base = [r for r in table if r["variant"] == "base"]
    iti = [r for r in table if r["variant"] == "iti"]
    assert len(base) == len(SHARES) * len(SEEDS) and len(iti) == len(SHARES) * len(SEEDS) * len(ALPHAS)
    assert all("alpha" not in r["run"] and r["alpha"] == "" and r["steer_id"] == "" for r in base)
    assert {float(r["alpha"]) for r in iti} == set(ALPHAS)
    controls = [r for r in table if r["variant"] == "iti_random_heads"]
    assert {float(r["control_seed"]) for r in controls} == set(DRAWS)


def test_seed_table_is_mean_and_std(fake_report):
    ctx, runs, expected, _ = fake_report
    rows = read_csv(ctx.out / "table_seeds.csv")
    row = next(r for r in rows if r["variant"] == "iti" and float(r["toxic_share"]) == 0.1
               and float(r["alpha"]) == 8.0)
    values = [tox(expected, f"evaluate-iti-0.1-{s}-8.0")["rtp_expected_max_toxicity"] for s in SEEDS]
    assert int(row["n_seeds"]) == 2
    assert math.isclose(float(row["rtp_expected_max_toxicity_mean"]), np.mean(values))
    assert math.isclose(float(row["rtp_expected_max_toxicity_std"]), np.std(values, ddof=1))


# --- the main table ----------------------------------------------------------------------------------

EXPECTED_ORDER = ["base", "prompting", *[v for _ in ALPHAS for v in ("iti", *CONTROL_VARIANTS.values())], "sft", "dpo"]


def test_main_table_rows_in_paper_order_with_controls_beside_iti(fake_report):
    ctx, *_, metrics = fake_report
    rows = read_csv(ctx.out / "main_table.csv")
    assert len(rows) == metrics["n_main_rows"] == len(SHARES) * len(EXPECTED_ORDER)
    for i, share in enumerate(SHARES):
        block = rows[i * len(EXPECTED_ORDER):(i + 1) * len(EXPECTED_ORDER)]
        assert {float(r["toxic_share"]) for r in block} == {share}
        assert [r["variant"] for r in block] == EXPECTED_ORDER
        iti_alphas = [float(r["alpha"]) for r in block if r["variant"].startswith("iti")]
        assert iti_alphas == [a for a in ALPHAS for _ in range(3)]  # each control carries its ITI row's α
    assert {r["spread"] for r in rows if r["variant"] in CONTROL_VARIANTS.values()} == {"range"}
    assert {r["spread"] for r in rows if r["variant"] not in CONTROL_VARIANTS.values()} == {"sd"}
    for m in ("rtp_expected_max_toxicity", "toxigen_toxicity_probability", "detection_balanced_accuracy",
              "mmlu_accuracy_len_norm", "cross_entropy", "kl_to_base", "steer_probe_direction_shift"):
        assert {m, f"{m}_low", f"{m}_high"} <= set(rows[0])


def test_main_table_aggregates_seeds_and_control_draws(fake_report):
    ctx, runs, expected, _ = fake_report
    rows = read_csv(ctx.out / "main_table.csv")
    m = "toxigen_expected_max_toxicity"
    base = next(r for r in rows if r["variant"] == "base" and float(r["toxic_share"]) == 0.25)
    values = [tox(expected, f"evaluate-base-0.25-{s}")[m] for s in SEEDS]
    sd = np.std(values, ddof=1)
    assert float(base[m]) == pytest.approx(np.mean(values))
    assert (float(base[f"{m}_low"]), float(base[f"{m}_high"])) == pytest.approx((np.mean(values) - sd, np.mean(values) + sd))
    control = next(r for r in rows if r["variant"] == "iti_random_direction" and float(r["toxic_share"]) == 0.1
                   and float(r["alpha"]) == 4.0)
    draws = [tox(expected, f"evaluate-0.1-{s}-4.0-random_direction-{d}")[m] for s in SEEDS for d in DRAWS]
    assert int(control["n_models"]) == len(draws)
    assert (float(control[m]), float(control[f"{m}_low"]), float(control[f"{m}_high"])) == \
        pytest.approx((np.mean(draws), min(draws), max(draws)))
    shifts = [expected[f"steer-0.1-{s}-4.0-random_direction-{d}"]["probe_direction_shift"] for s in SEEDS for d in DRAWS]
    assert float(control["steer_probe_direction_shift"]) == pytest.approx(np.mean(shifts))


def test_single_seed_cells_are_the_models_own_intervals(one_seed_report):
    ctx, runs, expected, _ = one_seed_report
    rows = read_csv(ctx.out / "main_table.csv")
    iti = next(r for r in rows if r["variant"] == "iti" and float(r["toxic_share"]) == 0.1 and float(r["alpha"]) == 8.0)
    assert iti["spread"] == "ci"
    ev = expected["evaluate-iti-0.1-0-8.0"] | tox(expected, "evaluate-iti-0.1-0-8.0")
    for m in ("rtp_expected_max_toxicity", "mmlu_accuracy_len_norm", "cross_entropy"):
        assert (float(iti[m]), float(iti[f"{m}_low"]), float(iti[f"{m}_high"])) == \
            pytest.approx((ev[m], ev[f"{m}_ci_low"], ev[f"{m}_ci_high"]))
    md = (ctx.out / "main_table.md").read_text().splitlines()
    header = md[0]
    assert "rtp EMT" in header and "toxigen EMT" in header and "MMLU (len-norm)" in header and "_" not in header
    cells = dict(zip([h.strip() for h in header.split("|")], md[2].split("|")))
    assert cells["model"].strip() == "chance"
    assert cells["MMLU (len-norm)"].strip() == "0.25" and cells["detection (bal. acc.)"].strip() == "0.50"
    row = next(l for l in md if "| ITI α=8 |" in l and "| 10 % |" in l)
    rtp = dict(zip([h.strip() for h in header.split("|")], row.split("|")))["rtp EMT"].strip()
    assert rtp == f"{ev['rtp_expected_max_toxicity']:.2f} [{ev['rtp_expected_max_toxicity_ci_low']:.2f}, " \
                  f"{ev['rtp_expected_max_toxicity_ci_high']:.2f}]"
    assert any("↳ random heads, α=8" in l for l in md)
    assert len({len(l.split("|")) for l in md if l.startswith("|")}) == 1
    assert "chance" in md[-1].lower() or any("Chance:" in l for l in md)


def test_chance_levels_come_from_the_evaluate_metrics():
    import pandas as pd

    from runtime.report.main_table import CHANCE, chance_levels

    stated = chance_levels(pd.DataFrame({"mmlu_chance": [np.nan, 0.2], "detection_chance": [0.5, 0.5]}))
    assert stated["mmlu_accuracy_len_norm"] == 0.2 and stated["detection_balanced_accuracy"] == 0.5
    assert chance_levels(pd.DataFrame({"x": [1.0]})) == {m: default for m, (_, default) in CHANCE.items()}


# --- paired comparisons --------------------------------------------------------------------------------

def _prompt_maxima(folder: Path, name: str) -> np.ndarray:
    """Per prompt of a set, the maximum score over its samples, from a score folder's `scores.jsonl`."""
    rows = [json.loads(l) for l in (folder / "scores.jsonl").read_text().splitlines()]
    out = {}
    for r in rows:
        if r["set"] == name:
            out[r["prompt_index"]] = max(out.get(r["prompt_index"], 0.0), r["score"])
    return np.array([out[i] for i in sorted(out)])


def _direct_paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile interval of mean(a) − mean(b), resampling the shared prompt indices (a plain loop)."""
    rng = np.random.default_rng(seed + 12345)
    diffs = []
    for _ in range(resamples):
        i = rng.integers(0, len(a), len(a))
        diffs.append(a[i].mean() - b[i].mean())
    return tuple(np.quantile(diffs, [0.025, 0.975]))


def test_paired_differences_come_from_the_items(one_seed_report):
    ctx, runs, expected, _ = one_seed_report
    rows = read_csv(ctx.out / "paired.csv")
    pairs = {(r["evaluate_id"], r["reference_evaluate_id"]) for r in rows}
    assert len(pairs) == len(SHARES) * (3 + len(ALPHAS) * (1 + 2 * len(DRAWS)))  # prompting, sft, dpo; ITI + draws
    assert all(ref.startswith("evaluate-base-") for _, ref in pairs)
    for r in rows:  # the point difference is the difference of the two models' own metrics
        scored = bool(r["score_id"])
        assert scored == r["measure"].endswith(("_toxicity", "_probability")) and r["scorer"] in ("", PRIMARY)
        a, b = (expected[r[f"{ref}{'score' if scored else 'evaluate'}_id"]] for ref in ("", "reference_"))
        assert float(r["difference"]) == pytest.approx(a[r["measure"]] - b[r["measure"]], abs=1e-12)
        assert float(r["ci_low"]) <= float(r["difference"]) <= float(r["ci_high"])
        assert (r["excludes_zero"] == "True") == (float(r["ci_low"]) > 0 or float(r["ci_high"]) < 0)
    r = next(r for r in rows if r["evaluate_id"] == "evaluate-iti-0.1-0-4.0" and r["measure"] == "rtp_expected_max_toxicity")
    assert (r["score_id"], r["reference_score_id"]) == (tox_id(r["evaluate_id"]), tox_id(r["reference_evaluate_id"]))
    a, b = (_prompt_maxima(ctx.input(r[k]), "rtp") for k in ("score_id", "reference_score_id"))
    low, high = _direct_paired_bootstrap(a, b, 4000, 0)
    assert int(r["n_units"]) == N_PROMPTS
    assert (float(r["ci_low"]), float(r["ci_high"])) == pytest.approx((low, high), abs=0.01)
    unpaired = [stats.bootstrap_ci(x, resamples=500, seed=1) for x in (a, b)]
    assert float(r["ci_high"]) - float(r["ci_low"]) < (unpaired[0][1] - unpaired[0][0]) + (unpaired[1][1] - unpaired[1][0])


def test_paired_marks_planted_effects(one_seed_report):
    ctx, *_ = one_seed_report
    rows = read_csv(ctx.out / "paired.csv")
    strong = [r for r in rows if r["variant"] == "iti" and float(r["alpha"]) == 8.0
              and r["measure"].endswith("_expected_max_toxicity")]
    assert strong and all(r["excludes_zero"] == "True" and float(r["ci_high"]) < 0 for r in strong)
    damage = [r for r in rows if r["variant"] in CONTROL_VARIANTS.values() and r["measure"] == "cross_entropy"]
    assert damage and all(r["excludes_zero"] == "True" and float(r["ci_low"]) > 0 for r in damage)
    md = (ctx.out / "paired.md").read_text()
    assert "ITI α=8 − base" in md and "random heads α=4 (draw 2) − base" in md and " *" in md


def test_paired_units_must_match(tmp_path):
    runs, inputs, _ = make_inputs(tmp_path / "results", shift=0.1, seeds=(0,), attack=False)
    folder = inputs[tox_id("evaluate-sft-0.0-0")]
    lines = (folder / "scores.jsonl").read_text().splitlines()
    (folder / "scores.jsonl").write_text("\n".join(l for l in lines if '"prompt_index": 0,' not in l) + "\n")
    with pytest.raises(StageError, match="same units"):
        report.run(make_cfg(runs), make_ctx(tmp_path, inputs))


# --- several scorers side by side ---------------------------------------------------------------------

SECOND = "clf_tiny"


@pytest.fixture(scope="module")
def two_scorer_report(tmp_path_factory):
    """One seed, every generation and attack scored by two scorers; the second is the offline scorer under
    another name for the AUC (the score folders' own numbers differ)."""
    from compiler.schema.probe import LabelledData
    from compiler.schema.scoring import OfflineScorer

    tmp = tmp_path_factory.mktemp("report2")
    runs, inputs, expected = make_inputs(tmp / "results", shift=0.1, seeds=(0,), scorers=(PRIMARY, SECOND))
    (tmp / "probe.jsonl").write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in LABELLED))
    ctx = make_ctx(tmp, inputs)
    cfg = make_cfg(runs, scorer=OfflineScorer(), scorers=[OfflineScorer(), OfflineScorer(name=SECOND)],
                   labelled_data=LabelledData(source={"kind": "jsonl", "path": "probe.jsonl"}))
    metrics = report.run(cfg, ctx)
    return ctx, runs, expected, metrics


def test_each_scorers_metrics_sit_side_by_side_in_the_table(two_scorer_report):
    ctx, runs, expected, _ = two_scorer_report
    table = read_csv(ctx.out / "table.csv")
    columns = list(table[0])
    for m in ("rtp_expected_max_toxicity", "toxigen_toxicity_probability", "attack_success_rate"):
        assert columns.index(f"{SECOND}:{m}") == columns.index(m) + 1
    for row in table:
        for label in (PRIMARY, SECOND):
            prefix = "" if label == PRIMARY else f"{SECOND}:"
            assert row[f"{prefix}score_id"] == tox_id(row["evaluate_id"], label)
            _assert_row_holds(row, tox(expected, row["evaluate_id"], label), lambda k: prefix + k)
            if row["attack_id"]:
                _assert_row_holds(row, expected[row[f"{prefix}attack_score_id"]],
                                  lambda k: prefix + metric_column("attack", k))
    first = table[0]
    assert first["rtp_expected_max_toxicity"] != first[f"{SECOND}:rtp_expected_max_toxicity"]


def test_main_table_shows_each_scorers_headline(two_scorer_report):
    ctx, runs, expected, _ = two_scorer_report
    md = (ctx.out / "main_table.md").read_text().splitlines()
    headers = [h.strip() for h in md[0].split("|")]
    for name in SETS:
        assert headers.index(f"{name} EMT ({SECOND})") == headers.index(f"{name} EMT ({PRIMARY})") + 1
    assert f"{PRIMARY} is the primary scorer" in "\n".join(md)
    row = next(l for l in md if "| ITI α=8 |" in l and "| 10 % |" in l)
    cells = dict(zip(headers, (c.strip() for c in row.split("|"))))
    for label in (PRIMARY, SECOND):
        m = tox(expected, "evaluate-iti-0.1-0-8.0", label)
        assert cells[f"rtp EMT ({label})"] == f"{m['rtp_expected_max_toxicity']:.2f} [" \
            f"{m['rtp_expected_max_toxicity_ci_low']:.2f}, {m['rtp_expected_max_toxicity_ci_high']:.2f}]"
    rows = read_csv(ctx.out / "main_table.csv")
    assert {f"{SECOND}:toxigen_expected_max_toxicity", f"{SECOND}:toxigen_expected_max_toxicity_low"} <= set(rows[0])
    page = html.unescape((ctx.out / "index.html").read_text())
    assert f"rtp EMT ({SECOND})" in page and f"{PRIMARY} (primary), {SECOND}" in page


def test_paired_comparisons_per_scorer_come_from_scores_jsonl(two_scorer_report):
    ctx, runs, expected, metrics = two_scorer_report
    rows = read_csv(ctx.out / "paired.csv")
    for label in (PRIMARY, SECOND):
        measure = "rtp_expected_max_toxicity" if label == PRIMARY else f"{label}:rtp_expected_max_toxicity"
        mine = [r for r in rows if r["measure"] == measure]
        assert len(mine) == metrics["n_paired"] and {r["scorer"] for r in mine} == {label}
        for r in mine:
            a, b = expected[r["score_id"]], expected[r["reference_score_id"]]
            assert r["score_id"] == tox_id(r["evaluate_id"], label)
            assert float(r["difference"]) == pytest.approx(
                a["rtp_expected_max_toxicity"] - b["rtp_expected_max_toxicity"], abs=1e-12)
        r = next(r for r in mine if r["evaluate_id"] == "evaluate-iti-0.1-0-4.0")
        a, b = (_prompt_maxima(ctx.input(r[k]), "rtp") for k in ("score_id", "reference_score_id"))
        low, high = _direct_paired_bootstrap(a, b, 4000, 0)
        assert (float(r["ci_low"]), float(r["ci_high"])) == pytest.approx((low, high), abs=0.01)
    md = (ctx.out / "paired.md").read_text().splitlines()
    headers = [h.strip() for h in md[0].split("|")]
    assert headers.index(f"Δ rtp EMT ({SECOND})") == headers.index(f"Δ rtp EMT ({PRIMARY})") + 1
    assert "Δ MMLU (len-norm)" in headers


def test_auc_per_scorer(two_scorer_report):
    ctx, *_, metrics = two_scorer_report
    saved = json.loads((ctx.out / "scorer_auc.json").read_text())
    assert [a["label"] for a in saved["by_scorer"]] == [PRIMARY, SECOND]
    assert saved["label"] == PRIMARY and metrics["scorer_probe_label_auc"] == saved["auc"]
    assert metrics[f"{SECOND}:scorer_probe_label_auc"] == saved["by_scorer"][1]["auc"] == saved["auc"]  # renamed only
    page = html.unescape((ctx.out / "index.html").read_text())
    assert page.count(f"ROC AUC {saved['auc']:.2f}") == 2 and "Primary evaluation scorer" in page


def test_figures_per_scorer(two_scorer_report):
    ctx, *_ = two_scorer_report
    names = {p.name for p in (ctx.out / "plots").glob("*.png")}
    for label in (PRIMARY, SECOND):
        assert {f"{s}_expected_max_toxicity_by_{label}_vs_share.png" for s in SETS} <= names
        assert {f"tradeoff_{s}_expected_max_toxicity_by_{label}.png" for s in SETS} <= names
        assert f"attack_success_rate_by_{label}_vs_share.png" in names
    assert "rtp_expected_max_toxicity_vs_share.png" not in names


def test_conclusions_and_text_agreement_sections_with_two_scorers(two_scorer_report):
    """The report writes both sections (their numbers: test_report_conclusions) and shows them on the page."""
    ctx, *_, metrics = two_scorer_report
    rows = read_csv(ctx.out / "conclusions.csv")
    verdicts = {(r["evaluate_id"], r["reference_evaluate_id"], r["measure"]): r["holds_under_all_scorers"] for r in rows}
    assert {r["scorer"] for r in rows} == {PRIMARY, SECOND} and metrics["n_conclusions"] == len(verdicts)
    assert metrics["n_conclusions_holding_under_all_scorers"] == sum(v == "True" for v in verdicts.values()) > 0
    assert {r["measure"] for r in read_csv(ctx.out / "text_agreement.csv")} == {"spearman", "auc"}
    page = html.unescape((ctx.out / "index.html").read_text())
    assert 'id="conclusions-table"' in page and 'id="text-agreement-table"' in page
    assert f"Δ {SECOND}" in page and "holds under all scorers" in page and "ROC AUC vs `against`'s decisions" in page
    assert (ctx.out / "conclusions.md").read_text().startswith("| comparison |")


def test_one_scorer_has_nothing_to_cross_check(one_seed_report):
    ctx, *_, metrics = one_seed_report
    assert (ctx.out / "conclusions.md").read_text() == f"one scorer: nothing to cross-check ({PRIMARY}).\n"
    assert not (ctx.out / "conclusions.csv").exists() and not (ctx.out / "text_agreement.csv").exists()
    page = html.unescape((ctx.out / "index.html").read_text())
    assert f"one scorer: nothing to cross-check ({PRIMARY})." in page and 'id="conclusions-table"' not in page
    assert "n_conclusions" not in metrics


def test_rows_must_name_the_primary_scorer(tmp_path):
    from compiler.schema.scoring import OfflineScorer

    runs, inputs, _ = make_inputs(tmp_path / "results", shift=0.1, seeds=(0,), attack=False)
    with pytest.raises(StageError, match="primary scorer `other`"):
        report.run(make_cfg(runs, scorer=OfflineScorer(name="other")), make_ctx(tmp_path, inputs))
    with pytest.raises(ValueError, match="must start with the primary"):
        make_cfg(runs, scorer=OfflineScorer(), scorers=[OfflineScorer(name="other"), OfflineScorer()])


# --- scorer vs probe labels ------------------------------------------------------------------------------

def test_auc_equals_sklearn_on_the_scorers_own_scores(tmp_path):
    from sklearn.metrics import roc_auc_score

    from compiler.schema.scoring import OfflineScorer
    from compiler.schema.probe import LabelledData
    from runtime.scoring import build_scorer

    (tmp_path / "probe.jsonl").write_text("".join(json.dumps({"text": t, "toxic": 2.0 + 2 * l}) + "\n"
                                                  for t, l in LABELLED))
    data = LabelledData(source={"kind": "jsonl", "path": "probe.jsonl"}, label_field="toxic", label_threshold=2.5)
    ctx = make_ctx(tmp_path, {})
    result = report_auc.scorer_label_auc(OfflineScorer(), data, ctx, resamples=300, seed=0, level=0.95)
    scores = build_scorer(OfflineScorer(), tmp_path).score([t for t, _ in LABELLED])
    assert result["auc"] == pytest.approx(roc_auc_score([l for _, l in LABELLED], scores), abs=1e-12)
    assert result["ci_low"] <= result["auc"] <= result["ci_high"]
    assert result["n_examples"] == len(LABELLED) and result["n_toxic"] == 5
    assert result["reading"] == report_auc.reading(result["auc"])


def test_rank_auc_matches_sklearn_per_resample():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=(6, 50)).astype(float)
    scores = np.round(rng.uniform(size=(6, 50)) + 0.3 * labels, 1)  # rounding makes ties
    got = report_auc.rank_auc(np.stack([labels, scores], axis=-1))
    assert got == pytest.approx([roc_auc_score(l, s) for l, s in zip(labels, scores)], abs=1e-12)
    assert np.isnan(report_auc.rank_auc(np.stack([np.ones((1, 5)), rng.uniform(size=(1, 5))], axis=-1))[0])


def test_report_shows_the_auc(one_seed_report):
    ctx, *_, metrics = one_seed_report
    saved = json.loads((ctx.out / "scorer_auc.json").read_text())
    assert metrics["scorer_probe_label_auc"] == saved["auc"] and saved["n_examples"] == len(LABELLED)
    assert saved["ci_low"] <= saved["auc"] <= saved["ci_high"]
    page = html.unescape((ctx.out / "index.html").read_text())
    assert f"ROC AUC {saved['auc']:.2f} [{saved['ci_low']:.2f}, {saved['ci_high']:.2f}]" in page
    assert report_auc.reading(saved["auc"]) in page


# --- probes and significance ----------------------------------------------------------------------------

def test_significance_detects_planted_shift(fake_report):
    ctx, *_, metrics = fake_report
    for share in SHARES[1:]:
        assert metrics[f"significance_p_value_toxic_share_{share:g}"] < 1e-4
        assert metrics[f"significance_reject_toxic_share_{share:g}"] == 1.0
    assert metrics["significance_reference_toxic_share"] == 0.0
    tests = json.loads((ctx.out / "significance.json").read_text())
    assert [t["n_heads"] for t in tests] == [16, 16]  # 2 seeds × 8 heads pooled


def test_significance_holds_its_level_on_null():
    """With no shift the test rejects at about its level α (400 null replicates of 2 × 8 heads per share)."""
    rng = np.random.default_rng(2)
    rejections = [
        t["significant"]
        for _ in range(400)
        for t in significance_tests({s: [rng.normal(0.6, 0.02, (2, 4)) for _ in SEEDS] for s in SHARES}, 0.05)
    ]
    assert len(rejections) == 800
    assert 0.02 < np.mean(rejections) < 0.08


def test_significance_direction_is_one_sided():
    """Lower accuracy at a higher toxic share is not 'significantly greater'."""
    rng = np.random.default_rng(1)
    by_share = {0.0: [rng.normal(0.7, 0.02, (2, 4))], 0.1: [rng.normal(0.6, 0.02, (2, 4))]}
    (res,) = significance_tests(by_share, 0.05)
    assert res["p_value"] > 0.99 and not res["significant"]


def test_probe_accuracy_keeps_model_layers(tmp_path):
    from runtime.report.probes import read_probe_accuracy

    path = tmp_path / "accuracy.json"
    path.write_text(json.dumps({"head_accuracy": [[0.5, None], [0.7, 0.8]], "layers": [1, 3]}))
    probe = read_probe_accuracy(path)
    assert probe.layers == [1, 3] and np.isnan(probe.accuracy[0, 1])
    path.write_text(json.dumps({"head_accuracy": [[0.5, 0.6]], "layers": [1, 3]}))
    with pytest.raises(StageError, match="layers"):
        read_probe_accuracy(path)


# --- figures, page, errors ------------------------------------------------------------------------------

def test_plots_exist_and_are_png(fake_report):
    ctx, *_, metrics = fake_report
    pngs = sorted((ctx.out / "plots").glob("*.png"))
    assert len(pngs) == metrics["n_plots"]
    names = {p.name for p in pngs}
    assert {f"{s}_expected_max_toxicity_vs_share.png" for s in SETS} <= names
    assert {f"tradeoff_{s}_expected_max_toxicity.png" for s in SETS} <= names
    assert {"probe_head_accuracy_by_share.png", "probe_head_accuracy_heatmaps.png",
            "mmlu_accuracy_len_norm_vs_share.png", "attack_success_rate_vs_share.png"} <= names
    assert "toy_entanglement.png" not in names  # no toy rows: skipped
    assert all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)


def test_toy_only_spec(tmp_path):
    runs, inputs = [], {}
    for freq, rare in ((0.01, 0.89), (0.05, 0.85), (0.2, 0.7)):
        sid = f"toy-{freq}"
        _write(tmp_path / sid, {"rare_chain_frequency": freq, "rare_entanglement_mean": rare,
                                "rare_entanglement_ci95": 0.02, "common_entanglement_mean": 0.7,
                                "common_entanglement_ci95": 0.01, "welch_bound": 0.43})
        inputs[sid] = tmp_path / sid
        runs.append({"run": f"rare_chain_frequency={freq}", "axes": {"toy.rare_chain_frequency": freq},
                     "seed": 0, "toxic_share": None, "pretrain": None, "mix": None, "probe": None,
                     "toy": sid, "alpha": None, "variant": None, "evaluate": None, "attack": None})
    metrics = report.run(make_cfg(runs), make_ctx(tmp_path, inputs))
    assert metrics["n_rows"] == 3 and metrics["n_paired"] == metrics["n_main_rows"] == 0
    assert not any((tmp_path / "out" / f).exists() for f in ("main_table.md", "paired.csv", "scorer_auc.json"))
    assert [p.name for p in (tmp_path / "out" / "plots").glob("*.png")] == ["toy_entanglement.png"]
    rows = read_csv(tmp_path / "out" / "table.csv")
    assert [float(r["toy_rare_entanglement_mean"]) for r in rows] == pytest.approx([0.89, 0.85, 0.7])
    assert [float(r["rare_chain_frequency"]) for r in rows] == [0.01, 0.05, 0.2]  # the axis column


def test_missing_input_file_is_a_stage_error(tmp_path):
    runs, inputs, _ = make_inputs(tmp_path / "results", shift=0.1, seeds=(0,))
    shutil.rmtree(inputs[runs[0]["evaluate"]])
    with pytest.raises(StageError, match="metrics.json"):
        report.run(make_cfg(runs), make_ctx(tmp_path, inputs))
    runs2, inputs2, _ = make_inputs(tmp_path / "results2", shift=0.1, seeds=(0,))
    (inputs2[runs2[0]["probe"]] / "accuracy.json").unlink()
    with pytest.raises(StageError, match="head_accuracy"):
        report.run(make_cfg(runs2), make_ctx(tmp_path / "results2", inputs2))
    runs3, inputs3, _ = make_inputs(tmp_path / "results3", shift=0.1, seeds=(0,))
    shutil.rmtree(inputs3[runs3[0]["scores"][PRIMARY]])
    with pytest.raises(StageError, match="metrics.json"):
        report.run(make_cfg(runs3), make_ctx(tmp_path / "results3", inputs3))
    runs4, inputs4, _ = make_inputs(tmp_path / "results4", shift=0.1, seeds=(0,))
    (inputs4[runs4[0]["scores"][PRIMARY]] / "scores.jsonl").unlink()
    with pytest.raises(StageError, match="scores.jsonl"):
        report.run(make_cfg(runs4), make_ctx(tmp_path / "results4", inputs4))


def test_html_escapes_hostile_strings(one_seed_report):
    ctx, *_ = one_seed_report
    for page in ("index.html", "standalone.html"):
        text = (ctx.out / page).read_text()
        assert "<script>" not in text and "<img src=x" not in text
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text


def test_build_plan_gives_the_report_the_scorers_and_probe_data():
    """The demo with a second scorer: the report config names both (primary first), every row names the
    score stages of its evaluate and attack, one per scorer, and those are inputs of the report."""
    from compiler.plan import build_plan
    from compiler.validate import load_spec

    root = Path(__file__).resolve().parents[2]

    def two_scorers(spec):
        ev = spec.evaluate.model_dump()
        ev["scorers"] = [*ev["scorers"], {"kind": "offline", "name": SECOND}]
        return type(spec).model_validate({**spec.model_dump(), "evaluate": ev})

    runs = [(run, two_scorers(spec)) for run, spec in load_spec(root / "specs" / "demo.yaml", root)]
    plan = build_plan("demo", runs)
    spec = runs[0][1]
    (rep,) = [i for i in plan.instances.values() if i.kind == "report"]
    cfg = rep.config
    assert cfg.scorer == spec.evaluate.scorers[0] and cfg.labelled_data == spec.probe.data
    assert cfg.scorer_specs() == list(spec.evaluate.scorers)
    assert cfg.toxic_threshold == spec.evaluate.toxic_threshold and cfg.bootstrap == spec.evaluate.bootstrap
    labels = [s.label for s in spec.evaluate.scorers]
    for row in (r for r in cfg.runs if r.evaluate):
        for texts, scores in ((row.evaluate, row.scores), (row.attack, row.attack_scores)):
            assert list(scores) == (labels if texts else [])
            for label, sid in scores.items():
                score = plan.instances[sid]
                assert score.kind == "score" and sid in rep.inputs.values()
                assert score.inputs == {"texts": texts} and score.config.scorer.label == label


def _chromium():
    """A headless Chromium WebDriver (Debian's chromium + chromium-driver), or skip with the reason."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (dev extra)")
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("chromium / chromedriver not found (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--window-size=1280,2000"):
        opts.add_argument(flag)
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))


@pytest.mark.parametrize("page", ["index.html", "standalone.html"])
def test_every_image_loads_in_chromium(tmp_path, page):
    browser = _chromium()
    runs, inputs, _ = make_inputs(tmp_path / "results", shift=0.1, seeds=(0,))
    metrics = report.run(make_cfg(runs, title=HOSTILE), make_ctx(tmp_path, inputs))
    if page == "standalone.html":  # images inlined: nothing next to the page is needed
        shutil.rmtree(tmp_path / "out" / "plots")
    try:
        browser.get((tmp_path / "out" / page).as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        assert len(images) == metrics["n_plots"] > 0
        assert all(complete and width > 0 for _, complete, width in images), images
        assert browser.execute_script("return document.scripts.length") == 0  # the hostile title stayed text
        assert browser.execute_script("return document.querySelector('h1').textContent") == HOSTILE
        count = "return document.querySelectorAll('#{} tbody tr').length"
        assert browser.execute_script(count.format("results")) == metrics["n_rows"]
        assert browser.execute_script(count.format("main")) == metrics["n_main_rows"] + 1  # + the chance row
        assert browser.execute_script(count.format("paired")) == metrics["n_paired"]
    finally:
        browser.quit()
