"""Claim by claim: which function decides it, and by which rule. Start here to audit a verdict.

Every row of the verdict table (``verdict.verdict``, with the rows of ``saturation.saturation_claims``,
``baselines.baseline_claims`` and ``sst2_heldout.sst2_claims`` joined) is one of the claims below, recognised
by how its ``claim`` text starts. Each is decided by one rule of ``rules`` on held-out evidence (chosen on
selection prompts, read on test prompts), against the random-neuron control, the matched null or one of the
field's baselines (a steering vector, a softmax temperature):

===================================================  ===================================  ====================
claim (the row's text starts with)                   decided by                           rule
===================================================  ===================================  ====================
configurations in the grid                           judge.verdict.verdict                rules.count_verdict
SNA beats the random control on                      judge.verdict._per_task_rows         rules.paired_verdict
Zone 1 best configuration                            judge.verdict._zone1_rows            rules.gain_verdict
Zone 1 mean improvement                              judge.verdict._zone1_rows            rules.gain_verdict
Spearman rho, P_base                                 judge.verdict._rho_row               rules.rho_verdict
Zone 3 configurations improving                      judge.verdict._zone3_row             rules.share_verdict
... beyond the ratio's arithmetic                    judge.saturation.saturation_claims   rules.rho_verdict
... per prompt                                       judge.saturation.saturation_claims   rules.rho_verdict
layer specialisation: best layer                     judge.saturation.layer_claims        rules.range_verdict
SST-2: uncertain examples gain                       judge.sst2_heldout.sst2_claims       rules.gain_verdict
SNA beats the steering vector at equal strength on   judge.baselines._pair_rows           rules.paired_verdict
SNA beats the steering vector at its best on         judge.baselines._pair_rows           rules.paired_verdict
SNA beats temperature on                             judge.baselines._pair_rows           rules.paired_verdict
Baseline rho:                                        judge.baselines._rho_rows            rules.rho_verdict
===================================================  ===================================  ====================

The evidence each rule reads: the per-task paired sign-flip test with Holm's correction and the matched null
(``nulls``; ``verdict.beats_null`` falls back to the control outside the interval when no null is given);
percentile bootstrap intervals over test prompts resampled within tasks (``stats``); the permutation p of a
rho. ``tests/test_claims.py`` checks this table against :data:`CLAIMS` and every verdict row against it.
Imports nothing of the kit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    """One kind of verdict row: the start of its ``claim`` text, the function that makes it, its rule."""

    starts_with: str
    decided_by: str  # dotted path below sna_utils
    rule: str  # dotted path below sna_utils (a function of ``rules``)


CLAIMS = (
    Claim("configurations in the grid", "judge.verdict.verdict", "judge.rules.count_verdict"),
    Claim("SNA beats the random control on", "judge.verdict._per_task_rows", "judge.rules.paired_verdict"),
    Claim("Zone 1 best configuration", "judge.verdict._zone1_rows", "judge.rules.gain_verdict"),
    Claim("Zone 1 mean improvement", "judge.verdict._zone1_rows", "judge.rules.gain_verdict"),
    Claim("Spearman rho, P_base", "judge.verdict._rho_row", "judge.rules.rho_verdict"),
    Claim("Zone 3 configurations improving", "judge.verdict._zone3_row", "judge.rules.share_verdict"),
    Claim("... beyond the ratio's arithmetic", "judge.saturation.saturation_claims", "judge.rules.rho_verdict"),
    Claim("... per prompt", "judge.saturation.saturation_claims", "judge.rules.rho_verdict"),
    Claim("layer specialisation: best layer", "judge.saturation.layer_claims", "judge.rules.range_verdict"),
    Claim("SST-2: uncertain examples gain", "judge.sst2_heldout.sst2_claims", "judge.rules.gain_verdict"),
    Claim("SNA beats the steering vector at equal strength on", "judge.baselines._pair_rows",
          "judge.rules.paired_verdict"),
    Claim("SNA beats the steering vector at its best on", "judge.baselines._pair_rows", "judge.rules.paired_verdict"),
    Claim("SNA beats temperature on", "judge.baselines._pair_rows", "judge.rules.paired_verdict"),
    Claim("Baseline rho:", "judge.baselines._rho_rows", "judge.rules.rho_verdict"),
)


def claim_of(text: str) -> Claim:
    """The one :class:`Claim` a verdict row's ``claim`` text belongs to (ValueError if none or several)."""
    found = [c for c in CLAIMS if text.startswith(c.starts_with)]
    if len(found) != 1:
        raise ValueError(f"The verdict row {text!r} matches {len(found)} claims of judge.claims.CLAIMS, not one: "
                         f"add its claim there (and to the table in the module's docstring).")
    return found[0]
