"""The verdict: every claim of the paper the kit recomputes, read in-sample and held out, beside the controls.

One row per claim (:data:`VERDICT_COLUMNS`): the paper's number; this run's *in-sample* number (each task's
best configuration over all evaluation prompts, the paper's reading, inflated by the choice); the *held-out*
number (each configuration chosen on selection prompts, ``heldout.choose_on_selection``, and measured on the
test prompts) with its 95 % percentile bootstrap interval over test prompts; the same held-out statistic for
the random-neuron control and for the second control (each choosing its own best configuration the same
way); ``null_p``, the p-value against the null (Holm-adjusted paired test for the per-task rows, the matched
null of ``nulls.matched_null`` where given); and a plain-words verdict from :data:`VERDICTS`.
The rows against the field's baselines (a steering vector, a softmax temperature) come from ``baselines``.
Every row also says which weights its model ran with (``weights``, :data:`rules.VERDICT_TABLE_COLUMNS`: the
``revision`` its sweep rows record, :func:`model_weights`), and :func:`weights_line` says it in one line for a
printed verdict. Works on the saved tables alone (sweep rows, per-prompt rows, the matched null). Imports
``analysis``, ``baselines``, ``core``, ``errors``, ``heldout``, ``hub``, ``rules``, ``saturation``, ``stats`` and
``store``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .analysis import PAPER_NUMBERS, confidence_gain_correlation, task_summary
from ..run.hub import COMMIT, NOT_RECORDED
from ..run.store import check_made_for, check_prompt_table, grid_holes
from ..core import zone_of
from ..errors import SNAError
from .baselines import baseline_claims
from .heldout import ARMS, arm_column, choose_on_selection
from .rules import (NOT_MEASURED, VERDICT_COLUMNS, VERDICT_TABLE_COLUMNS, VERDICTS, WEIGHTS,
                    count_verdict, gain_verdict, paired_verdict, rho_verdict, share_verdict)
from .saturation import saturation_claims, zone_share_ci
from .stats import (Interval, bootstrap_ci, check_probs, grouped_relative_pct, relative_of_means, sna_vs_control,
                    stratified_ci, task_change, task_spearman)

ZONE3_THRESHOLD_PCT = 7.0  # the paper: Zone 3 tasks 'rarely' improve by more than 7 %
RARELY_SHARE_PCT = 10.0  # our reading of 'rarely': at most 10 % of the Zone-3 configurations
CONFIG = ["task", "layer", "k", "multiplier"]
ALL_MODELS = ", "  # joins the model names of the row about every model (the grid's size)


# ---------------------------------------------------------------------------
# The held-out per-prompt rows behind every number
# ---------------------------------------------------------------------------

def chosen_configs(sweep: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task, arm): the configuration chosen on selection prompts, its selection and test values
    (a lean sweep without the second control has no ``control_b`` rows)."""
    parts = []
    for arm in [a for a in ARMS if arm_column("improvement_pct_selection", a) in sweep.columns]:
        c = choose_on_selection(sweep, by=("model", "task"), arm=arm)
        c.insert(2, "arm", arm)
        parts.append(c)
    return pd.concat(parts, ignore_index=True)


def held_out_prompts(prompts: pd.DataFrame, chosen: pd.DataFrame, part: str = "test") -> pd.DataFrame:
    """The per-prompt rows (on ``part``) of every arm at its own chosen configuration, one per prompt."""
    keys = ["model", "task", "arm", "layer", "k", "multiplier"]
    sub = prompts[prompts["part"] == part].merge(chosen[keys], on=keys)
    return sub.sort_values(["model", "task", "arm", "prompt_id"], ignore_index=True)


def paired_arms(held: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, task, test prompt): p_base and each arm's p at its chosen configuration
    (``p_sna``, ``p_control``, ``p_control_b``)."""
    wide = held.pivot_table(index=["model", "task", "prompt_id"], columns="arm", values="p", aggfunc="first")
    wide.columns = [f"p_{a}" for a in wide.columns]
    base = held.groupby(["model", "task", "prompt_id"])["p_base"].first()
    return wide.join(base).reset_index()


# ---------------------------------------------------------------------------
# Intervals over prompts resampled within tasks
# ---------------------------------------------------------------------------

def _mean_relative(groups: list) -> float:
    """Mean over tasks of each task's relative improvement (%) from its (p_base, p_after) arrays."""
    return float(np.mean([relative_of_means(b, a) for b, a in groups]))


