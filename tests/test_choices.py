"""Every other best-of choice held out (sna_utils.judge.choices): layers with a bootstrap, golden zones, the shared
configuration; the per-prompt matrices and their resampling."""
import numpy as np
import pandas as pd
import pytest

import sna_utils as su
from helpers import perturb_test_prompts, sweep_from_prompts, synthetic_prompts, synthetic_tables
from sna_utils.judge import choices


@pytest.fixture(scope="module")
def tables():
    """Sweep and per-prompt tables; SNA's shift is 1.5 nats larger at layer 1 for the mathematics tasks."""
    return synthetic_tables(layer_bonus={"mathematics": (1, 1.5)}, seed=3)


def _perturbed_sweep(prompts):
    """The sweep table implied by ``prompts`` with every test prompt redrawn (categories from the tasks' names)."""
    full = perturb_test_prompts(synthetic_prompts(layer_bonus={"mathematics": (1, 1.5)}, seed=3))
    return sweep_from_prompts(full), full.drop(columns="category")


def test_prompt_matrix_reproduces_the_sweep(tables):
    sweep, prompts = tables
    configs, base, p = choices.prompt_matrix(prompts, "synthetic", "task02", "control", "selection")
    row = sweep[sweep.task == "task02"].set_index(["layer", "k", "multiplier"]).loc[
        list(configs.itertuples(index=False, name=None))]
    np.testing.assert_allclose(100 * (p.mean(1) - base.mean()) / base.mean(), row["control_improvement_pct_selection"])


def test_resampled_improvement_agrees_with_the_plain_loop(tables):
    _, prompts = tables
    _, base, p = choices.prompt_matrix(prompts, "synthetic", "task05", "sna", "test")
    idx = su.judge.stats.resample_indices(base.size, 1000, seed=7)
    fast = su.judge.stats.resampled_improvement(base, p, idx)
    for b in (0, 1, 999):
        for c in range(p.shape[0]):
            plain = su.judge.stats.task_change(base[idx[b]], p[c, idx[b]], "relative_pct")
            assert fast[c, b] == pytest.approx(plain, rel=1e-9)
    np.testing.assert_array_equal(idx, su.judge.stats.resample_indices(base.size, 1000, seed=7))


def test_layer_specialisation_finds_the_planted_layer_on_selection(tables):
    sweep, prompts = tables
    out = choices.layer_specialisation_heldout(sweep, prompts).set_index("category")
    math = out.loc["mathematics"]
    assert math.best_layer == 1 and math.stability > 0.95 and math.layer_low == math.layer_high == 1
    assert math.paper_best_layer == 8 and math.in_sample_best_layer == 1
    assert {"control_best_layer", "control_b_best_layer", "control_held_out_pct"} <= set(out.columns)
    # the held-out value is the mean over the category's tasks of the test value at the chosen layer's best (k, m)
    prof = choices.layer_profile_heldout(sweep)
    at = prof[(prof.category == "mathematics") & (prof.layer == 1)]
    assert math.held_out_pct == pytest.approx(at.held_out.mean())
    for _, r in at.iterrows():
        g = sweep[(sweep.task == r.task) & (sweep.layer == 1)]
        best = g.loc[g.improvement_pct_selection.idxmax()]
        assert (best.k, best.multiplier, best.improvement_pct_test) == (r.k, r.multiplier, r.held_out)


def test_layer_bootstrap_is_deterministic_and_sums_to_one(tables):
    sweep, prompts = tables
    a, b = (choices.layer_bootstrap(prompts, sweep, 1000, seed=5) for _ in range(2))
    pd.testing.assert_frame_equal(a, b)
    assert np.allclose(a.groupby("category")["share"].sum(), 1.0)
    noisy = a[a.category != "mathematics"]
    assert noisy.share.max() < 1.0  # where no layer was planted, the winner is not stable


