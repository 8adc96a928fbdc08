"""SST-2 held out (sna_utils.judge.sst2_heldout): metrics against hand computations, the choice never reads the test
part, the bias-only control against a plain logit shift, reports, claim rows and clear errors."""
import numpy as np
import pandas as pd
import pytest

import sna_utils as su
from sna_utils.judge import sst2_heldout as sh


def synthetic_grid(seed: int = 0, n: int = 40) -> pd.DataFrame:
    """A grid table of random label-word probabilities: 2 layers x 2 k x 1 m, arms sna and control."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    part = np.where(np.arange(n) % 2 == 0, "selection", "test")
    base = rng.dirichlet([1, 1, 30], n)[:, :2]  # full-vocabulary p of (negative, positive); most mass elsewhere
    frames = []
    for arm in ("sna", "control"):
        for layer in (1, 2):
            for k in (5, 10):
                after = rng.dirichlet([1, 1, 30], n)[:, :2]
                frames.append(pd.DataFrame(dict(arm=arm, layer=layer, k=k, multiplier=2.0, example=np.arange(n),
                                                label=label, part=part, p_negative=after[:, 0],
                                                p_positive=after[:, 1], p_negative_base=base[:, 0],
                                                p_positive_base=base[:, 1], neurons="1,2", model="synthetic")))
    return pd.concat(frames, ignore_index=True)


def test_label_outcomes_and_metrics_match_a_plain_computation():
    grid = synthetic_grid()
    table = sh.config_table(grid).set_index(list(sh.CONFIG))
    for (arm, layer, k), g in grid.groupby(["arm", "layer", "k"]):
        prefix = "" if arm == "sna" else "control_"
        for part in ("all", "selection", "test"):
            sub = g if part == "all" else g[g["part"] == part]
            right = np.where(sub["p_positive"] > sub["p_negative"], 1, 0) == sub["label"]
            right_base = np.where(sub["p_positive_base"] > sub["p_negative_base"], 1, 0) == sub["label"]
            change = 100 * (right.astype(float) - right_base.astype(float))
            p_correct_base = np.where(sub["label"] == 1, sub["p_positive_base"], sub["p_negative_base"])
            zone1 = p_correct_base < su.ZONE_LOW
            q = sub["p_positive_base"] / (sub["p_positive_base"] + sub["p_negative_base"])
            uncertain = (q - 0.5).abs() < sh.UNCERTAIN_BAND
            balanced = np.mean([change[sub["label"] == lab].mean() for lab in (0, 1)])
            suffix = "" if part == "all" else f"_{part}"
            row = table.loc[(layer, k, 2.0)]
            assert row[f"{prefix}accuracy_change_pp{suffix}"] == pytest.approx(change.mean())
            assert row[f"{prefix}balanced_accuracy_change_pp{suffix}"] == pytest.approx(balanced)
            assert row[f"{prefix}zone1_accuracy_change_pp{suffix}"] == pytest.approx(change[zone1].mean())
            if uncertain.any():
                assert row[f"{prefix}uncertain_accuracy_change_pp{suffix}"] == pytest.approx(change[uncertain].mean())


def test_bias_shift_equals_a_constant_added_to_one_label_logit(tiny):
    prompts = su.sst2_prompts(["a gorgeous , witty film .", "dull and slow .", "fine ."])
    ids = su.target_token_ids(tiny, list(su.SST2_LABEL_WORDS), what="label word")
    logits = su.next_token_logits(tiny, prompts).double()
    p = logits.softmax(-1)[:, ids].numpy()
    for bias in (-3.0, -0.5, 0.5, 4.0):
        plain = logits.clone()
        plain[:, ids[1 if bias > 0 else 0]] += abs(bias)
        expected = plain.softmax(-1)[:, ids].numpy()
        got = np.stack(sh.bias_shift(p[:, 0], p[:, 1], bias), 1)
        np.testing.assert_allclose(got, expected, rtol=1e-9)
        # for the 2-way choice it is a shift of the log-odds of " positive" by exactly ``bias`` nats
        np.testing.assert_allclose(np.log(got[:, 1] / got[:, 0]) - np.log(p[:, 1] / p[:, 0]), bias, atol=1e-9)


def test_the_choice_never_reads_test_examples():
    """Scrambling every test-part probability leaves every choice and its selection value unchanged."""
    grid = synthetic_grid(1)
    scrambled = grid.copy()
    test = scrambled["part"] == "test"
    rng = np.random.default_rng(7)
    for col in ("p_negative", "p_positive"):
        scrambled.loc[test, col] = rng.permutation(scrambled.loc[test, col].to_numpy())
    for metric in sh.METRICS:
        a, b = sh.sst2_study(grid, metric).choice, sh.sst2_study(scrambled, metric).choice
        keys = ["arm", "layer", "k", "multiplier", "bias", "chosen_on_selection"]
        pd.testing.assert_frame_equal(a[keys], b[keys])
    assert not sh.sst2_study(grid).choice["held_out"].equals(sh.sst2_study(scrambled).choice["held_out"])


def test_study_examples_are_the_chosen_configurations():
    grid = synthetic_grid(2)
    study = sh.sst2_study(grid, "accuracy_change_pp")
    pick = study.choice.set_index("arm")
    ex = study.examples
    for arm in ("sna", "control"):
        row = pick.loc[arm]
        rows = grid[(grid["arm"] == arm) & (grid["layer"] == row["layer"]) & (grid["k"] == row["k"])]
        np.testing.assert_allclose(ex[f"p_correct_{arm}"], np.where(rows["label"] == 1, rows["p_positive"],
                                                                      rows["p_negative"]))
        test = ex[ex["part"] == "test"]
        assert row["held_out"] == pytest.approx(100 * (test[f"correct_{arm}"].mean() - test["correct_base"].mean()))
    p_neg, p_pos = sh.bias_shift(ex["p_negative_base"], ex["p_positive_base"], pick.loc["bias", "bias"])
    np.testing.assert_allclose(ex["p2_positive_bias"], p_pos / (p_pos + p_neg))
    assert pick.loc["sna", "in_sample_best"] == study.configs["accuracy_change_pp"].max()


def test_accuracy_report_and_mcnemar_table():
    study = sh.sst2_study(synthetic_grid(3))
    ex = study.examples
    test = ex[ex["part"] == "test"]
    rep = sh.accuracy_report(ex, n_resamples=1000).set_index(["arm", "statistic"])
    for arm in sh.ARMS:
        c = 100 * test[f"correct_{arm}"].astype(float)
        assert rep.loc[(arm, "accuracy"), "value"] == pytest.approx(c.mean())
        assert rep.loc[(arm, "accuracy"), "ci_low"] <= c.mean() <= rep.loc[(arm, "accuracy"), "ci_high"]
        per_label = [c[test["label"] == lab].mean() for lab in (0, 1)]
        assert rep.loc[(arm, "accuracy_positive"), "value"] == pytest.approx(per_label[1])
        assert rep.loc[(arm, "accuracy_positive"), "n"] == (test["label"] == 1).sum()
        assert rep.loc[(arm, "balanced_accuracy"), "value"] == pytest.approx(np.mean(per_label))
    mc = sh.mcnemar_table(ex).set_index(["first", "second"])
    t = su.judge.stats.mcnemar(test["correct_sna"].to_numpy(bool), test["correct_bias"].to_numpy(bool))
    assert (mc.loc[("sna", "bias"), "first_only"], mc.loc[("sna", "bias"), "p_value"]) == (t.a_only, t.p_value)


def test_claim_rows_follow_the_verdict_schema():
    grid = synthetic_grid(4)
    claims = sh.sst2_claims(grid, "smoke", n_resamples=1000)
    assert list(claims.columns) == ["claim", "paper", "in_sample", "held_out", "ci_low", "ci_high", "control",
                                    "control_b", "null_p", "verdict", "model", "profile"]
    assert len(claims) == len(sh.READINGS) and set(claims["verdict"]) <= set(su.judge.rules.VERDICTS)
    assert (claims["paper"] == su.PAPER_NUMBERS["sst2_uncertain_change_pp"]).all()
    assert claims["claim"].str.contains("not comparable").all()
    study = sh.sst2_study(grid, "zone1_accuracy_change_pp")
    row = claims.iloc[0]
    assert row["held_out"] == pytest.approx(study.choice.set_index("arm").loc["sna", "held_out"])
    assert row["ci_low"] <= row["held_out"] <= row["ci_high"]


@pytest.mark.parametrize("held,low,high,beats,n,verdict", [
    (10.0, 2.0, 20.0, True, 50, "supported"),
    (10.0, 2.0, 20.0, False, 50, "not distinguishable from the control"),
    (1.0, -5.0, 8.0, True, 50, "not distinguishable from the control"),
    (-9.0, -15.0, -2.0, False, 50, "contradicted"),
    (5.0, float("nan"), float("nan"), True, 1, "not measured"),
])
def test_verdict_rule(held, low, high, beats, n, verdict):
    assert sh._verdict(held, low, high, beats, n) == verdict


def test_bad_input_is_named():
    grid = synthetic_grid()
    with pytest.raises(su.SNAError, match="lacks column"):
        sh.config_table(grid.drop(columns="part"))
    with pytest.raises(su.SNAError, match="part must be"):
        sh.config_table(grid.assign(part="train"))
    with pytest.raises(su.SNAError, match="several models"):
        sh.config_table(grid.assign(model=np.where(grid.index % 2, "a", "b")))
    with pytest.raises(su.SNAError, match="Unknown SST-2 metric"):
        sh.sst2_study(grid, "accuracy")
    with pytest.raises(su.SNAError, match="at least one bias"):
        sh.bias_table(grid, [])
    with pytest.raises(su.SNAError, match="finite"):
        sh.bias_shift(np.array([0.1]), np.array([0.2]), float("nan"))
    with pytest.raises(su.SNAError, match="No examples"):
        sh.accuracy_report(sh.sst2_study(grid).examples, part="validation")
