"""The verdict against the field's baselines: SNA beside a steering vector and a softmax temperature.

The per-prompt table holds three baseline arms (``run.baselines``): ``steer`` (the task's steering vector at
each layer, at each multiple alpha), ``steer_matched`` (the same vector scaled to SNA's push at that layer)
and ``temperature`` (the unmodified logits divided by T). :func:`baseline_table` gives each candidate's
relative improvement on all, selection and test prompts, computed as the sweep computes SNA's;
:func:`chosen_baselines` chooses ``steer`` and ``temperature`` at their own best (layer, strength) on
selection prompts exactly as SNA is chosen (``heldout.choose_on_selection``) and reads ``steer_matched`` at
SNA's chosen layer. :func:`baseline_claims` gives the verdict rows: per task, SNA against each baseline on
the test prompts (the paired sign-flip test of the change in log-odds, Holm over tasks), and the saturation
rho of each baseline (does a baseline alone reproduce "gains are largest where the model is unsure"?).
Works on DataFrames alone. Imports ``core``, ``errors``, ``heldout``, ``rules``, ``saturation``, ``stats``
and ``store``.
"""

from __future__ import annotations

import pandas as pd

from ..core import improvement_pct
from ..errors import SNAError
from .heldout import BASELINE_ARMS, choose_on_selection, part_column
from .rules import NOT_MEASURED, SUPPORTED, VERDICT_COLUMNS, paired_verdict, rho_verdict
from .saturation import chosen_prompts
from .stats import relative_of_means, sna_vs_control, task_spearman
from ..run.store import check_prompt_table

KEYS = ["model", "task", "arm", "layer", "k", "multiplier", "strength"]  # k, multiplier: steer_matched's SNA
CLAIM_OF = {  # baseline series -> (the per-task claim's start, the baseline's name in plain words)
    "steer_matched": ("SNA beats the steering vector at equal strength on", "the steering vector at SNA's strength"),
    "steer": ("SNA beats the steering vector at its best on", "the steering vector at its best"),
    "temperature": ("SNA beats temperature on", "temperature (logits / T)"),
}
NEEDS = "sweep with baselines=True (the default) and prompt_table=True, this kit version"


def baseline_table(prompts: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, task, baseline arm, layer, k, multiplier, strength): ``p_base``, ``improvement_pct`` on all
    evaluation prompts and ``improvement_pct_selection``, ``improvement_pct_test`` (the sweep table's columns)."""
    b = prompts[prompts["arm"].isin(BASELINE_ARMS)]
    out = None
    for part in (None, "selection", "test"):
        d = b if part is None else b[b["part"] == part]
        g = d.groupby(KEYS, sort=True).agg(p_base=("p_base", "mean"), p=("p", "mean"))
        col = "improvement_pct" if part is None else part_column("improvement_pct", part)
        s = pd.Series(improvement_pct(g["p_base"], g["p"]), index=g.index, name=col)
        out = g[["p_base"]].join(s) if out is None else out.join(s)
    return out.reset_index()


def chosen_baselines(prompts: pd.DataFrame, sweep: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task, baseline arm): its (layer, k, multiplier, strength), ``chosen_on_selection``, ``held_out``
    (test) and ``in_sample_best``; ``steer`` and ``temperature`` chosen on selection prompts, ``steer_matched``
    the one matched to SNA's chosen (layer, k, multiplier): a task without one (a grid grown after its baselines
    were computed) has no ``steer_matched`` row."""
    table = baseline_table(prompts)
    parts = []
    for arm in ("steer", "temperature"):
        c = choose_on_selection(table[table["arm"] == arm], keys=("layer", "k", "multiplier", "strength"))
        parts.append(c.assign(arm=arm))
    sna = choose_on_selection(sweep)[["model", "task", "layer", "k", "multiplier"]]
    m = table[table["arm"] == "steer_matched"].merge(sna, on=["model", "task", "layer", "k", "multiplier"])
    m = m.drop_duplicates(["model", "task"]).rename(columns={
        "improvement_pct_selection": "chosen_on_selection", "improvement_pct_test": "held_out",
        "improvement_pct": "in_sample_best"})
    parts.append(m.assign(arm="steer_matched"))
    return pd.concat(parts, ignore_index=True)[["model", "task", "arm", "layer", "k", "multiplier", "strength",
                                                "chosen_on_selection", "held_out", "in_sample_best"]]


def baseline_prompts(prompts: pd.DataFrame, sweep: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, task, prompt): part, p_base, ``sna`` (SNA's choice on selection prompts) and each
    baseline's p at its chosen configuration (:func:`chosen_baselines`), columns named by the arm."""
    out = chosen_prompts(prompts, sweep)[["model", "task", "prompt_id", "part", "p_base", "sna"]]
    chosen = chosen_baselines(prompts, sweep)
    for arm in CLAIM_OF:
        rows = prompts[prompts["arm"] == arm].merge(chosen[chosen["arm"] == arm][KEYS], on=KEYS)
        out = out.merge(rows[["model", "task", "prompt_id", "p"]].rename(columns={"p": arm}),
                        on=["model", "task", "prompt_id"], how="left")
    if out[["steer", "temperature"]].isna().any().any():
        raise SNAError("The per-prompt table's baselines cover other prompts than SNA's: it must come from one sweep.")
    return out


def _row(model: str, profile: str, claim: str, held_out: float, low: float, high: float, control: float,
         null_p: float, verdict: str) -> dict:
    nan = float("nan")
    return dict(claim=claim, paper=nan, in_sample=nan, held_out=held_out, ci_low=low, ci_high=high,
                control=control, control_b=nan, null_p=null_p, verdict=verdict, model=model, profile=profile)


