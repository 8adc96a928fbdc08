"""The saturation artefact: does "gains are largest when the model is unsure" hold beyond the ratio's arithmetic?

The paper's relative improvement ``100 * (P_sna - P_base) / P_base`` rises as ``P_base`` falls even when every
task gets the same log-odds shift, so its negative Spearman rho with ``P_base`` is expected without any
saturation effect (``stats.constant_shift_null``). Here every task is read at its configuration chosen on
selection prompts (``heldout.choose_on_selection``; each control at its own choice, and the control at SNA's
choice for the paired SNA-minus-control difference), ``P_base`` is estimated on selection prompts and the gain
on the disjoint test prompts, in three metrics (``stats.METRICS``: change in log-odds, in probability, relative
change). Series: ``sna``, ``control``, ``control_b``, ``sna_minus_control``. Also: a per-prompt analysis
(within-task rank correlation of each test prompt's ``P_base`` with its own change, a permutation test that
permutes within tasks), the share of configurations above 7 % per zone, and the verdict rows of these claims.
Works on DataFrames alone.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .analysis import best_per_task
from .choices import layer_specialisation_heldout, prompt_matrix
from ..run.store import check_columns, check_prompt_table
from ..core import improvement_pct, zone_of
from ..errors import SNAError
from .heldout import CONFIG_KEYS, arm_column, choose_on_selection, part_column
from .rules import VERDICT_COLUMNS, range_verdict, rho_verdict
from .stats import (METRICS, Interval, _rank_rho, constant_shift_null, per_prompt_changes, percentile_bounds,
                    relative_of_means, resampled_improvement, shift_log_odds, spearman_rho, task_spearman,
                    within_task_indices)

SERIES: tuple[str, ...] = ("sna", "control", "control_b", "sna_minus_control")
PAIRS = {"sna": ("sna", None), "control": ("control", None), "control_b": ("control_b", None),
         "sna_minus_control": ("sna", "control_at_sna")}  # series -> (columns of chosen_prompts: arm, reference)
CLAIM_RHOS = [(s, "relative_pct") for s in SERIES] + [(s, "delta_log_odds") for s in SERIES if s != "sna"]
KEY = ["model", "task", "prompt_id", "part", "p_base"]


# ---------------------------------------------------------------------------
# Each task's prompts at its configuration chosen on selection prompts
# ---------------------------------------------------------------------------

def _at(prompts: pd.DataFrame, chosen: pd.DataFrame, arm: str, name: str) -> pd.DataFrame:
    """The ``arm``'s per-prompt rows at each (model, task)'s ``chosen`` configuration, ``p`` renamed ``name``."""
    rows = prompts[prompts["arm"] == arm].merge(chosen[["model", "task", *CONFIG_KEYS]], on=["model", "task",
                                                                                            *CONFIG_KEYS])
    lost = set(map(tuple, chosen[["model", "task"]].to_numpy())) - set(map(tuple, rows[["model", "task"]].to_numpy()))
    if lost:
        raise SNAError(f"The per-prompt table has no {arm} rows at the chosen configuration of {sorted(lost)}: "
                       f"it must come from the same sweep as the sweep table.")
    return rows[KEY + ["p"]].rename(columns={"p": name})


def chosen_prompts(prompts: pd.DataFrame, sweep: pd.DataFrame, metric: str = "improvement_pct") -> pd.DataFrame:
    """One row per (model, task, prompt): part, p_base, ``sna`` and ``control_at_sna`` (SNA's choice on
    selection prompts by ``metric``), ``control`` and ``control_b`` (each at its own choice, chosen the same way)."""
    check_prompt_table(prompts)
    out = None
    for arm, name, by_arm in (("sna", "sna", "sna"), ("control", "control_at_sna", "sna"),
                              ("control", "control", "control"), ("control_b", "control_b", "control_b")):
        if part_column(arm_column(metric, by_arm), "selection") not in sweep.columns and arm == "control_b":
            continue  # a table without the second control
        part = _at(prompts, choose_on_selection(sweep, metric=metric, arm=by_arm), arm, name)
        # p_base from SNA's layer: the engine's baseline at another layer differs only by float rounding
        out = part if out is None else out.merge(part.drop(columns="p_base"), on=KEY[:-1], how="outer")
    if out[[c for c in out.columns if c not in KEY]].isna().any().any():
        raise SNAError("The arms of the per-prompt table cover different prompts.")
    return out.sort_values(["model", "task", "prompt_id"], ignore_index=True)


def _y(rows: pd.DataFrame, series: str) -> np.ndarray:
    """Per-prompt arrays ``[n, 2 or 3]``: (p_base, p of the series' arm[, p of its reference])."""
    arm, ref = PAIRS[series]
    return rows[["p_base", arm] + ([ref] if ref else [])].to_numpy(float)


def _relative(a: np.ndarray) -> float:
    """The relative improvement (%) of the prompts' mean probabilities, from ``_y`` rows ``[n, 2 or 3]``."""
    g = relative_of_means(a[:, 0], a[:, 1])
    return g - relative_of_means(a[:, 0], a[:, 2]) if a.shape[1] == 3 else g


def _resampled(a: np.ndarray, metric: str) -> tuple[np.ndarray, Callable[[np.ndarray], float]]:
    """What a bootstrap resamples for a task's ``_y`` rows and the gain on it: the per-prompt change ``[n]`` and
    its mean (log-odds, probability), or the probabilities and the ratio of their means (relative change)."""
    return (a, _relative) if metric == "relative_pct" else (_per_prompt(a, metric), np.mean)


def _gain(a: np.ndarray, metric: str) -> float:
    """A task's gain from ``_y`` rows ``[n, 2 or 3]`` (the paired difference when a reference is there)."""
    values, stat = _resampled(a, metric)
    return float(stat(values))


def _per_prompt(a: np.ndarray, metric: str) -> np.ndarray:
    """Each prompt's own change ``[n]`` from ``_y`` rows (SNA's minus the reference's when paired)."""
    g = per_prompt_changes(a[:, 0], a[:, 1])[metric].to_numpy()
    return g - per_prompt_changes(a[:, 0], a[:, 2])[metric].to_numpy() if a.shape[1] == 3 else g


def _series(chosen: pd.DataFrame) -> list[str]:
    return [s for s in SERIES if all(c in chosen.columns for c in PAIRS[s] if c)]


def task_gains(chosen: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task) from :func:`chosen_prompts`: prompts per part, P_base on selection (and its zone) and
    on test prompts, and ``<series>_<metric>``: each series' gain on test prompts in each metric."""
    rows = []
    for (model, task), g in chosen.groupby(["model", "task"], sort=True):
        sel, test = g[g["part"] == "selection"], g[g["part"] == "test"]
        if len(sel) < 2 or len(test) < 2:
            raise SNAError(f"Task {task!r} needs at least 2 selection and 2 test prompts, got {len(sel)}, {len(test)}.")
        row = dict(model=model, task=task, n_selection=len(sel), n_test=len(test),
                   p_base_selection=float(sel["p_base"].mean()), p_base_test=float(test["p_base"].mean()))
        row["zone"] = zone_of(row["p_base_selection"])
        row |= {f"{s}_{m}": _gain(_y(test, s), m) for s in _series(chosen) for m in METRICS}
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# Spearman's rho over tasks, beside the constant-log-odds-shift null
# ---------------------------------------------------------------------------

def _null_gains(test: dict[str, np.ndarray], series: str, metric: str) -> np.ndarray:
    """Each task's gain ``[n_tasks]`` if every prompt got the series' mean log-odds shift (its reference's too)."""
    def predicted(col: int) -> np.ndarray:
        shift = float(np.mean(np.concatenate([_per_prompt(a[:, [0, col]], "delta_log_odds") for a in test.values()])))
        base = {t: a[:, 0] for t, a in test.items()}
        return constant_shift_null(base, shift).table[metric].to_numpy()

    return predicted(1) - predicted(2) if PAIRS[series][1] else predicted(1)


def _rho_or_zero(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho; 0 (its expectation) where ``y`` is constant, as a constant shift's log-odds gain is."""
    rho = spearman_rho(x, y)
    return 0.0 if math.isnan(rho) else rho


def saturation_rhos(chosen: pd.DataFrame, n_resamples: int = 2000, n_permutations: int = 100_000, seed: int = 0,
                    only: Sequence[tuple[str, str]] | None = None) -> pd.DataFrame:
    """Per model, series and metric: Spearman's rho over tasks of P_base (selection prompts) with the gain (test
    prompts), its bootstrap interval (prompts resampled within tasks, the two parts independently), the
    permutation p (``exact``: every permutation enumerated) and ``null_rho``, what a constant log-odds shift of
    the series' mean size predicts. ``only``: the (series, metric) pairs to compute (default: all)."""
    rows = []
    for model, g in chosen.groupby("model", sort=True):
        tasks = sorted(g["task"].unique())
        sel = [g.loc[(g["task"] == t) & (g["part"] == "selection"), "p_base"].to_numpy(float) for t in tasks]
        p_sel = np.array([s.mean() for s in sel])
        for series in _series(g):
            test = {t: _y(g[(g["task"] == t) & (g["part"] == "test")], series) for t in tasks}
            for metric in [m for m in METRICS if only is None or (series, m) in only]:
                ys = [_resampled(a, metric) for a in test.values()]
                rc = task_spearman(sel, [y for y, _ in ys], y_stat=ys[0][1], n_resamples=n_resamples,
                                   n_permutations=n_permutations, seed=seed)
                rows.append(dict(model=model, series=series, gain=metric, rho=rc.rho, ci_low=rc.low, ci_high=rc.high,
                                 p_value=rc.p_value, exact=rc.n_permutations == 0, n_tasks=rc.n_tasks,
                                 null_rho=_rho_or_zero(p_sel, _null_gains(test, series, metric))))
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# Per prompt: each test prompt's P_base against its own change, within tasks
# ---------------------------------------------------------------------------

def _combined_rho(xs: list[np.ndarray], ys: list[np.ndarray]) -> float:
    """Within-task Spearman rhos of per-prompt ``xs``/``ys``, averaged with weights n (tasks without a ranking
    skipped)."""
    rhos = [(spearman_rho(x, y), len(x)) for x, y in zip(xs, ys)]
    kept = [(r, n) for r, n in rhos if not math.isnan(r)]
    return float(np.average([r for r, _ in kept], weights=[n for _, n in kept])) if kept else float("nan")


def stratified_permutation_p(xs: list[np.ndarray], ys: list[np.ndarray], n_permutations: int = 9999,
                             seed: int = 0) -> float:
    """Two-sided p of :func:`_combined_rho` against permuting ``ys`` within each task (Monte-Carlo,
    ``(1 + hits) / (1 + n_permutations)``)."""
    from scipy.stats import rankdata

    observed = _combined_rho(xs, ys)
    if math.isnan(observed):
        return float("nan")
    rng, total, weights = np.random.default_rng(seed), np.zeros(n_permutations), 0
    for x, y in zip(xs, ys):
        if math.isnan(spearman_rho(x, y)):
            continue
        ry = rankdata(y)[rng.random((n_permutations, len(y))).argsort(axis=1)]
        total += len(x) * _rank_rho(rankdata(x), ry)
        weights += len(x)
    hits = int((np.abs(total / weights) >= abs(observed) - 1e-12).sum())
    return (1 + hits) / (1 + n_permutations)


def prompt_changes(chosen: pd.DataFrame, series: str = "sna_minus_control",
                   metric: str = "delta_log_odds") -> pd.DataFrame:
    """One row per test prompt of :func:`chosen_prompts`: model, task, prompt_id, p_base and ``change``, the
    prompt's own ``metric`` change for ``series`` (SNA's minus the control's for 'sna_minus_control')."""
    if series not in PAIRS or metric not in METRICS:
        raise SNAError(f"series={series!r}, metric={metric!r}: use one of {SERIES} and one of {METRICS}.")
    if series not in _series(chosen):
        raise SNAError(f"The chosen prompts have no series {series!r}.")
    test = chosen[chosen["part"] == "test"]
    parts = [g[["model", "task", "prompt_id", "p_base"]].assign(change=_per_prompt(_y(g, series), metric))
             for _, g in test.groupby(["model", "task"], sort=True)]
    return pd.concat(parts, ignore_index=True)


def prompt_level(chosen: pd.DataFrame, series: str = "sna_minus_control", metric: str = "delta_log_odds",
                 n_resamples: int = 2000, n_permutations: int = 9999, seed: int = 0) -> pd.DataFrame:
    """Per model, each task's Spearman rho of its test prompts' P_base with their own ``metric`` change
    (``series``), and a row 'all tasks' with the n-weighted mean of those rhos, its bootstrap interval (prompts
    resampled within tasks), a permutation p (permuting within tasks) and ``null_rho`` (the same statistic under
    a constant log-odds shift of the series' mean size; 0 for the log-odds change, which it leaves constant)."""
    changes, rows = prompt_changes(chosen, series, metric), []
    for model, g in changes.groupby("model", sort=True):
        tasks = [gt for _, gt in g.groupby("task", sort=True)]
        xs, ys = [t["p_base"].to_numpy() for t in tasks], [t["change"].to_numpy() for t in tasks]
        test = {t: _y(gt, series) for t, gt in chosen[(chosen["model"] == model) & (chosen["part"] == "test")]
                .groupby("task", sort=True)}
        nulls = _null_prompt_changes(test, series, metric)
        rows += [dict(model=model, task=t, n_test=len(x), rho=spearman_rho(x, y), null_rho=_rho_or_zero(x, z))
                 for t, x, y, z in zip(test, xs, ys, nulls)]
        ci = _combined_ci(xs, ys, n_resamples, seed)
        rows.append(dict(model=model, task="all tasks", n_test=sum(map(len, xs)), rho=ci.estimate, ci_low=ci.low,
                         ci_high=ci.high, p_value=stratified_permutation_p(xs, ys, n_permutations, seed),
                         null_rho=_combined_rho(xs, nulls) if np.ptp(np.concatenate(nulls)) > 1e-12 else 0.0))
    out = pd.DataFrame(rows)
    out.attrs.update(series=series, metric=metric, test="permutation within tasks")
    return out


def _null_prompt_changes(test: dict[str, np.ndarray], series: str, metric: str) -> list[np.ndarray]:
    """Each task's per-prompt change ``[n]`` under a constant log-odds shift of the series' mean size."""
    def predicted(col: int) -> list[np.ndarray]:
        shift = float(np.mean(np.concatenate([_per_prompt(a[:, [0, col]], "delta_log_odds") for a in test.values()])))
        return [per_prompt_changes(a[:, 0], shift_log_odds(a[:, 0], shift))[metric].to_numpy() for a in test.values()]

    if PAIRS[series][1]:
        return [s - c for s, c in zip(predicted(1), predicted(2))]
    return predicted(1)


def _resampled_combined_rho(xs: list[np.ndarray], ys: list[np.ndarray], idx: list[np.ndarray]) -> np.ndarray:
    """:func:`_combined_rho` on every resample ``[B]``: task i's prompts taken at ``idx[i] [B, n_i]`` (the
    within-task rhos of all resamples at once; a resample without a ranking is skipped, as there)."""
    from scipy.stats import rankdata

    total, weights = 0.0, 0.0
    for x, y, i in zip(xs, ys, idx):
        rx, ry = (rankdata(v[i], axis=1) for v in (x, y))
        rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
        ranked = np.all([np.ptp(v[i], 1) > 1e-9 * np.maximum(1.0, np.abs(v[i]).max(1)) for v in (x, y)], axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = (rx * ry).sum(1) / np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
        total = total + np.where(ranked, len(x) * rho, 0.0)
        weights = weights + np.where(ranked, len(x), 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weights > 0, total / np.maximum(weights, 1), np.nan)


def _combined_ci(xs: list[np.ndarray], ys: list[np.ndarray], n_resamples: int, seed: int,
                 level: float = 0.95) -> Interval:
    """Percentile bootstrap of :func:`_combined_rho`, resampling prompts within each task."""
    stats = _resampled_combined_rho(xs, ys, within_task_indices([len(x) for x in xs], n_resamples, seed))
    return Interval(_combined_rho(xs, ys), *percentile_bounds(stats, level), level, n_resamples)


# ---------------------------------------------------------------------------
# "Zone 3 rarely above 7 %": the share of configurations, per zone
# ---------------------------------------------------------------------------

def zone_shares(sweep: pd.DataFrame, threshold_pct: float = 7.0) -> pd.DataFrame:
    """Per (model, zone, reading): tasks, configurations, and the share (%) of configurations whose relative
    improvement exceeds ``threshold_pct`` for each arm. 'in-sample': zone and gain on all prompts (the paper's
    reading); 'held-out': zone by P_base on selection prompts, gain on test prompts."""
    gains = {arm: arm_column("improvement_pct", arm) for arm in ("sna", "control", "control_b")
             if arm_column("improvement_pct", arm) in sweep.columns}
    check_columns(sweep, ("model", "task", "p_base", "p_base_selection",
                          *gains.values(), *(part_column(c, "test") for c in gains.values())), "sweep table")
    parts = []
    for reading, zone_col, suffix in (("in-sample", "p_base", ""), ("held-out", "p_base_selection", "_test")):
        d = sweep.assign(zone=sweep[zone_col].map(zone_of), reading=reading)
        agg = d.groupby(["model", "zone", "reading"]).agg(n_tasks=("task", "nunique"), n_configs=("task", "size"))
        for arm, col in gains.items():
            agg[arm] = d.assign(above=d[col + suffix] > threshold_pct).groupby(["model", "zone", "reading"])[
                "above"].mean() * 100
        parts.append(agg.reset_index())
    out = pd.concat(parts, ignore_index=True)
    out.attrs.update(threshold_pct=threshold_pct, unit="% of configurations")
    return out


def zone_share_ci(prompts: pd.DataFrame, sweep: pd.DataFrame, zone: int = 3, arm: str = "sna",
                  threshold_pct: float = 7.0, n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """Held-out share (%) of ``zone``'s configurations above ``threshold_pct`` (zone by P_base on selection
    prompts, gain on test prompts) with a bootstrap interval resampling test prompts within tasks."""
    check_prompt_table(prompts)
    check_columns(sweep, ("model", "task", "p_base_selection"), "sweep table")
    tasks = sweep.drop_duplicates(["model", "task"])
    tasks = tasks[tasks["p_base_selection"].map(zone_of) == zone]
    if tasks.empty:
        raise SNAError(f"No task lies in zone {zone} (by P_base on selection prompts).")
    matrices = [prompt_matrix(prompts, model, task, arm, "test")[1:]
                for model, task in tasks[["model", "task"]].itertuples(index=False)]
    above, point, total = 0, 0, 0
    for (base, p), idx in zip(matrices, within_task_indices([b.size for b, _ in matrices], n_resamples, seed)):
        above = above + (resampled_improvement(base, p, idx) > threshold_pct).sum(axis=0)
        point += int((improvement_pct(base.mean(), p.mean(axis=1)) > threshold_pct).sum())
        total += p.shape[0]
    return Interval(100 * point / total, *percentile_bounds(100 * above / total, level), level, n_resamples)


# ---------------------------------------------------------------------------
# Rows for the verdict table
# ---------------------------------------------------------------------------

def _in_sample_log_odds_rho(prompts: pd.DataFrame, sweep: pd.DataFrame) -> float:
    """The paper's reading with the log-odds change: each task's in-sample best configuration, all its prompts,
    SNA's mean change in log-odds minus the control's, ranked against P_base."""
    best = best_per_task(sweep)
    both = _at(prompts, best, "sna", "sna").merge(_at(prompts, best, "control", "control_at_sna"), on=KEY)
    gains = both.groupby("task").apply(lambda g: _gain(_y(g, "sna_minus_control"), "delta_log_odds"),
                                       include_groups=False)
    return spearman_rho(both.groupby("task")["p_base"].mean().to_numpy(), gains.to_numpy())


def layer_claims(sweep: pd.DataFrame, prompts: pd.DataFrame, n_resamples: int = 1000, seed: int = 0) -> list[dict]:
    """One claim row per (model, category) with a paper layer: the held-out best layer, its bootstrap range
    (``ci_low``-``ci_high``) and the controls' best layers. 'not measured' when the paper's layer was not swept,
    'contradicted' when it lies outside the range, 'not distinguishable from the control' when the control's
    best layer lies inside it (a layer effect, not the neurons'), else 'supported'."""
    rows = []
    swept = set(sweep["layer"])
    for _, r in layer_specialisation_heldout(sweep, prompts, max(n_resamples, 1000), seed).iterrows():
        if pd.isna(r["paper_best_layer"]):
            continue
        paper = int(r["paper_best_layer"])
        control = r.get("control_best_layer", np.nan)
        verdict = range_verdict(paper, r["layer_low"], r["layer_high"], control, measured=paper in swept)
        rows.append(dict(claim=f"layer specialisation: best layer for {r['category']} (held out; bootstrap range)",
                         paper=paper, in_sample=r["in_sample_best_layer"], held_out=r["best_layer"],
                         ci_low=r["layer_low"], ci_high=r["layer_high"], control=control,
                         control_b=r.get("control_b_best_layer", np.nan), null_p=np.nan, verdict=verdict,
                         model=r["model"]))
    return rows


def saturation_claims(prompts: pd.DataFrame, sweep: pd.DataFrame, profile: str, alpha: float = 0.05,
                      n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The verdict table's rows (``rules.VERDICT_COLUMNS``) for the saturation claims beyond the ratio's arithmetic and
    layer specialisation, per model (``verdict.verdict`` has the rho of the relative improvement, with the
    matched null, and "Zone 3 rarely above 7 %"; it appends these rows): the paper's number, this run's in-sample and held-out numbers with the 95 %
    interval, the controls' numbers computed the same way, the p against the null, and a plain-words verdict."""
    check_columns(sweep, ("model", "task", "category", "p_base", "improvement_pct"), "sweep table")
    chosen = chosen_prompts(prompts, sweep)
    rhos = saturation_rhos(chosen, n_resamples, seed=seed, only=CLAIM_RHOS).set_index(["model", "series", "gain"])
    rows = []
    for model, s in sweep.groupby("model", sort=True):
        m_prompts, m_chosen = prompts[prompts["model"] == model], chosen[chosen["model"] == model]

        def rho(series: str, gain: str, field: str = "rho") -> float:
            key = (model, series, gain)
            return float(rhos.loc[key, field]) if key in rhos.index else float("nan")

        def row(claim: str, paper: float, in_sample: float, series: str, gain: str, null_p: float,
                verdict: str) -> dict:
            return dict(model=model, claim=claim, paper=paper, in_sample=in_sample, held_out=rho(series, gain),
                        ci_low=rho(series, gain, "ci_low"), ci_high=rho(series, gain, "ci_high"),
                        control=rho("control", gain), control_b=rho("control_b", gain), null_p=null_p,
                        verdict=verdict)

        lo = [rho("sna_minus_control", "delta_log_odds", f) for f in ("rho", "ci_low", "ci_high", "p_value")]
        rows.append(row("... beyond the ratio's arithmetic: rho of P_base with the change in log-odds, SNA minus "
                        "control", np.nan, _in_sample_log_odds_rho(m_prompts, s), "sna_minus_control",
                        "delta_log_odds", lo[3], rho_verdict(*lo, alpha=alpha)))
        per = prompt_level(m_chosen, n_resamples=n_resamples, seed=seed).iloc[-1]
        ctrl = prompt_level(m_chosen, "control", n_resamples=n_resamples, seed=seed).iloc[-1]
        ctrl_b = (prompt_level(m_chosen, "control_b", n_resamples=n_resamples, seed=seed).iloc[-1]["rho"]
                  if "control_b" in m_chosen else np.nan)
        rows.append(dict(model=model, claim="... per prompt: within-task rank correlation of a test prompt's P_base with its "
                               "change in log-odds, SNA minus control", paper=np.nan, in_sample=np.nan,
                         held_out=per["rho"], ci_low=per["ci_low"], ci_high=per["ci_high"], control=ctrl["rho"],
                         control_b=ctrl_b, null_p=per["p_value"],
                         verdict=rho_verdict(per["rho"], per["ci_low"], per["ci_high"], per["p_value"],
                                             alpha=alpha)))
        rows += layer_claims(s, m_prompts, n_resamples, seed)
    out = pd.DataFrame(rows).assign(profile=profile)
    return out[VERDICT_COLUMNS]