def _relative_ci(p_base: pd.Series, p_after: pd.Series, n_resamples: int, alpha: float, seed: int) -> Interval:
    """``stats.change_ci`` of the relative improvement (%), its statistic without per-resample input checks."""
    base, after = check_probs(p_base, "p_base"), check_probs(p_after, "p_after")
    return bootstrap_ci([base, after], relative_of_means, n_resamples, 1 - alpha, seed)


# ---------------------------------------------------------------------------
# Against the null (the rules are in ``rules``)
# ---------------------------------------------------------------------------

def beats_null(ci: Interval, control: float, null_p: float, alpha: float = 0.05, greater: bool = True) -> bool:
    """The evidence against the null for ``rules``: ``null_p < alpha`` where a null gave one; without it, the
    control's held-out value lies outside ``ci`` on the side away from the claim (below a gain, above a rho)."""
    if np.isfinite(null_p):
        return bool(null_p < alpha)
    return bool(np.isfinite(control) and (control < ci.low if greater else control > ci.high))


# ---------------------------------------------------------------------------
# The matched null's p-values (nulls.matched_null's table)
# ---------------------------------------------------------------------------

def check_null_configurations(null: pd.DataFrame | None, sweep: pd.DataFrame, chosen: pd.DataFrame,
                              model: str) -> None:
    """SNAError naming what differs when ``model``'s matched null was made for another sweep (its settings_id is
    not the ``sweep`` rows'), at another configuration than the one ``chosen`` on selection prompts, or for a
    task the sweep does not have."""
    if null is None or not len(null) or model not in set(null["model"]):
        return
    mine = null[null["model"] == model]
    check_made_for(mine, sweep, f"matched null of {model}",
                   "Rerun nulls.matched_null on this sweep (settings_id=its table's settings_id).")
    made = mine[["task", "layer", "k", "multiplier"]].drop_duplicates()
    want = chosen[chosen["arm"] == "sna"].set_index("task")
    wrong = []
    for _, r in made.iterrows():
        if r["task"] not in want.index:
            wrong.append(f"{r['task']}: in the null, not in the sweep")
            continue
        c = want.loc[r["task"]]
        if (int(r["layer"]), int(r["k"]), float(r["multiplier"])) != (int(c["layer"]), int(c["k"]),
                                                                       float(c["multiplier"])):
            wrong.append(f"{r['task']}: null at layer {int(r['layer'])}, k {int(r['k'])}, multiplier "
                         f"{float(r['multiplier']):g}; the sweep chose layer {int(c['layer'])}, k {int(c['k'])}, "
                         f"multiplier {float(c['multiplier']):g}")
    if wrong:
        raise SNAError(f"The matched null of {model} was made for another sweep or other configurations "
                       f"({'; '.join(wrong)}). Rerun nulls.matched_null with this sweep's choose_on_selection.")


def null_gains(null: pd.DataFrame | None, model: str) -> pd.DataFrame | None:
    """Held-out relative improvement (%) of every matched-null draw: rows draws, columns tasks (None: no null)."""
    if null is None or not len(null) or model not in set(null["model"]):
        return None
    test = null[(null["model"] == model) & (null["part"] == "test")]
    return grouped_relative_pct(test, ["draw", "task"]).unstack("task")


def empirical_p(observed: float, draws: np.ndarray, greater: bool = True) -> float:
    """One-sided p of ``observed`` among the null's ``draws``: (1 + draws at least as extreme) / (1 + n)."""
    draws = np.asarray(draws, dtype=float)
    draws = draws[np.isfinite(draws)]
    if not draws.size or not np.isfinite(observed):
        return float("nan")
    hits = (draws >= observed) if greater else (draws <= observed)
    return float((1 + hits.sum()) / (1 + draws.size))


# ---------------------------------------------------------------------------
# The claims
# ---------------------------------------------------------------------------

