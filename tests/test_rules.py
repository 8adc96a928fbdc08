"""The plain-words rules of the verdict table: each way a claim can come out, and the edges between them."""
import math

import pytest

from sna_utils.judge.rules import (CONTRADICTED, NOT_DISTINGUISHABLE, NOT_MEASURED, SUPPORTED, gain_verdict, rho_verdict,
                             share_verdict)

nan = math.nan


@pytest.mark.parametrize("interval, beats, paper, expected", [
    ((50, 30, 80), True, 70.3, SUPPORTED),
    ((50, 30, 60), True, 70.3, CONTRADICTED),  # beats the control, short of the paper's number
    ((50, 30, 80), False, 70.3, NOT_DISTINGUISHABLE),
    ((50, 30, 80), True, nan, SUPPORTED),  # no paper number to reach
    ((-20, -30, -5), True, 70.3, CONTRADICTED),  # below zero whatever the control
    ((-20, -30, -5), False, nan, CONTRADICTED),
    ((5, -1, 9), False, nan, NOT_DISTINGUISHABLE),
    ((nan, nan, nan), True, 70.3, NOT_MEASURED),
    ((nan, 30, 80), True, nan, NOT_MEASURED),  # an interval without a point estimate
])
def test_gain_verdict(interval, beats, paper, expected):
    assert gain_verdict(*interval, beats=beats, paper=paper) == expected


@pytest.mark.parametrize("args, expected", [
    ((-0.5, -0.9, -0.2, 0.01), SUPPORTED),
    ((-0.5, -0.9, -0.2, 0.3), NOT_DISTINGUISHABLE),  # the interval and the test disagree
    ((-0.3, -0.9, 0.2, 0.01), NOT_DISTINGUISHABLE),
    ((0.4, 0.1, 0.8, 0.01), CONTRADICTED),
    ((0.2, 0.01, 0.5, 0.3), NOT_DISTINGUISHABLE),
    ((0.5, 0.2, 0.9, nan), CONTRADICTED),  # no test given: the interval decides alone
    ((-0.5, -0.9, -0.2, nan), SUPPORTED),
    ((0.5, nan, 0.8, 0.01), NOT_MEASURED),
    ((nan, -0.9, -0.2, nan), NOT_MEASURED),  # tied point gains: no rho, whatever the resamples say
])
def test_rho_verdict(args, expected):
    assert rho_verdict(*args) == expected


def test_a_rho_must_also_beat_the_control():
    assert rho_verdict(-0.5, -0.9, -0.2, 0.01, beats=True) == SUPPORTED
    assert rho_verdict(-0.5, -0.9, -0.2, 0.01, beats=False) == NOT_DISTINGUISHABLE
    assert rho_verdict(0.4, 0.1, 0.8, 0.01, beats=False) == CONTRADICTED
    with pytest.raises(TypeError):  # beats and alpha are keywords: an old positional alpha cannot slip in
        rho_verdict(-0.5, -0.9, -0.2, 0.01, 0.01)


def test_share_verdict():
    assert share_verdict(5, 2, 9, 10) == SUPPORTED
    assert share_verdict(30, 20, 40, 10) == CONTRADICTED
    assert share_verdict(8, 2, 20, 10) == NOT_DISTINGUISHABLE
    assert share_verdict(nan, nan, nan, 10) == NOT_MEASURED
