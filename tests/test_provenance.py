"""Provenance: the pinned Hub revisions and what a load records, a table made at another revision refused naming
both, revision lookup offline said plainly, and the data files' hashes."""
from __future__ import annotations

import shutil

import pytest

import sna_utils as su
from helpers import trim
from sna_utils.run.hub import COMMIT, record_revision
from sna_utils.run.profiles import BEYOND_MODEL
from sna_utils.run.provenance import data_files, data_hashes

OFFLINE = "Revision lookup needs the Hugging Face Hub, which is not reachable from this machine"


def test_every_hub_model_the_kit_names_is_pinned_to_a_commit():
    named = {*su.HUB_MODELS.values(), BEYOND_MODEL, su.core.GPT2_TOKENIZER_HUB_ID}
    assert named <= set(su.PINNED_REVISIONS), named - set(su.PINNED_REVISIONS)
    assert all(COMMIT.fullmatch(c) for c in su.PINNED_REVISIONS.values())


def test_offline_lookup_says_it_needs_the_hub_and_records_the_pinned_commit(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pinned = su.PINNED_REVISIONS["openai-community/gpt2"]
    with pytest.warns(UserWarning, match=f"{OFFLINE}: recorded the pinned revision {pinned} of openai-community/gpt2"):
        assert record_revision("openai-community/gpt2") == pinned
    with pytest.warns(UserWarning, match=f"{OFFLINE}: recorded the given revision {'a' * 40}"):
        assert record_revision("openai-community/gpt2", "a" * 40) == "a" * 40
    with pytest.warns(UserWarning, match=f"{OFFLINE}: recorded some-org/unpinned at 'main' unresolved"):
        assert record_revision("some-org/unpinned") == "main"


def test_a_model_cached_at_its_pinned_commit_counts_as_cached(tmp_path, monkeypatch):
    """A download at a commit writes snapshots/<commit>/ and no refs/main: offline, that is still in the cache."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    pinned = su.PINNED_REVISIONS["openai-community/gpt2"]
    assert not su.run.hub.hub_cached("openai-community/gpt2", "config.json")
    snapshot = tmp_path / "models--openai-community--gpt2" / "snapshots" / pinned
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    assert su.run.hub.hub_cached("openai-community/gpt2", "config.json")
    assert not su.run.hub.hub_cached("openai-community/gpt2", "config.json", revision="main")


def test_a_hub_model_loads_at_its_pinned_revision_or_the_one_given(monkeypatch):
    """Every Hub call of a load (config, weights, tokenizer) gets the pinned commit, or the revision given; the
    model records it. The Hub is faked with a tiny random GPT-2 (no download)."""
    import transformers
    from transformers import AutoConfig

    asked = []

    def fake(make):
        return classmethod(lambda cls, source, **kw: asked.append((source, kw.get("revision"))) or make())

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(su.run.families, "require_hub", lambda *a, **k: None)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained",
                        fake(lambda: AutoConfig.for_model("gpt2", **su.STANDINS["tiny"][1])))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        fake(lambda: su.build_random_hf_model("tiny")))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake(su.gpt2_tokenizer))
    pinned = su.PINNED_REVISIONS["openai-community/gpt2"]
    with pytest.warns(UserWarning, match=OFFLINE):
        model = su.load_model("gpt2", device="cpu")
    assert su.model_revision(model) == pinned and su.model_name(model) == "gpt2-small"
    assert asked == [("openai-community/gpt2", pinned)] * 3
    asked.clear()
    with pytest.warns(UserWarning, match="recorded openai-community/gpt2 at 'main' unresolved"):
        model = su.load_model("gpt2-small", device="cpu", revision="main")
    assert su.model_revision(model) == "main" and asked == [("openai-community/gpt2", "main")] * 3

    def from_snapshot():  # transformers records the commit of the snapshot it read: that is the one recorded
        hf = su.build_random_hf_model("tiny")
        hf.config._commit_hash = "b" * 40
        return hf

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake(from_snapshot))
    with pytest.warns(UserWarning, match="unresolved"):
        assert su.model_revision(su.load_model("gpt2-small", device="cpu", revision="main")) == "b" * 40


def test_the_gpt2_tokenizer_from_the_hub_loads_at_the_pinned_revision(monkeypatch):
    from transformers import GPT2TokenizerFast

    asked = []
    monkeypatch.delenv("SNA_GPT2_TOKENIZER", raising=False)
    monkeypatch.setattr(su.run.hub, "require_hub", lambda *a, **k: None)  # gpt2_tokenizer lives in run.hub
    monkeypatch.setattr(GPT2TokenizerFast, "from_pretrained", classmethod(lambda cls, s, **kw: asked.append((s, kw))))
    su.gpt2_tokenizer()
    assert asked == [("openai-community/gpt2", dict(revision=su.PINNED_REVISIONS["openai-community/gpt2"],
                                                    add_bos_token=True))]


def test_a_table_made_at_another_revision_is_refused_naming_both(tiny, tasks, neutral, tmp_path, monkeypatch):
    t, neu = trim(tasks, neutral, n_tasks=1, n_eval=6)
    grid = dict(layers=[1], ks=[1], multipliers=[2.0], neutral=neu, out=tmp_path / "sweep.parquet", progress=False)
    first = su.run_sweep(tiny, t, **grid)
    assert (first["revision"] == "random weights, seed 0").all()
    monkeypatch.setattr(tiny, "sna_revision", "0123456789abcdef0123456789abcdef01234567")  # other weights
    with pytest.raises(su.SNAError, match="model revision: random weights, seed 0 in the table, "
                                          "0123456789abcdef0123456789abcdef01234567 now"):
        su.run_sweep(tiny, t, **grid)
    monkeypatch.setattr(tiny, "sna_revision", "random weights, seed 0")
    assert len(su.run_sweep(tiny, t, **grid)) == len(first)  # the same revision resumes


def test_changing_a_data_file_changes_its_recorded_hash(tmp_path):
    shutil.copytree(su.DATA_DIR, tmp_path / "data")
    before = data_hashes(data_files(tmp_path / "data", sst2_dir=""))
    task = tmp_path / "data" / "tasks" / "addition.json"
    task.write_text(task.read_text().replace("2", "3", 1))
    after = data_hashes(data_files(tmp_path / "data", sst2_dir=""))
    changed = [name for name in before if before[name] != after[name]]
    assert changed == [str(task.resolve())] and len(before) == 14
    with pytest.raises(su.SNAError, match="neutral.txt"):
        (tmp_path / "data" / "neutral.txt").unlink()
        data_files(tmp_path / "data", sst2_dir="")