def _row(claim: str, paper: float, in_sample: float, ci: Interval | None, control: float, control_b: float,
         null_p: float, verdict: str, model: str, profile: str) -> dict:
    nan = float("nan")
    return dict(claim=claim, paper=paper, in_sample=float(in_sample), held_out=ci.estimate if ci else nan,
                ci_low=ci.low if ci else nan, ci_high=ci.high if ci else nan, control=float(control),
                control_b=float(control_b), null_p=float(null_p), verdict=verdict, model=model, profile=profile)


def task_tests(paired: pd.DataFrame, gains: pd.DataFrame | None, alpha: float = 0.05, n_resamples: int = 1000,
               seed: int = 0) -> pd.DataFrame:
    """Per task, on its test prompts (each arm at its own chosen configuration): ``stats.sna_vs_control``'s
    paired sign-flip test of the change in log-odds against the control (Holm over tasks) and minimum detectable
    effect (nats), the matched null's p (Holm over tasks) where ``gains`` are given, and ``null_p``, the larger
    of the two adjusted p-values (SNA must beat both nulls: an intersection-union test)."""
    from .stats import holm

    tests = sna_vs_control(paired, "delta_log_odds", alpha=alpha, n_resamples=n_resamples, seed=seed)
    held = paired.groupby("task").apply(lambda g: task_change(g["p_base"], g["p_sna"], "relative_pct"),
                                        include_groups=False)
    tests["held_out_pct"] = tests["task"].map(held)
    if gains is not None:
        raw = [empirical_p(h, gains[t]) if t in gains else float("nan")
               for t, h in zip(tests["task"], tests["held_out_pct"])]
        tests["p_matched"] = holm(np.nan_to_num(raw, nan=1.0))
        tests["null_p"] = np.maximum(tests["p_holm"], tests["p_matched"])
    else:
        tests["null_p"] = tests["p_holm"]
    return tests


def _per_task_rows(summary, paired, chosen, gains, model, profile, alpha, n_resamples, seed) -> list[dict]:
    """One row per task: SNA's held-out gain against the controls, with the paired test and the matched null."""
    tests = task_tests(paired, gains, alpha, n_resamples, seed).set_index("task")
    value = chosen.set_index(["task", "arm"])["held_out"]
    rows = []
    for task, g in paired.groupby("task", sort=True):
        t = tests.loc[task]
        ci = _relative_ci(g["p_base"], g["p_sna"], n_resamples, alpha, seed)
        v = paired_verdict(t["difference"], t["null_p"], t["p_holm"], alpha)
        rows.append(_row(f"SNA beats the random control on {task} ({len(g)} test prompts; MDE "
                         f"{t['mde']:.2g} nats of log-odds)", float("nan"),
                         summary.set_index("task").loc[task, "best_improvement_pct"], ci,
                         value.get((task, "control"), np.nan), value.get((task, "control_b"), np.nan),
                         t["null_p"], v, model, profile))
    return rows