def test_choices_never_read_a_test_prompt(tables):
    sweep, prompts = tables
    sweep2, prompts2 = _perturbed_sweep(prompts)
    assert not np.allclose(sweep.improvement_pct_test, sweep2.improvement_pct_test)
    cols = ["category", "best_layer", "selection_pct", "control_best_layer", "control_b_best_layer", "stability"]
    a = choices.layer_specialisation_heldout(sweep, prompts)
    b = choices.layer_specialisation_heldout(sweep2, prompts2)
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert not np.allclose(a.held_out_pct, b.held_out_pct)
    keys = ["layer", "k", "multiplier"]
    pd.testing.assert_frame_equal(choices.shared_config_heldout(sweep)[keys],
                                  choices.shared_config_heldout(sweep2)[keys])
    gold_cols = [c for c in choices.golden_zone_heldout(sweep).columns if "golden_" in c and "held_out" not in c
                 and "n_golden" not in c]
    pd.testing.assert_frame_equal(choices.golden_zone_heldout(sweep, 20.0)[gold_cols],
                                  choices.golden_zone_heldout(sweep2, 20.0)[gold_cols])


def test_golden_zone_counts_and_choice(tables):
    sweep, _ = tables
    out = choices.golden_zone_heldout(sweep, 30.0, 0.01).set_index("task")
    for task, g in sweep.groupby("task"):
        row = out.loc[task]
        kl_ok = g.side_effect_kl <= 0.01
        assert row.n_golden == ((g.improvement_pct >= 30) & kl_ok).sum()
        assert row.n_golden_test == ((g.improvement_pct_test >= 30) & kl_ok).sum()
        assert row.control_n_golden_test == ((g.control_improvement_pct_test >= 30)
                                             & (g.control_side_effect_kl <= 0.01)).sum()
        on_sel = g[(g.improvement_pct_selection >= 30) & kl_ok]
        if len(on_sel):
            best = on_sel.loc[on_sel.improvement_pct_selection.idxmax()]
            assert (row.golden_layer, row.golden_k, row.golden_held_out_pct) == (
                best.layer, best.k, best.improvement_pct_test)
        else:
            assert np.isnan(row.golden_held_out_pct)


def test_shared_config_is_chosen_on_selection_beside_the_in_sample_reading(tables):
    sweep, _ = tables
    out = choices.shared_config_heldout(sweep).iloc[0]
    mean = sweep.groupby(["layer", "k", "multiplier"])[["improvement_pct_selection", "improvement_pct_test"]].mean()
    assert (out.layer, out.k, out.multiplier) == mean.improvement_pct_selection.idxmax()
    assert out.held_out == pytest.approx(mean.loc[mean.improvement_pct_selection.idxmax(), "improvement_pct_test"])
    assert out.in_sample_best == pytest.approx(su.best_shared_config(sweep)["mean_improvement_pct"])
    ctrl = choices.shared_config_heldout(sweep, arm="control").iloc[0]
    assert ctrl.in_sample_best == pytest.approx(sweep.groupby(["layer", "k", "multiplier"])[
        "control_improvement_pct"].mean().max())


def test_bad_input_is_refused_before_work(tables):
    sweep, prompts = tables
    with pytest.raises(su.SNAError, match="p_base"):
        su.run.store.check_prompt_table(prompts.drop(columns="p_base"))
    with pytest.raises(su.SNAError, match="repeats"):
        su.run.store.check_prompt_table(pd.concat([prompts, prompts.head(1)]))
    with pytest.raises(su.SNAError, match="probabilities"):
        su.run.store.check_prompt_table(prompts.assign(p=prompts.p + 1))
    with pytest.raises(su.SNAError, match="arm"):
        su.run.store.check_prompt_table(prompts.assign(arm="random"))
    with pytest.raises(su.SNAError, match="1,000"):
        su.judge.stats.resample_indices(10, 100, 0)
    with pytest.raises(su.SNAError, match="lack"):
        choices.prompt_matrix(prompts.drop(index=prompts.index[0]), "synthetic", "task00", "sna",
                              prompts.part.iloc[0])
    with pytest.raises(su.SNAError, match="category"):
        choices.layer_bootstrap(prompts, sweep.drop(columns="category"))
    with pytest.raises(su.SNAError, match="improvement_pct_selection"):
        choices.shared_config_heldout(sweep.drop(columns="improvement_pct_selection"))
    with pytest.raises(su.SNAError, match="side_effect_kl"):
        choices.golden_zone_heldout(sweep.drop(columns="control_side_effect_kl"))
