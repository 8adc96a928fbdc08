"""Every other best-of choice held out: the best layer (with a bootstrap of which layer wins), golden zones
beside the control's, the shared configuration that cross-task interference uses; and the checks and
per-prompt matrices they share with ``saturation`` (the resampling is ``stats.resample_indices``).

Every choice is made by ``heldout.choose_on_selection`` (or on selection prompts alone) and reported on test
prompts, with the paper's in-sample reading beside it. Works on DataFrames alone (the sweep table and the
per-prompt table of the issue-15 contract). Imports ``errors``, ``heldout``,
``stats``, ``store`` and ``analysis``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..run.store import check_columns, check_prompt_table
from .analysis import PAPER_BEST_LAYERS, golden_zone, layer_specialisation
from ..errors import SNAError
from .heldout import ARMS, CONFIG_KEYS, Arm, arm_column, choose_on_selection, part_column
from .stats import resampled_improvement, within_task_indices

def prompt_matrix(prompts: pd.DataFrame, model: str, task: str, arm: Arm = "sna",
                  part: str = "selection") -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """One task's prompts of one part: configurations ``[c]`` (layer, k, multiplier), p_base ``[n]`` and the
    arm's probabilities ``[c, n]`` (SNAError if a configuration misses a prompt)."""
    g = prompts[(prompts["model"] == model) & (prompts["task"] == task) & (prompts["arm"] == arm)
                & (prompts["part"] == part)]
    if g.empty:
        raise SNAError(f"No {arm} rows on {part} prompts for task {task!r} of {model!r} in the per-prompt table.")
    wide = g.set_index([*CONFIG_KEYS, "prompt_id"])["p"].unstack("prompt_id")
    if wide.isna().any().any():
        raise SNAError(f"Task {task!r} ({arm}, {part}): some configurations lack some prompts.")
    base = g.drop_duplicates("prompt_id").set_index("prompt_id")["p_base"].reindex(wide.columns)
    return wide.index.to_frame(index=False), base.to_numpy(float), wide.to_numpy(float)


# ---------------------------------------------------------------------------
# Layer specialisation, held out
# ---------------------------------------------------------------------------

def layer_profile_heldout(sweep: pd.DataFrame, arm: Arm = "sna", metric: str = "improvement_pct") -> pd.DataFrame:
    """Per (model, category, task, layer): the (k, multiplier) best on selection prompts, its selection value
    (``chosen_on_selection``), its test value (``held_out``) and the layer's in-sample maximum."""
    check_columns(sweep, ("model", "category", "task", "layer"), "sweep table")
    return choose_on_selection(sweep, by=("model", "category", "task", "layer"), metric=metric, arm=arm)


def _best_layer(profile: pd.DataFrame) -> pd.DataFrame:
    """Per (model, category): the layer with the highest selection value averaged over the category's tasks,
    that average and the test value at it; ``task_best_layers`` lists each task's own choice."""
    cat = profile.groupby(["model", "category", "layer"], as_index=False)[["chosen_on_selection", "held_out"]].mean()
    best = cat.loc[cat.groupby(["model", "category"])["chosen_on_selection"].idxmax()].reset_index(drop=True)
    task_best = profile.loc[profile.groupby(["model", "task"])["chosen_on_selection"].idxmax()]
    listing = task_best.groupby(["model", "category"]).apply(
        lambda g: ", ".join(f"{t}: {L}" for t, L in zip(g["task"], g["layer"])), include_groups=False)
    best["task_best_layers"] = [listing[(m, c)] for m, c in zip(best["model"], best["category"])]
    return best.rename(columns={"layer": "best_layer"})


def layer_specialisation_heldout(sweep: pd.DataFrame, prompts: pd.DataFrame | None = None, n_resamples: int = 1000,
                                 seed: int = 0) -> pd.DataFrame:
    """Per (model, category): the best layer chosen on selection prompts, its mean test improvement (%), the
    in-sample best layer (the paper's reading), the paper's layer, the controls' best layers chosen the same way,
    and (with ``prompts``) how often a bootstrap of the selection prompts picks the same layer (``stability``)
    with the 2.5-97.5 % range of the bootstrapped best layer."""
    out = _best_layer(layer_profile_heldout(sweep)).rename(
        columns={"chosen_on_selection": "selection_pct", "held_out": "held_out_pct"})
    in_sample = layer_specialisation(sweep)[["model", "category", "best_layer"]]
    out = out.merge(in_sample.rename(columns={"best_layer": "in_sample_best_layer"}), on=["model", "category"])
    out["paper_best_layer"] = out["category"].map(PAPER_BEST_LAYERS)
    for arm in ("control", "control_b"):
        if part_column(arm_column("improvement_pct", arm), "selection") in sweep.columns:
            b = _best_layer(layer_profile_heldout(sweep, arm))[["model", "category", "best_layer", "held_out"]]
            out = out.merge(b.rename(columns={"best_layer": f"{arm}_best_layer", "held_out": f"{arm}_held_out_pct"}),
                            on=["model", "category"])
    if prompts is not None:
        boot = layer_bootstrap(prompts, sweep, n_resamples, seed)
        stats = []
        for _, row in out.iterrows():
            b = boot[(boot["model"] == row["model"]) & (boot["category"] == row["category"])]
            share = b.set_index("layer")["share"]
            cdf = share.sort_index().cumsum()
            stats.append(dict(stability=float(share.get(row["best_layer"], 0.0)),
                              layer_low=int(cdf.index[(cdf >= 0.025 - 1e-12).argmax()]),
                              layer_high=int(cdf.index[(cdf >= 0.975 - 1e-12).argmax()])))
        out = pd.concat([out, pd.DataFrame(stats)], axis=1)
    return out


