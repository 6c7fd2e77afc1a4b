"""The `report` stage on fake but honest inputs: chosen metrics, planted head-accuracy shifts."""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from compiler.errors import StageError
from runtime import report
from runtime.stage import StageContext

SHARES = (0.0, 0.1, 0.25)
SEEDS = (0, 1)
ALPHAS = (4.0, 8.0)
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write(folder: Path, metrics: dict, **files) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    for name, obj in files.items():
        (folder / f"{name}.json").write_text(json.dumps(obj))


def make_inputs(root: Path, *, shift: float, model_dir: Path | None = None, attack: bool = True):
    """Stage folders as `compiler.plan` would wire them; returns (runs, inputs, expected metrics by id).

    Head accuracies are drawn from N(0.6 + shift·[share > 0], 0.02) on a 2 × 4 head grid; evaluate
    metrics are distinct numbers chosen per model."""
    rng = np.random.default_rng(0)
    inputs: dict[str, Path] = {}
    expected: dict[str, dict] = {}

    def stage(kind: str, key: str, metrics: dict, **files) -> str:
        sid = f"{kind}-{key}"
        if sid not in inputs:
            folder = root / kind / sid
            _write(folder, metrics, **files)
            inputs[sid] = folder
            expected[sid] = metrics
        return sid

    runs = []
    for share in SHARES:
        for seed in SEEDS:
            tag = f"{share}-{seed}"
            mix = stage("mix", tag, {"toxic_share_realized": share + 0.001, "clean_tokens": 1000})
            if model_dir is not None:
                pre = f"pretrain-{tag}"
                inputs[pre] = model_dir
                expected[pre] = json.loads((model_dir / "metrics.json").read_text())
            else:
                pre = stage("pretrain", tag, {"final_loss": 3.0 - share, "n_params": 1e6})
            acc = rng.normal(0.6 + (shift if share > 0 else 0.0), 0.02, size=(2, 4)).tolist()
            probe = stage("probe", tag, {"best_head_accuracy": float(np.max(acc)),
                                         "mean_head_accuracy": float(np.mean(acc))},
                          accuracy={"head_accuracy": acc, "layer_accuracy": [0.6, 0.7]})
            if model_dir is not None:
                _write_directions(inputs[probe], rng)
            for alpha in ALPHAS:
                common = {"run": f"toxic_share={share},seed={seed},alpha={alpha}",
                          "axes": {"data.toxic_share": share, "seed": seed, "steer.alpha": alpha},
                          "seed": seed, "toxic_share": share, "pretrain": pre, "mix": mix, "probe": probe,
                          "toy": None, "alpha": None}
                for variant in ("base", "prompting", "iti", "sft", "dpo"):
                    key = f"{variant}-{tag}" + (f"-{alpha}" if variant == "iti" else "")
                    tox = 0.5 + share - 0.01 * seed - (0.02 * alpha if variant == "iti" else 0.0) - \
                        {"base": 0, "prompting": .05, "iti": 0, "sft": .1, "dpo": .15}[variant]
                    ev = stage("evaluate", key, {
                        "rtp_expected_max_toxicity": tox, "rtp_toxicity_probability": tox / 2,
                        "rtp_mean_toxicity": tox / 3, "rtp_prompts": 10,
                        "cross_entropy": 4.0 + 0.01 * (alpha if variant == "iti" else 0) + 0.001 * seed,
                        "mmlu_accuracy": 0.25 + 0.01 * seed, "note": "not a number", "flag": True})
                    att = None
                    if attack and variant != "prompting":
                        att = stage("attack", key, {"attack_success_rate": 0.4 - 0.1 * share, "prompts": 4})
                    runs.append({**common, "variant": variant, "evaluate": ev, "attack": att,
                                 "alpha": alpha if variant == "iti" else None})
    return runs, inputs, expected


def _write_directions(folder: Path, rng) -> None:
    from safetensors.numpy import save_file

    d = rng.normal(size=(2, 4, 8)).astype(np.float32)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    save_file({"mass_mean": d, "probe_weight": d, "std_mass_mean": np.ones((2, 4), np.float32),
               "std_probe_weight": np.ones((2, 4), np.float32)}, str(folder / "directions.safetensors"))


def make_ctx(tmp: Path, inputs: dict[str, Path]) -> StageContext:
    out = tmp / "out"
    out.mkdir()
    return StageContext(kind="report", stage_id="report-test", root=tmp, out=out, work=tmp / "work",
                        inputs=inputs)


