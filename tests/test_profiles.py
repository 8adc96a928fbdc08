"""Profiles, table names, grid sizes, and the error for a missing results table."""

import pytest

import sna_utils as su


def test_names_grid_and_missing_table(tmp_path):
    assert su.safe_name("random:gpt2-small") == "random-gpt2-small"
    assert su.safe_name("/models/my ckpt") == "my-ckpt"
    assert su.sweep_table_name("gpt2-medium") == "sweep_gpt2-medium.parquet"
    assert su.n_layers_of("tiny") == 3 and su.n_layers_of("gpt2-medium") == 24 and su.n_layers_of("tiny-pythia") == 3
    with pytest.raises(su.SNAError, match="Unknown model"):
        su.n_layers_of("gpt5")
    grid = su.sweep_grid(["gpt2-small", "gpt2-medium"], 12, None, su.PAPER_KS, su.PAPER_MULTIPLIERS)
    assert grid["configurations"].sum() == su.PAPER_NUMBERS["configurations"] == 24192
    with pytest.raises(su.SNAError, match=r"sweep_tiny\.parquet: it is written by notebook 03_gpt2_medium_sweep"):
        su.results_table("sweep_tiny.parquet", "smoke", tmp_path)
    with pytest.raises(su.SNAError, match="04_sst2_zone_analysis"):
        su.results_table("sst2_examples.parquet", "smoke", tmp_path)
    assert su.first_available_table(["a.parquet"], "smoke", tmp_path) == (None, None)
    assert "RANDOM WEIGHTS" in su.model_note("tiny", "smoke")
    assert "RANDOM" not in su.model_note("gpt2-small", "paper")
