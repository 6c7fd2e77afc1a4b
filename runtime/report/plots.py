"""The report's figures: one idea per PNG, each skipped cleanly when its data is absent.

The measure figures read the main-table summary (`main_table.summarise`): a point is one setting, its bars
are the row's low/high (a single model's 95 % bootstrap interval, ± sd over seeds, or a control's
min–max over draws). Probe figures read the probes' head accuracies; every returned item is a
(file name, caption) pair. With several scorers every toxicity and attack-success figure is drawn once
per scorer, its file name and axis naming the scorer (`rtp_expected_max_toxicity_by_offline_vs_share.png`).
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from compiler.schema.report import VARIANT_ORDER  # noqa: E402

from .main_table import HEADLINE_TOXICITY, model_label  # noqa: E402
from .probes import ProbeAccuracy  # noqa: E402
from .table import CONTROLS, scorer_of  # noqa: E402

TOXICITY = re.compile(r"^(?!attack)(?!.*_challenging_)[a-z0-9_]+_(expected_max_toxicity|toxicity_probability)$")
CAPABILITY = ("detection_balanced_accuracy", "mmlu_accuracy_len_norm", "cross_entropy", "kl_to_base")
TRADEOFF_X = ("cross_entropy", "mmlu_accuracy_len_norm")
LABELS = {
    "mmlu_accuracy_len_norm": "MMLU accuracy (length-normalised)",
    "cross_entropy": "cross-entropy on held-out clean text (nats/token)",
    "kl_to_base": "KL to the base model (nats/token)",
    "detection_balanced_accuracy": "toxicity detection (balanced accuracy)",
}
TOXICITY_LABELS = {"expected_max_toxicity": "expected max. toxicity", "toxicity_probability": "toxicity probability"}
MARKERS = {"base": "o", "prompting": "s", "sft": "^", "dpo": "D", "iti": "v",
           "iti_random_direction": "x", "iti_random_heads": "+"}
BARS = "bars: the model's bootstrap interval (one seed) or ± sd over seeds"
DPI = 110


def label(metric: str) -> str:
    """Axis label: `rtp_expected_max_toxicity` → `rtp: expected max. toxicity`; a scorer-prefixed column
    `clf:rtp_expected_max_toxicity` → `rtp: expected max. toxicity (clf)`."""
    scorer, metric = scorer_of(metric)
    suffix = f" ({scorer})" if scorer else ""
    m = TOXICITY.match(metric)
    if m:
        return f"{metric[:m.start(1) - 1].replace('_', ' ')}: {TOXICITY_LABELS[m.group(1)]}{suffix}"
    return LABELS.get(metric, metric.replace("_", " ")) + suffix


def is_scored(column: str) -> bool:
    """Whether a column is a score-stage measure the figures draw: toxicity of generations or attack success."""
    metric = scorer_of(column)[1]
    return bool(TOXICITY.match(metric)) or (metric.startswith("attack") and "success" in metric
                                            and not metric.endswith(("_low", "_high")))


def named(column: str, scorers: list[str]) -> str:
    """A scored column with its scorer spelled out when there are several (the primary's columns carry no
    prefix): `rtp_expected_max_toxicity` → `offline:rtp_expected_max_toxicity`."""
    if len(scorers) < 2 or not is_scored(column) or scorer_of(column)[0]:
        return column
    return f"{scorers[0]}:{column}"


def stem(column: str) -> str:
    """File-name stem of a (scorer-named) column: `clf:rtp_expected_max_toxicity` →
    `rtp_expected_max_toxicity_by_clf`."""
    scorer, metric = scorer_of(column)
    return f"{metric}_by_{scorer}" if scorer else metric


def _save(fig, folder: Path, name: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / name, dpi=DPI)
    plt.close(fig)
    return name


def _percent(ax) -> None:
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{100 * v:g} %"))


def _bars(centre, low, high) -> np.ndarray:
    """Asymmetric error bars (2, n) from bounds; a missing bound draws no bar. A percentile interval can
    miss its own point estimate (skewed resamples): that side's bar is then empty."""
    c, lo, hi = (np.asarray(v, dtype=float) for v in (centre, low, high))
    return np.clip(np.nan_to_num(np.vstack([c - lo, hi - c]), nan=0.0), 0.0, None)


