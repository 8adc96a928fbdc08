"""The matched null: draws matched on activation and output-weight norm, measured like the plain hooked loop."""
import numpy as np
import pytest
import torch

import sna_utils as su
from sna_utils.judge.nulls import joint_bins, matched_draws, matched_null, neuron_profile, null_summary, push_norm, \
    reference_overlap


def test_matched_draws_stay_in_their_cell_and_avoid_the_sna_set():
    rng = np.random.default_rng(0)
    act, norm = rng.normal(size=400), rng.gamma(2.0, size=400)
    sna = list(np.argsort(-act)[:8])  # the most active neurons, as discovery tends to pick
    draws = matched_draws(act, norm, sna, 50, n_bins=4, seed=3)
    cell = joint_bins(act, norm, 4)
    assert len(draws) == 50
    for d in draws:
        assert len(set(d)) == len(sna) and not set(d) & set(sna)
        assert all(cell[j] == cell[i] for i, j in zip(sna, d))  # every cell here has room
    assert draws == matched_draws(act, norm, sna, 50, n_bins=4, seed=3)
    assert draws != matched_draws(act, norm, sna, 50, n_bins=4, seed=4)
    # matched on activation far better than a uniform draw
    assert np.mean([act[list(d)].mean() for d in draws]) > act.mean() + 1.0


def test_matched_draws_fall_back_when_a_cell_is_empty_and_refuse_bad_input():
    act, norm = np.arange(10.0), np.arange(10.0)
    draws = matched_draws(act, norm, [9, 8, 7], 5, n_bins=2, seed=0)  # cell of the top half holds 5 neurons
    assert all(len(set(d)) == 3 and not set(d) & {7, 8, 9} for d in draws)
    with pytest.raises(su.SNAError, match="n_draws"):
        matched_draws(act, norm, [9], 0)
    with pytest.raises(su.SNAError, match="more than half"):
        matched_draws(act, norm, list(range(6)), 3)
    with pytest.raises(su.SNAError, match="n_bins"):
        matched_draws(act, norm, [9], 3, n_bins=0)


def test_push_norm_is_the_added_residual(tiny):
    """GPT-2 (no post-MLP norm): the mean norm of ``(m - 1) act[S] @ W_out[S]``, W_out read from the HF module."""
    acts = torch.zeros(2, su.d_mlp(tiny))
    acts[0, 0], acts[0, 1], acts[1, 1], acts[1, 2] = 1.0, 2.0, -1.0, 7.0  # neuron 2 is not amplified
    w = tiny.original_model.transformer.h[1].mlp.c_proj.weight.detach().double()  # Conv1D: [d_mlp, d_model]
    want = (2.0 * acts[:, :2].double() @ w[:2]).norm(dim=1).mean()
    assert push_norm(tiny, 1, acts, [0, 1], 3.0) == pytest.approx(float(want), rel=1e-12)
    assert push_norm(tiny, 1, acts, [0, 1], 1.0) == 0.0


@pytest.fixture(scope="module")
def null(tiny, small):
    t, neu = small
    import pandas as pd

    chosen = pd.DataFrame(dict(task=[t[0].name, t[1].name], layer=[2, 1], k=[5, 1], multiplier=[5.0, 2.0]))
    return t, neu, chosen, matched_null(tiny, t, chosen, n_draws=100, seed=0, neutral=neu, settings_id="abc123")


def test_every_null_table_names_the_sweep_it_was_made_for(null):
    res = null[3]
    assert all((table["settings_id"] == "abc123").all() for table in (res.table, res.other_tasks, res.push))


def test_matched_null_equals_the_plain_hooked_loop(tiny, null):
    """A draw and another task's neurons, measured by the plain hooked loop, give the null's per-prompt p."""
    t, neu, chosen, res = null
    x, L, k, m = t[0], 2, 5, 5.0
    scores = su.neuron_scores(tiny, [i.prompt for i in x.discovery], neu.discovery, L)
    act, norm = neuron_profile(tiny, [i.prompt for i in x.discovery], L)
    draws = matched_draws(act, norm, su.top_neurons(scores, k), 100, seed=0)
    sel, test = su.split_selection_test(x, 0)
    texts, targets = [i.prompt for i in test], [i.target for i in test]
    for d in (0, 57):
        want = su.target_probs(tiny, texts, targets, su.Intervention(L, draws[d], m, "all")).double().numpy()
        got = res.table[(res.table["task"] == x.name) & (res.table["draw"] == d)].sort_values("prompt_id")
        np.testing.assert_allclose(got["p"], want, rtol=1e-4, atol=1e-10)
    other = su.top_neurons(su.neuron_scores(tiny, [i.prompt for i in t[2].discovery], neu.discovery, L), k)
    want = su.target_probs(tiny, texts, targets, su.Intervention(L, other, m, "all")).double().numpy()
    got = res.other_tasks[(res.other_tasks["task"] == x.name) & (res.other_tasks["source_task"] == t[2].name)]
    np.testing.assert_allclose(got.sort_values("prompt_id")["p"], want, rtol=1e-4, atol=1e-10)
    assert list(res.table.columns) == su.judge.nulls.NULL_COLUMNS
    assert res.table.groupby("task")["draw"].nunique().tolist() == [100, 100]
    ids = sorted(set(res.table.loc[res.table["task"] == x.name, "prompt_id"]))
    assert [x.evaluation[i] for i in ids] == list(test) and (res.table["part"] == "test").all()


