"""The saturation artefact (sna_utils.judge.saturation): rhos of three metrics held out, the per-prompt analysis within
tasks beside the constant-log-odds-shift null, "Zone 3 rarely above 7 %" as a share, and the verdict rows."""
import numpy as np
import pandas as pd
import pytest

import sna_utils as su
from helpers import perturb_test_prompts, sweep_from_prompts, synthetic_prompts, synthetic_tables
from sna_utils.judge import saturation as sat
from sna_utils.judge.stats import permutation_p_value, spearman_rho, task_change

SMALL = dict(n_tasks=8, layers=(0, 1), ks=(1,), multipliers=(2.0, 5.0))


@pytest.fixture(scope="module")
def null_tables():
    """No saturation: every task's prompts get the same log-odds shift per configuration (plus noise)."""
    return synthetic_tables(seed=11)


@pytest.fixture(scope="module")
def planted_tables():
    """A real saturation effect: SNA's shift grows by 0.5 nats per nat of baseline log-odds below -2."""
    return synthetic_tables(saturation=0.5, seed=12)


def _null_run(seed):
    """One null replicate: the relative-gain rho and the p of the two log-odds analyses (tasks, prompts)."""
    sweep, prompts = synthetic_tables(seed=seed, **SMALL)
    chosen = sat.chosen_prompts(prompts, sweep)
    gains = sat.task_gains(chosen)
    changes = [g for _, g in sat.prompt_changes(chosen).groupby("task")]
    return (spearman_rho(gains.p_base_selection, gains.sna_relative_pct),
            permutation_p_value(gains.p_base_selection, gains.sna_minus_control_delta_log_odds)[0],
            sat.stratified_permutation_p([g.p_base.to_numpy() for g in changes], [g.change.to_numpy() for g in changes],
                                         999, seed))


@pytest.mark.slow
def test_the_log_odds_analyses_keep_their_nominal_rate_where_the_relative_gain_sees_saturation():
    """A test of the test: 60 null tables. The paper's rho is strongly negative from arithmetic alone; the
    held-out log-odds analyses reject at no more than the nominal 5 % allows (8 of 60: P(X >= 9) = 0.003 at
    exactly 5 %)."""
    runs = np.array([_null_run(seed) for seed in range(60)])
    assert np.median(runs[:, 0]) < -0.7 and (runs[:, 0] < 0).mean() > 0.95
    assert (runs[:, 1] < 0.05).sum() <= 8
    assert (runs[:, 2] < 0.05).sum() <= 8


def test_a_planted_saturation_effect_is_found(planted_tables):
    sweep, prompts = planted_tables
    chosen = sat.chosen_prompts(prompts, sweep)
    rhos = sat.saturation_rhos(chosen, 1000, seed=1, only=[("sna_minus_control", "delta_log_odds")])
    row = rhos.set_index(["series", "gain"]).loc[("sna_minus_control", "delta_log_odds")]
    assert row.rho < -0.7 and row.ci_high < 0 and row.p_value < 0.05 and row.exact
    assert row.null_rho == 0.0  # the constant shift leaves every task's log-odds gain equal
    per = sat.prompt_level(chosen, n_resamples=1000, n_permutations=999).iloc[-1]
    assert per.task == "all tasks" and per.ci_high < 0 and per.p_value < 0.01 and per.null_rho == 0.0


def test_null_tables_do_not_show_it(null_tables):
    sweep, prompts = null_tables
    chosen = sat.chosen_prompts(prompts, sweep)
    pairs = [("sna", "relative_pct"), ("sna_minus_control", "delta_log_odds")]
    rhos = sat.saturation_rhos(chosen, 1000, seed=1, only=pairs).set_index(["series", "gain"])
    assert len(rhos) == 2 and rhos.loc[("sna", "relative_pct"), "rho"] < -0.6
    assert rhos.loc[("sna", "relative_pct"), "null_rho"] < -0.9  # the null predicts the paper's pattern
    assert rhos.loc[("sna_minus_control", "delta_log_odds"), "p_value"] > 0.05
    per = sat.prompt_level(chosen, n_resamples=1000, n_permutations=999)
    assert per.iloc[-1].p_value > 0.05
    rel = sat.prompt_level(chosen, "sna", "relative_pct", n_resamples=1000, n_permutations=999).iloc[-1]
    assert rel.null_rho < -0.5  # per prompt too, the ratio falls with P_base under a constant shift