def _lines(summary, metric: str):
    """(variant, alpha, rows ordered by share) of every method with a value of `metric`, controls excluded."""
    data = summary[summary[metric].notna() & summary["toxic_share"].notna() & ~summary["variant"].isin(CONTROLS)]
    for (variant, alpha), part in data.groupby(["variant", "alpha"], dropna=False, sort=False):
        yield variant, alpha, part.sort_values("toxic_share")


def measure_vs_share(summary, metric: str, folder: Path, chance: dict[str, float],
                     name: str | None = None) -> tuple[str, str] | None:
    """One line per method (each ITI strength its own line) against the toxic share, with interval bars;
    `name`: the column as labels and the file name spell it (default: `metric`)."""
    name = name or metric
    if metric not in summary or summary["toxic_share"].isna().all():
        return None
    fig, ax = plt.subplots(figsize=(7.4, 4.2), layout="constrained")
    plotted = 0
    for variant, alpha, part in _lines(summary, metric):
        ax.errorbar(part["toxic_share"], part[metric], yerr=_bars(part[metric], part[f"{metric}_low"],
                    part[f"{metric}_high"]), marker=MARKERS.get(variant, "o"), capsize=3,
                    label=model_label(variant, alpha))
        plotted += 1
    if not plotted:
        plt.close(fig)
        return None
    if metric in chance:
        ax.axhline(chance[metric], color="grey", linestyle=":", label="chance")
    ax.set_xlabel("toxic share of pretraining data")
    ax.set_ylabel(label(name))
    _percent(ax)
    ax.set_title(f"{label(name)} vs toxic share")
    ax.grid(alpha=.3)
    ax.legend(title="model", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, folder, f"{stem(name)}_vs_share.png"), \
        f"{label(name)} against the toxic share of pretraining data, one line per method ({BARS})."


def tradeoff(summary, tox_metric: str, folder: Path, chance: dict[str, float],
             name: str | None = None) -> tuple[str, str] | None:
    """Toxicity against capability per method: one panel per capability measure, colour = toxic share,
    marker = method, ITI strengths labelled and joined to their base model; controls as their own markers.
    `name`: the toxicity column as labels and the file name spell it (default: `tox_metric`)."""
    name = name or tox_metric
    xs = [m for m in TRADEOFF_X if m in summary and summary[m].notna().any()]
    if not xs or tox_metric not in summary or summary[tox_metric].isna().all():
        return None
    shares = sorted(summary["toxic_share"].dropna().unique())
    colours = dict(zip(shares, plt.get_cmap("viridis")(np.linspace(0, .9, max(len(shares), 1)))))
    fig, axes = plt.subplots(1, len(xs), figsize=(5.2 * len(xs) + 2.2, 4.6), squeeze=False, layout="constrained")
    for ax, x in zip(axes[0], xs):
        data = summary.dropna(subset=[x, tox_metric])
        for share, part in data.groupby("toxic_share", sort=True):
            colour = colours[share]
            curve = part[part["variant"].isin(["base", "iti"])].assign(
                order=lambda d: d["alpha"].where(d["variant"] == "iti", 0.0)).sort_values("order")
            ax.plot(curve[x], curve[tox_metric], color=colour, alpha=.6)
            for variant, points in part.groupby("variant", sort=False):
                ax.errorbar(points[x], points[tox_metric],
                            xerr=_bars(points[x], points[f"{x}_low"], points[f"{x}_high"]),
                            yerr=_bars(points[tox_metric], points[f"{tox_metric}_low"], points[f"{tox_metric}_high"]),
                            color=colour, marker=MARKERS.get(variant, "o"), markersize=7, capsize=2, linestyle="",
                            elinewidth=.7, markeredgecolor="black" if variant not in CONTROLS else colour)
                if variant == "iti" or variant in CONTROLS:
                    for _, p in points.iterrows():
                        ax.annotate(f"α={p['alpha']:g}", (p[x], p[tox_metric]), textcoords="offset points",
                                    xytext=(4, 4), fontsize=7, color=colour)
        if x in chance:
            ax.axvline(chance[x], color="grey", linestyle=":")
        ax.set_xlabel(label(x))
        ax.set_ylabel(label(name))
        ax.grid(alpha=.3)
    present = set(summary["variant"].dropna())
    methods = [Line2D([], [], color="grey", marker=MARKERS[v], linestyle="", markeredgecolor="black",
                      label=model_label(v, None).removeprefix("↳ ") + (" control" if v in CONTROLS else ""))
               for v in VARIANT_ORDER if v in present]
    share_handles = [Line2D([], [], color=colours[s], marker="o", linestyle="-", label=f"{100 * s:g} %")
                     for s in shares]
    legend = axes[0][-1].legend(handles=share_handles, title="toxic share", fontsize=8, loc="upper left",
                                bbox_to_anchor=(1.02, 1.0))
    axes[0][-1].add_artist(legend)
    axes[0][-1].legend(handles=methods, title="method", fontsize=8, loc="lower left", bbox_to_anchor=(1.02, 0.0))
    fig.suptitle(f"Toxicity vs capability: {label(name)}")
    return _save(fig, folder, f"tradeoff_{stem(name)}.png"), \
        f"Trade-off: {label(name)} against capability, one point per method and toxic share; lines join " \
        f"each base model to its ITI strengths (α labelled); × random-direction and + random-heads controls at " \
        f"the same α (bars: their min–max over draws; otherwise {BARS.removeprefix('bars: ')}); dotted: chance."


