"""Statistics on the results tables: per-task summaries, zones, Spearman's rho, golden zones, layers,
the control comparison, and the paper's numbers beside this run's.

Works on DataFrames alone (no model). Imports ``core`` (the zones), ``errors`` and ``heldout``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..core import ZONE_NAMES
from ..errors import SNAError
from .heldout import column_on


PAPER_NUMBERS = {  # METHOD, "What the paper reports"
    "configurations": 24192, "spearman_rho": -0.762, "spearman_p": 0.004, "zone1_mean_improvement_pct": 27.85,
    "zone1_best_improvement_pct": 70.3, "zone3_rarely_above_pct": 7.0, "sst2_uncertain_change_pp": 57.3,
    "pythia_zone1_mean_improvement_pct": 178.98,
}


PAPER_BEST_LAYERS = {"mathematics": 8, "logical_reasoning": 10, "abstract_semantics": 21, "coding": 22}


def best_per_task(df: pd.DataFrame, metric: str = "improvement_pct") -> pd.DataFrame:
    """Each (model, task)'s best configuration by ``metric``."""
    idx = df.groupby(["model", "task"])[metric].idxmax()
    return df.loc[idx].reset_index(drop=True)


def task_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task): baseline P, zone, best and mean improvement, best layer."""
    best = best_per_task(df)
    mean = df.groupby(["model", "task"])["improvement_pct"].mean().rename("mean_improvement_pct")
    out = best[["model", "task", "category", "p_base", "zone", "improvement_pct", "layer", "k", "multiplier",
                "gain_over_control_pct", "side_effect_kl"]].rename(
        columns={"improvement_pct": "best_improvement_pct", "layer": "best_layer", "k": "best_k",
                 "multiplier": "best_multiplier"})
    return out.merge(mean, on=["model", "task"]).sort_values(["model", "p_base"], ignore_index=True)


def confidence_gain_correlation(summary: pd.DataFrame, gain: str = "best_improvement_pct") -> tuple[float, float]:
    """Spearman's rho and p between baseline P and a task's gain (METHOD: one point per task)."""
    from scipy.stats import spearmanr

    if len(summary) < 3:
        return float("nan"), float("nan")
    res = spearmanr(summary["p_base"], summary[gain])
    return float(res.statistic), float(res.pvalue)


def zone_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """Per zone: number of tasks, mean and max best improvement."""
    return summary.groupby("zone").agg(n_tasks=("task", "count"), mean_best_improvement_pct=(
        "best_improvement_pct", "mean"), max_best_improvement_pct=("best_improvement_pct", "max")).reset_index()


def zones_by_model(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`zone_summary` per model, with the tasks of each zone named."""
    parts = []
    for model, s in summary.groupby("model"):
        z = zone_summary(s)
        z.insert(0, "model", model)
        z["tasks"] = [", ".join(s.loc[s["zone"] == zz, "task"]) for zz in z["zone"]]
        parts.append(z)
    return pd.concat(parts, ignore_index=True)


def golden_zone(df: pd.DataFrame, min_improvement_pct: float = 10.0, max_kl: float = 0.05) -> pd.DataFrame:
    """Configurations with improvement >= ``min_improvement_pct`` and side effect <= ``max_kl`` nats."""
    return df[(df["improvement_pct"] >= min_improvement_pct) & (df["side_effect_kl"] <= max_kl)]


def golden_zone_summary(df: pd.DataFrame, min_improvement_pct: float = 10.0, max_kl: float = 0.05) -> pd.DataFrame:
    """Per (model, task): how many configurations are golden, and the best golden one."""
    gold = golden_zone(df, min_improvement_pct, max_kl)
    counts = df.groupby(["model", "task"]).agg(category=("category", "first"), p_base=("p_base", "first"),
                                               zone=("zone", "first"), n_configs=("improvement_pct", "size"))
    counts["n_golden"] = gold.groupby(["model", "task"]).size().reindex(counts.index).fillna(0).astype(int)
    counts["share_golden"] = counts["n_golden"] / counts["n_configs"]
    best = best_per_task(gold)[["model", "task", "improvement_pct", "side_effect_kl", "layer", "k", "multiplier"]] \
        if len(gold) else pd.DataFrame(columns=["model", "task"])
    best = best.rename(columns={c: f"golden_best_{c}" for c in best.columns if c not in ("model", "task")})
    return counts.reset_index().merge(best, on=["model", "task"], how="left").sort_values(
        ["model", "p_base"], ignore_index=True)


