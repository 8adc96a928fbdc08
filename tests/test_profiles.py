"""Profiles, table names, grid sizes, and the error for a missing results table."""

import pandas as pd
import pytest

import sna_utils as su


def test_names_grid_and_missing_table(tmp_path):
    assert su.safe_name("random:gpt2-small") == "random-gpt2-small"
    assert su.safe_name("/models/my ckpt").startswith("models--my-ckpt-")


def test_file_names_keep_the_whole_model_id_and_profile_names_are_checked(tmp_path):
    """'a/m' and 'b/m' never share an interference or null file; a profile name cannot leave the results root."""
    for name in (su.sweep_table_name, su.interference_table_name, su.null_table_name, su.beyond_table_name):
        assert name("a/m") != name("b/m") and "a--m" in name("a/m")
    assert su.safe_name("org/model") != su.safe_name("org--model") != su.safe_name("org/model/")
    assert su.results_dir("smoke", tmp_path) == tmp_path / "smoke"
    for bad in ("../elsewhere", "/etc", "a/b", "", ".hidden", "x" * 65):
        with pytest.raises(su.SNAError, match="cannot name a folder"):
            su.results_dir(bad, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke"]
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


def test_beyond_model_table_and_depth_matched_layers():
    """Notebook 07's model per profile, its table name, and the profile's layers at the same relative depth."""
    assert su.get_profile("smoke").beyond_model == "tiny-qwen2"
    assert su.get_profile("quick").beyond_model == su.get_profile("paper").beyond_model == "Qwen/Qwen2.5-0.5B"
    assert su.beyond_table_name("Qwen/Qwen2.5-0.5B").startswith("beyond_Qwen--Qwen2.5-0.5B-")
    assert su.run.profiles.TABLE_MAKERS["beyond_"] == "07_beyond_gpt2"
    quick = su.get_profile("quick")
    assert su.depth_matched_layers(quick, "Qwen/Qwen2.5-0.5B") == [4, 10, 17, 21]  # of 24, from 2, 5, 8, 10 of 12
    assert su.depth_matched_layers(quick, "gpt2-small") == list(quick.layers)
    assert su.depth_matched_layers(quick, "gpt2-medium") == [4, 10, 17, 21]
    assert su.depth_matched_layers(su.get_profile("paper"), "Qwen/Qwen2.5-0.5B") is None  # every layer
    summary = pd.DataFrame(dict(model=["gpt2-small", "gpt2-medium", "tiny"], best_layer=[11, 6, 1]))
    assert su.best_depth(summary).tolist() == [1.0, 6 / 23, 0.5]


def test_model_shape_of_a_hub_id(monkeypatch, tmp_path):
    """A Hub id's shape comes from its config.json (cached or downloaded); offline and uncached: 'shape unknown'."""
    config = dict(model_type="llama", hidden_size=2048, num_hidden_layers=16, intermediate_size=8192,
                  vocab_size=128256, num_attention_heads=32, num_key_value_heads=8)
    monkeypatch.setattr(su.run.profiles, "hub_config", lambda hub_id: config if hub_id == "org/cached-model" else None)
    assert su.run.profiles.model_shape("org/cached-model") == su.run.profiles.ModelShape(
        16, 2048, 8192, 128256, n_heads=32, n_key_value_heads=8, gated_mlp=True)
    with pytest.raises(su.SNAError, match="'org/never-seen': shape unknown"):
        su.run.profiles.model_shape("org/never-seen")
    gemma3 = dict(model_type="gemma3", text_config=dict(hidden_size=640, num_hidden_layers=18, intermediate_size=2048,
                                                        vocab_size=262144))
    assert su.run.profiles.shape_from_config(gemma3) == su.run.profiles.ModelShape(18, 640, 2048, 262144)
    assert su.run.profiles.is_hub_id("Qwen/Qwen2.5-0.5B") and not su.run.profiles.is_hub_id("tiny")
    assert not su.run.profiles.is_hub_id(str(tmp_path))  # an existing folder is a folder


def test_hub_config_offline_is_none(monkeypatch):
    """Offline (HF_HUB_OFFLINE=1) and never downloaded: no config, no network call, no crash."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert su.run.profiles.hub_config("org/never-downloaded-model") is None


def test_the_local_profile_is_make_runs_default_everywhere():
    """`make run` with no PROFILE, the runner's --profile default, notebooks opened by hand: all `local`."""
    import re
    import sys

    sys.path.insert(0, str(su.KIT_ROOT / "scripts"))
    import run_notebooks as rn

    assert su.run.profiles.DEFAULT_PROFILE == "local"
    assert re.search(r"^PROFILE \?= local$", (su.KIT_ROOT / "Makefile").read_text(), re.M)
    assert set(rn.PROFILES) == set(su.run.profiles.PROFILES)
    assert 'ap.add_argument("--profile", default="local"' in (su.KIT_ROOT / "scripts" / "run_notebooks.py").read_text()
    for path in sorted((su.KIT_ROOT / "notebooks").glob("0*.ipynb")):
        assert 'os.environ.get(\\"SNA_PROFILE\\", \\"local\\")' in path.read_text(), path.name


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_the_packaged_models_shapes_are_their_configs(name):
    """The shapes the pre-flight prices (no weights loaded) are the GGUF files' own configs."""
    from sna_utils.run.packaged import packaged_config, part_paths

    try:
        part_paths(name)
    except su.SNAError as e:
        pytest.skip(str(e))
    assert su.run.profiles.model_shape(name) == su.run.profiles.shape_from_config(packaged_config(name))