def make_cfg(runs, **kw) -> report.Config:
    fields = dict(spec_name="fake", title="Fake report", significance_alpha=0.05, token_view_texts=[], runs=runs)
    return report.Config(**(fields | kw))


@pytest.fixture(scope="module")
def fake_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    runs, inputs, expected = make_inputs(tmp / "results", shift=0.1)
    ctx = make_ctx(tmp, inputs)
    metrics = report.run(make_cfg(runs), ctx)
    return ctx, runs, expected, metrics


def test_table_holds_exactly_the_input_metrics(fake_report):
    ctx, runs, expected, metrics = fake_report
    with open(ctx.out / "table.csv") as f:
        table = list(csv.DictReader(f))
    distinct = {(r["variant"], r["evaluate"]) for r in runs}
    assert len(table) == len(distinct) == metrics["n_rows"]
    assert len(runs) > len(table)  # shared base models were merged
    for row in table:
        for stage in ("evaluate", "attack", "probe", "mix", "pretrain"):
            sid = row[f"{stage}_id"]
            if not sid:
                continue
            for key, value in expected[sid].items():
                col = report.metric_column(stage, key)
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    assert col not in row
                else:
                    assert math.isclose(float(row[col]), value, rel_tol=1e-12), (sid, key)


def test_merged_rows_keep_only_axes_they_share(fake_report):
    ctx, *_ = fake_report
    with open(ctx.out / "table.csv") as f:
        table = list(csv.DictReader(f))
    base = [r for r in table if r["variant"] == "base"]
    iti = [r for r in table if r["variant"] == "iti"]
    assert len(base) == len(SHARES) * len(SEEDS) and len(iti) == len(SHARES) * len(SEEDS) * len(ALPHAS)
    assert all("alpha" not in r["run"] and r["alpha"] == "" for r in base)
    assert {float(r["alpha"]) for r in iti} == set(ALPHAS)


def test_seed_table_is_mean_and_std(fake_report):
    ctx, runs, expected, _ = fake_report
    with open(ctx.out / "table_seeds.csv") as f:
        rows = list(csv.DictReader(f))
    row = next(r for r in rows if r["variant"] == "iti" and float(r["toxic_share"]) == 0.1
               and float(r["alpha"]) == 8.0)
    values = [expected[f"evaluate-iti-0.1-{s}-8.0"]["rtp_expected_max_toxicity"] for s in SEEDS]
    assert int(row["n_seeds"]) == 2
    assert math.isclose(float(row["rtp_expected_max_toxicity_mean"]), np.mean(values))
    assert math.isclose(float(row["rtp_expected_max_toxicity_std"]), np.std(values, ddof=1))
    md = (ctx.out / "table_seeds.md").read_text()
    assert "rtp expected max toxicity (mean ± std)" in md


def test_markdown_is_rounded_and_readable(fake_report):
    ctx, *_ = fake_report
    lines = (ctx.out / "table.md").read_text().splitlines()
    assert lines[0].startswith("| run | variant | toxic share | seed | alpha |")
    assert "rtp expected max toxicity" in lines[0] and "_id" not in lines[0]
    assert len({len(l.split("|")) for l in lines}) == 1  # every row has every column


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
        for t in report.significance_tests({s: [rng.normal(0.6, 0.02, (2, 4)) for _ in SEEDS] for s in SHARES}, 0.05)
    ]
    assert len(rejections) == 800
    assert 0.02 < np.mean(rejections) < 0.08


def test_significance_direction_is_one_sided():
    """Lower accuracy at a higher toxic share is not 'significantly greater'."""
    rng = np.random.default_rng(1)
    by_share = {0.0: [rng.normal(0.7, 0.02, (2, 4))], 0.1: [rng.normal(0.6, 0.02, (2, 4))]}
    (res,) = report.significance_tests(by_share, 0.05)
    assert res["p_value"] > 0.99 and not res["significant"]


def test_plots_exist_and_are_png(fake_report):
    ctx, *_, metrics = fake_report
    pngs = sorted((ctx.out / "plots").glob("*.png"))
    assert len(pngs) == metrics["n_plots"] >= 8
    names = {p.name for p in pngs}
    assert {"rtp_expected_max_toxicity_vs_share.png", "iti_tradeoff_rtp_expected_max_toxicity.png",
            "probe_head_accuracy_heatmaps.png", "probe_head_accuracy_ecdf.png",
            "attack_success_rate_vs_share.png"} <= names
    assert "toy_entanglement.png" not in names  # no toy rows: skipped
    for p in pngs:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000


