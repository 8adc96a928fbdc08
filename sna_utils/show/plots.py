"""The figures: each function takes a results table and returns a matplotlib Figure.

Figure 3 (confidence vs improvement), Figure 4 (SST-2 by zone), baselines, SNA against control,
layer specialisation, interference, score distributions, overlap, layer x multiplier heatmaps,
improvement vs k, the golden zone and the model comparison. Imports ``style``, ``analysis``, ``heldout`` and ``core``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..judge.analysis import golden_zone, layer_profile
from ..core import ZONE_NAMES
from ..errors import SNAError
from ..judge.heldout import column_on
from .style import (ACCENT_COLOR, BAND_COLORS, CONTROL_COLOR, GOLDEN_COLOR, IMPROVEMENT_CMAP, MODEL_HATCHES,
                    MODEL_MARKERS, ZONE_COLORS, color_ticklabels, improvement_axis, one_model, p_floor, place_labels,
                    shade_zones, subplots, symlog_norm, zone_handles)


def _task_heatmap(ax, fig, mat: pd.DataFrame, zones: Sequence[int], xlabel: str, ylabel: str, cbar: str,
                  annotate: bool = False):
    im = ax.imshow(mat.to_numpy(float), aspect="auto", cmap=IMPROVEMENT_CMAP, norm=symlog_norm(mat.to_numpy(float)))
    ax.set_xticks(range(mat.shape[1]), [str(c) for c in mat.columns], rotation=90 if mat.shape[1] > 12 else 0)
    ax.set_yticks(range(mat.shape[0]), mat.index)
    color_ticklabels(ax.get_yticklabels(), zones)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(False)
    if annotate:
        for (i, j), v in np.ndenumerate(mat.to_numpy(float)):
            ax.text(j, i, f"{v:+.0f}", ha="center", va="center", fontsize=6.5, color="0.1")
    fig.colorbar(im, ax=ax, label=cbar, shrink=0.9)
    return im


def _group_zone(group: str) -> int:
    inverse = {v: z for z, v in ZONE_NAMES.items()}
    if group in inverse:
        return inverse[group]
    return 1 if group.startswith("uncertain") else (3 if group.startswith("confident") else 2)


def plot_baseline_zones(baselines: pd.DataFrame):
    """Each task's baseline target probability (log scale) in its zone, one panel per model."""
    models = list(dict.fromkeys(baselines["model"]))
    n_tasks = baselines.groupby("model").size().max()
    fig, axes = subplots(1, len(models), size=(5.6, 0.3 * n_tasks + 1.4))
    lo = p_floor(baselines["p_base"])
    for ax, model in zip(axes[0], models):
        b = baselines[baselines["model"] == model].sort_values("p_base")
        shade_zones(ax, lo)
        y = np.arange(len(b))
        ax.hlines(y, lo, b["p_base"], color="0.7", lw=1)
        ax.scatter(b["p_base"], y, c=[ZONE_COLORS[z] for z in b["zone"]], s=45, zorder=3, edgecolors="k", lw=0.4)
        ax.set_yticks(y, b["task"])
        color_ticklabels(ax.get_yticklabels(), b["zone"])
        ax.set_xlabel("baseline probability of the target, P_base (log scale)")
        ax.set_title(f"{model}: baseline confidence per task")
        ax.grid(axis="y", alpha=0)
    axes[0, -1].legend(handles=zone_handles(), loc="lower right", frameon=True)
    return fig


