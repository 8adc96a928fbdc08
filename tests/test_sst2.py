"""SST-2: the local loader, scoring, zones, and the whole pipeline on all 872 validation sentences."""
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import sna_utils as su

SST2_DIR = os.environ.get("SNA_SST2_DIR")


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model gains nothing from a second thread and slows down many times when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    monkeypatch.setattr(su.run.hub, "hub_cached", lambda *a, **k: False)
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
    assert rep.loc[("METHOD zone", su.ZONE_NAMES[2]), "max_gain_pp"] == pytest.approx(100.0)
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


# --- the held-out grid -------------------------------------------------------------------------------

POSITIVE = ["a gorgeous , witty film .", "warm and funny .", "a triumph .", "smart , moving and true .",
            "the best film this year .", "a delight from start to finish ."]
NEGATIVE = ["dull and slow .", "a mess .", "tedious , loud and empty .", "the worst script in years .",
            "badly acted .", "nothing works here ."]


@pytest.fixture
def sst2_dir(tmp_path):
    """A small SST-2 folder: validation and train sentences that share no sentence."""
    def write(name, sentences):
        lines = ["sentence\tlabel"] + [f"{s}\t{lab}" for s, lab in sentences]
        (tmp_path / name).write_text("\n".join(lines) + "\n")

    write("dev.tsv", [(f"{s} ({i})", lab) for i in range(2) for lab, group in ((1, POSITIVE), (0, NEGATIVE))
                      for s in group])
    write("train.tsv", [(f"train : {s}", lab) for lab, group in ((1, POSITIVE), (0, NEGATIVE)) for s in group])
    return tmp_path


def test_split_is_disjoint_fixed_and_half():
    val = pd.DataFrame({"sentence": [f"s{i}" for i in range(101)], "label": [i % 2 for i in range(101)]})
    part = su.sst2_split(val, seed=0)
    assert set(part) == {"selection", "test"} and (part == "selection").sum() == 51
    assert part.equals(su.sst2_split(val, seed=0)) and not part.equals(su.sst2_split(val, seed=1))
    assert set(val.index[part == "selection"]).isdisjoint(val.index[part == "test"])


@pytest.mark.parametrize("discovery", sorted(su.sst2.DISCOVERY_MODES))
def test_discovery_reads_train_sentences_only(tiny, sst2_dir, monkeypatch, discovery):
    seen = []
    real = su.sst2.last_token_activations

    def spy(model, prompts, layers, batch_size=32):
        seen.extend(prompts)
        return real(model, prompts, layers, batch_size)

    monkeypatch.setattr(su.sst2, "last_token_activations", spy)
    grid = su.run_sst2_grid(tiny, [1], [3], [2.0], discovery=discovery, n_train=12, data_dir=sst2_dir)
    val = su.load_sst2("validation", sst2_dir)
    assert seen and not any(s.strip() in p for s in val["sentence"] for p in seen)
    assert any("train :" in p for p in seen)
    if discovery == "template":
        assert all(p.endswith("Sentiment:") for p in seen)
    assert set(grid["discovery"]) == {discovery}


def test_discovery_modes_match_plain_scores(tiny, sst2_dir):
    train = su.load_sst2("train", sst2_dir)
    neutral = ["The bus was late again this morning.", "She planted tomatoes by the fence."]
    pos = su.sst2_prompts(train.loc[train.label == 1, "sentence"])
    neg = su.sst2_prompts(train.loc[train.label == 0, "sentence"])
    expected = {"neutral": su.neuron_scores(tiny, su.sst2_prompts(train.sentence), neutral, 1),
                "template": su.neuron_scores(tiny, su.sst2_prompts(train.sentence), su.sst2_prompts(neutral), 1),
                "contrast": su.neuron_scores(tiny, pos, neg, 1).abs()}
    for mode, scores in expected.items():
        got = su.sst2.sst2_scores(tiny, [1], n_train=len(train), discovery=mode, neutral=neutral, data_dir=sst2_dir)
        assert torch.allclose(got[1], scores, atol=1e-5), mode
    overlap = su.discovery_overlap(tiny, 1, 5, n_train=len(train), data_dir=sst2_dir)
    assert list(overlap.index) == list(su.sst2.DISCOVERY_MODES) and (np.diag(overlap) == 1).all()