def task_categories(sweep: pd.DataFrame) -> pd.DataFrame:
    """(model, task, category), one row per task, from the sweep table (the per-prompt table has no category)."""
    check_columns(sweep, ("model", "task", "category"), "sweep table")
    return sweep[["model", "task", "category"]].drop_duplicates(["model", "task"])


def layer_bootstrap(prompts: pd.DataFrame, sweep: pd.DataFrame, n_resamples: int = 1000, seed: int = 0,
                    arm: Arm = "sna") -> pd.DataFrame:
    """Per (model, category, layer): the share of bootstrap resamples of the selection prompts (within each task)
    in which that layer has the highest best-(k, m) improvement averaged over the category's tasks."""
    check_prompt_table(prompts)
    labelled = prompts[prompts["arm"] == arm].merge(task_categories(sweep), on=["model", "task"])
    rows = []
    for (model, category), g in labelled.groupby(["model", "category"], sort=True):
        per_layer, layers = [], None
        matrices = [prompt_matrix(g, model, task, arm, "selection") for task in sorted(g["task"].unique())]
        draws = within_task_indices([base.size for _, base, _ in matrices], n_resamples, seed)
        for (configs, base, p), idx in zip(matrices, draws):
            gains = resampled_improvement(base, p, idx)
            by_layer = pd.DataFrame(gains).groupby(configs["layer"].to_numpy()).max()
            if layers is not None and list(by_layer.index) != layers:
                raise SNAError(f"Tasks of {category!r} were swept at different layers.")
            layers = list(by_layer.index)
            per_layer.append(by_layer.to_numpy())
        winners = np.asarray(layers)[np.mean(per_layer, axis=0).argmax(axis=0)]
        rows += [dict(model=model, category=category, layer=int(L), share=float((winners == L).mean()))
                 for L in layers]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# Golden zones and the interference configuration, held out
# ---------------------------------------------------------------------------

def golden_zone_heldout(sweep: pd.DataFrame, min_improvement_pct: float = 10.0, max_kl: float = 0.05) -> pd.DataFrame:
    """Per (model, task) and arm: configurations golden (improvement >= ``min_improvement_pct`` %, side effect
    <= ``max_kl`` nats) on all prompts (the paper's count) and on test prompts, and the best golden
    configuration chosen on selection prompts with its test improvement (``<arm>_golden_held_out_pct``)."""
    check_columns(sweep, ("model", "task", *CONFIG_KEYS), "sweep table")
    out = sweep.groupby(["model", "task"]).size().rename("n_configs").reset_index()
    for arm in ARMS:
        gain, kl = arm_column("improvement_pct", arm), arm_column("side_effect_kl", arm)
        if gain not in sweep.columns:
            continue
        check_columns(sweep, (kl, part_column(gain, "selection"), part_column(gain, "test")), "sweep table")
        pre = "" if arm == "sna" else f"{arm}_"
        for name, col in ((f"{pre}n_golden", gain), (f"{pre}n_golden_test", part_column(gain, "test"))):
            gold = golden_zone(sweep.assign(improvement_pct=sweep[col], side_effect_kl=sweep[kl]),
                               min_improvement_pct, max_kl)
            counts = gold.groupby(["model", "task"]).size().rename(name)
            out = out.merge(counts, on=["model", "task"], how="left").fillna({name: 0})
            out[name] = out[name].astype(int)
        on_sel = golden_zone(sweep.assign(improvement_pct=sweep[part_column(gain, "selection")],
                                          side_effect_kl=sweep[kl]), min_improvement_pct, max_kl)
        if len(on_sel):
            best = choose_on_selection(on_sel, arm=arm)[["model", "task", *CONFIG_KEYS, "held_out"]]
            out = out.merge(best.rename(columns={**{c: f"{pre}golden_{c}" for c in CONFIG_KEYS},
                                                 "held_out": f"{pre}golden_held_out_pct"}),
                            on=["model", "task"], how="left")
    return out


def shared_config_heldout(sweep: pd.DataFrame, arm: Arm = "sna", metric: str = "improvement_pct") -> pd.DataFrame:
    """Per model: the (layer, k, multiplier) with the highest ``metric`` averaged over tasks on selection prompts
    (the interference configuration), its selection and test means, and the in-sample best mean
    (``analysis.best_shared_config``'s reading)."""
    col = arm_column(metric, arm)
    cols = [col, part_column(col, "selection"), part_column(col, "test")]
    check_columns(sweep, ("model", *CONFIG_KEYS, *cols), "sweep table")
    mean = sweep.groupby(["model", *CONFIG_KEYS], as_index=False)[cols].mean()
    return choose_on_selection(mean, by=("model",), metric=metric, arm=arm)