def _zone1_rows(summary, paired, chosen, zones, gains, model, profile, alpha, n_resamples, seed) -> list[dict]:
    """Zone 1's best and mean improvement: tasks in Zone 1 by their selection prompts' baseline."""
    P, rows = PAPER_NUMBERS, []
    in_z1 = summary[summary["zone"] == 1]["best_improvement_pct"]
    tasks = sorted(t for t, z in zones.items() if z == 1)
    arms = {arm: chosen[(chosen["arm"] == arm) & chosen["task"].isin(tasks)] for arm in ARMS}
    if not tasks:
        return [_row("Zone 1 best configuration (0 tasks)", P["zone1_best_improvement_pct"], in_z1.max(), None,
                     np.nan, np.nan, np.nan, NOT_MEASURED, model, profile),
                _row("Zone 1 mean improvement (0 tasks)", P["zone1_mean_improvement_pct"], in_z1.mean(), None,
                     np.nan, np.nan, np.nan, NOT_MEASURED, model, profile)]

    def best(arm: str) -> tuple[str, float]:  # the Zone-1 task best on selection prompts, and its test value
        if arms[arm].empty:  # a lean sweep without the second control
            return "", np.nan
        c = arms[arm].loc[arms[arm]["chosen_on_selection"].idxmax()]
        return c["task"], float(c["held_out"])

    task = best("sna")[0]
    g = paired[paired["task"] == task]
    ci = _relative_ci(g["p_base"], g["p_sna"], n_resamples, alpha, seed)
    null_p = empirical_p(ci.estimate, gains[task]) if gains is not None and task in gains else np.nan
    rows.append(_row(f"Zone 1 best configuration ({task}, best of {len(tasks)} tasks on selection prompts)",
                     P["zone1_best_improvement_pct"], in_z1.max(), ci, best("control")[1], best("control_b")[1],
                     null_p, gain_verdict(ci.estimate, ci.low, ci.high,
                                          beats=beats_null(ci, best("control")[1], null_p, alpha),
                                          paper=P["zone1_best_improvement_pct"]), model, profile))
    groups = [(g["p_base"].to_numpy(), g["p_sna"].to_numpy()) for _, g in paired[paired["task"].isin(tasks)]
              .groupby("task", sort=True)]
    ci = stratified_ci(groups, _mean_relative, n_resamples, 1 - alpha, seed)
    null_p = (empirical_p(ci.estimate, gains[tasks].mean(axis=1)) if gains is not None and set(tasks) <= set(gains)
              else np.nan)
    ctrl = {arm: float(arms[arm]["held_out"].mean()) for arm in ARMS[1:]}
    rows.append(_row(f"Zone 1 mean improvement ({len(tasks)} tasks)", P["zone1_mean_improvement_pct"],
                     in_z1.mean(), ci, ctrl["control"], ctrl["control_b"], null_p,
                     gain_verdict(ci.estimate, ci.low, ci.high,
                                  beats=beats_null(ci, ctrl["control"], null_p, alpha),
                                  paper=P["zone1_mean_improvement_pct"]), model, profile))
    return rows


def _rho_row(summary, paired, selection, gains, model, profile, alpha, n_resamples, seed) -> dict:
    """Spearman's rho over tasks of P_base (selection prompts) with the held-out gain (test prompts)."""
    P = PAPER_NUMBERS
    rho_in, _ = confidence_gain_correlation(summary)
    tasks = sorted(set(paired["task"]))
    if len(tasks) < 3:
        return _row(f"Spearman rho, P_base vs best improvement ({len(tasks)} tasks)", P["spearman_rho"], rho_in,
                    None, np.nan, np.nan, np.nan, NOT_MEASURED, model, profile)
    xs = [selection.loc[selection["task"] == t, "p_base"].to_numpy() for t in tasks]

    def rho(arm: str) -> tuple[Interval, float]:
        ys = [paired.loc[paired["task"] == t, ["p_base", f"p_{arm}"]].to_numpy() for t in tasks]
        r = task_spearman(xs, ys, y_stat=lambda a: relative_of_means(a[:, 0], a[:, 1]),
                          n_resamples=n_resamples, level=1 - alpha, seed=seed)
        return Interval(r.rho, r.low, r.high, 1 - alpha, n_resamples), r.p_value

    (ci, p_perm), (ctrl, _) = rho("sna"), rho("control")
    ctrl_b = rho("control_b")[0] if "p_control_b" in paired else Interval(np.nan, np.nan, np.nan, 1 - alpha, 0)
    null_p = np.nan
    if gains is not None and set(tasks) <= set(gains):
        from .stats import spearman_rho

        x = [float(np.mean(a)) for a in xs]
        null_p = empirical_p(ci.estimate, [spearman_rho(x, gains.loc[d, tasks].to_numpy()) for d in gains.index],
                             greater=False)
    return _row(f"Spearman rho, P_base (selection prompts) vs held-out improvement ({len(tasks)} tasks; "
                f"permutation p {p_perm:.2g})", P["spearman_rho"], rho_in, ci, ctrl.estimate, ctrl_b.estimate,
                null_p, rho_verdict(ci.estimate, ci.low, ci.high,
                                    beats=beats_null(ci, ctrl.estimate, null_p, alpha, greater=False)),
                model, profile)