def test_page_references_every_plot(fake_report):
    ctx, *_ = fake_report
    html = (ctx.out / "index.html").read_text()
    for p in (ctx.out / "plots").glob("*.png"):
        assert f'src="plots/{p.name}"' in html


def test_report_without_attack_or_probe_metrics(tmp_path):
    runs, inputs, _ = make_inputs(tmp_path / "results", shift=0.1, attack=False)
    runs = [r | {"probe": None} for r in runs]
    metrics = report.run(make_cfg(runs), make_ctx(tmp_path, inputs))
    names = {p.name for p in (tmp_path / "out" / "plots").glob("*.png")}
    assert not any(n.startswith(("attack", "probe")) for n in names)
    assert not any(k.startswith("significance") for k in metrics)
    assert "rtp_expected_max_toxicity_vs_share.png" in names


def test_toy_only_report(tmp_path):
    inputs, runs = {}, []
    for i, freq in enumerate((0.01, 0.05, 0.2)):
        sid = f"toy-{i}"
        _write(tmp_path / sid, {"rare_chain_frequency": freq, "rare_entanglement_mean": 0.9 - freq,
                                "rare_entanglement_ci95": 0.02, "common_entanglement_mean": 0.7,
                                "common_entanglement_ci95": 0.01, "welch_bound": 0.43})
        inputs[sid] = tmp_path / sid
        runs.append({"run": f"rare_chain_frequency={freq}", "axes": {"toy.rare_chain_frequency": freq},
                     "seed": 0, "toxic_share": None, "pretrain": None, "mix": None, "probe": None,
                     "toy": sid, "alpha": None, "variant": None, "evaluate": None, "attack": None})
    metrics = report.run(make_cfg(runs), make_ctx(tmp_path, inputs))
    assert metrics["n_rows"] == 3
    assert [p.name for p in (tmp_path / "out" / "plots").glob("*.png")] == ["toy_entanglement.png"]
    with open(tmp_path / "out" / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["toy_rare_entanglement_mean"]) for r in rows] == pytest.approx([0.89, 0.85, 0.7])
    assert [float(r["rare_chain_frequency"]) for r in rows] == [0.01, 0.05, 0.2]  # the axis column


def test_missing_input_file_is_a_stage_error(tmp_path):
    runs, inputs, _ = make_inputs(tmp_path / "results", shift=0.1)
    shutil.rmtree(inputs[runs[0]["evaluate"]])
    with pytest.raises(StageError, match="metrics.json"):
        report.run(make_cfg(runs), make_ctx(tmp_path, inputs))
    runs2, inputs2, _ = make_inputs(tmp_path / "results2", shift=0.1)
    (inputs2[runs2[0]["probe"]] / "accuracy.json").unlink()
    with pytest.raises(StageError, match="head_accuracy"):
        report.run(make_cfg(runs2), make_ctx(tmp_path / "results2", inputs2))


def test_html_escapes_hostile_strings(tmp_path):
    runs, inputs, _ = make_inputs(tmp_path / "results", shift=0.1, attack=False)
    runs = [r | {"run": HOSTILE + r["run"]} for r in runs]
    report.run(make_cfg(runs, title=HOSTILE, spec_name=HOSTILE), make_ctx(tmp_path, inputs))
    for page in ("index.html", "standalone.html"):
        html = (tmp_path / "out" / page).read_text()
        assert "<script>" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


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
    runs, inputs, _ = make_inputs(tmp_path / "results", shift=0.1)
    metrics = report.run(make_cfg(runs, title=HOSTILE), make_ctx(tmp_path, inputs))
    if page == "standalone.html":  # images inlined: nothing next to the page is needed
        shutil.rmtree(tmp_path / "out" / "plots")
    browser = _chromium()
    try:
        browser.get((tmp_path / "out" / page).as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        assert len(images) == metrics["n_plots"] > 0
        assert all(complete and width > 0 for _, complete, width in images), images
        assert browser.execute_script("return document.scripts.length") == 0  # the hostile title stayed text
        assert browser.execute_script("return document.querySelector('h1').textContent") == HOSTILE
        rows = browser.execute_script("return document.querySelectorAll('#results tbody tr').length")
        assert rows == metrics["n_rows"]
    finally:
        browser.quit()
