"""SST-2 held out: the configuration chosen on a selection part of the validation set and reported on the rest.

Works on the per-example table of ``sst2.run_sst2_grid`` (one row per arm, configuration and example, with
the full-vocabulary probabilities of the two label words before and after) and never on a model:

* outcomes per example (p of the correct label word, 2-way P(positive), prediction, correctness), the zone
  of METHOD (of p(correct label), label-dependent) and the label-free 2-way confidence band;
* per configuration the accuracy changes (overall, balanced, in Zone 1, in the uncertain band) on all
  examples (the paper's in-sample reading), on the selection part and on the test part;
* the bias-only control: a constant added to one label word's logit, its size chosen the same way;
* the choice (``heldout.choose_on_selection``), the test part's accuracies with bootstrap intervals and
  McNemar tests, and the verdict rows of the SST-2 claim.

Imports ``core``, ``heldout``, ``rules``, ``stats`` and ``analysis``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .analysis import PAPER_NUMBERS
from ..core import zone_of
from ..errors import SNAError
from .heldout import choose_on_selection
from .rules import gain_verdict
from .stats import bootstrap_ci, mcnemar

METRICS = ("accuracy_change_pp", "balanced_accuracy_change_pp", "zone1_accuracy_change_pp",
           "uncertain_accuracy_change_pp")
UNCERTAIN_BAND = 0.1  # an example is 2-way uncertain when |P(positive | one of the two) - 0.5| < this
BIAS_GRID = (-8.0, -6.0, -4.0, -3.0, -2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)  # nats; > 0: positive
CONFIG = ("layer", "k", "multiplier")
ARMS = ("base", "sna", "control", "bias")
READINGS = {  # the claim's statistic -> the grouping it reads "uncertain" as
    "zone1_accuracy_change_pp": "uncertain = METHOD Zone 1 of p(correct label), label-dependent",
    "uncertain_accuracy_change_pp": f"uncertain = label-free 2-way confidence |q - 0.5| < {UNCERTAIN_BAND}",
}
SST2_CLAIM = "SST-2: uncertain examples gain +57.3 pp"


def label_outcomes(p_negative: np.ndarray, p_positive: np.ndarray, label: np.ndarray) -> pd.DataFrame:
    """Per example ``[n]``: p_correct (full vocabulary), p2_positive (2-way), pred (1 = positive), correct."""
    p_neg, p_pos, label = (np.asarray(a) for a in (p_negative, p_positive, label))
    pred = (p_pos > p_neg).astype(int)
    return pd.DataFrame({"p_correct": np.where(label == 1, p_pos, p_neg), "p2_positive": p_pos / (p_pos + p_neg),
                         "pred": pred, "correct": pred == label})


def bias_shift(p_negative: np.ndarray, p_positive: np.ndarray, bias: float) -> tuple[np.ndarray, np.ndarray]:
    """Label-word probabilities ``[n]`` after adding ``|bias|`` nats to the logit of " positive" (bias > 0) or
    of " negative" (bias < 0), every other logit unchanged (the full-vocabulary softmax renormalised)."""
    if not np.isfinite(bias):
        raise SNAError(f"bias={bias!r} must be a finite number of nats.")
    p_neg, p_pos = np.asarray(p_negative, dtype=float), np.asarray(p_positive, dtype=float)
    boosted = p_pos if bias > 0 else p_neg
    z = 1.0 + boosted * np.expm1(abs(bias))  # the new softmax normaliser, relative to the old one
    scale = np.exp(abs(bias))
    return (p_neg * (scale if bias < 0 else 1.0) / z, p_pos * (scale if bias > 0 else 1.0) / z)


def _check_grid(grid: pd.DataFrame) -> None:
    need = {"arm", *CONFIG, "example", "label", "part", "p_negative", "p_positive", "p_negative_base",
            "p_positive_base", "model"}
    missing = sorted(need - set(grid.columns))
    if missing:
        raise SNAError(f"The SST-2 grid table lacks column(s) {missing}: make it with su.sst2.run_sst2_grid.")
    if not set(grid["part"]) <= {"selection", "test"}:
        raise SNAError(f"part must be 'selection' or 'test', got {sorted(set(grid['part']))}.")
    if grid["model"].nunique() != 1:
        raise SNAError(f"The SST-2 grid table holds several models {sorted(grid['model'].unique())}: give one.")


def with_outcomes(rows: pd.DataFrame, p_negative: str = "p_negative", p_positive: str = "p_positive") -> pd.DataFrame:
    """``rows`` plus correct, correct_base, zone (METHOD's, of the baseline p(correct label)) and uncertain."""
    after = label_outcomes(rows[p_negative], rows[p_positive], rows["label"])
    base = label_outcomes(rows["p_negative_base"], rows["p_positive_base"], rows["label"])
    return rows.assign(correct=after["correct"].to_numpy(), correct_base=base["correct"].to_numpy(),
                       zone=[zone_of(p) for p in base["p_correct"]],
                       uncertain=(base["p2_positive"] - 0.5).abs().to_numpy() < UNCERTAIN_BAND)


def _metric_values(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The four accuracy changes (pp) of every ``keys`` group of outcome rows (NaN where a group is empty)."""
    d = rows.assign(d=100.0 * (rows["correct"].astype(float) - rows["correct_base"].astype(float)))
    by_label = d.groupby([*keys, "label"])["d"].mean().groupby(level=list(range(len(keys)))).mean()
    out = pd.DataFrame({"accuracy_change_pp": d.groupby(keys)["d"].mean(), "balanced_accuracy_change_pp": by_label})
    out["zone1_accuracy_change_pp"] = d[d["zone"] == 1].groupby(keys)["d"].mean()
    out["uncertain_accuracy_change_pp"] = d[d["uncertain"]].groupby(keys)["d"].mean()
    return out


def metric_table(rows: pd.DataFrame, keys: Sequence[str], prefix: str = "") -> pd.DataFrame:
    """Per ``keys`` group: every metric on all examples, ``<metric>_selection`` and ``<metric>_test``."""
    keys = list(keys)
    parts = [_metric_values(rows, keys)]
    for part in ("selection", "test"):
        parts.append(_metric_values(rows[rows["part"] == part], keys).add_suffix(f"_{part}"))
    out = pd.concat(parts, axis=1)
    return out.add_prefix(prefix).reset_index()


def config_table(grid: pd.DataFrame) -> pd.DataFrame:
    """One row per (layer, k, multiplier): SNA's metrics and the random control's (``control_`` columns)."""
    _check_grid(grid)
    rows = with_outcomes(grid)
    sna = metric_table(rows[rows["arm"] == "sna"], CONFIG)
    ctrl = metric_table(rows[rows["arm"] == "control"], CONFIG, prefix="control_")  # keys keep their names
    return sna.merge(ctrl, on=list(CONFIG)).assign(model=grid["model"].iloc[0], task="sst2")


def base_examples(grid: pd.DataFrame) -> pd.DataFrame:
    """The validation examples once each: example, label, part and the baseline label-word probabilities."""
    _check_grid(grid)
    cols = ["example", "label", "part", "p_negative_base", "p_positive_base"]
    return grid[cols].drop_duplicates("example").sort_values("example").reset_index(drop=True)


def bias_table(grid: pd.DataFrame, biases: Sequence[float] = BIAS_GRID) -> pd.DataFrame:
    """One row per bias size (nats, > 0 toward " positive"): the bias-only control's metrics."""
    if len(biases) == 0:
        raise SNAError("Give at least one bias size (nats) for the bias-only control.")
    base = base_examples(grid)
    frames = []
    for b in biases:
        p_neg, p_pos = bias_shift(base["p_negative_base"], base["p_positive_base"], float(b))
        frames.append(base.assign(bias=float(b), p_negative=p_neg, p_positive=p_pos))
    table = metric_table(with_outcomes(pd.concat(frames, ignore_index=True)), ["bias"])
    return table.assign(model=grid["model"].iloc[0], task="sst2")


@dataclass(frozen=True)
class SST2Study:
    """The held-out SST-2 study for one statistic: per-configuration tables, the choices, the chosen examples."""

    metric: str
    configs: pd.DataFrame  # per (layer, k, multiplier): SNA and control metrics on all/selection/test
    biases: pd.DataFrame  # per bias size: the bias-only control's metrics
    choice: pd.DataFrame  # per arm (sna, control, bias): the chosen configuration, its selection/test values
    examples: pd.DataFrame  # per validation example: base and every arm at its chosen configuration


def _chosen_rows(grid: pd.DataFrame, arm: str, chosen: pd.Series) -> pd.DataFrame:
    sel = (grid["arm"] == arm) & np.logical_and.reduce([grid[c] == chosen[c] for c in CONFIG])
    return grid[sel].sort_values("example").reset_index(drop=True)


def _arm_columns(examples: pd.DataFrame, arm: str, p_neg: np.ndarray, p_pos: np.ndarray) -> None:
    out = label_outcomes(p_neg, p_pos, examples["label"])
    for col in out.columns:
        examples[f"{col}_{arm}"] = out[col].to_numpy()


def sst2_study(grid: pd.DataFrame, metric: str = "zone1_accuracy_change_pp",
               biases: Sequence[float] = BIAS_GRID) -> SST2Study:
    """Choose SNA's configuration, the control's and the bias size on the selection part by ``metric``;
    every example at those choices (``part`` says which numbers are held out)."""
    if metric not in METRICS:
        raise SNAError(f"Unknown SST-2 metric {metric!r}: choose one of {METRICS}.")
    configs, bias_tab = config_table(grid), bias_table(grid, biases)
    by = ("model", "task")
    picks = {arm: choose_on_selection(configs, by, metric, arm) for arm in ("sna", "control")}
    picks["bias"] = choose_on_selection(bias_tab, by, metric, keys=("bias",))
    choice = pd.concat([p.assign(arm=a) for a, p in picks.items()], ignore_index=True)
    ex = base_examples(grid)
    _arm_columns(ex, "base", ex["p_negative_base"], ex["p_positive_base"])
    for arm in ("sna", "control"):
        rows = _chosen_rows(grid, arm, picks[arm].iloc[0])
        _arm_columns(ex, arm, rows["p_negative"].to_numpy(), rows["p_positive"].to_numpy())
    bias = float(picks["bias"]["bias"].iloc[0])
    _arm_columns(ex, "bias", *bias_shift(ex["p_negative_base"], ex["p_positive_base"], bias))
    sna = picks["sna"].iloc[0]
    first = _chosen_rows(grid, "sna", sna).iloc[0]
    ex = ex.assign(zone=[zone_of(p) for p in ex["p_correct_base"]], confidence_2way=(ex["p2_positive_base"] - 0.5).abs(),
                   model=grid["model"].iloc[0], layer=int(sna["layer"]), k=int(sna["k"]),
                   multiplier=float(sna["multiplier"]), bias=bias, neurons=first.get("neurons", ""))
    return SST2Study(metric, configs, bias_tab, choice, ex)


def _ci(values: np.ndarray, n_resamples: int, seed: int) -> tuple[float, float]:
    if len(values) < 2:
        return float("nan"), float("nan")
    iv = bootstrap_ci([values], lambda v: float(v.mean()), n_resamples, 0.95, seed)
    return iv.low, iv.high


def _balanced(correct: np.ndarray, label: np.ndarray) -> float:
    """Balanced accuracy: the mean over the labels present of each label's mean of ``correct`` ``[n]``."""
    return float(np.mean([correct[label == lab].mean() for lab in (0, 1) if (label == lab).any()]))


def accuracy_report(examples: pd.DataFrame, part: str = "test", n_resamples: int = 2000,
                    seed: int = 0) -> pd.DataFrame:
    """Per arm on ``part`` (or 'all'): overall, per-label and balanced accuracy (%) with 95 % bootstrap CIs
    over examples, and the group sizes."""
    ex = examples if part == "all" else examples[examples["part"] == part]
    if ex.empty:
        raise SNAError(f"No examples in part {part!r}.")
    label = ex["label"].to_numpy()
    rows = []
    for arm in [a for a in ARMS if f"correct_{a}" in ex]:
        c = 100.0 * ex[f"correct_{arm}"].to_numpy(dtype=float)
        groups = {"accuracy": c, "accuracy_negative": c[label == 0], "accuracy_positive": c[label == 1]}
        for stat, values in groups.items():
            low, high = _ci(values, n_resamples, seed)
            rows.append(dict(arm=arm, statistic=stat, n=len(values),
                             value=float(values.mean()) if len(values) else float("nan"), ci_low=low, ci_high=high))
        iv = bootstrap_ci([c, label], _balanced, n_resamples, 0.95, seed)
        rows.append(dict(arm=arm, statistic="balanced_accuracy", n=len(c), value=iv.estimate, ci_low=iv.low,
                         ci_high=iv.high))
    return pd.DataFrame(rows).assign(part=part)


def mcnemar_table(examples: pd.DataFrame, part: str = "test",
                  pairs: Sequence[tuple[str, str]] = (("sna", "base"), ("sna", "bias"), ("sna", "control"),
                                                      ("bias", "base"), ("control", "base"))) -> pd.DataFrame:
    """Exact McNemar tests on ``part`` (or 'all'): per pair, examples only the first / only the second gets right."""
    ex = examples if part == "all" else examples[examples["part"] == part]
    rows = []
    for a, b in pairs:
        t = mcnemar(ex[f"correct_{a}"].to_numpy(bool), ex[f"correct_{b}"].to_numpy(bool))
        rows.append(dict(first=a, second=b, n=len(ex), first_only=t.a_only, second_only=t.b_only, p_value=t.p_value))
    return pd.DataFrame(rows).assign(part=part)


def _verdict(held_out: float, low: float, high: float, beats: bool, n: int) -> str:
    """``rules.gain_verdict`` for the SST-2 claim: a CI above 0 and SNA ahead of both controls (``beats``)."""
    return gain_verdict(held_out if n >= 2 else np.nan, low, high, beats=low > 0 and beats)


def sst2_claims(grid: pd.DataFrame, profile: str, biases: Sequence[float] = BIAS_GRID, alpha: float = 0.05,
                n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Verdict rows for "SST-2: uncertain examples gain +57.3 pp", one per reading of "uncertain".

    held_out: the accuracy change (pp) of the test part's uncertain examples at the configuration chosen on
    the selection part, with a 95 % bootstrap CI; control: the random-neuron control chosen the same way;
    control_b: the bias-only control chosen the same way; null_p: the larger exact McNemar p of SNA against
    either control on those examples. 'supported' needs a CI above 0 and SNA ahead of both controls at
    p < ``alpha``; a CI below 0 is 'contradicted'. The paper's definition is unknown: not comparable.
    """
    rows = []
    for metric, reading in READINGS.items():
        study = sst2_study(grid, metric, biases)
        pick = study.choice.set_index("arm")
        ex = study.examples[study.examples["part"] == "test"]
        group = ex[ex["zone"] == 1] if metric.startswith("zone1") else ex[ex["confidence_2way"] < UNCERTAIN_BAND]
        gain = 100.0 * (group["correct_sna"].to_numpy(float) - group["correct_base"].to_numpy(float))
        low, high = _ci(gain, n_resamples, seed)
        tests = [mcnemar(group["correct_sna"].to_numpy(bool), group[f"correct_{c}"].to_numpy(bool))
                 for c in ("control", "bias")]
        beats = all(t.a_only > t.b_only and t.p_value < alpha for t in tests)
        held = float(gain.mean()) if len(gain) else float("nan")
        rows.append(dict(claim=f"{SST2_CLAIM} ({reading}; n = {len(group)} test examples; the paper's definition "
                               f"is unknown: not comparable)", paper=PAPER_NUMBERS["sst2_uncertain_change_pp"],
                         in_sample=float(pick.loc["sna", "in_sample_best"]), held_out=held, ci_low=low, ci_high=high,
                         control=float(pick.loc["control", "held_out"]), control_b=float(pick.loc["bias", "held_out"]),
                         null_p=max(t.p_value for t in tests),
                         verdict=_verdict(held, low, high, beats, len(group)),
                         model=grid["model"].iloc[0], profile=profile))
    return pd.DataFrame(rows)