def _not_measured(model: str, profile: str) -> list[dict]:
    """The rows of a table without baselines, each naming what it needs."""
    nan = float("nan")
    rows = [_row(model, profile, f"{start} every task (not measured: {NEEDS})", nan, nan, nan, nan, nan,
                 NOT_MEASURED) for start, _ in CLAIM_OF.values()]
    return rows + [_row(model, profile, f"Baseline rho: {name} (not measured: {NEEDS})", nan, nan, nan, nan,
                        nan, NOT_MEASURED) for _, name in CLAIM_OF.values()]


def _pair_rows(test: pd.DataFrame, chosen: pd.DataFrame, arm: str, model: str, profile: str, alpha: float,
               n_resamples: int, seed: int) -> list[dict]:
    """Per task: SNA's change in log-odds minus the baseline's on paired test prompts, Holm over tasks."""
    start = CLAIM_OF[arm][0]
    nan = float("nan")
    unmatched = sorted(set(test.loc[test[arm].isna(), "task"]))  # steer_matched only: matched to another config
    rows = [_row(model, profile, f"{start} {task} (not measured: its steering vector was matched to another SNA "
                                 f"configuration, the grid grew after its baselines were computed; sweep into a new "
                                 f"`out`)", nan, nan, nan, nan, nan, NOT_MEASURED) for task in unmatched]
    test = test[~test["task"].isin(unmatched)]
    if test.empty:
        return rows
    pairs = test.rename(columns={"sna": "p_sna", arm: "p_control"})[["task", "p_base", "p_sna", "p_control"]]
    tests = sna_vs_control(pairs, "delta_log_odds", alpha=alpha, n_resamples=n_resamples, seed=seed)
    at = chosen[chosen["arm"] == arm].set_index("task")
    for _, t in tests.iterrows():
        c = at.loc[t["task"]]
        at_ = (f"steer at layer {int(c['layer'])}, alpha {c['strength']:.3g}" if arm.startswith("steer")
               else f"T {c['strength']:.3g}")
        rows.append(_row(model, profile, f"{start} {t['task']} ({t['n_prompts']} test prompts; {at_}; log-odds "
                                         f"change, SNA minus baseline; MDE {t['mde']:.2g} nats)",
                         t["difference"], t["ci_low"], t["ci_high"], t["control"], t["p_holm"],
                         paired_verdict(t["difference"], t["p_holm"], t["p_holm"], alpha)))
    return rows


def _rho(g: pd.DataFrame, series: str, n_resamples: int, alpha: float, seed: int):
    """Spearman's rho over tasks of P_base (selection prompts) with ``series``' held-out relative improvement."""
    g = g[g[series].notna()]  # steer_matched: tasks whose vector was matched to another configuration drop out
    tasks = sorted(g["task"].unique())
    xs = [g.loc[(g["task"] == t) & (g["part"] == "selection"), "p_base"].to_numpy(float) for t in tasks]
    ys = [g.loc[(g["task"] == t) & (g["part"] == "test"), ["p_base", series]].to_numpy(float) for t in tasks]
    return task_spearman(xs, ys, y_stat=lambda a: relative_of_means(a[:, 0], a[:, 1]), n_resamples=n_resamples,
                         level=1 - alpha, seed=seed)


def _rho_rows(g: pd.DataFrame, model: str, profile: str, alpha: float, n_resamples: int, seed: int) -> list[dict]:
    """Per baseline: does it alone give the negative rho of P_base with the held-out gain? Said in plain words."""
    n = g["task"].nunique()
    nan = float("nan")
    if n < 3:
        return [_row(model, profile, f"Baseline rho: {name} ({n} tasks)", nan, nan, nan, nan, nan, NOT_MEASURED)
                for _, name in CLAIM_OF.values()]
    sna = _rho(g, "sna", n_resamples, alpha, seed)
    rows = []
    for arm, (_, name) in CLAIM_OF.items():
        r = _rho(g, arm, n_resamples, alpha, seed)
        v = rho_verdict(r.rho, r.low, r.high, r.p_value, beats=True, alpha=alpha)
        words = (f"; {name} alone reproduces the negative rho: the Three-Zone pattern needs no selected neurons"
                 if v == SUPPORTED else "")
        rows.append(_row(model, profile, f"Baseline rho: {name}, P_base (selection prompts) vs held-out improvement "
                                         f"({n} tasks; permutation p {r.p_value:.2g}; SNA's rho {sna.rho:.2f}){words}",
                         r.rho, r.low, r.high, sna.rho, r.p_value, v))
    return rows


def baseline_claims(prompts: pd.DataFrame, sweep: pd.DataFrame, profile: str, alpha: float = 0.05,
                    n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The verdict table's rows (``rules.VERDICT_COLUMNS``) against the baselines, per model: per task and
    baseline, SNA minus the baseline in the change of log-odds on test prompts (``held_out``, its interval, the
    baseline's own change in ``control``, Holm's p in ``null_p``); per baseline, its saturation rho (SNA's
    in ``control``). A table without baseline rows gets 'not measured' rows naming the option they need."""
    check_prompt_table(prompts)
    rows = []
    for model, s in sweep.groupby("model", sort=True):
        pm = prompts[prompts["model"] == model]
        if not set(CLAIM_OF) <= set(pm["arm"]):
            rows += _not_measured(model, profile)
            continue
        chosen, wide = chosen_baselines(pm, s), baseline_prompts(pm, s)
        test = wide[wide["part"] == "test"]
        for arm in CLAIM_OF:
            rows += _pair_rows(test, chosen, arm, model, profile, alpha, n_resamples, seed)
        rows += _rho_rows(wide, model, profile, alpha, n_resamples, seed)
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)