def test_grid_rows_match_plain_hooked_runs(tiny, sst2_dir):
    grid = su.run_sst2_grid(tiny, [1, 2], [3], [2.0, 5.0], n_train=12, data_dir=sst2_dir, seed=3)
    val = su.load_sst2("validation", sst2_dir)
    assert len(grid) == 2 * 2 * 1 * 2 * len(val)
    assert (grid.groupby("example")["part"].nunique() == 1).all()
    assert grid.drop_duplicates("example")["part"].tolist() == su.sst2_split(val, seed=3).tolist()
    for (arm, layer, m), rows in list(grid.groupby(["arm", "layer", "multiplier"]))[::3]:
        neurons = [int(i) for i in rows["neurons"].iloc[0].split(",")]
        if arm == "control":
            assert neurons == su.random_neurons(su.d_mlp(tiny), 3, 3, layer)
        else:
            assert neurons == su.sst2.sst2_neurons(tiny, layer, 3, n_train=12, seed=3, data_dir=sst2_dir)[0]
        iv = su.Intervention(layer, neurons, m)
        for i in (0, 7):
            row = rows[rows.example == i].iloc[0]
            prompt = su.sst2_prompts([val.sentence[i]])
            p = su.target_probs(tiny, prompt * 2, list(su.SST2_LABEL_WORDS), iv)
            assert (row.p_negative, row.p_positive) == pytest.approx(p.tolist(), rel=1e-4)
            p0 = su.target_probs(tiny, prompt * 2, list(su.SST2_LABEL_WORDS))
            assert (row.p_negative_base, row.p_positive_base) == pytest.approx(p0.tolist(), rel=1e-4)


@pytest.mark.parametrize("name,positions", [("tiny-llama", "all"), ("tiny-gemma2", "last")])
def test_grid_on_the_engine_equals_the_plain_loop(name, positions, sst2_dir):
    """The engine's SST-2 grid (every configuration of a layer in one run) against one plain hooked forward pass
    per configuration, on general-path stand-ins (float64): every column equal, probabilities to 1e-5 relative
    (Hugging Face computes rotary angles in float32, and the two paths for different lengths: ~2e-6 apart)."""
    model = su.load_model(name, device="cpu", dtype=torch.float64)
    args = dict(layers=[0, 2], ks=[3, 40], multipliers=[0.0, 5.0], n_train=12, data_dir=sst2_dir, seed=1,
                positions=positions)
    fast, plain = su.run_sst2_grid(model, **args), su.run_sst2_grid(model, engine=False, **args)
    probs = ["p_negative", "p_positive"]
    pd.testing.assert_frame_equal(fast.drop(columns=probs), plain.drop(columns=probs))
    np.testing.assert_allclose(fast[probs].to_numpy(), plain[probs].to_numpy(), rtol=1e-5, atol=0)
    assert (fast["p_positive"] / fast["p_positive_base"] - 1).abs().max() > 1e-2, "the grid moves probabilities"


def test_grid_checks_everything_before_reading_data(tiny, monkeypatch):
    def no_data(*a, **k):
        raise AssertionError("data read before the checks")

    monkeypatch.setattr(su.sst2, "load_sst2", no_data)
    for kwargs, message in [(dict(layers=[9]), "layer"), (dict(ks=[0]), "k="), (dict(multipliers=[float("nan")]), "Multiplier"),
                            (dict(discovery="prose"), "discovery"), (dict(positions="first"), "positions"),
                            (dict(ks=[]), "at least one")]:
        args = dict(layers=[1], ks=[3], multipliers=[2.0]) | kwargs
        with pytest.raises(su.SNAError, match=message):
            su.run_sst2_grid(tiny, **args)
    with pytest.raises(su.SNAError, match="discovery"):
        su.sst2.discovery_prompts(pd.DataFrame({"sentence": ["x"], "label": [1]}), "prose")
    with pytest.raises(su.SNAError, match="positive and negative"):
        su.sst2.discovery_prompts(pd.DataFrame({"sentence": ["x"], "label": [1]}), "contrast")