def _zone3_row(sweep, prompts, zones, model, profile, alpha, n_resamples, seed) -> dict:
    """'Zone 3 rarely above 7 %' as the share of Zone-3 configurations whose improvement exceeds 7 %."""
    claim = (f"Zone 3 configurations improving by more than {ZONE3_THRESHOLD_PCT:g} % (share, %; 'rarely': at "
             f"most {RARELY_SHARE_PCT:g} %)")
    in_z3 = sweep[sweep["zone"] == 3]
    in_sample = 100 * float((in_z3["improvement_pct"] > ZONE3_THRESHOLD_PCT).mean()) if len(in_z3) else np.nan
    tasks = sorted(t for t, z in zones.items() if z == 3)
    if not tasks:
        return _row(claim + " (0 tasks)", np.nan, in_sample, None, np.nan, np.nan, np.nan, NOT_MEASURED, model,
                    profile)
    ci = zone_share_ci(prompts, sweep, 3, "sna", ZONE3_THRESHOLD_PCT, n_resamples, seed, 1 - alpha)
    z3 = sweep[sweep["task"].isin(tasks)]
    ctrl = {arm: 100 * float((z3[f"{arm}_improvement_pct_test"] > ZONE3_THRESHOLD_PCT).mean())
            if f"{arm}_improvement_pct_test" in z3 else np.nan for arm in ARMS[1:]}
    return _row(f"{claim} ({len(tasks)} tasks)", np.nan, in_sample, ci, ctrl["control"], ctrl["control_b"], np.nan,
                share_verdict(ci.estimate, ci.low, ci.high, RARELY_SHARE_PCT), model, profile)


# ---------------------------------------------------------------------------
# Which weights each model ran with
# ---------------------------------------------------------------------------

def describe_weights(revision: str) -> str:
    """A recorded revision as the ``weights`` column says it: 'Hub commit <sha>' for a commit, else as recorded
    ('random weights, seed 0', a packaged GGUF file 'dequantized to float32', 'local folder ...')."""
    revision = str(revision)
    return f"Hub commit {revision}" if COMMIT.fullmatch(revision) else revision


def model_weights(sweep: pd.DataFrame, weights: dict[str, str] | None = None) -> dict[str, str]:
    """Model -> the weights its ``sweep`` rows record (their ``revision``, :func:`describe_weights`; 'not recorded'
    for a table of an earlier kit version), ``weights`` (model -> text) adding or replacing entries."""
    found = {}
    for model, s in sweep.groupby("model", sort=True):
        revisions = sorted(set(s["revision"].astype(str))) if "revision" in s else [NOT_RECORDED]
        found[str(model)] = "; ".join(describe_weights(r) for r in revisions)
    return found | dict(weights or {})


def with_weights(table: pd.DataFrame, known: dict[str, str]) -> pd.DataFrame:
    """``table`` in :data:`VERDICT_TABLE_COLUMNS`: each row's ``weights`` are its model's in ``known`` ('not
    recorded' for another model); the row about every model names each one's ('tiny: ...; tiny-pythia: ...')."""
    def of(model: str) -> str:
        names = str(model).split(ALL_MODELS)
        if len(names) > 1 and all(n in known for n in names):
            return "; ".join(f"{n}: {known[n]}" for n in names)
        return known.get(str(model), NOT_RECORDED)

    return table.assign(**{WEIGHTS: table["model"].map(of)})[VERDICT_TABLE_COLUMNS]


def weights_line(table: pd.DataFrame) -> str:
    """One line naming the models of a verdict ``table`` (or its saved CSV) and the weights each ran with; a table
    saved before the ``weights`` column says they were not recorded there."""
    names = sorted(set(table["model"].astype(str)))
    models = [n for n in names if not (ALL_MODELS in n and set(n.split(ALL_MODELS)) <= set(names))]
    if WEIGHTS not in table:
        return (f"Models: {', '.join(models)}; their weights are not recorded in this verdict (saved by an earlier "
                f"kit version: rerun notebook 06).")
    weights = dict(zip(table["model"].astype(str), table[WEIGHTS].fillna(NOT_RECORDED).astype(str)))
    return "Models and weights: " + "; ".join(f"{m} ({weights[m]})" for m in models)


