"""Uncertainty and nulls on per-prompt results: metrics, bootstrap intervals, paired tests, rank correlation.

Everything here takes plain per-prompt arrays (probabilities of each prompt's target, before and after an
intervention) and never a model, so any number can be recomputed from a saved results table.

* Metrics per prompt: the change in log-odds of the target (nats), the absolute change in probability
  and the relative change in percent of the baseline. A task's *relative improvement* is the paper's
  ``100 * (mean P_after - mean P_base) / mean P_base`` (``core.improvement_pct``); its log-odds and absolute
  changes are means over prompts.
* Intervals: percentile bootstrap over prompts (prompts resampled with replacement, jointly across the
  arrays that belong to the same prompts), a fixed seed, 2,000 resamples by default.
* Tests: a paired test of SNA against the control over prompts (sign-flip permutation or sign test),
  Holm's step-down correction over tasks; Spearman's rho over tasks with a bootstrap interval that resamples
  prompts within tasks and a permutation p-value (exact when every permutation fits the budget).
* Nulls: the minimum detectable effect of a task, and the constant-log-odds-shift null: what the relative
  improvement and its rho with ``P_base`` look like when every task gets the same log-odds shift.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from ..core import improvement_pct
from ..errors import SNAError

Metric = Literal["delta_log_odds", "delta_p", "relative_pct"]
METRICS: tuple[str, ...] = ("delta_log_odds", "delta_p", "relative_pct")
Alternative = Literal["two-sided", "greater"]
PROB_FLOOR = 1e-12  # probabilities are clipped to [PROB_FLOOR, 1 - PROB_FLOOR] before taking log-odds


# ---------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------

def check_probs(p: ArrayLike, what: str = "probabilities") -> np.ndarray:
    """``p`` as a float array ``[n_prompts]`` of finite probabilities in [0, 1]; SNAError otherwise."""
    arr = np.asarray(p, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise SNAError(f"{what} must be a non-empty 1-D array of per-prompt probabilities, got shape {arr.shape}.")
    if not np.isfinite(arr).all() or (arr < 0).any() or (arr > 1).any():
        raise SNAError(f"{what} must be finite probabilities in [0, 1].")
    return arr


def check_values(x: ArrayLike, what: str = "values", min_n: int = 1) -> np.ndarray:
    """``x`` as a finite float array ``[n]`` with at least ``min_n`` entries; SNAError otherwise."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1 or arr.size < min_n:
        raise SNAError(f"{what} must be a 1-D array of at least {min_n} value(s), got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise SNAError(f"{what} contains NaN or infinite values.")
    return arr


def _same_length(arrays: Sequence[np.ndarray], what: str) -> int:
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise SNAError(f"{what} must hold one value per prompt each, got lengths {sorted(lengths)}.")
    return lengths.pop()


def _check_resampling(n_resamples: int, level: float) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1000:
        raise SNAError(f"n_resamples={n_resamples!r}: use at least 1,000 bootstrap resamples.")
    if not 0 < level < 1:
        raise SNAError(f"level={level!r} must lie strictly between 0 and 1 (e.g. 0.95).")


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------

def log_odds(p: ArrayLike) -> np.ndarray:
    """Log-odds ``log(p / (1 - p))`` in nats of probabilities ``[n]`` (clipped to PROB_FLOOR)."""
    p = np.clip(check_probs(p), PROB_FLOOR, 1 - PROB_FLOOR)
    return np.log(p) - np.log1p(-p)


def per_prompt_changes(p_base: ArrayLike, p_after: ArrayLike) -> pd.DataFrame:
    """One row per prompt: p_base, p_after, delta_log_odds (nats), delta_p (probability), relative_pct (%)."""
    base, after = check_probs(p_base, "p_base"), check_probs(p_after, "p_after")
    _same_length([base, after], "p_base and p_after")
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(base > 0, 100.0 * (after - base) / base, np.nan)
    return pd.DataFrame({"p_base": base, "p_after": after, "delta_log_odds": log_odds(after) - log_odds(base),
                         "delta_p": after - base, "relative_pct": relative})


def task_change(p_base: ArrayLike, p_after: ArrayLike, metric: Metric = "delta_log_odds") -> float:
    """A task's change: mean delta log-odds (nats), mean delta p, or the paper's relative improvement (%)."""
    base, after = check_probs(p_base, "p_base"), check_probs(p_after, "p_after")
    _same_length([base, after], "p_base and p_after")
    if metric == "relative_pct":
        return relative_of_means(base, after)
    if metric == "delta_log_odds":
        return float((log_odds(after) - log_odds(base)).mean())
    if metric == "delta_p":
        return float((after - base).mean())
    raise SNAError(f"Unknown metric {metric!r}: use one of {METRICS}.")


def relative_of_means(p_base: np.ndarray, p_after: np.ndarray) -> float:
    """The paper's relative improvement (%) of the mean probabilities of checked arrays ``[n]``
    (``task_change``'s 'relative_pct' without its input checks, for resampling loops)."""
    return improvement_pct(float(np.mean(p_base)), float(np.mean(p_after)))


def grouped_relative_pct(table: pd.DataFrame, by: Sequence[str]) -> pd.Series:
    """``relative_of_means`` of a per-prompt table (columns ``p_base``, ``p``) within each group of ``by``."""
    g = table.groupby(list(by))
    return improvement_pct(g["p_base"].mean(), g["p"].mean())


# ---------------------------------------------------------------------------
# Bootstrap intervals over prompts
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval (same units as the statistic)."""

    estimate: float
    low: float
    high: float
    level: float
    n_resamples: int

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def resample_indices(n: int, n_resamples: int, seed: int | np.random.Generator) -> np.ndarray:
    """Bootstrap indices ``[n_resamples, n]`` of ``n`` prompts (with replacement; a seed or a Generator): the
    draw of ``bootstrap_ci``, ``stratified_ci``, the layer bootstrap and ``saturation`` (``task_spearman`` keeps
    its own, one resample at a time, so that its published rates reproduce)."""
    _check_resampling(n_resamples, 0.95)
    if n < 2:
        raise SNAError(f"A bootstrap over prompts needs at least 2 prompts, got {n}.")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def within_task_indices(sizes: Sequence[int], n_resamples: int, seed: int) -> list[np.ndarray]:
    """Prompts resampled within each task: bootstrap indices ``[n_resamples, n_t]`` for each task's ``n_t`` of
    ``sizes``, drawn task after task from one Generator seeded ``seed``. The one within-task draw: of
    ``stratified_ci``, the layer bootstrap, and saturation's per-prompt rho and Zone-3 share."""
    rng = np.random.default_rng(seed)
    return [resample_indices(n, n_resamples, rng) for n in sizes]


def resampled_improvement(p_base: np.ndarray, p: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The relative improvement (%) of every configuration ``p [c, n]`` on each resample ``idx [B, n]``:
    ``[c, B]``, equal to ``relative_of_means`` of the resampled prompts (all resamples in one product)."""
    n = p_base.size
    counts = np.zeros((idx.shape[0], n))
    np.add.at(counts, (np.arange(idx.shape[0])[:, None], idx), 1.0)
    return improvement_pct(counts @ p_base / n, p @ counts.T / n)


def percentile_bounds(stats: ArrayLike, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile range (low, high) of bootstrap statistics ``[B]`` (NaNs skipped; all
    NaN: NaN, NaN)."""
    stats = np.asarray(stats, dtype=float)
    if np.isnan(stats).all():
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def _percentile_interval(estimate: float, stats: np.ndarray, level: float, n_resamples: int) -> Interval:
    return Interval(float(estimate), *percentile_bounds(stats, level), level, n_resamples)


def bootstrap_ci(arrays: Sequence[ArrayLike], statistic: Callable[..., float], n_resamples: int = 2000,
                 level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap of ``statistic(*arrays)``; prompts (the rows of every ``arrays [n]``) resampled jointly."""
    _check_resampling(n_resamples, level)
    arrays = [np.asarray(a, dtype=float) for a in arrays]
    if not arrays:
        raise SNAError("bootstrap_ci needs at least one per-prompt array.")
    n = _same_length(arrays, "The arrays given to bootstrap_ci")
    stats = np.array([statistic(*(a[idx] for a in arrays)) for idx in resample_indices(n, n_resamples, seed)])
    return _percentile_interval(statistic(*arrays), stats, level, n_resamples)


def stratified_ci(groups: Sequence[Sequence[ArrayLike]], statistic: Callable[[list], float], n_resamples: int = 1000,
                  level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap of ``statistic([arrays of task 1], [arrays of task 2], ...)``: each task's prompts
    (the rows of its arrays) resampled with replacement within the task, jointly across its arrays."""
    _check_resampling(n_resamples, level)
    groups = [[np.asarray(a) for a in g] for g in groups]
    if not groups:
        raise SNAError("A stratified bootstrap needs at least one task.")
    draws = within_task_indices([_same_length(g, "Each task's arrays") for g in groups], n_resamples, seed)
    stats = [statistic([[a[i[b]] for a in g] for g, i in zip(groups, draws)]) for b in range(n_resamples)]
    return _percentile_interval(statistic(groups), np.asarray(stats, dtype=float), level, n_resamples)


def change_ci(p_base: ArrayLike, p_after: ArrayLike, metric: Metric = "delta_log_odds", n_resamples: int = 2000,
              level: float = 0.95, seed: int = 0) -> Interval:
    """Bootstrap interval of a task's change (``task_change``) from per-prompt probabilities ``[n]``."""
    base, after = check_probs(p_base, "p_base"), check_probs(p_after, "p_after")
    task_change(base, after, metric)  # checks metric and lengths before the resampling
    return bootstrap_ci([base, after], lambda b, a: task_change(b, a, metric), n_resamples, level, seed)


def difference_ci(p_base: ArrayLike, p_sna: ArrayLike, p_control: ArrayLike, metric: Metric = "delta_log_odds",
                  n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """Bootstrap interval of SNA's change minus the control's on the same prompts ``[n]`` (resampled jointly)."""
    base, sna, ctrl = (check_probs(p, w) for p, w in ((p_base, "p_base"), (p_sna, "p_sna"), (p_control, "p_control")))
    _same_length([base, sna, ctrl], "p_base, p_sna and p_control")
    task_change(base, sna, metric)

    def diff(b: np.ndarray, s: np.ndarray, c: np.ndarray) -> float:
        return task_change(b, s, metric) - task_change(b, c, metric)

    return bootstrap_ci([base, sna, ctrl], diff, n_resamples, level, seed)


# ---------------------------------------------------------------------------
# Paired tests and the multiple-comparison correction
# ---------------------------------------------------------------------------

def paired_test(sna: ArrayLike, control: ArrayLike, method: Literal["permutation", "sign"] = "permutation",
                alternative: Alternative = "two-sided", n_permutations: int = 9999, seed: int = 0) -> float:
    """p-value that SNA's per-prompt changes ``[n]`` equal the control's on the same prompts.

    ``permutation``: sign-flip test of the mean difference (exact when ``2**n <= n_permutations``, else
    Monte-Carlo, ``p = (1 + hits) / (1 + n_permutations)``); ``sign``: binomial test of the share of
    prompts where SNA's change is larger (ties dropped). ``greater``: the alternative that SNA is larger.
    """
    from scipy.stats import binomtest

    a, b = check_values(sna, "sna"), check_values(control, "control")
    _same_length([a, b], "sna and control")
    if alternative not in ("two-sided", "greater"):
        raise SNAError(f"alternative={alternative!r}: use 'two-sided' or 'greater'.")
    d = a - b
    if method == "sign":
        nonzero = d[d != 0]
        if nonzero.size == 0:
            return 1.0
        return float(binomtest(int((nonzero > 0).sum()), nonzero.size, 0.5, alternative=alternative).pvalue)
    if method != "permutation":
        raise SNAError(f"Unknown paired test {method!r}: use 'permutation' or 'sign'.")
    if n_permutations < 99:
        raise SNAError(f"n_permutations={n_permutations}: use at least 99 (p-values cannot go below 1/(1+n)).")
    observed = d.mean()

    def hits(signs: np.ndarray) -> int:
        means = signs @ d / d.size
        tol = 1e-12 * max(1.0, abs(observed))
        return int((np.abs(means) >= abs(observed) - tol).sum() if alternative == "two-sided"
                   else (means >= observed - tol).sum())

    if 2 ** d.size <= n_permutations:
        return hits(np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))) / 2 ** d.size
    rng, found, left = np.random.default_rng(seed), 0, n_permutations
    while left:
        chunk = min(left, 4096)
        found += hits(rng.choice((1.0, -1.0), size=(chunk, d.size)))
        left -= chunk
    return (1 + found) / (1 + n_permutations)


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm's step-down adjusted p-values ``[m]`` (family-wise error control over the m tests)."""
    p = check_values(p_values, "p_values")
    if (p < 0).any() or (p > 1).any():
        raise SNAError("p_values must lie in [0, 1].")
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def minimum_detectable_effect(changes: ArrayLike, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true mean of per-prompt changes ``[n]`` that a two-sided level-alpha test finds with ``power``
    (normal approximation, ``(z_{1-alpha/2} + z_power) * sd / sqrt(n)``), in the changes' units."""
    from scipy.stats import norm

    x = check_values(changes, "changes", min_n=2)
    if not (0 < alpha < 1 and 0 < power < 1):
        raise SNAError(f"alpha={alpha!r} and power={power!r} must lie strictly between 0 and 1.")
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * x.std(ddof=1) / math.sqrt(x.size))


def sna_vs_control(table: pd.DataFrame, metric: Metric = "delta_log_odds", method: str = "permutation",
                   alpha: float = 0.05, n_resamples: int = 2000, n_permutations: int = 9999,
                   seed: int = 0) -> pd.DataFrame:
    """Per task, from per-prompt rows (task, p_base, p_sna, p_control): SNA's and the control's change, their
    difference with a bootstrap interval, the paired test's p, Holm's p over tasks, and the minimum detectable
    difference. ``attrs['correction']`` names the correction."""
    missing = {"task", "p_base", "p_sna", "p_control"} - set(table.columns)
    if missing:
        raise SNAError(f"The per-prompt table lacks column(s) {sorted(missing)}.")
    if metric not in METRICS:
        raise SNAError(f"Unknown metric {metric!r}: use one of {METRICS}.")
    rows = []
    for task, g in table.groupby("task", sort=True):
        base, sna, ctrl = g["p_base"].to_numpy(), g["p_sna"].to_numpy(), g["p_control"].to_numpy()
        per_sna = per_prompt_changes(base, sna)[metric].to_numpy()
        per_ctrl = per_prompt_changes(base, ctrl)[metric].to_numpy()
        ci = difference_ci(base, sna, ctrl, metric, n_resamples, 1 - alpha, seed)
        rows.append(dict(task=task, n_prompts=len(g), sna=task_change(base, sna, metric),
                         control=task_change(base, ctrl, metric), difference=ci.estimate, ci_low=ci.low,
                         ci_high=ci.high, p_value=paired_test(per_sna, per_ctrl, method, "two-sided",
                                                              n_permutations, seed),
                         mde=minimum_detectable_effect(per_sna - per_ctrl, alpha) if len(g) > 1 else np.nan))
    out = pd.DataFrame(rows)
    out["p_holm"] = holm(out["p_value"].to_numpy())
    out["significant"] = out["p_holm"] < alpha
    out.attrs.update(correction="Holm", metric=metric, test=method, alpha=alpha)
    return out


# ---------------------------------------------------------------------------
# Spearman's rho over tasks
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's rho over tasks, its bootstrap interval and a permutation p-value (two-sided)."""

    rho: float
    low: float
    high: float
    p_value: float
    n_tasks: int
    n_permutations: int  # 0 when the p-value is exact (every permutation of the tasks enumerated)


def _rank_rho(rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Pearson correlation of rank vector ``rx [n]`` with each row of ``ry [m, n]``."""
    x = rx - rx.mean()
    y = ry - ry.mean(axis=-1, keepdims=True)
    return (y @ x) / np.sqrt((x @ x) * (y * y).sum(axis=-1))


def spearman_rho(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rho of two per-task arrays ``[n_tasks]`` (average ranks for ties; NaN if one is constant)."""
    from scipy.stats import rankdata

    x, y = check_values(x, "x", 3), check_values(y, "y", 3)
    _same_length([x, y], "x and y")
    if any(np.ptp(v) <= 1e-9 * max(1.0, np.abs(v).max()) for v in (x, y)):
        return float("nan")  # constant up to rounding: no ranking
    return float(_rank_rho(rankdata(x), rankdata(y)[None])[0])


def permutation_p_value(x: ArrayLike, y: ArrayLike, n_permutations: int = 100_000, seed: int = 0) -> tuple[float, int]:
    """Two-sided permutation p of Spearman's rho over tasks ``[n]``, and the permutations drawn (0: exact)."""
    from scipy.stats import rankdata

    rho = spearman_rho(x, y)
    if math.isnan(rho):
        return float("nan"), 0
    rx, ry = rankdata(x), rankdata(y)
    tol = 1e-12
    if math.factorial(len(rx)) <= n_permutations:
        perms = ry[np.array(list(itertools.permutations(range(len(ry)))))]
        return float((np.abs(_rank_rho(rx, perms)) >= abs(rho) - tol).mean()), 0
    rng, hits, left = np.random.default_rng(seed), 0, n_permutations
    while left:
        chunk = min(left, 8192)
        perms = np.take_along_axis(np.broadcast_to(ry, (chunk, len(ry))), rng.random((chunk, len(ry))).argsort(1), 1)
        hits += int((np.abs(_rank_rho(rx, perms)) >= abs(rho) - tol).sum())
        left -= chunk
    return (1 + hits) / (1 + n_permutations), n_permutations


def task_spearman(x_by_task: Sequence[ArrayLike], y_by_task: Sequence[ArrayLike],
                  x_stat: Callable[[np.ndarray], float] = np.mean, y_stat: Callable[[np.ndarray], float] = np.mean,
                  same_prompts: bool = False,
                  n_resamples: int = 2000, level: float = 0.95, n_permutations: int = 100_000,
                  seed: int = 0) -> RankCorrelation:
    """Spearman's rho between ``x_stat`` and ``y_stat`` of each task's per-prompt rows (``[n_prompts, ...]`` per
    task), with a bootstrap interval resampling prompts within tasks (jointly for x and y when ``same_prompts``;
    independently when x and y come from disjoint prompts, as they should) and a permutation p-value.
    For the relative improvement pass ``[n, 2]`` arrays of (p_base, p_after) and
    ``y_stat=lambda a: task_change(a[:, 0], a[:, 1], "relative_pct")``."""
    _check_resampling(n_resamples, level)
    xs, ys = [np.asarray(a, dtype=float) for a in x_by_task], [np.asarray(a, dtype=float) for a in y_by_task]
    if len(xs) != len(ys) or len(xs) < 3:
        raise SNAError(f"Need the same number (>= 3) of tasks for x and y, got {len(xs)} and {len(ys)}.")
    if any(len(a) < 2 for a in xs + ys):
        raise SNAError("Every task needs at least 2 prompts on each side to resample.")
    if same_prompts and any(len(a) != len(b) for a, b in zip(xs, ys)):
        raise SNAError("same_prompts=True needs x and y of equal length for every task.")
    point_x, point_y = [x_stat(a) for a in xs], [y_stat(a) for a in ys]
    p, drawn = permutation_p_value(point_x, point_y, n_permutations, seed)
    rng, rhos = np.random.default_rng(seed), []
    for _ in range(n_resamples):
        ix = [rng.integers(0, len(a), len(a)) for a in xs]
        iy = ix if same_prompts else [rng.integers(0, len(a), len(a)) for a in ys]
        rhos.append(spearman_rho([x_stat(a[i]) for a, i in zip(xs, ix)], [y_stat(a[i]) for a, i in zip(ys, iy)]))
    low, high = percentile_bounds(rhos, level)
    return RankCorrelation(spearman_rho(point_x, point_y), low, high, p, len(xs), drawn)


# ---------------------------------------------------------------------------
# The constant-log-odds-shift null
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ShiftNull:
    """What a constant log-odds shift alone predicts: a per-task table and the rhos with P_base."""

    table: pd.DataFrame  # task, p_base, p_after, relative_pct, delta_p, delta_log_odds
    rho_relative: float  # Spearman rho of P_base with the relative improvement
    rho_delta_p: float  # ... with the absolute change in probability
    rho_log_odds: float  # ... with the mean change in log-odds (NaN without noise: it is constant)


def shift_log_odds(p: ArrayLike, shift: ArrayLike) -> np.ndarray:
    """Probabilities ``[n]`` after adding ``shift`` nats (a number or ``[n]``) to their log-odds."""
    z = log_odds(p) + shift
    return 1.0 / (1.0 + np.exp(-z))


def constant_shift_null(p_base_by_task: dict[str, Sequence[float]], shift: float = 0.5, noise_sd: float = 0.0,
                        seed: int = 0) -> ShiftNull:
    """Every task's prompts get the same log-odds ``shift`` (nats), plus per-prompt N(0, ``noise_sd``) noise:
    the relative improvements and rhos that the metric's arithmetic alone produces."""
    if len(p_base_by_task) < 3:
        raise SNAError(f"The null needs at least 3 tasks, got {len(p_base_by_task)}.")
    if not (math.isfinite(shift) and math.isfinite(noise_sd) and noise_sd >= 0):
        raise SNAError(f"shift={shift!r} must be finite and noise_sd={noise_sd!r} finite and >= 0.")
    rng, rows = np.random.default_rng(seed), []
    for task, p in p_base_by_task.items():
        base = check_probs(p, f"p_base of {task!r}")
        after = shift_log_odds(base, shift + rng.normal(0.0, noise_sd, base.size))
        rows.append(dict(task=task, p_base=base.mean(), p_after=after.mean(),
                         relative_pct=task_change(base, after, "relative_pct"),
                         delta_p=task_change(base, after, "delta_p"),
                         delta_log_odds=task_change(base, after, "delta_log_odds")))
    t = pd.DataFrame(rows)
    rho = {m: spearman_rho(t["p_base"], t[m]) for m in ("relative_pct", "delta_p", "delta_log_odds")}
    return ShiftNull(t, rho["relative_pct"], rho["delta_p"], rho["delta_log_odds"])


# ---------------------------------------------------------------------------
# McNemar's test on paired right/wrong outcomes
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test: examples only A gets right, only B gets right, and the two-sided p-value."""

    a_only: int
    b_only: int
    p_value: float


def mcnemar(correct_a: ArrayLike, correct_b: ArrayLike) -> McNemar:
    """Exact McNemar test of two classifiers on the same examples ``[n]`` (booleans: right or wrong): a
    two-sided binomial test of the discordant pairs against 1/2 (p = 1 when there are none)."""
    from scipy.stats import binomtest

    a, b = (np.asarray(x) for x in (correct_a, correct_b))
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise SNAError(f"McNemar needs two non-empty 1-D arrays of the same length, got shapes {a.shape} and {b.shape}.")
    if a.dtype != bool or b.dtype != bool:
        raise SNAError(f"McNemar needs boolean right/wrong arrays, got dtypes {a.dtype} and {b.dtype}.")
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    n = a_only + b_only
    return McNemar(a_only, b_only, 1.0 if n == 0 else float(binomtest(a_only, n, 0.5).pvalue))
