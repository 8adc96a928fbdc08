"""SST-2: the local loader, scoring, zones, and the whole pipeline on all 872 validation sentences."""
import os
from pathlib import Path

import pandas as pd
import pytest

import sna_utils as su

SST2_DIR = os.environ.get("SNA_SST2_DIR")
needs_sst2 = pytest.mark.skipif(not SST2_DIR or not Path(SST2_DIR, "dev.tsv").is_file(),
                                reason="SNA_SST2_DIR does not point at GLUE SST-2 TSV files (CI sets it)")


@needs_sst2
def test_local_loader_reads_shared_files_exactly():
    val = su.load_sst2("validation")
    assert len(val) == 872 and int(val["label"].sum()) == 444
    assert val["sentence"].iloc[0] == "it 's a charming and often affecting journey . "
    train = su.load_sst2("train")
    assert len(train) == 67349 and int(train["label"].sum()) == 37569


@pytest.mark.parametrize("content,message", [
    ("text\tlabel\nfine .\t1\n", "header"),
    ("sentence\tlabel\ngood .\t1\nbad .\n", "line 3: expected 2"),
    ("sentence\tlabel\ngood .\t1\nbad .\t2\n", "line 3: label must be 0 or 1"),
    ("sentence\tlabel\n  \t1\n", "line 2: empty sentence"),
])
def test_malformed_files_name_the_line(tmp_path, content, message):
    (tmp_path / "dev.tsv").write_text(content)
    with pytest.raises(su.SNAError, match=message):
        su.load_sst2("validation", tmp_path)


def test_missing_file_and_bad_split(tmp_path):
    with pytest.raises(su.SNAError, match="not found"):
        su.load_sst2("validation", tmp_path)
    with pytest.raises(su.SNAError, match="split"):
        su.load_sst2("test", tmp_path)


def test_hub_unreachable_fails_fast(monkeypatch):
    monkeypatch.delenv("SNA_SST2_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(su.hub, "hub_cached", lambda *a, **k: False)
    with pytest.raises(su.ModelUnavailableError, match="SNA_SST2_DIR"):
        su.load_sst2("validation")


def test_template_and_label_words_checked(tiny):
    data = pd.DataFrame({"sentence": ["great film ."], "label": [1]})
    with pytest.raises(su.SNAError, match="placeholder"):
        su.score_sst2(tiny, data, template="Review: {text}\nSentiment:")
    with pytest.raises(su.SNAError, match="label word 1"):
        su.score_sst2(tiny, data, label_words=(" negative", " very positive"))
    with pytest.raises(su.SNAError, match="distinct"):
        su.score_sst2(tiny, data, label_words=(" good", " good"))


def test_scores_match_plain_per_example(tiny):
    data = pd.DataFrame({"sentence": ["a gorgeous , witty film .", "dull", "it 's not bad at all , really ."],
                         "label": [1, 0, 1]})
    iv = su.Intervention(1, [2, 30, 60], 8.0)
    scored = su.score_sst2(tiny, data, iv)
    for i, row in data.iterrows():
        prompt = f"Review: {row.sentence.strip()}\nSentiment:"
        p = su.target_probs(tiny, [prompt, prompt], [" negative", " positive"], iv)
        assert scored.loc[i, "p_correct"] == pytest.approx(p[row.label].item(), rel=1e-4)
        assert scored.loc[i, "pred"] == int(p[1] > p[0])
        assert scored.loc[i, "p2_positive"] == pytest.approx((p[1] / p.sum()).item(), rel=1e-4)


def _examples(p_correct, correct_sna):
    n = len(p_correct)
    return pd.DataFrame({"p_correct_base": p_correct, "p_correct_sna": [p + 0.1 for p in p_correct],
                         "p_correct_control": p_correct, "correct_base": [False] * n, "correct_sna": correct_sna,
                         "correct_control": [False] * n, "zone": [su.zone_of(p) for p in p_correct],
                         "confidence_2way": [0.05] * n})


def test_zone_report_groups_at_the_boundaries():
    ex = _examples([0.0699, 0.07, 0.10, 0.1001], [True, False, True, True])
    rep = su.sst2_zone_report(ex).set_index(["view", "group"])
    assert rep.loc[("METHOD zone", su.ZONE_NAMES[1]), "n"] == 1
    assert rep.loc[("METHOD zone", su.ZONE_NAMES[2]), "n"] == 2
    assert rep.loc[("METHOD zone", su.ZONE_NAMES[3]), "n"] == 1
    assert rep.loc[("METHOD zone", su.ZONE_NAMES[2]), "accuracy_change_pp"] == pytest.approx(50.0)
    assert rep.loc[("METHOD zone", su.ZONE_NAMES[1]), "p_change_pp"] == pytest.approx(10.0)
    assert rep.loc[("all", "all examples"), "n"] == 4


@needs_sst2
def test_whole_pipeline_on_all_872_sentences(tiny):
    ex = su.run_sst2(tiny, layer=2, k=10, multiplier=5.0, n_train=64)
    assert len(ex) == 872
    assert set(ex["zone"]) <= {1, 2, 3}
    neurons = [int(i) for i in ex["neurons"].iloc[0].split(",")]
    assert len(neurons) == 10
    sample = ex.sample(n=12, random_state=0)
    iv = su.Intervention(2, neurons, 5.0)
    for i, row in sample.iterrows():
        prompt = su.sst2_prompts([row.sentence])[0]
        word = su.SST2_LABEL_WORDS[row.label]
        assert row.p_correct_base == pytest.approx(su.target_probs(tiny, [prompt], [word]).item(), rel=1e-4)
        assert row.p_correct_sna == pytest.approx(su.target_probs(tiny, [prompt], [word], iv).item(), rel=1e-4)
    assert not (ex["p_correct_sna"] == ex["p_correct_base"]).all()
    rep = su.sst2_zone_report(ex)
    assert rep.loc[rep["view"] == "all", "n"].item() == 872
    assert rep.loc[rep["view"] == "METHOD zone", "n"].sum() == 872
    assert rep.loc[rep["view"] == "2-way confidence", "n"].sum() == 872
