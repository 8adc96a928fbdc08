"""Choosing on one set of prompts and reporting on another: the held-out reading of every best-of choice.

Each task's evaluation half is cut by ``core.split_selection_test`` into a *selection* part and a *test*
part. The sweep table carries every metric three times: over all evaluation prompts (the paper's
in-sample reading), ``<metric>_selection`` and ``<metric>_test``. A best configuration is chosen on the
selection column and reported from the test column, so no held-out number comes from a prompt that chose it.
Works on DataFrames alone. Imports only ``errors``.
"""

from __future__ import annotations

from typing import Literal, Sequence

import pandas as pd

from ..errors import SNAError

PARTS = ("selection", "test")
Arm = Literal["sna", "control", "control_b"]
ARMS: tuple[str, ...] = ("sna", "control", "control_b")
BASELINE_ARMS: tuple[str, ...] = ("steer", "steer_matched", "temperature")  # the field's baselines (run.baselines)
CONFIG_KEYS = ("layer", "k", "multiplier")


def arm_column(metric: str, arm: Arm = "sna") -> str:
    """The sweep table's column of ``metric`` for ``arm``: 'improvement_pct', 'control_improvement_pct', ..."""
    if arm not in ARMS:
        raise SNAError(f"Unknown arm {arm!r}; choose one of {ARMS}.")
    return metric if arm == "sna" else f"{arm}_{metric}"


def part_column(metric: str, part: str) -> str:
    """The column of ``metric`` measured on one part of the evaluation prompts: 'improvement_pct_test'."""
    if part not in PARTS:
        raise SNAError(f"Unknown part {part!r}; choose one of {PARTS}.")
    return f"{metric}_{part}"


def column_on(table: pd.DataFrame, metric: str, part: str | None) -> str:
    """The column of ``metric`` on ``part`` of the evaluation prompts (None: all of them), checked in ``table``."""
    col = metric if part is None else part_column(metric, part)
    if col not in table.columns:
        raise SNAError(f"The table has no column {col!r}: rerun with this kit version (it records every metric "
                       f"on the selection and test prompts).")
    return col


def choose_on_selection(table: pd.DataFrame, by: Sequence[str] = ("model", "task"),
                        metric: str = "improvement_pct", arm: Arm = "sna",
                        keys: Sequence[str] = CONFIG_KEYS) -> pd.DataFrame:
    """Each group's configuration with the best ``metric`` on selection prompts, reported on test prompts.

    Returns one row per group: ``by``, the chosen configuration's keys (those of ``keys``, by default
    ``layer, k, multiplier``, not in ``by``), ``chosen_on_selection`` (its selection value, biased upward by the choice),
    ``held_out`` (its test value, unbiased) and ``in_sample_best`` (the group's maximum over all
    evaluation prompts: the paper's reading, inflated by selection).
    """
    col = arm_column(metric, arm)
    sel, test = part_column(col, "selection"), part_column(col, "test")
    missing = [c for c in (*by, col, sel, test) if c not in table.columns]
    if missing:
        raise SNAError(f"The sweep table has no column(s) {missing}: rerun the sweep with this kit version "
                       f"(it records every metric on the selection and test prompts).")
    if table[sel].isna().all():
        raise SNAError(f"Column {sel!r} is empty: nothing to choose on.")
    groups = table.groupby(list(by), sort=True)
    chosen = table.loc[groups[sel].idxmax()]
    keys = [c for c in keys if c not in by and c in table.columns]
    out = chosen[[*by, *keys]].reset_index(drop=True)
    out["chosen_on_selection"] = chosen[sel].to_numpy()
    out["held_out"] = chosen[test].to_numpy()
    best = groups[col].max().reset_index().rename(columns={col: "in_sample_best"})
    return out.merge(best, on=list(by))
