"""Statistics on results tables: summaries, golden zones, control, layers, the paper comparison."""

import numpy as np
import pandas as pd
import pytest

import sna_utils as su
from helpers import trim


def test_summary_statistics(tiny, tasks, neutral, tmp_path):
    small, neu = trim(tasks, neutral, n_tasks=2)
    df = su.run_sweep(tiny, small, [0, 2], [1, 5], [2.0, 5.0], neutral=neu, progress=False)
    summary = su.task_summary(df)
    assert len(summary) == 2
    for _, row in summary.iterrows():
        sub = df[df["task"] == row["task"]]
        assert row["best_improvement_pct"] == sub["improvement_pct"].max()
        assert row["mean_improvement_pct"] == pytest.approx(sub["improvement_pct"].mean())
    g = su.golden_zone(df, min_improvement_pct=-1e9, max_kl=1e9)
    assert len(g) == len(df)
    assert len(su.golden_zone(df, min_improvement_pct=1e9)) == 0


def test_control_layer_golden_and_shared_config(sweep):
    cmp = su.control_comparison(sweep).set_index("task")
    for name, g in sweep.groupby("task"):
        assert cmp.loc[name, "share_sna_beats_control"] == pytest.approx((g["gain_over_control_pct"] > 0).mean())
        assert cmp.loc[name, "best_improvement_pct"] == g["improvement_pct"].max()
    prof = su.layer_profile(sweep)
    assert len(prof) == sweep["task"].nunique() * 3
    gold = su.golden_zone_summary(sweep, 5.0, 0.1).set_index("task")
    for name, g in sweep.groupby("task"):
        assert gold.loc[name, "n_golden"] == len(su.golden_zone(g, 5.0, 0.1))
    cfg = su.best_shared_config(sweep)
    mean = sweep.groupby(["layer", "k", "multiplier"])["improvement_pct"].mean()
    assert cfg["mean_improvement_pct"] == pytest.approx(mean.max())
    with pytest.raises(su.SNAError, match="one model"):
        su.best_shared_config(pd.concat([sweep, sweep.assign(model="other")]))


def test_layer_specialisation_on_hand_table():
    rows = []
    for task, cat, best in [("t1", "mathematics", 2), ("t2", "mathematics", 2), ("t3", "coding", 0)]:
        for layer in range(3):
            for m in (2.0, 5.0):
                rows.append(dict(model="x", task=task, category=cat, layer=layer, k=5, multiplier=m,
                                 improvement_pct=(50.0 if layer == best else 1.0) * m))
    spec = su.layer_specialisation(pd.DataFrame(rows)).set_index("category")
    assert spec.loc["mathematics", "best_layer"] == 2
    assert spec.loc["coding", "best_layer"] == 0
    assert spec.loc["mathematics", "mean_best_improvement_pct"] == 250.0
    assert spec.loc["mathematics", "task_best_layers"] == "t1: 2, t2: 2"
    assert spec.loc["mathematics", "paper_best_layer"] == 8


def test_paper_comparison(sweep):
    summary = su.task_summary(sweep)
    rho, p = su.confidence_gain_correlation(summary)
    table = su.paper_comparison(sweep, "smoke", pythia=sweep.assign(model="tiny-pythia"))
    assert {"claim", "paper", "this_run", "unit", "model", "profile"} <= set(table.columns)
    assert (table["profile"] == "smoke").all()
    by = table.set_index("claim")
    assert by.loc["configurations in the grid", "this_run"] == len(sweep)
    assert by.filter(like="Spearman rho", axis=0)["this_run"].iloc[0] == pytest.approx(rho, nan_ok=True)
    assert by.filter(like="Pythia", axis=0)["model"].iloc[0] == "tiny-pythia"
    only_pythia = su.paper_comparison(None, "smoke", pythia=sweep)
    assert len(only_pythia) == 1


def test_round_for_reading_keeps_integers_and_nan():
    table = pd.DataFrame(dict(claim=["a", "b", "c", "d", "e"], this_run=[24192.0, 27.851234, -0.0041234567,
                                                                        float("nan"), 0.0], n=[1, 2, 3, 4, 5]))
    out = su.round_for_reading(table)
    assert out["this_run"].tolist()[:3] == [24192.0, 27.85, -0.004123] and np.isnan(out["this_run"][3])
    assert out["this_run"][4] == 0.0 and out["n"].tolist() == [1, 2, 3, 4, 5]
    assert table["this_run"][1] == 27.851234  # the table itself is untouched
    paper = pd.DataFrame(dict(paper=[178.98], this_run=[31.912345]))  # the paper's numbers stay as published
    assert su.round_for_reading(paper, columns=["this_run"]).iloc[0].tolist() == [178.98, 31.91]