def test_null_summary_and_push(null):
    t, _, chosen, res = null
    summary = null_summary(res, chosen.assign(held_out=[1e9, -1e9]))
    assert summary["null_p"].tolist() == [1 / 101, 1.0]
    assert (res.push["push_sna"] > 0).all()
    assert np.allclose(res.push["push_ratio_control"], res.push["push_sna"] / res.push["push_control"])


def test_matched_null_refuses_bad_input(tiny, null):
    t, neu, chosen, _ = null
    with pytest.raises(su.SNAError, match="at least 100"):
        matched_null(tiny, t, chosen, n_draws=20, neutral=neu)
    with pytest.raises(su.SNAError, match="No Task given"):
        matched_null(tiny, t[:1], chosen, neutral=neu)


def test_reference_overlap_is_the_jaccard_of_two_discoveries(tiny, small):
    t, neu = small
    formats = {x.name: su.load_neutral_formats()[x.name] for x in t}
    got = reference_overlap(tiny, t, 2, 10, neutral=neu, formats=formats)
    for x in t:
        a = su.top_neurons(su.neuron_scores(tiny, [i.prompt for i in x.discovery], neu.discovery, 2), 10)
        own = su.split_neutral(formats[x.name]).discovery
        b = su.top_neurons(su.neuron_scores(tiny, [i.prompt for i in x.discovery], own, 2), 10)
        row = got[got["task"] == x.name].iloc[0]
        assert row["shared"] == len(set(a) & set(b))
        assert row["jaccard"] == pytest.approx(len(set(a) & set(b)) / len(set(a) | set(b)))
    with pytest.raises(su.SNAError, match="format-matched"):
        reference_overlap(tiny, t, 2, 10, neutral=neu, formats={})


@pytest.mark.parametrize("name", su.run.standins.TINY_FAMILIES)
def test_matched_null_runs_on_every_family(name, small):
    """The matched null (two tasks, the minimum 100 draws) on every tested family, any MLP layout: a draw's and
    another task's per-prompt p equal the plain hooked loop's, every push is positive and finite."""
    import pandas as pd

    model = su.load_model(name, device="cpu")
    t, neu = small
    chosen = pd.DataFrame(dict(task=[t[0].name, t[1].name], layer=[1, 1], k=[3, 2], multiplier=[4.0, 0.0]))
    res = matched_null(model, t, chosen, n_draws=100, seed=0, neutral=neu)
    assert res.table.groupby("task")["draw"].nunique().tolist() == [100, 100]
    push = res.push[["push_sna", "push_matched", "push_control"]].to_numpy()
    assert np.isfinite(push).all() and (push > 0).all()
    x, L, k, m = t[0], 1, 3, 4.0
    scores = su.neuron_scores(model, [i.prompt for i in x.discovery], neu.discovery, L)
    act, norm = neuron_profile(model, [i.prompt for i in x.discovery], L)
    draw = matched_draws(act, norm, su.top_neurons(scores, k), 100, seed=0)[7]
    _, test = su.split_selection_test(x, 0)
    texts, targets = [i.prompt for i in test], [i.target for i in test]
    want = su.target_probs(model, texts, targets, su.Intervention(L, draw, m, "all")).double().numpy()
    got = res.table[(res.table["task"] == x.name) & (res.table["draw"] == 7)].sort_values("prompt_id")
    np.testing.assert_allclose(got["p"], want, rtol=1e-4, atol=1e-10)
    other = su.top_neurons(su.neuron_scores(model, [i.prompt for i in t[2].discovery], neu.discovery, L), k)
    want = su.target_probs(model, texts, targets, su.Intervention(L, other, m, "all")).double().numpy()
    got = res.other_tasks[(res.other_tasks["task"] == x.name) & (res.other_tasks["source_task"] == t[2].name)]
    np.testing.assert_allclose(got.sort_values("prompt_id")["p"], want, rtol=1e-4, atol=1e-10)