def control_comparison(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task): SNA against the random-neuron control over the grid, and at SNA's best configuration."""
    out = df.groupby(["model", "task"]).agg(
        category=("category", "first"), p_base=("p_base", "first"), zone=("zone", "first"),
        n_configs=("improvement_pct", "size"), mean_improvement_pct=("improvement_pct", "mean"),
        mean_control_improvement_pct=("control_improvement_pct", "mean"),
        share_sna_beats_control=("gain_over_control_pct", lambda s: float((s > 0).mean())))
    best = best_per_task(df)[["model", "task", "improvement_pct", "control_improvement_pct", "layer", "k",
                              "multiplier"]].rename(columns={
        "improvement_pct": "best_improvement_pct", "control_improvement_pct": "control_at_best_pct",
        "layer": "best_layer", "k": "best_k", "multiplier": "best_multiplier"})
    return out.reset_index().merge(best, on=["model", "task"]).sort_values(["model", "p_base"], ignore_index=True)


def layer_profile(df: pd.DataFrame) -> pd.DataFrame:
    """Best improvement over (k, multiplier) for every (model, task, layer)."""
    return df.groupby(["model", "category", "task", "layer"], as_index=False)["improvement_pct"].max()


def layer_specialisation(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, category): the layer whose best improvement, averaged over the category's tasks, is highest,
    and each task's own best layer."""
    per_layer = layer_profile(df)
    cat = per_layer.groupby(["model", "category", "layer"], as_index=False)["improvement_pct"].mean()
    best = cat.loc[cat.groupby(["model", "category"])["improvement_pct"].idxmax()]
    task_best = per_layer.loc[per_layer.groupby(["model", "task"])["improvement_pct"].idxmax()]
    listing = task_best.groupby(["model", "category"]).apply(
        lambda g: ", ".join(f"{t}: {L}" for t, L in zip(g["task"], g["layer"])), include_groups=False)
    out = best.rename(columns={"layer": "best_layer", "improvement_pct": "mean_best_improvement_pct"})
    out["task_best_layers"] = [listing[(m, c)] for m, c in zip(out["model"], out["category"])]
    out["paper_best_layer"] = out["category"].map(PAPER_BEST_LAYERS)
    return out.reset_index(drop=True)


def best_shared_config(df: pd.DataFrame) -> dict:
    """The (layer, k, multiplier) with the highest improvement averaged over tasks (one model's table)."""
    if df["model"].nunique() != 1:
        raise SNAError(f"best_shared_config needs one model's table, got {sorted(df['model'].unique())}.")
    mean = df.groupby(["layer", "k", "multiplier"])["improvement_pct"].mean()
    layer, k, m = mean.idxmax()
    return dict(layer=int(layer), k=int(k), multiplier=float(m), mean_improvement_pct=float(mean.max()))


def interference_summary(inter: pd.DataFrame, part: str | None = None) -> pd.DataFrame:
    """Per source task: the gain on its own task, the mean effect on the other tasks of its category and of
    other categories, and the mean Jaccard overlap of its neurons with theirs; on every evaluation prompt, or on
    ``part`` ("selection" or "test") of them."""
    col = column_on(inter, "improvement_pct", part)
    inter = inter.assign(improvement_pct=inter[col])
    rows = []
    for (model, src), g in inter.groupby(["model", "source_task"], sort=False):
        own = g[g["same_task"]]
        same_cat = g[~g["same_task"] & (g["target_category"] == g["source_category"])]
        other = g[g["target_category"] != g["source_category"]]
        rows.append(dict(model=model, source_task=src, category=g["source_category"].iloc[0],
                         own_improvement_pct=float(own["improvement_pct"].mean()),
                         same_category_mean_pct=float(same_cat["improvement_pct"].mean()) if len(same_cat) else float("nan"),
                         other_categories_mean_pct=float(other["improvement_pct"].mean()) if len(other) else float("nan"),
                         n_targets_hurt=int((g.loc[~g["same_task"], "improvement_pct"] < 0).sum()),
                         mean_jaccard_others=float(g.loc[~g["same_task"], "jaccard"].mean()) if len(g) > 1 else float("nan")))
    return pd.DataFrame(rows)


