"""judge.claims is true: its docstring table is CLAIMS, each names a real function and rule, and every row of
a verdict belongs to exactly one claim (that check is in tests/test_verdict.py, on its sweep)."""
import ast
import importlib
import inspect

import pytest

import sna_utils as su
from sna_utils.judge import claims, rules
from sna_utils.judge.claims import CLAIMS, claim_of


def _resolve(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(f"sna_utils.{module}"), name)


def test_the_docstring_table_is_the_claims():
    doc = ast.get_docstring(ast.parse(inspect.getsource(claims)))
    rows = [line.split("  ") for line in doc.splitlines() if line and not line.startswith(("=", "claim"))
            and "judge." in line]
    table = [tuple(cell.strip() for cell in row if cell.strip()) for row in rows]
    assert table == [(c.starts_with, c.decided_by, c.rule.removeprefix("judge.")) for c in CLAIMS]


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.starts_with)
def test_each_claim_names_a_function_and_a_rule_it_calls(claim):
    decider, rule = _resolve(claim.decided_by), _resolve(claim.rule)
    assert callable(decider) and rule.__module__ == rules.__name__
    source = inspect.getsource(decider)
    if claim.decided_by.endswith("sst2_claims"):  # through its one-line helper
        assert "_verdict(" in source
        source = inspect.getsource(su.judge.sst2_heldout._verdict)
    assert f"{rule.__name__}(" in source