def plot_sna_vs_control(df: pd.DataFrame):
    """Every configuration: SNA's improvement against the random-neuron control's (above the diagonal: SNA wins)."""
    models = list(dict.fromkeys(df["model"]))
    fig, axes = subplots(1, len(models), size=(5.4, 4.8))
    for ax, model in zip(axes[0], models):
        d = df[df["model"] == model]
        ax.scatter(d["control_improvement_pct"], d["improvement_pct"], c=[ZONE_COLORS[z] for z in d["zone"]],
                   s=16, alpha=0.7, edgecolors="none")
        both = pd.concat([d["improvement_pct"], d["control_improvement_pct"]])
        lim = float(np.nanmax(np.abs(both))) * 1.2 or 1.0
        ax.plot([-lim, lim], [-lim, lim], color=CONTROL_COLOR, lw=0.9, ls="--", label="SNA = control")
        ax.axhline(0, color="0.6", lw=0.6)
        ax.axvline(0, color="0.6", lw=0.6)
        improvement_axis(ax, both, "x")
        improvement_axis(ax, both, "y")
        share = float((d["gain_over_control_pct"] > 0).mean())
        ax.set_title(f"{model}: SNA beats control in {share:.0%} of {len(d)} configs")
        ax.set_xlabel("random-neuron control: change in P(target) (%)")
        ax.set_ylabel("SNA: change in P(target) (%)")
    axes[0, 0].legend(handles=zone_handles() + axes[0, 0].get_legend_handles_labels()[0], loc="upper left")
    return fig


def plot_layer_specialisation(df: pd.DataFrame):
    """Tasks x layers: the best improvement over (k, m); circles mark each task's best layer."""
    prof = layer_profile(df)
    zone = df.groupby(["model", "task"])["zone"].first()
    models = list(dict.fromkeys(df["model"]))
    n_layers_max, n_tasks = prof["layer"].nunique(), prof["task"].nunique()
    fig, axes = subplots(len(models), 1, size=(0.32 * n_layers_max + 4.5, 0.32 * n_tasks + 1.6))
    for ax, model in zip(axes[:, 0], models):
        p = prof[prof["model"] == model]
        order = p.drop_duplicates("task").sort_values(["category", "task"])["task"]
        mat = p.pivot(index="task", columns="layer", values="improvement_pct").loc[order]
        _task_heatmap(ax, fig, mat, [zone[(model, t)] for t in mat.index], "layer",
                      "task (label colour = zone)", "best improvement over k and m (%)")
        best = np.nanargmax(mat.to_numpy(float), axis=1)
        ax.scatter(best, range(len(mat)), s=70, facecolors="none", edgecolors="k", lw=1.2, label="best layer")
        ax.set_title(f"{model}: where each task gains most")
    axes[-1, 0].legend(loc="upper left", bbox_to_anchor=(0, -0.12), frameon=False)
    return fig


def plot_interference(inter: pd.DataFrame, part: str | None = None):
    """Source task's neurons (rows) measured on every target task (columns): improvement in %, on every
    evaluation prompt or on ``part`` ("test", "selection") of them."""
    from matplotlib.patches import Rectangle

    model, d = one_model(inter, None)
    col = column_on(d, "improvement_pct", part)
    order = d.drop_duplicates("target_task").sort_values(["target_category", "target_task"])["target_task"]
    mat = d.pivot(index="source_task", columns="target_task", values=col).loc[order, order]
    zone = d.drop_duplicates("target_task").set_index("target_task")["target_zone"]
    n = len(order)
    fig, axes = subplots(size=(0.55 * n + 3.5, 0.5 * n + 1.8))
    ax = axes[0, 0]
    _task_heatmap(ax, fig, mat, zone[order], "target task (measured on)", "source task (neurons from)",
                  "change in P(target) (%)", annotate=n <= 16)
    ax.set_xticks(range(n), order, rotation=45, ha="right")
    color_ticklabels(ax.get_xticklabels(), zone[order])
    for i in range(n):
        ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, ec="k", lw=1.2))
    r = d.iloc[0]
    where = "" if part is None else f", {part} prompts"
    ax.set_title(f"{model}: cross-task interference (layer {r['layer']}, k = {r['k']}, m = {r['multiplier']:g}"
                 f"{where})")
    return fig


