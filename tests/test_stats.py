"""Statistics on per-prompt results: hand-checked small cases, determinism, and tests of the tests.

The tests of the tests simulate many tasks: under a null (SNA and control per-prompt changes from one
distribution) the paired test must reject at about its nominal rate; under a planted effect it must reject.
"""
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

import sna_utils as su
from sna_utils.judge import stats


# --- metrics ---------------------------------------------------------------------

def test_per_prompt_changes_by_hand():
    t = stats.per_prompt_changes([0.5, 0.2, 0.1], [0.75, 0.2, 0.3])
    assert t["delta_p"].tolist() == pytest.approx([0.25, 0.0, 0.2])
    assert t["relative_pct"].tolist() == pytest.approx([50.0, 0.0, 200.0])
    # log-odds: 0.5 -> 0, 0.75 -> log 3; 0.1 -> log(1/9), 0.3 -> log(3/7)
    assert t["delta_log_odds"].tolist() == pytest.approx([math.log(3), 0.0, math.log(3 / 7) - math.log(1 / 9)])


def test_task_change_by_hand():
    base, after = [0.1, 0.3], [0.2, 0.4]
    assert stats.task_change(base, after, "relative_pct") == pytest.approx(100 * (0.3 - 0.2) / 0.2)
    assert stats.task_change(base, after, "delta_p") == pytest.approx(0.1)
    expected = np.mean([math.log(0.2 / 0.8) - math.log(0.1 / 0.9), math.log(0.4 / 0.6) - math.log(0.3 / 0.7)])
    assert stats.task_change(base, after, "delta_log_odds") == pytest.approx(expected)
    assert stats.task_change(base, after, "relative_pct") == pytest.approx(su.improvement_pct(0.2, 0.3))


def test_shift_log_odds_round_trip():
    p = np.array([0.01, 0.3, 0.5, 0.97])
    q = stats.shift_log_odds(p, 1.2)
    assert stats.log_odds(q) - stats.log_odds(p) == pytest.approx(np.full(4, 1.2))
    assert stats.shift_log_odds(p, 0.0) == pytest.approx(p)


# --- bootstrap -------------------------------------------------------------------

def test_bootstrap_is_deterministic_for_a_seed():
    rng = np.random.default_rng(1)
    base, after = rng.uniform(0.05, 0.5, 40), rng.uniform(0.05, 0.6, 40)
    a = stats.change_ci(base, after, "relative_pct", seed=7)
    assert a == stats.change_ci(base, after, "relative_pct", seed=7)
    assert a != stats.change_ci(base, after, "relative_pct", seed=8)
    assert a.low < a.estimate < a.high and a.n_resamples == 2000 and a.level == 0.95


def test_bootstrap_of_the_mean_matches_the_normal_interval():
    """For normal data the percentile interval of the mean is close to mean +- 1.96 s / sqrt(n)."""
    x = np.random.default_rng(0).normal(2.0, 1.0, 400)
    ci = stats.bootstrap_ci([x], np.mean, n_resamples=4000)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert ci.estimate == pytest.approx(x.mean())
    assert ci.low == pytest.approx(x.mean() - half, abs=0.15 * half)
    assert ci.high == pytest.approx(x.mean() + half, abs=0.15 * half)


def test_bootstrap_of_a_constant_is_a_point():
    ci = stats.bootstrap_ci([np.full(10, 3.0)], np.mean, n_resamples=1000)
    assert (ci.low, ci.estimate, ci.high) == (3.0, 3.0, 3.0)


def test_difference_ci_resamples_prompts_jointly():
    """SNA = control on every prompt: the difference is exactly 0 in every resample, whatever the spread."""
    rng = np.random.default_rng(2)
    base, sna = rng.uniform(0.01, 0.9, 30), rng.uniform(0.01, 0.9, 30)
    ci = stats.difference_ci(base, sna, sna.copy(), "delta_log_odds")
    assert (ci.low, ci.estimate, ci.high) == (0.0, 0.0, 0.0)
    shifted = stats.difference_ci(base, stats.shift_log_odds(sna, 1.0), sna, "delta_log_odds")
    assert shifted.low == pytest.approx(1.0) and shifted.high == pytest.approx(1.0)


# --- paired tests and Holm ---------------------------------------------------------

def test_sign_test_by_hand():
    d = np.array([1.0] * 9 + [-1.0])
    assert stats.paired_test(d, np.zeros(10), "sign") == pytest.approx(2 * 11 / 1024)
    assert stats.paired_test(d, np.zeros(10), "sign", "greater") == pytest.approx(11 / 1024)
    assert stats.paired_test(np.zeros(5), np.zeros(5), "sign") == 1.0