def test_profiles_take_k_and_m_from_the_paper_grid():
    for prof in su.run.profiles.PROFILES.values():
        assert prof.sst2_layers and prof.sst2_ks and prof.sst2_multipliers
        assert set(prof.sst2_ks) <= set(su.PAPER_KS) and set(prof.sst2_multipliers) <= set(su.PAPER_MULTIPLIERS)
        assert prof.sst2_layer in prof.sst2_layers
    assert su.run.profiles.PROFILES["paper"].sst2_layers == (19, 20, 21, 22, 23)
    method = (Path(su.KIT_ROOT) / "docs" / "method.md").read_text(encoding="utf-8")
    for name, prof in su.run.profiles.PROFILES.items():  # the method note's profiles table states each grid
        row = next(line for line in method.splitlines() if line.startswith(f"| `{name}` |"))
        sets = [", ".join(f"{v:g}" for v in vals) for vals in (prof.sst2_layers, prof.sst2_ks, prof.sst2_multipliers)]
        assert "held out: layers {%s} x k in {%s} x m in {%s}" % tuple(sets) in row, name


def test_zone_report_per_label_exposes_a_uniform_shift():
    """Every example pushed toward ' positive': positives gain, negatives lose, in every group; the shift is > 0."""
    rng = np.random.default_rng(0)
    n = 200
    label = rng.integers(0, 2, n)
    p_neg, p_pos = rng.uniform(0.001, 0.2, n), rng.uniform(0.001, 0.2, n)
    after_neg, after_pos = su.judge.sst2_heldout.bias_shift(p_neg, p_pos, 2.0)
    ex = pd.DataFrame({"label": label})
    for arm, (a, b) in (("base", (p_neg, p_pos)), ("sna", (after_neg, after_pos)), ("control", (p_neg, p_pos))):
        out = su.judge.sst2_heldout.label_outcomes(a, b, label)
        for col in out.columns:
            ex[f"{col}_{arm}"] = out[col].to_numpy()
    ex["zone"] = [su.zone_of(p) for p in ex["p_correct_base"]]
    ex["confidence_2way"] = (ex["p2_positive_base"] - 0.5).abs()
    rep = su.sst2_zone_report(ex, by_label=True)
    assert rep.groupby("view")["n"].sum().eq(n).all()
    assert (rep.loc[rep.label == 1, "accuracy_change_pp"] >= 0).all()
    assert (rep.loc[rep.label == 0, "accuracy_change_pp"] <= 0).all()
    assert rep["shift_to_positive_nats"].to_numpy() == pytest.approx(2.0)


@pytest.mark.slow
@needs_sst2
def test_random_stand_in_is_not_called_better_than_the_bias_control(tiny):
    """No neuron of a random model means anything: over seeds (split, train sample, control), SNA beats the
    bias-only control (McNemar p < 0.05, SNA ahead, on the test part) no more often than the nominal rate allows,
    and the claim's verdict is not 'supported' more often either. P(Bin(12, 0.05) >= 3) = 0.02."""
    wins, supported = 0, 0
    for seed in range(12):
        grid = su.run_sst2_grid(tiny, [2], [5], [2.0, 5.0], n_train=24, seed=seed, limit=120)
        study = su.sst2_study(grid, "accuracy_change_pp")
        row = su.judge.sst2_heldout.mcnemar_table(study.examples, pairs=[("sna", "bias")]).iloc[0]
        wins += row.first_only > row.second_only and row.p_value < 0.05
        supported += (su.sst2_claims(grid, "smoke", n_resamples=1000)["verdict"] == "supported").any()
    assert wins <= 2 and supported <= 2, (wins, supported)