def test_gains_are_read_at_the_configuration_chosen_on_selection(null_tables):
    sweep, prompts = null_tables
    chosen = sat.chosen_prompts(prompts, sweep)
    gains = sat.task_gains(chosen).set_index("task")
    for task, g in sweep.groupby("task"):
        sna = g.loc[g.improvement_pct_selection.idxmax()]
        ctrl = g.loc[g.control_improvement_pct_selection.idxmax()]
        assert gains.loc[task, "sna_relative_pct"] == pytest.approx(sna.improvement_pct_test)
        assert gains.loc[task, "control_relative_pct"] == pytest.approx(ctrl.control_improvement_pct_test)
        assert gains.loc[task, "p_base_selection"] == pytest.approx(sna.p_base_selection)
        rows = prompts[(prompts.task == task) & (prompts.part == "test") & (prompts.layer == sna.layer)
                       & (prompts.k == sna.k) & (prompts.multiplier == sna.multiplier)].sort_values("prompt_id")
        s, c = rows[rows.arm == "sna"], rows[rows.arm == "control"]
        plain = (task_change(s.p_base, s.p, "delta_log_odds") - task_change(c.p_base, c.p, "delta_log_odds"))
        assert gains.loc[task, "sna_minus_control_delta_log_odds"] == pytest.approx(plain)


def test_choices_and_p_base_never_read_a_test_prompt(null_tables):
    sweep, prompts = null_tables
    full = perturb_test_prompts(synthetic_prompts(seed=11))
    sweep2, prompts2 = sweep_from_prompts(full), full.drop(columns="category")
    a, b = sat.chosen_prompts(prompts, sweep), sat.chosen_prompts(prompts2, sweep2)
    sel = lambda c: c[c.part == "selection"].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(sel(a), sel(b))  # same configurations: same selection probabilities
    ga, gb = sat.task_gains(a), sat.task_gains(b)
    pd.testing.assert_series_equal(ga.p_base_selection, gb.p_base_selection)
    assert not np.allclose(ga.sna_delta_log_odds, gb.sna_delta_log_odds)


def test_zone_shares_count_configurations(null_tables):
    sweep, prompts = null_tables
    shares = sat.zone_shares(sweep, 50.0).set_index(["zone", "reading"])
    zone = sweep.p_base_selection.map(su.zone_of)
    for z in sorted(zone.unique()):
        d = sweep[zone == z]
        row = shares.loc[(z, "held-out")]
        assert row.n_configs == len(d) and row.n_tasks == d.task.nunique()
        assert row.sna == pytest.approx(100 * (d.improvement_pct_test > 50).mean())
        assert row.control == pytest.approx(100 * (d.control_improvement_pct_test > 50).mean())
    d = sweep[sweep.p_base.map(su.zone_of) == 3]
    assert shares.loc[(3, "in-sample"), "sna"] == pytest.approx(100 * (d.improvement_pct > 50).mean())
    ci = sat.zone_share_ci(prompts, sweep, 3, "sna", 50.0, 1000, seed=2)
    assert ci.estimate == pytest.approx(shares.loc[(3, "held-out"), "sna"]) and ci.low <= ci.estimate <= ci.high
    assert ci == sat.zone_share_ci(prompts, sweep, 3, "sna", 50.0, 1000, seed=2)


def test_bootstraps_are_deterministic_in_their_seed(null_tables):
    sweep, prompts = null_tables
    chosen = sat.chosen_prompts(prompts, sweep)
    pair = [("control", "delta_p")]
    pd.testing.assert_frame_equal(*(sat.saturation_rhos(chosen, 1000, seed=4, only=pair) for _ in range(2)))
    a, b, c = (sat.prompt_level(chosen, n_resamples=1000, n_permutations=999, seed=s) for s in (4, 4, 5))
    pd.testing.assert_frame_equal(a, b)
    assert not a.iloc[-1][["ci_low", "ci_high", "p_value"]].equals(c.iloc[-1][["ci_low", "ci_high", "p_value"]])