def _check(sweep: pd.DataFrame, prompts: pd.DataFrame, extra: Sequence[pd.DataFrame]) -> None:
    """Clear errors for tables the verdict cannot read, before any resampling."""
    if not isinstance(sweep, pd.DataFrame) or not len(sweep):
        raise SNAError("verdict needs the sweep table (su.results_table(su.sweep_table_name(model), profile)).")
    if "improvement_pct_selection" not in sweep:
        raise SNAError("The sweep table has no selection/test columns: rerun the sweep with this kit version.")
    holes = grid_holes(sweep)
    if holes:
        raise SNAError(f"The sweep table has holes ({'; '.join(holes)}): every task's best configuration must be "
                       f"chosen from the same grid. Run the sweep into the same `out` again to fill them.")
    check_prompt_table(prompts)
    for i, e in enumerate(extra):
        bad = [c for c in VERDICT_COLUMNS if c not in e]
        if bad:
            raise SNAError(f"extra[{i}] lacks verdict column(s) {bad}; its columns must be {VERDICT_COLUMNS}.")
        wrong = sorted(set(e["verdict"]) - set(VERDICTS))
        if wrong:
            raise SNAError(f"extra[{i}] has verdict(s) {wrong}; use one of {VERDICTS}.")


def verdict(sweep: pd.DataFrame, prompts: pd.DataFrame, profile: str, null: pd.DataFrame | None = None,
            extra: Sequence[pd.DataFrame] = (), alpha: float = 0.05, n_resamples: int = 1000,
            seed: int = 0, weights: dict[str, str] | None = None) -> pd.DataFrame:
    """Every claim the kit recomputes, one row each (:data:`VERDICT_TABLE_COLUMNS`), per model of ``sweep``.

    ``prompts``: the sweep's per-prompt table (``su.read_prompt_table``); ``null``: the matched-null table
    (``nulls.matched_null``) at the configurations chosen on selection prompts, or None; ``extra``: further
    rows in the same columns (other analyses' claims), appended as they are. Intervals: percentile bootstrap
    over test prompts (within tasks), ``n_resamples`` resamples, ``seed`` fixed, level ``1 - alpha``.
    Each row's ``weights`` column says which weights its model ran with, as its sweep rows record them
    (:func:`model_weights`; rows of ``extra`` take those of the sweep's model of the same name); ``weights``
    (model -> text, e.g. ``su.model_revision(model)``) adds or replaces entries. No claim, number or verdict
    depends on them.
    """
    extra = list(extra)
    _check(sweep, prompts, extra)
    rows = [_row("configurations in the grid (all models)", PAPER_NUMBERS["configurations"], len(sweep), None,
                 np.nan, np.nan, np.nan, count_verdict(len(sweep), PAPER_NUMBERS["configurations"]),
                 ALL_MODELS.join(sorted(sweep["model"].unique())), profile)]
    for model, s in sweep.groupby("model", sort=True):
        pm = prompts[prompts["model"] == model]
        chosen = chosen_configs(s)
        check_null_configurations(null, s, chosen, model)
        paired = paired_arms(held_out_prompts(pm, chosen))
        selection = (pm[(pm["part"] == "selection") & (pm["arm"] == "sna")]
                     .drop_duplicates(["task", "prompt_id"]).sort_values(["task", "prompt_id"]))
        zones = {t: zone_of(g["p_base"].mean()) for t, g in selection.groupby("task")}
        summary, gains = task_summary(s), null_gains(null, model)
        args = (model, profile, alpha, n_resamples, seed)
        rows += _per_task_rows(summary, paired, chosen, gains, *args)
        rows += _zone1_rows(summary, paired, chosen, zones, gains, *args)
        rows.append(_rho_row(summary, paired, selection, gains, *args))
        rows.append(_zone3_row(s, pm, zones, *args))
    out = pd.DataFrame(rows, columns=VERDICT_COLUMNS)
    saturation = saturation_claims(prompts, sweep, profile, alpha, n_resamples, seed)
    baselines = baseline_claims(prompts, sweep, profile, alpha, n_resamples, seed)
    table = pd.concat([out, saturation, baselines, *[e[VERDICT_COLUMNS] for e in extra]], ignore_index=True)
    return with_weights(table, model_weights(sweep, weights))
