"""The report's plots: one idea per PNG, each skipped cleanly when its data is absent.

Every plotting function takes the report table (`runtime.report.build_table`) or the probes' head
accuracies and returns the written (file name, caption) pairs. Means and error bars are over seeds
(sample standard deviation); a point with one seed has no bar.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

TOXICITY = re.compile(r"^(?!attack)(?!.*_challenging_)[a-z0-9_]+_(expected_max_toxicity|toxicity_probability|mean_toxicity)$")
CAPABILITY = ("mmlu_accuracy", "cross_entropy", "kl_to_base", "detection_accuracy")
PROBE = ("probe_best_head_accuracy", "probe_mean_head_accuracy", "probe_heads_above_threshold",
         "probe_best_layer_accuracy")
LABELS = {
    "mmlu_accuracy": "MMLU accuracy", "cross_entropy": "cross-entropy on held-out clean text (nats/token)",
    "kl_to_base": "KL to the base model (nats/token)", "detection_accuracy": "toxicity detection accuracy",
    "probe_best_head_accuracy": "best head probe accuracy", "probe_mean_head_accuracy": "mean head probe accuracy",
    "probe_heads_above_threshold": "heads above the accuracy threshold",
    "probe_best_layer_accuracy": "best layer probe accuracy",
}
MARKERS = {"base": "o", "prompting": "s", "sft": "^", "dpo": "D", "iti": "v"}
DPI = 110


TOXICITY_LABELS = {"expected_max_toxicity": "expected max. toxicity", "toxicity_probability": "toxicity probability",
                   "mean_toxicity": "mean toxicity"}


def label(metric: str) -> str:
    """Axis label: `rtp_expected_max_toxicity` → `rtp: expected max. toxicity`."""
    m = TOXICITY.match(metric)
    if m:
        return f"{metric[:m.start(1) - 1].replace('_', ' ')}: {TOXICITY_LABELS[m.group(1)]}"
    return LABELS.get(metric, metric.replace("_", " "))


def line_name(variant: str, alpha) -> str:
    if variant == "iti" and alpha is not None and not np.isnan(alpha):
        return f"ITI α={alpha:g}"
    return {"base": "base", "prompting": "prompting", "sft": "SFT", "dpo": "DPO"}.get(variant, str(variant))


def _save(fig, folder: Path, name: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / name, dpi=DPI)
    plt.close(fig)
    return name


def _over_seeds(df, by: list[str], metric: str):
    """Mean, std (ddof 1, 0 for one seed) and count of `metric` per `by` group."""
    g = df.dropna(subset=[metric]).groupby(by, dropna=False, sort=True)[metric]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def _percent(ax) -> None:
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{100 * v:g} %"))


def metric_vs_share(df, metric: str, folder: Path) -> tuple[str, str] | None:
    """One line per model variant (each ITI strength its own line) against the toxic share."""
    if metric not in df or df["toxic_share"].isna().all():
        return None
    data = df[df["variant"] == "base"] if metric.startswith("probe_") else df
    data = data.assign(alpha=data["alpha"].fillna(np.nan))
    fig, ax = plt.subplots(figsize=(7.4, 4.2), layout="constrained")
    plotted = 0
    for (variant, alpha), part in data.groupby(["variant", "alpha"], dropna=False, sort=False):
        s = _over_seeds(part, ["toxic_share"], metric)
        if s.empty:
            continue
        ax.errorbar(s["toxic_share"], s["mean"], yerr=s["std"], marker=MARKERS.get(variant, "o"), capsize=3,
                    label=line_name(variant, alpha))
        plotted += 1
    if not plotted:
        plt.close(fig)
        return None
    ax.set_xlabel("toxic share of pretraining data")
    ax.set_ylabel(label(metric))
    _percent(ax)
    ax.set_title(f"{label(metric)} vs toxic share")
    ax.grid(alpha=.3)
    if plotted > 1 or not metric.startswith("probe_"):
        ax.legend(title="model", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, folder, f"{metric}_vs_share.png"), \
        f"{label(metric)} against the toxic share of pretraining data, one line per model variant " \
        f"(mean ± std over seeds)."


def iti_tradeoff(df, tox_metric: str, folder: Path) -> tuple[str, str] | None:
    """ITI's toxicity–capability trade-off over alpha, one curve per toxic share (from the base model at
    α = 0); the other detoxifiers as markers in the share's colour."""
    x_metric = next((m for m in ("cross_entropy", "mmlu_accuracy") if m in df and df[m].notna().any()), None)
    if x_metric is None or tox_metric not in df or not (df["variant"] == "iti").any():
        return None
    shares = sorted(df["toxic_share"].dropna().unique())
    colours = plt.get_cmap("viridis")(np.linspace(0, .9, max(len(shares), 1)))
    fig, ax = plt.subplots(figsize=(7.6, 4.6), layout="constrained")
    for colour, share in zip(colours, shares):
        part = df[df["toxic_share"] == share]
        curve = part[part["variant"].isin(["base", "iti"])].assign(
            alpha=lambda d: d["alpha"].where(d["variant"] == "iti", 0.0))
        xs, ys = _over_seeds(curve, ["alpha"], x_metric), _over_seeds(curve, ["alpha"], tox_metric)
        pts = xs.merge(ys, on="alpha", suffixes=("_x", "_y")).sort_values("alpha")
        ax.errorbar(pts["mean_x"], pts["mean_y"], xerr=pts["std_x"], yerr=pts["std_y"], color=colour,
                    marker="o", capsize=2, label=f"{100 * share:g} %")
        for _, p in pts.iterrows():
            ax.annotate(f"α={p['alpha']:g}", (p["mean_x"], p["mean_y"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color=colour)
        for variant in ("prompting", "sft", "dpo"):
            other = part[part["variant"] == variant]
            if other.empty or other[[x_metric, tox_metric]].isna().all().any():
                continue
            ax.scatter(other[x_metric].mean(), other[tox_metric].mean(), color=colour,
                       marker=MARKERS[variant], s=55, edgecolors="black", linewidths=.6, zorder=3)
    share_legend = ax.legend(title="toxic share\n(ITI curve)", fontsize=8, loc="upper left",
                             bbox_to_anchor=(1.02, 1.0))
    ax.add_artist(share_legend)
    handles = [Line2D([], [], color="grey", marker=MARKERS[v], linestyle="", markeredgecolor="black", label=n)
               for v, n in (("base", "base (α = 0)"), ("prompting", "prompting"), ("sft", "SFT"), ("dpo", "DPO"))
               if v == "base" or (df["variant"] == v).any()]
    ax.legend(handles=handles, title="model", fontsize=8, loc="lower left", bbox_to_anchor=(1.02, 0.0))
    ax.set_xlabel(label(x_metric))
    ax.set_ylabel(label(tox_metric))
    ax.set_title("ITI: toxicity vs capability over steering strength")
    ax.grid(alpha=.3)
    return _save(fig, folder, f"iti_tradeoff_{tox_metric}.png"), \
        f"Trade-off of ITI: {label(tox_metric)} against {label(x_metric)} as the strength α grows, one curve " \
        f"per toxic share starting at the base model (α = 0); other detoxifiers as markers."


def head_heatmaps(by_share: dict[float, list[np.ndarray]], folder: Path) -> tuple[str, str] | None:
    """Per-head probe accuracy, one panel per toxic share (mean over seeds), one shared colour scale."""
    if not by_share:
        return None
    means = {s: np.nanmean(np.stack(a), axis=0) for s, a in by_share.items()}
    vmin = min(np.nanmin(m) for m in means.values())
    vmax = max(np.nanmax(m) for m in means.values())
    n = len(means)
    L, H = next(iter(means.values())).shape
    fig, axes = plt.subplots(1, n, figsize=(0.5 + n * max(2.2, 0.28 * H + 0.8), 0.6 + max(2.4, 0.28 * L)),
                             squeeze=False, sharey=True, layout="constrained")
    for ax, (share, acc) in zip(axes[0], means.items()):
        im = ax.imshow(acc, vmin=vmin, vmax=vmax, cmap="viridis", origin="lower", aspect="auto")
        seeds = len(by_share[share])
        ax.set_title(f"{100 * share:g} % toxic" + (f"\n(mean of {seeds} seeds)" if seeds > 1 else ""), fontsize=9)
        ax.set_xlabel("head")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[0][0].set_ylabel("layer")
    fig.colorbar(im, ax=axes[0].tolist(), label="validation accuracy", shrink=.9)
    return _save(fig, folder, "probe_head_accuracy_heatmaps.png"), \
        "Probe validation accuracy of every attention head, one panel per toxic share, shared colour scale."


def head_accuracy_ecdf(by_share: dict[float, list[np.ndarray]], tests: list[dict], folder: Path):
    """Distribution of head accuracies per toxic share (ECDF, seeds pooled) with the test's p-values."""
    if not by_share:
        return None
    p = {t["toxic_share"]: t["p_value"] for t in tests}
    colours = plt.get_cmap("viridis")(np.linspace(0, .9, len(by_share)))
    fig, ax = plt.subplots(figsize=(7.4, 4.2), layout="constrained")
    for colour, (share, arrays) in zip(colours, by_share.items()):
        acc = np.concatenate([a[np.isfinite(a)] for a in arrays])
        tag = f"{100 * share:g} %" + (f" (p = {p[share]:.2g})" if share in p else " (reference)")
        ax.ecdf(acc, color=colour, label=tag)
    ax.set_xlabel("probe validation accuracy of a head")
    ax.set_ylabel("share of heads with accuracy ≤ x")
    ax.set_title("Head probe accuracies by toxic share")
    ax.grid(alpha=.3)
    ax.legend(title="toxic share\n(one-sided MWU p)", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, folder, "probe_head_accuracy_ecdf.png"), \
        "Empirical CDF of per-head probe accuracies for each toxic share (heads of all seeds pooled); a curve " \
        "further right has more accurate heads. p: one-sided Mann–Whitney U against the reference share."


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


def make_plots(df, by_share, tests, folder: Path) -> list[tuple[str, str]]:
    """Every plot the data supports, in page order."""
    cols = list(df.columns)
    tox = [c for c in cols if TOXICITY.match(c)]
    attack = [c for c in cols if c.startswith("attack") and "success" in c]
    out = [metric_vs_share(df, m, folder) for m in tox + [c for c in CAPABILITY if c in cols]]
    out += [iti_tradeoff(df, m, folder) for m in tox if m.endswith("_expected_max_toxicity")]
    out += [head_heatmaps(by_share, folder), head_accuracy_ecdf(by_share, tests, folder)]
    out += [metric_vs_share(df, m, folder) for m in [c for c in PROBE if c in cols] + attack]
    out.append(toy_entanglement(df, folder))
    return [p for p in out if p is not None]