def test_the_verdict_rows(planted_tables):
    sweep, prompts = planted_tables
    planted = sat.saturation_claims(prompts, sweep, "synthetic", n_resamples=1000)
    assert list(planted.columns) == su.judge.rules.VERDICT_COLUMNS
    assert set(planted.verdict) <= set(su.judge.rules.VERDICTS) and (planted.model == "synthetic").all()
    assert (planted.profile == "synthetic").all()
    assert list(planted.verdict[:2]) == ["supported"] * 2  # the log-odds rho over tasks and per prompt
    layers = planted[planted.claim.str.startswith("layer")]
    assert len(layers) == 4 and (layers.verdict == "not measured").all()  # layers 8-22 were not swept


def test_the_verdict_rows_on_a_null_table():
    """No saturation: neither log-odds row (over tasks, per prompt) is called either way."""
    sweep, prompts = synthetic_tables(seed=21, **SMALL)
    null = sat.saturation_claims(prompts, sweep, "synthetic", n_resamples=1000)
    assert list(null.verdict[:2]) == ["not distinguishable from the control"] * 2


def test_layer_verdicts():
    """The paper's layer for mathematics is 8: planted there it is found; planted at 9 the claim is contradicted."""
    rows = {}
    for layer in (8, 9):
        sweep, prompts = synthetic_tables(layers=(7, 8, 9), ks=(1,), layer_bonus={"mathematics": (layer, 1.5)}, seed=2)
        claims = pd.DataFrame(sat.layer_claims(sweep, prompts))
        rows[layer] = claims[claims.claim.str.contains("mathematics")].iloc[0]
    assert rows[8].held_out == 8 and rows[8].ci_low == rows[8].ci_high == 8
    assert rows[8].verdict in ("supported", "not distinguishable from the control")
    assert rows[8].verdict == ("not distinguishable from the control" if rows[8].control == 8 else "supported")
    assert rows[9].held_out == 9 and rows[9].verdict == "contradicted"


def test_resampled_within_task_rho_agrees_with_the_plain_loop(null_tables):
    sweep, prompts = null_tables
    changes = [g for _, g in sat.prompt_changes(sat.chosen_prompts(prompts, sweep)).groupby("task")]
    xs, ys = [g.p_base.to_numpy() for g in changes], [g.change.to_numpy() for g in changes]
    ys[0] = np.r_[np.zeros(len(ys[0]) - 2), 1.0, 2.0]  # some resamples of this task have no ranking
    idx = [su.judge.stats.resample_indices(len(x), 1000, np.random.default_rng(i)) for i, x in enumerate(xs)]
    fast = sat._resampled_combined_rho(xs, ys, idx)
    for b in range(0, 1000, 50):
        plain = sat._combined_rho([x[i[b]] for x, i in zip(xs, idx)], [y[i[b]] for y, i in zip(ys, idx)])
        assert fast[b] == pytest.approx(plain, abs=1e-12)


def test_bad_input_is_refused(null_tables):
    sweep, prompts = null_tables
    with pytest.raises(su.SNAError, match="chosen configuration"):
        sat.chosen_prompts(prompts[prompts.layer != 0], sweep)
    with pytest.raises(su.SNAError, match="improvement_pct_selection"):
        sat.chosen_prompts(prompts, sweep.drop(columns="improvement_pct_selection"))
    with pytest.raises(su.SNAError, match="series"):
        sat.prompt_level(sat.chosen_prompts(prompts, sweep), series="random")
    with pytest.raises(su.SNAError, match="p_base_selection"):
        sat.zone_shares(sweep.drop(columns="p_base_selection"))
    with pytest.raises(su.SNAError, match="zone 2"):
        sat.zone_share_ci(prompts, sweep, zone=2)
    with pytest.raises(su.SNAError, match="1,000"):
        sat.saturation_rhos(sat.chosen_prompts(prompts, sweep), 10)
    small = prompts[prompts.prompt_id < 3]
    with pytest.raises(su.SNAError, match="at least 2"):
        sat.task_gains(sat.chosen_prompts(small, sweep))