def head_heatmaps(by_share: dict[float, list[ProbeAccuracy]], folder: Path) -> tuple[str, str] | None:
    """Per-head probe accuracy, one panel per toxic share (mean over seeds), model layers on the y axis."""
    if not by_share:
        return None
    means = {s: np.nanmean(np.stack([p.accuracy for p in probes]), axis=0) for s, probes in by_share.items()}
    vmin = min(np.nanmin(m) for m in means.values())
    vmax = max(np.nanmax(m) for m in means.values())
    n = len(means)
    L, H = next(iter(means.values())).shape
    fig, axes = plt.subplots(1, n, figsize=(0.5 + n * max(2.2, 0.28 * H + 0.8), 0.6 + max(2.4, 0.28 * L)),
                             squeeze=False, layout="constrained")
    for ax, (share, acc) in zip(axes[0], means.items()):
        im = ax.imshow(acc, vmin=vmin, vmax=vmax, cmap="viridis", origin="lower", aspect="auto")
        layers = by_share[share][0].layers
        step = max(1, len(layers) // 12)
        ax.set_yticks(range(0, len(layers), step), [str(layers[i]) for i in range(0, len(layers), step)])
        seeds = len(by_share[share])
        ax.set_title(f"{100 * share:g} % toxic" + (f"\n(mean of {seeds} seeds)" if seeds > 1 else ""), fontsize=9)
        ax.set_xlabel("head")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[0][0].set_ylabel("model layer")
    fig.colorbar(im, ax=axes[0].tolist(), label="validation accuracy", shrink=.9)
    return _save(fig, folder, "probe_head_accuracy_heatmaps.png"), \
        "Probe validation accuracy of every probed attention head, one panel per toxic share, shared colour scale."


def probe_accuracy_by_share(by_share: dict[float, list[ProbeAccuracy]], tests: list[dict],
                            folder: Path) -> tuple[str, str] | None:
    """Distribution of per-head accuracies of every model (box + heads), grouped by toxic share, with the
    significance test's p-value against the reference share."""
    if not by_share:
        return None
    p = {t["toxic_share"]: t["p_value"] for t in tests}
    colours = plt.get_cmap("viridis")(np.linspace(0, .9, len(by_share)))
    fig, ax = plt.subplots(figsize=(7.4, 4.4), layout="constrained")
    rng = np.random.default_rng(0)  # jitter of the head dots only
    ticks = []
    for i, (colour, (share, probes)) in enumerate(zip(colours, by_share.items())):
        width = 0.8 / len(probes)
        for j, probe in enumerate(probes):
            acc = probe.accuracy[np.isfinite(probe.accuracy)]
            x = i - 0.4 + width * (j + 0.5)
            ax.boxplot(acc, positions=[x], widths=width * 0.8, showfliers=False, patch_artist=True,
                       boxprops={"facecolor": colour, "alpha": .35}, medianprops={"color": "black"})
            ax.scatter(x + rng.uniform(-width / 4, width / 4, acc.size), acc, s=6, color=colour, zorder=3)
        ticks.append(f"{100 * share:g} %\n" + (f"p = {p[share]:.2g}" if share in p else "reference"))
    ax.set_xticks(range(len(ticks)), ticks)
    ax.set_xlabel("toxic share of pretraining data (one box per seed; one-sided Mann–Whitney U vs reference)")
    ax.set_ylabel("probe validation accuracy of a head")
    ax.axhline(0.5, color="grey", linestyle=":")
    ax.set_title("Per-head probe accuracy by toxic share")
    ax.grid(alpha=.3, axis="y")
    return _save(fig, folder, "probe_head_accuracy_by_share.png"), \
        "Per-head probe validation accuracy of every model (one box per seed, dots = heads), by toxic share; " \
        "p: one-sided Mann–Whitney U test that the share's heads (seeds pooled) are more accurate than the " \
        "reference share's; dotted: chance."


def toy_entanglement(df, folder: Path) -> tuple[str, str] | None:
    """Toy model: entanglement of rare vs common features against the rare chain's frequency (95 % CI)."""
    x, y = "toy_rare_chain_frequency", "toy_rare_entanglement_mean"
    if x not in df or y not in df:
        return None
    toy = df.dropna(subset=[x, y]).drop_duplicates("toy_id").sort_values(x)
    if toy.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.4, 4.2), layout="constrained")
    for kind, colour in (("rare", "C3"), ("common", "C0")):
        col = f"toy_{kind}_entanglement_mean"
        if col in toy:
            ci = toy.get(f"toy_{kind}_entanglement_ci95")
            ax.errorbar(toy[x], toy[col], yerr=None if ci is None else ci.fillna(0), marker="o", capsize=3,
                        color=colour, label=f"{kind} chain's features")
    if "toy_welch_bound" in toy:
        ax.axhline(toy["toy_welch_bound"].iloc[0], color="grey", linestyle="--", label="Welch bound")
    ax.set_xscale("log")
    ax.set_xticks(sorted(toy[x].unique()), [f"{v:g}" for v in sorted(toy[x].unique())])
    ax.minorticks_off()  # the swept values are the ticks; log-axis minor labels overlap
    ax.set_xlabel("frequency of the rare chain in the training data")
    ax.set_ylabel("entanglement (max |cos| to another feature)")
    ax.set_title("Toy model: rarer features are more entangled?")
    ax.grid(alpha=.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, folder, "toy_entanglement.png"), \
        "Toy model: mean entanglement of the rare chain's and the common chains' features against the rare " \
        "chain's frequency (95 % confidence interval over seeds); dashed: the Welch bound."


def make_plots(table, summary, by_share, tests, folder: Path, chance: dict[str, float],
               scorers: list[str] = ()) -> list[tuple[str, str]]:
    """Every figure the data supports, in page order (`summary` is None when no model was evaluated;
    `chance`: measure → chance level, drawn as a dotted line; `scorers`: scorer labels, primary first)."""
    scorers = list(scorers)
    cols = [] if summary is None else list(summary.columns)
    tox = [c for c in cols if TOXICITY.match(scorer_of(c)[1])]
    attack = [c for c in cols if is_scored(c) and c not in tox]
    headline = [c for c in tox if c.endswith(f"_{HEADLINE_TOXICITY}")]
    out = [measure_vs_share(summary, m, folder, chance, named(m, scorers)) for m in tox]
    out += [tradeoff(summary, m, folder, chance, named(m, scorers)) for m in headline]
    out += [probe_accuracy_by_share(by_share, tests, folder), head_heatmaps(by_share, folder)]
    out += [measure_vs_share(summary, m, folder, chance) for m in CAPABILITY if m in cols]
    out += [measure_vs_share(summary, m, folder, chance, named(m, scorers)) for m in attack]
    out.append(toy_entanglement(table, folder))
    return [p for p in out if p is not None]