def test_exact_permutation_test_by_hand():
    # d = (1, 2, 3): of the 8 sign patterns only all-plus and all-minus reach |mean| >= 2
    assert stats.paired_test([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == pytest.approx(2 / 8)
    assert stats.paired_test([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], alternative="greater") == pytest.approx(1 / 8)
    # d = (1, -1): every pattern has |mean| >= 0
    assert stats.paired_test([1.0, 0.0], [0.0, 1.0]) == 1.0


def test_monte_carlo_permutation_test_is_deterministic_and_bounded():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 60), rng.normal(0, 1, 60)
    p = stats.paired_test(a, b, n_permutations=999, seed=5)
    assert p == stats.paired_test(a, b, n_permutations=999, seed=5)
    assert 1 / 1000 <= p <= 1
    assert stats.paired_test(a + 5, b, n_permutations=999) == pytest.approx(1 / 1000)


def _rejection_rate(effect: float, method: str, n_tasks: int = 300, n_prompts: int = 40, seed: int = 0) -> float:
    """Share of simulated tasks where the paired test rejects at 5 %: SNA's per-prompt changes are the
    control's distribution plus ``effect``; prompts differ in difficulty (a shared per-prompt term)."""
    rng = np.random.default_rng(seed)
    rejected = 0
    for i in range(n_tasks):
        prompt = rng.normal(0, 1, n_prompts)
        sna = prompt + rng.standard_t(4, n_prompts) + effect
        control = prompt + rng.standard_t(4, n_prompts)
        rejected += stats.paired_test(sna, control, method, n_permutations=499, seed=i) < 0.05
    return rejected / n_tasks


@pytest.mark.parametrize("method", ["permutation", "sign"])
def test_paired_test_holds_its_level_under_the_null(method):
    """A test of the test: with no effect it rejects in about 5 % of tasks (binomial s.d. 1.3 % at 300)."""
    rate = _rejection_rate(0.0, method)
    assert 0.015 <= rate <= 0.09, rate


@pytest.mark.parametrize("method", ["permutation", "sign"])
def test_paired_test_finds_a_planted_effect(method):
    """A shift of 0.75 s.d. of the per-prompt difference (1.5 against s.d. 2) over 40 prompts."""
    assert _rejection_rate(1.5, method, n_tasks=60) >= 0.8


def test_holm_by_hand():
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]).tolist() == pytest.approx([1.0, 1.0])  # 0.5 x 2, then the running max
    assert stats.holm([0.01, 0.2]).tolist() == pytest.approx([0.02, 0.2])


def test_minimum_detectable_effect_by_hand():
    x = np.random.default_rng(0).normal(0, 1, 100)
    expected = (1.959964 + 0.841621) * x.std(ddof=1) / 10
    assert stats.minimum_detectable_effect(x) == pytest.approx(expected, rel=1e-5)
    assert stats.minimum_detectable_effect(np.tile(x, 4)) < stats.minimum_detectable_effect(x)


def _per_prompt_table(effects: dict[str, float], n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng, rows = np.random.default_rng(seed), []
    for task, effect in effects.items():
        base = rng.uniform(0.02, 0.6, n)
        control = stats.shift_log_odds(base, rng.normal(0.0, 0.5, n))
        sna = stats.shift_log_odds(base, rng.normal(effect, 0.5, n))
        rows.append(pd.DataFrame(dict(task=task, p_base=base, p_sna=sna, p_control=control)))
    return pd.concat(rows, ignore_index=True)


def test_sna_vs_control_table():
    table = _per_prompt_table({"a": 0.0, "b": 1.0, "c": 0.0})
    out = stats.sna_vs_control(table, n_permutations=999)
    assert out["task"].tolist() == ["a", "b", "c"] and out.attrs["correction"] == "Holm"
    assert out["significant"].tolist() == [False, True, False]
    assert (out["p_holm"] >= out["p_value"]).all()
    b = out.set_index("task").loc["b"]
    assert b.ci_low < b.difference < b.ci_high and b.ci_low > 0
    assert b.difference == pytest.approx(b.sna - b.control)
    assert (out["n_prompts"] == 40).all() and (out["mde"] > 0).all()


# --- Spearman over tasks -------------------------------------------------------------

def test_spearman_matches_scipy_and_exact_p_by_hand():
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 7.0]
    assert stats.spearman_rho(x, y) == pytest.approx(spearmanr(x, y).statistic)
    # a perfectly monotone pair of 5: only the identity and the reversal reach |rho| = 1, so p = 2 / 5!
    p, drawn = stats.permutation_p_value(x, [10.0, 20.0, 30.0, 40.0, 50.0])
    assert (p, drawn) == (pytest.approx(2 / 120), 0)
    assert math.isnan(stats.spearman_rho(x, [1.0] * 5))