def plot_score_distributions(scores: pd.DataFrame, k: int = 10):
    """Per layer: the spread of differential scores (box: 1st-99th percentile), each task's best
    score (dots) and the k-th best score, the selection threshold at k (line)."""
    model, s = one_model(scores, None)
    layers = sorted(s["layer"].unique())
    fig, axes = subplots(size=(max(6.0, 0.5 * len(layers) + 2), 4.4))
    ax = axes[0, 0]
    ax.boxplot([s.loc[s["layer"] == L, "score"].to_numpy() for L in layers], positions=layers, whis=(1, 99),
               showfliers=False, widths=0.6, patch_artist=True, boxprops=dict(facecolor="0.88", edgecolor="0.5"),
               medianprops=dict(color="0.3"), whiskerprops=dict(color="0.5"), capprops=dict(color="0.5"))
    best = s.groupby(["layer", "task"])["score"].max().reset_index()
    jitter = np.random.default_rng(0).uniform(-0.18, 0.18, len(best))
    ax.scatter(best["layer"] + jitter, best["score"], s=10, color=CONTROL_COLOR, label="best neuron of each task",
               zorder=3)
    kth = s[s["rank"] == k - 1].groupby("layer")["score"].mean()
    ax.plot(kth.index, kth.to_numpy(), "-o", color=ACCENT_COLOR, ms=4, label=f"k-th best score (k = {k}), mean over tasks")
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_xticks(layers, [str(L) for L in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("score = mean activation, task - neutral")
    ax.set_title(f"{model}: differential activation scores per layer (all tasks, all neurons)")
    ax.legend(loc="upper left")
    return fig


def plot_neuron_overlap(jaccard: pd.DataFrame, title: str = ""):
    """Jaccard overlap of the tasks' selected neuron sets (1 = identical sets)."""
    n = len(jaccard)
    fig, axes = subplots(size=(0.5 * n + 3.2, 0.45 * n + 1.6))
    ax = axes[0, 0]
    im = ax.imshow(jaccard.to_numpy(float), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), jaccard.columns, rotation=45, ha="right")
    ax.set_yticks(range(n), jaccard.index)
    ax.grid(False)
    if n <= 16:
        for (i, j), v in np.ndenumerate(jaccard.to_numpy(float)):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6.5, color="w" if v > 0.6 else "0.15")
    fig.colorbar(im, ax=ax, label="Jaccard index |A & B| / |A | B|", shrink=0.9)
    ax.set_title(title or "Overlap of the tasks' top-k neuron sets")
    return fig


