"""The verdict table's columns and the rules that read a held-out interval as plain words.

Every claim row of the kit (``verdict``, ``saturation``, ``sst2_heldout``) has the columns
:data:`VERDICT_COLUMNS` and one of the four :data:`VERDICTS`, decided by one of three rules: a claimed
gain (:func:`gain_verdict`), a claimed negative correlation (:func:`rho_verdict`) and a claimed "rarely"
(:func:`share_verdict`). The caller supplies the evidence against the control or null (``beats``), so the
rules stay the same whichever control a claim is read against. Imports nothing of the kit.
"""

from __future__ import annotations

import math

VERDICT_COLUMNS = ["claim", "paper", "in_sample", "held_out", "ci_low", "ci_high", "control", "control_b", "null_p",
                   "verdict", "model", "profile"]
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