def paper_comparison(sweep: pd.DataFrame | None, profile: str, sst2_report: pd.DataFrame | None = None,
                     sst2_model: str | None = None, pythia: pd.DataFrame | None = None) -> pd.DataFrame:
    """METHOD's published numbers beside this run's, with the model and profile behind each.

    Our readings: 'Zone 1 mean improvement' is the mean over Zone-1 tasks of each task's best configuration,
    'best configuration' the largest of those; the SST-2 claim is the accuracy change (pp) of Zone-1 examples.
    """
    rows = []
    nan = float("nan")

    def add(claim, paper, value, unit, model):
        rows.append(dict(claim=claim, paper=paper, this_run=float(value), unit=unit, model=model, profile=profile))

    P = PAPER_NUMBERS
    sweep = sweep if sweep is not None else pd.DataFrame(columns=["model", "task"])
    if len(sweep):
        add("configurations in the grid", P["configurations"], len(sweep), "rows",
            ", ".join(sorted(sweep["model"].unique())))
    for model, s in (task_summary(sweep).groupby("model") if len(sweep) else []):
        rho, p = confidence_gain_correlation(s)
        z1, z3 = s[s["zone"] == 1]["best_improvement_pct"], s[s["zone"] == 3]["best_improvement_pct"]
        add(f"Spearman rho, P_base vs best improvement (n = {len(s)} tasks)", P["spearman_rho"], rho, "", model)
        add("Spearman p-value", P["spearman_p"], p, "", model)
        add(f"Zone 1 mean improvement ({len(z1)} tasks)", P["zone1_mean_improvement_pct"],
            z1.mean() if len(z1) else nan, "%", model)
        add("Zone 1 best configuration", P["zone1_best_improvement_pct"], z1.max() if len(z1) else nan, "%", model)
        add(f"Zone 3 best improvement, 'rarely above' ({len(z3)} tasks)", P["zone3_rarely_above_pct"],
            z3.max() if len(z3) else nan, "%", model)
        spec = layer_specialisation(sweep[sweep["model"] == model]).set_index("category")["best_layer"]
        for cat, layer in PAPER_BEST_LAYERS.items():
            add(f"best layer: {cat}", layer, spec.get(cat, nan), "layer", model)
    if sst2_report is not None:
        z = sst2_report[sst2_report["view"] == "METHOD zone"].set_index("group")["accuracy_change_pp"]
        add("SST-2 accuracy change, Zone 1 (uncertain) examples", P["sst2_uncertain_change_pp"],
            z.get(ZONE_NAMES[1], nan), "pp", sst2_model)
        add("SST-2 accuracy change, Zone 3 (confident) examples: 'stable'", 0.0, z.get(ZONE_NAMES[3], nan), "pp",
            sst2_model)
    if pythia is not None:
        for model, s in task_summary(pythia).groupby("model"):
            z1 = s[s["zone"] == 1]["best_improvement_pct"]
            add(f"Pythia Zone 1 mean improvement, arithmetic ({len(z1)} tasks)",
                P["pythia_zone1_mean_improvement_pct"], z1.mean() if len(z1) else nan, "%", model)
    return pd.DataFrame(rows)


def round_for_reading(table: pd.DataFrame, significant: int = 4, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A copy with the float ``columns`` (default: all) rounded to ``significant`` digits (never into the integer
    part: 24192 stays), for tables saved to be read (CSV); the Parquet tables keep full precision."""
    def one(v: float) -> float:
        if not np.isfinite(v) or v == 0:
            return v
        return round(float(v), max(0, significant - 1 - int(np.floor(np.log10(abs(v))))))

    out = table.copy()
    for col in columns if columns is not None else out.select_dtypes("float").columns:
        out[col] = out[col].map(one)
    return out