def plot_confidence_vs_improvement(summary: pd.DataFrame, rho, p, gain: str = "best_improvement_pct"):
    """Figure 3: each task's baseline probability (log x, zones shaded) against its improvement, with
    Spearman's rho and p (floats, or dicts by model) printed on the plot."""
    from matplotlib.lines import Line2D

    fig, axes = subplots(size=(7.6, 5.0))
    ax = axes[0, 0]
    shade_zones(ax, p_floor(summary["p_base"]))
    models = list(dict.fromkeys(summary["model"]))
    labels = []
    for task, g in summary.groupby("task"):  # one label per task; a thin line joins its points across models
        if len(g) > 1:
            ax.plot(g["p_base"], g[gain], color="0.6", lw=0.7, alpha=0.6, zorder=2)
        labels.append(ax.text(g["p_base"].iloc[0], g[gain].iloc[0], task, fontsize=7, color="0.3"))
    for i, model in enumerate(models):
        s = summary[summary["model"] == model]
        ax.scatter(s["p_base"], s[gain], c=[ZONE_COLORS[z] for z in s["zone"]], marker=MODEL_MARKERS[i % 5],
                   s=60, edgecolors="k", lw=0.5, zorder=3)
    ax.axhline(0, color="0.4", lw=0.8)
    improvement_axis(ax, summary[gain])
    rhos = rho if isinstance(rho, dict) else {None: rho}
    ps = p if isinstance(p, dict) else {None: p}
    lines = [f"{m + ': ' if m else ''}Spearman ρ = {rhos[m]:.3f}, p = {ps[m]:.3g}" for m in rhos]
    n = summary.groupby("model").size().max()
    ax.text(1.02, 0.0, "\n".join(lines) + f"\n(one point per task, n = {n})", transform=ax.transAxes, ha="left",
            va="bottom", fontsize=9, bbox=dict(boxstyle="round", fc="white", ec="0.6"))
    handles = zone_handles()
    if len(models) > 1:
        handles += [Line2D([], [], marker=MODEL_MARKERS[i % 5], ls="", color="0.3", label=m) for i, m in enumerate(models)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xlabel("baseline probability of the target, P_base (log scale)")
    ax.set_ylabel("best improvement of P(target) (% of P_base)")
    ax.set_title("Confidence vs improvement across tasks (paper's Figure 3)")
    place_labels(ax, labels)
    return fig


def plot_sst2_zones(report: pd.DataFrame, view: str = "METHOD zone", title: str = ""):
    """Figure 4: SST-2 accuracy and mean P(correct label word) per zone, before SNA, after, and control."""
    from matplotlib.patches import Patch

    r = report[report["view"] == view].copy()
    if r.empty:
        raise SNAError(f"No rows with view {view!r}; views: {sorted(report['view'].unique())}.")
    r["z"] = [_group_zone(g) for g in r["group"]]
    r = r.sort_values("z")
    fig, axes = subplots(1, 2, size=(max(4.0, 1.7 * len(r) + 1), 4.4))
    x, w = np.arange(len(r)), 0.27
    # zones in the zone colours; the 2-way confidence bands in a ramp of their own (uncertain -> confident)
    colors = [ZONE_COLORS[z] if view == "METHOD zone" else BAND_COLORS[z - 1] for z in r["z"]]
    panels = [("accuracy", "accuracy (%)", 1.0, "{:+.1f} pp"),  # report: % and pp; p drawn as a probability
              ("p", "mean P(correct label word), a probability", 0.01, "Δp {:+.2g}")]
    for ax, (metric, label, scale, fmt) in zip(axes[0], panels):
        base, sna, ctrl = (r[f"{metric}_{run}"] * scale for run in ("base", "sna", "control"))
        ax.bar(x - w, base, w, color=colors, alpha=0.35)
        ax.bar(x, sna, w, color=colors)
        ax.bar(x + w, ctrl, w, color="white", edgecolor=colors, hatch="///", lw=1)
        for xi, top, chg in zip(x, np.maximum(sna, base), sna - base):
            ax.annotate(fmt.format(chg), (xi, top), xytext=(0, 3), textcoords="offset points", ha="center",
                        fontsize=8, fontweight="bold")
        ax.set_xticks(x, [f"{g}\nn = {n}" for g, n in zip(r["group"], r["n"])], fontsize=8)
        ax.set_ylabel(label)
        ax.set_ylim(0, max(100.0 if metric == "accuracy" else 0, float(max(base.max(), sna.max(), ctrl.max())) * 1.15) or 1)
        ax.grid(axis="x", alpha=0)
    axes[0, 0].legend(handles=[Patch(fc="0.5", alpha=0.35, label="before SNA"), Patch(fc="0.35", label="after SNA"),
                               Patch(fc="white", ec="0.35", hatch="///", label="random-neuron control")],
                      loc="upper right")
    fig.suptitle((title or f"SST-2 by {view}: before and after SNA") + "\nlabels: change after SNA, accuracy in "
                 "percentage points (pp), P(correct) as a difference of probabilities (Δp)", fontsize=10)
    return fig


def plot_layer_multiplier_heatmaps(df: pd.DataFrame, k: int | None = None, model: str | None = None):
    """One panel per task: improvement (%) over layer x multiplier at one k (default: the k with the highest
    mean improvement); panel titles in the task's zone colour."""
    model, d = one_model(df, model)
    if k is None:
        k = int(d.groupby("k")["improvement_pct"].mean().idxmax())
    d = d[d["k"] == k]
    if d.empty:
        raise SNAError(f"k = {k} is not in the table (k values: {sorted(df['k'].unique())}).")
    order = d.drop_duplicates("task").sort_values(["category", "task"])
    ncols = min(4, len(order))
    nrows = -(-len(order) // ncols)
    n_l, n_m = d["layer"].nunique(), d["multiplier"].nunique()
    fig, axes = subplots(nrows, ncols, size=(0.3 * n_m + 1.6, 0.13 * n_l + 1.5), sharex=True, sharey=True)
    norm = symlog_norm(d["improvement_pct"])
    for ax, (_, t) in zip(axes.ravel(), order.iterrows()):
        mat = d[d["task"] == t["task"]].pivot(index="layer", columns="multiplier", values="improvement_pct")
        im = ax.imshow(mat.to_numpy(float), aspect="auto", origin="lower", cmap=IMPROVEMENT_CMAP, norm=norm)
        ax.set_title(f"{t['task']} (Zone {t['zone']})", color=ZONE_COLORS[int(t["zone"])], fontsize=9)
        ax.set_xticks(range(n_m), [f"{m:g}" for m in mat.columns], fontsize=7)
        step = max(1, n_l // 6)
        ax.set_yticks(range(0, n_l, step), [str(L) for L in mat.index[::step]], fontsize=7)
        ax.grid(False)
    for ax in axes.ravel()[len(order):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("multiplier m")
    for ax in axes[:, 0]:
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes.ravel().tolist(), label=f"improvement of P(target) at k = {k} (%)", shrink=0.8)
    fig.suptitle(f"{model}: improvement by layer and multiplier, k = {k}")
    return fig


def plot_improvement_vs_k(df: pd.DataFrame):
    """Per task: the best improvement over layers and multipliers at each k (log x), coloured by zone;
    dashed: the random-neuron control's best, averaged over tasks."""
    from matplotlib.lines import Line2D

    models = list(dict.fromkeys(df["model"]))
    fig, axes = subplots(1, len(models), size=(6.0, 4.4))
    for ax, model in zip(axes[0], models):
        d = df[df["model"] == model]
        best = d.groupby(["task", "k"], as_index=False)[["improvement_pct", "control_improvement_pct"]].max()
        zone = d.groupby("task")["zone"].first()
        labels = []
        for task, g in best.groupby("task"):
            ax.plot(g["k"], g["improvement_pct"], "-o", color=ZONE_COLORS[zone[task]], ms=3.5, lw=1.3, alpha=0.85)
            labels.append(ax.text(g["k"].iloc[-1], g["improvement_pct"].iloc[-1], task, fontsize=6.5,
                                  color="0.35", va="center"))
        ctrl = best.groupby("k")["control_improvement_pct"].mean()
        ax.plot(ctrl.index, ctrl.to_numpy(), "--", color=CONTROL_COLOR, lw=2)
        ks = sorted(d["k"].unique())
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlim(min(ks) / 1.3, max(ks) * 3)  # room right of the last k for the task labels
        ax.minorticks_off()
        improvement_axis(ax, best["improvement_pct"])
        ax.set_xlabel("number of amplified neurons k (log scale)")
        ax.set_ylabel("best improvement over layers and m (%)")
        ax.set_title(f"{model}: improvement vs k")
        place_labels(ax, labels)
    axes[0, 0].legend(handles=zone_handles() + [Line2D([], [], ls="--", color=CONTROL_COLOR, lw=2,
                                                        label="random control (mean over tasks)")], loc="best")
    return fig


def plot_golden_zone(df: pd.DataFrame, min_improvement_pct: float = 10.0, max_kl: float = 0.05):
    """Left: every configuration's side effect (KL, log x) against its improvement, the golden zone shaded.
    Right: the golden-zone map, the number of golden configurations per (layer, multiplier)."""
    models = list(dict.fromkeys(df["model"]))
    n_l = df.groupby("model")["layer"].nunique().max()
    fig, axes = subplots(len(models), 2, size=(5.6, max(4.2, 0.16 * n_l + 2.2)))
    for (ax, axm), model in zip(axes, models):
        d = df[df["model"] == model]
        kl = d["side_effect_kl"].clip(lower=1e-6)
        ax.scatter(kl, d["improvement_pct"], c=[ZONE_COLORS[z] for z in d["zone"]], s=9, alpha=0.5, edgecolors="none")
        ax.set_xscale("log")
        improvement_axis(ax, d["improvement_pct"])
        (x0, _), (_, y1) = ax.get_xlim(), ax.get_ylim()
        ax.fill_between([x0, max_kl], min_improvement_pct, max(y1, min_improvement_pct * 2), color=GOLDEN_COLOR,
                        alpha=0.25, lw=0, label=f"golden zone: ≥ {min_improvement_pct:g} %, KL ≤ {max_kl:g} nats")
        ax.set_xlim(x0, max(ax.get_xlim()[1], max_kl * 2))
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_xlabel("side effect: KL(base || SNA) on neutral prompts (nats, log scale)")
        ax.set_ylabel("improvement of P(target) (%)")
        ax.set_title(f"{model}: {len(golden_zone(d, min_improvement_pct, max_kl))} of {len(d)} configs golden")
        ax.legend(handles=zone_handles() + ax.get_legend_handles_labels()[0], loc="lower left", fontsize=7.5)
        counts = golden_zone(d, min_improvement_pct, max_kl).groupby(["layer", "multiplier"]).size()
        grid = counts.reindex(pd.MultiIndex.from_product([sorted(d["layer"].unique()), sorted(d["multiplier"].unique())],
                                                         names=["layer", "multiplier"]), fill_value=0).unstack()
        im = axm.imshow(grid.to_numpy(float), aspect="auto", origin="lower", cmap="cividis", vmin=0)
        axm.set_xticks(range(grid.shape[1]), [f"{m:g}" for m in grid.columns])
        step = max(1, len(grid) // 12)
        axm.set_yticks(range(0, len(grid), step), [str(L) for L in grid.index[::step]])
        axm.grid(False)
        axm.set_xlabel("multiplier m")
        axm.set_ylabel("layer")
        axm.set_title("golden-zone map (summed over tasks and k)")
        fig.colorbar(im, ax=axm, label="golden configurations", shrink=0.9)
    return fig


def plot_model_comparison(summary: pd.DataFrame):
    """Tasks side by side across models: baseline probability (log x, zones shaded) and best improvement."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    models = list(dict.fromkeys(summary["model"]))
    tasks = sorted(summary["task"].unique())
    fig, axes = subplots(1, 2, size=(5.4, 0.25 * len(tasks) * len(models) + 1.8))
    lo = p_floor(summary["p_base"])
    shade_zones(axes[0, 0], lo)
    h = 0.8 / len(models)
    for i, model in enumerate(models):
        s = summary[summary["model"] == model].set_index("task").reindex(tasks)
        y = np.arange(len(tasks)) - 0.4 + h * (i + 0.5)
        colors = [ZONE_COLORS[int(z)] if z == z else "0.8" for z in s["zone"]]
        axes[0, 0].scatter(s["p_base"], y, c=colors, marker=MODEL_MARKERS[i % 5], s=50, edgecolors="k", lw=0.4, zorder=3)
        axes[0, 1].barh(y, s["best_improvement_pct"], h * 0.9, color=colors, hatch=MODEL_HATCHES[i % 4],
                        edgecolor="0.2", lw=0.4)
    for ax in axes[0]:
        ax.set_yticks(range(len(tasks)), tasks)
        ax.grid(axis="y", alpha=0)
    axes[0, 0].set_xlabel("baseline probability of the target, P_base (log scale)")
    axes[0, 1].set_xlabel("best improvement of P(target) (%)")
    axes[0, 1].axvline(0, color="0.4", lw=0.8)
    improvement_axis(axes[0, 1], summary["best_improvement_pct"], "x")
    axes[0, 0].legend(handles=zone_handles() + [Line2D([], [], marker=MODEL_MARKERS[i % 5], ls="", color="0.3",
                                                        label=m) for i, m in enumerate(models)],
                      loc="lower right", frameon=True)
    axes[0, 1].legend(handles=[Patch(fc="0.85", ec="0.2", hatch=MODEL_HATCHES[i % 4], label=m)
                               for i, m in enumerate(models)], loc="best", frameon=True)
    fig.suptitle("Baseline zone and best improvement per task, by model")
    return fig