def test_monte_carlo_p_value_agrees_with_the_exact_one():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=8), rng.normal(size=8)
    exact, _ = stats.permutation_p_value(x, y)
    mc, drawn = stats.permutation_p_value(x, y, n_permutations=20_000, seed=1)
    assert drawn == 20_000 and mc == pytest.approx(exact, abs=0.015)


def test_task_spearman_interval_and_determinism():
    rng = np.random.default_rng(5)
    centres = np.linspace(0.05, 0.9, 8)
    xs = [np.clip(rng.normal(c, 0.05, 30), 0.001, 0.999) for c in centres]
    ys = [rng.normal(-3 * c, 0.3, 30) for c in centres]
    r = stats.task_spearman(xs, ys, n_resamples=1000)
    assert r == stats.task_spearman(xs, ys, n_resamples=1000)
    assert r.rho == pytest.approx(spearmanr([a.mean() for a in xs], [b.mean() for b in ys]).statistic)
    assert r.low <= r.rho <= r.high and r.high < 0 and r.n_tasks == 8 and r.n_permutations == 0
    assert r.p_value < 0.01


def test_task_spearman_of_the_relative_improvement():
    """Relative improvement as y: (p_base, p_after) pairs per prompt, P_base itself from other prompts."""
    rng = np.random.default_rng(7)
    centres = np.linspace(0.05, 0.8, 6)
    xs = [np.clip(rng.normal(c, 0.03, 20), 0.01, 0.99) for c in centres]
    ys = []
    for c in centres:
        base = np.clip(rng.normal(c, 0.03, 20), 0.01, 0.99)
        ys.append(np.column_stack([base, stats.shift_log_odds(base, 0.5)]))
    r = stats.task_spearman(xs, ys, y_stat=lambda a: stats.task_change(a[:, 0], a[:, 1], "relative_pct"),
                            n_resamples=1000)
    assert r.rho == pytest.approx(-1.0) and r.p_value == pytest.approx(2 / 720) and r.high < 0


def test_constant_log_odds_shift_makes_rho_negative_and_log_odds_flat():
    """The saturation artefact: one shift for every task gives a strongly negative rho between P_base and the
    relative improvement, while the change in log-odds (the shift itself, plus noise) shows none."""
    rng = np.random.default_rng(6)
    p_base = {f"t{i}": np.clip(rng.beta(2, 2, 40) * c, 1e-4, 0.999) for i, c in enumerate(np.linspace(0.02, 1, 12))}
    exact = stats.constant_shift_null(p_base, shift=0.7)
    assert exact.table["delta_log_odds"].tolist() == pytest.approx([0.7] * 12)
    assert exact.rho_relative < -0.9 and math.isnan(exact.rho_log_odds)
    rhos = [stats.constant_shift_null(p_base, shift=0.7, noise_sd=0.5, seed=s) for s in range(20)]
    assert np.median([r.rho_relative for r in rhos]) < -0.9
    assert abs(np.median([r.rho_log_odds for r in rhos])) < 0.3
    assert (exact.table.sort_values("p_base")["relative_pct"].diff().dropna() < 0).all()


# --- bad input -----------------------------------------------------------------------

@pytest.mark.parametrize("bad", [[], [[0.1, 0.2]], [0.1, 1.5], [0.2, float("nan")], [-0.1]])
def test_bad_probabilities_are_named(bad):
    with pytest.raises(su.SNAError, match="p_base"):
        stats.per_prompt_changes(bad, [0.5] * max(1, len(bad)))


