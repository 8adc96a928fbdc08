"""The verdict table's columns and the rules that read a held-out interval as plain words.

Every claim row of the kit (``verdict``, ``saturation``, ``sst2_heldout``) has the columns
:data:`VERDICT_COLUMNS` and one of the four :data:`VERDICTS`, decided by one of the rules below: a claimed
gain (:func:`gain_verdict`), a gain per task by a paired test (:func:`paired_verdict`), a claimed negative
correlation (:func:`rho_verdict`), a claimed "rarely" (:func:`share_verdict`), a claimed best layer
(:func:`range_verdict`) and the grid's size (:func:`count_verdict`). ``claims`` says which claim uses which. The caller supplies the evidence against the control or null (``beats``), so the
rules stay the same whichever control a claim is read against. The verdict table itself
(``verdict.verdict``, saved as ``verdict.csv``) has :data:`VERDICT_TABLE_COLUMNS`: these columns and
:data:`WEIGHTS`, the weights each row's model ran with. Imports nothing of the kit.
"""

from __future__ import annotations

import math

VERDICT_COLUMNS = ["claim", "paper", "in_sample", "held_out", "ci_low", "ci_high", "control", "control_b", "null_p",
                   "verdict", "model", "profile"]
WEIGHTS = "weights"  # 'random weights, seed 0', 'Hub commit <sha>', '<package> <file> ... dequantized to float32'
VERDICT_TABLE_COLUMNS = [*VERDICT_COLUMNS, WEIGHTS]  # the verdict table: every claim row, and its model's weights
SUPPORTED, NOT_DISTINGUISHABLE, CONTRADICTED, NOT_MEASURED = VERDICTS = (
    "supported", "not distinguishable from the control", "contradicted", "not measured")


def _finite(*values: float) -> bool:
    return all(v is not None and math.isfinite(float(v)) for v in values)


def gain_verdict(estimate: float, low: float, high: float, *, beats: bool, paper: float = math.nan) -> str:
    """A claimed gain: 'contradicted' when its interval [low, high] lies below 0, or when it ``beats`` the
    control or null but lies below the ``paper``'s number; 'supported' when it beats it and reaches the
    paper's number (any, without one); else 'not distinguishable from the control'."""
    if not _finite(estimate, low, high):
        return NOT_MEASURED
    if high < 0:
        return CONTRADICTED
    if not beats:
        return NOT_DISTINGUISHABLE
    return CONTRADICTED if _finite(paper) and high < paper else SUPPORTED


def rho_verdict(estimate: float, low: float, high: float, p: float = math.nan, *, beats: bool = True,
                alpha: float = 0.05) -> str:
    """A claimed negative rho with interval [low, high] and test p (NaN: no test given, the interval decides
    alone): 'contradicted' when the interval lies above 0 (with p < ``alpha``); 'supported' when it lies
    below 0 (with p < ``alpha``) and ``beats`` the control or null; else 'not distinguishable from the
    control'. ``beats`` is True where the series already is SNA minus the control."""
    if not _finite(estimate, low, high):
        return NOT_MEASURED
    tested = not _finite(p) or p < alpha
    if low > 0 and tested:
        return CONTRADICTED
    return SUPPORTED if high < 0 and tested and beats else NOT_DISTINGUISHABLE


def share_verdict(estimate: float, low: float, high: float, limit: float) -> str:
    """'Rarely' (a share at most ``limit`` %): supported when the interval lies at or below the limit,
    contradicted when it lies above it."""
    if not _finite(estimate, low, high):
        return NOT_MEASURED
    return SUPPORTED if high <= limit else CONTRADICTED if low > limit else NOT_DISTINGUISHABLE


def paired_verdict(difference: float, null_p: float, p_holm: float, alpha: float = 0.05) -> str:
    """A task's gain over the control on paired test prompts: 'supported' when SNA's mean ``difference`` is
    positive and the matched null's ``null_p`` < ``alpha``; 'contradicted' when it is negative and the paired
    test's Holm-corrected ``p_holm`` < ``alpha``; else 'not distinguishable from the control'."""
    if null_p < alpha and difference > 0:
        return SUPPORTED
    return CONTRADICTED if p_holm < alpha and difference < 0 else NOT_DISTINGUISHABLE


def range_verdict(paper: float, low: float, high: float, control: float, measured: bool = True) -> str:
    """A claimed value (the paper's best layer) against a bootstrap range [low, high]: 'not measured' unless
    ``measured``; 'contradicted' outside the range; 'not distinguishable from the control' when the control's
    value lies inside it too; else 'supported'."""
    if not measured:
        return NOT_MEASURED
    if not low <= paper <= high:
        return CONTRADICTED
    return NOT_DISTINGUISHABLE if low <= control <= high else SUPPORTED


def count_verdict(count: int, paper: int) -> str:
    """The grid's size: 'supported' when this run has the paper's ``count`` of configurations, else 'not
    measured' (a smaller profile)."""
    return SUPPORTED if count == paper else NOT_MEASURED
