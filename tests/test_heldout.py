"""Choosing on selection prompts and reporting on test prompts (sna_utils.judge.heldout)."""
import numpy as np
import pandas as pd
import pytest

import sna_utils as su
from sna_utils.judge.heldout import arm_column, choose_on_selection, part_column


def _table(seed: int = 0) -> pd.DataFrame:
    """Two tasks x 3 layers x 2 k: selection and test values drawn independently (pure noise)."""
    rng = np.random.default_rng(seed)
    rows = [dict(model="m", task=t, layer=L, k=k, multiplier=2.0) for t in ("a", "b") for L in range(3)
            for k in (1, 5)]
    df = pd.DataFrame(rows)
    for arm in ("sna", "control"):
        col = arm_column("improvement_pct", arm)
        df[part_column(col, "selection")] = rng.normal(size=len(df))
        df[part_column(col, "test")] = rng.normal(size=len(df))
        df[col] = (df[part_column(col, "selection")] + df[part_column(col, "test")]) / 2
    return df


def test_chooses_on_selection_and_reports_test():
    df = _table()
    out = choose_on_selection(df)
    for _, row in out.iterrows():
        group = df[df.task == row.task]
        best = group.loc[group.improvement_pct_selection.idxmax()]
        assert (row.layer, row.k) == (best.layer, best.k)
        assert row.held_out == best.improvement_pct_test
        assert row.chosen_on_selection == group.improvement_pct_selection.max()
        assert row.in_sample_best == group.improvement_pct.max()


def test_control_arm_and_grouping_by_layer():
    df = _table(1)
    out = choose_on_selection(df, by=("model", "task", "layer"), arm="control")
    assert len(out) == 6 and "layer" in out and "k" in out
    row = out.iloc[0]
    group = df[(df.task == row.task) & (df.layer == row.layer)]
    assert row.held_out == group.loc[group.control_improvement_pct_selection.idxmax(), "control_improvement_pct_test"]


def test_selection_is_biased_upward_and_test_is_not():
    """On pure noise the chosen selection value is far above 0 while the held-out value is centred on 0."""
    chosen, held = [], []
    for s in range(200):
        out = choose_on_selection(_table(s))
        chosen += list(out.chosen_on_selection)
        held += list(out.held_out)
    assert np.mean(chosen) > 0.8
    assert abs(np.mean(held)) < 0.15


def test_clear_errors():
    with pytest.raises(su.SNAError, match="improvement_pct_selection"):
        choose_on_selection(pd.DataFrame(dict(model=["m"], task=["a"], improvement_pct=[1.0])))
    with pytest.raises(su.SNAError, match="arm"):
        arm_column("p_sna", "random")
    with pytest.raises(su.SNAError, match="part"):
        part_column("p_sna", "train")
