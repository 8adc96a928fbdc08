"""How a claim of the paper is judged. Modules in reading order:

================  ========================================================================================
``claims``        **start here**: claim by claim, the function that decides it and the rule it applies
``heldout``       choosing on selection prompts, reporting on test prompts (every best-of choice)
``stats``         per-prompt metrics, bootstrap intervals (one draw, within tasks), paired tests, Holm, rho
``rules``         the verdict table's columns and its plain-words rules (a gain, a rho, "rarely", ...)
``verdict``       ``verdict()``: every claim in-sample and held out (its interval), beside the controls
``baselines``     SNA against a steering vector and a softmax temperature, per task, and each baseline's rho
``nulls``         the matched null: many random neuron sets like SNA's, at each task's chosen configuration
``saturation``    the saturation artefact: rho of three metrics held out, per prompt, zone shares
``choices``       every other best-of choice held out: best layer (bootstrapped), golden zones, interference
``sst2_heldout``  SST-2 chosen on selection examples, reported on test ones; the bias-only control
``analysis``      summaries of results tables: per task, zones, rho, golden zones, the paper's numbers
================  ========================================================================================
"""

MODULES = ("claims", "heldout", "stats", "rules", "verdict", "baselines", "nulls", "saturation", "choices", "sst2_heldout",
           "analysis")