def test_bad_input_is_named():
    with pytest.raises(su.SNAError, match="one value per prompt"):
        stats.task_change([0.1, 0.2], [0.1])
    with pytest.raises(su.SNAError, match="Unknown metric"):
        stats.task_change([0.1], [0.2], "ratio")
    with pytest.raises(su.SNAError, match="at least 1,000"):
        stats.change_ci([0.1, 0.2], [0.2, 0.3], n_resamples=100)
    with pytest.raises(su.SNAError, match="at least 2 prompts"):
        stats.change_ci([0.1], [0.2])
    with pytest.raises(su.SNAError, match="Unknown paired test"):
        stats.paired_test([1.0], [0.0], "t")
    with pytest.raises(su.SNAError, match="alternative"):
        stats.paired_test([1.0], [0.0], alternative="less")
    with pytest.raises(su.SNAError, match="lacks column"):
        stats.sna_vs_control(pd.DataFrame({"task": ["a"], "p_base": [0.1]}))
    with pytest.raises(su.SNAError, match=">= 3"):
        stats.task_spearman([[0.1, 0.2]], [[1.0, 2.0]])
    with pytest.raises(su.SNAError, match="equal length"):
        stats.task_spearman([[0.1, 0.2]] * 3, [[1.0, 2.0, 3.0]] * 3, same_prompts=True)
    with pytest.raises(su.SNAError, match="at least 3 tasks"):
        stats.constant_shift_null({"a": [0.1]})
    with pytest.raises(su.SNAError, match="in \\[0, 1\\]"):
        stats.holm([0.5, 1.2])


# --- McNemar -------------------------------------------------------------------------------------


def test_mcnemar_hand_computed_and_scipy():
    from scipy.stats import binomtest

    a = np.array([True, True, True, False, False, True, False, True])
    b = np.array([True, False, False, False, True, True, False, False])
    t = stats.mcnemar(a, b)
    assert (t.a_only, t.b_only) == (3, 1)  # discordant pairs: 3 only A right, 1 only B right
    assert t.p_value == pytest.approx(10 / 16)  # 2 * P(X <= 1), X ~ Bin(4, 1/2) = 2 * 5/16
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.random(40) < 0.6, rng.random(40) < 0.4
        t = stats.mcnemar(a, b)
        n = t.a_only + t.b_only
        assert t.p_value == pytest.approx(binomtest(t.a_only, n, 0.5).pvalue if n else 1.0)
    assert stats.mcnemar(a, a).p_value == 1.0  # no discordant pair


def test_mcnemar_bad_input():
    with pytest.raises(su.SNAError, match="same length"):
        stats.mcnemar([True, False], [True])
    with pytest.raises(su.SNAError, match="boolean"):
        stats.mcnemar([1, 0], [0, 1])


def test_percentile_bounds_and_grouped_relative():
    """The shared percentile range skips NaNs (all NaN: NaN); the grouped relative gain is relative_of_means."""
    from sna_utils.judge.stats import grouped_relative_pct, percentile_bounds, relative_of_means

    assert percentile_bounds(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0))
    assert percentile_bounds([np.nan, *np.arange(101.0)], 0.9) == pytest.approx((5.0, 95.0))
    assert all(math.isnan(v) for v in percentile_bounds([np.nan, np.nan]))
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"task": np.repeat(["a", "b"], 5), "p_base": rng.uniform(0.1, 0.5, 10),
                          "p": rng.uniform(0.1, 0.9, 10)})
    got = grouped_relative_pct(table, ["task"])
    for t, g in table.groupby("task"):
        assert got[t] == pytest.approx(relative_of_means(g["p_base"].to_numpy(), g["p"].to_numpy()))


def test_improvement_pct_on_arrays_is_the_scalar_formula():
    """One improvement_pct for floats, arrays and Series: the same digits, NaN where the baseline is 0."""
    base, after = np.array([0.2, 0.0, 0.5]), np.array([[0.3, 0.1, 0.25], [0.2, 0.0, 0.5]])
    got = su.improvement_pct(base, after)
    want = [[su.improvement_pct(b, a) for b, a in zip(base, row)] for row in after]
    np.testing.assert_array_equal(got, np.array(want))  # bit for bit, NaN included
    series = su.improvement_pct(pd.Series(base, index=list("abc")), pd.Series(after[0], index=list("abc")))
    assert list(series.index) == list("abc")
    np.testing.assert_array_equal(series.to_numpy(), got[0])
    assert su.improvement_pct(0.2, 0.3) == want[0][0] and np.isnan(su.improvement_pct(0.0, 0.3))


def test_within_task_draw_is_task_after_task_from_one_generator():
    """The one within-task draw: task i's indices are the i-th draw of a Generator seeded once."""
    from sna_utils.judge.stats import resample_indices, within_task_indices
    rng = np.random.default_rng(7)
    want = [resample_indices(n, 1000, rng) for n in (3, 5, 2)]
    got = within_task_indices([3, 5, 2], 1000, 7)
    assert all((g == w).all() for g, w in zip(got, want))
    assert [g.shape for g in got] == [(1000, 3), (1000, 5), (1000, 2)]
