"""Tables about tasks and neurons: overlap, discovery scores, top-activating prompts, baselines."""
import math

import numpy as np
import pytest
import torch

import sna_utils as su


def test_jaccard_hand_examples():
    j = su.neuron_overlap({"a": [1, 2, 3], "b": [2, 3, 4], "c": [7], "d": np.array([3, 2, 1])})
    assert list(j.index) == list(j.columns) == ["a", "b", "c", "d"]
    assert j.loc["a", "b"] == j.loc["b", "a"] == pytest.approx(2 / 4)
    assert j.loc["a", "c"] == 0.0
    assert j.loc["a", "d"] == 1.0
    assert (np.diag(j.to_numpy()) == 1.0).all()
    assert su.neuron_overlap({"x": torch.tensor([5, 6])}).loc["x", "x"] == 1.0


@pytest.mark.parametrize("sets,message", [
    ({}, "non-empty dict"),
    ([[1, 2]], "non-empty dict"),
    ({"a": []}, "'a' is empty"),
    ({"a": "12"}, "list of neuron indices"),
    ({"a": [1, -2]}, "integers >= 0"),
    ({"a": [1.5]}, "integers >= 0"),
    ({"a": [True]}, "integers >= 0"),
])
def test_jaccard_rejects_bad_input(sets, message):
    with pytest.raises(su.SNAError, match=message):
        su.neuron_overlap(sets)


def test_discovery_scores_match_neuron_scores(tiny, small):
    t, neu = small
    scores = su.discovery_scores(tiny, t, layers=[0, 2], neutral=neu)
    assert len(scores) == len(t) * 2 * su.d_mlp(tiny)
    for layer in (0, 2):
        ref = su.neuron_scores(tiny, [i.prompt for i in t[1].discovery], neu.discovery, layer)
        sub = scores[(scores["task"] == t[1].name) & (scores["layer"] == layer)].sort_values("neuron")
        assert np.allclose(sub["score"].to_numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)
        top = su.top_neurons_by_task(scores, layer, 7).set_index("task").loc[t[1].name, "neurons"]
        assert top == su.top_neurons(ref, 7)
    with pytest.raises(su.SNAError, match="No scores for layer 1"):
        su.top_neurons_by_task(scores, 1, 7)


def test_top_activating_prompts(tiny, small):
    t, neu = small
    pool, sources = su.prompt_pool(t, neu)
    assert len(pool) == len(sources) == sum(len(x.items) for x in t) + len(neu.heldout)
    acts = su.last_token_activations(tiny, pool, [1])[1][:, 17]
    top = su.top_activating_prompts(tiny, 1, 17, pool, n=4, sources=sources)
    assert list(top["rank"]) == [1, 2, 3, 4]
    assert top["activation"].is_monotonic_decreasing
    assert top["activation"].iloc[0] == pytest.approx(float(acts.max()))
    assert top["source"].iloc[0] == sources[int(acts.argmax())]
    with pytest.raises(su.SNAError, match="outside"):
        su.top_activating_prompts(tiny, 1, 9999, pool)
    with pytest.raises(su.SNAError, match="at least 1"):
        su.top_activating_prompts(tiny, 1, 17, pool, n=0)
    with pytest.raises(su.SNAError, match="source labels"):
        su.top_activating_prompts(tiny, 1, 17, pool, sources=["x"])
    with pytest.raises(su.SNAError, match="empty"):
        su.top_activating_prompts(tiny, 1, 17, [])


def test_task_baselines_match_measure(tiny, small, sweep):
    t, _ = small
    b = su.task_baselines(tiny, t).set_index("task")
    for x in t:
        base, _ = su.measure(tiny, x.evaluation, su.Intervention(0, [0], 1.0))
        assert math.isclose(b.loc[x.name, "p_base"], base.p_mean, rel_tol=1e-6)
        assert b.loc[x.name, "zone"] == su.zone_of(base.p_mean)
        assert math.isclose(b.loc[x.name, "p_base"], sweep[sweep["task"] == x.name]["p_base"].iloc[0], rel_tol=1e-4)


def test_format_matched_neutral_prompts(tasks):
    """Every task has >= 64 off-task prompts in its own format: they end on the task's last tokens (>= 75 %,
    more often than neutral prose does) and none is a task prompt."""
    formats, tok = su.load_neutral_formats(), su.gpt2_tokenizer()
    assert set(formats) == {t.name for t in tasks}
    prose = su.load_neutral()
    for t in tasks:
        last = {tok(i.prompt)["input_ids"][-1] for i in t.items}
        share = lambda prompts: sum(tok(p)["input_ids"][-1] in last for p in prompts) / len(prompts)
        assert len(set(formats[t.name])) == len(formats[t.name]) >= 64, t.name
        assert not set(formats[t.name]) & {i.prompt for i in t.items}, t.name
        assert share(formats[t.name]) >= 0.75 and share(formats[t.name]) > share(prose), t.name


def test_bad_format_matched_neutral_file(tmp_path):
    with pytest.raises(su.SNAError, match="neutral prompt file not found"):
        su.load_neutral_formats(tmp_path)
    (tmp_path / "neutral_formats.json").write_text('{"tasks": []}')
    with pytest.raises(su.SNAError, match="'tasks' object"):
        su.load_neutral_formats(tmp_path)
    (tmp_path / "neutral_formats.json").write_text('{"tasks": {"addition": ["1 + 1 =", " "]}}')
    with pytest.raises(su.SNAError, match=r"tasks\['addition'\]\[1\] is empty"):
        su.load_neutral_formats(tmp_path)
    (tmp_path / "neutral_formats.json").write_text('{"tasks": {"addition": ["1 + 1 =",}}')
    with pytest.raises(su.SNAError, match="Format-matched neutral prompt file .* is not valid JSON: .* at line 1"):
        su.load_neutral_formats(tmp_path)
