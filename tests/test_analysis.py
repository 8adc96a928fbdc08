"""The notebooks' analysis helpers (sna_utils sections 7 and 10): interference, overlap, tables, plots."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

import sna_utils as su


def _trim(tasks, neutral, n_tasks=3, n_disc=8, n_eval=6):
    small = [su.Task(t.name, t.category, t.description, t.discovery[:n_disc], t.evaluation[:n_eval])
             for t in tasks[:n_tasks]]
    return small, su.NeutralSet(neutral.discovery[:10], neutral.heldout[:6])


@pytest.fixture(scope="module")
def small(tasks, neutral):
    return _trim(tasks, neutral)


@pytest.fixture(scope="module")
def sweep(tiny, small):
    """A small real sweep of the tiny model: three tasks, every layer, two k, two multipliers."""
    t, neu = small
    return su.run_sweep(tiny, t, [0, 1, 2], [1, 5], [2.0, 5.0], neutral=neu, progress=False)


# --- cross-task interference -------------------------------------------------

@pytest.mark.parametrize("positions", ["all", "last"])
def test_interference_equals_plain_measure(tiny, small, positions):
    """Each (source, target) pair equals the plain hooked measurement with the source's neurons."""
    t, neu = small
    layer, k, m = 1, 5, 5.0
    inter = su.cross_task_interference(tiny, t, layer, k, m, positions=positions, neutral=neu)
    assert len(inter) == len(t) ** 2
    assert set(inter["source_task"]) == set(inter["target_task"]) == {x.name for x in t}
    by_name = {x.name: x for x in t}
    for src, tgt in [(t[0].name, t[0].name), (t[0].name, t[1].name), (t[2].name, t[1].name)]:
        scores = su.neuron_scores(tiny, [i.prompt for i in by_name[src].discovery], neu.discovery, layer)
        iv = su.Intervention(layer, su.top_neurons(scores, k), m, positions)
        base, o = su.measure(tiny, by_name[tgt].evaluation, iv, neu.heldout)
        row = inter[(inter["source_task"] == src) & (inter["target_task"] == tgt)].iloc[0]
        assert row["neurons"] == ",".join(map(str, iv.neurons))
        assert row["same_task"] == (src == tgt)
        assert math.isclose(row["p_base"], base.p_mean, rel_tol=1e-4)
        assert math.isclose(row["p_sna"], o.p_sna, rel_tol=1e-4)
        assert math.isclose(row["improvement_pct"], o.improvement_pct, rel_tol=1e-3, abs_tol=1e-3)
        assert row["success_rate"] == pytest.approx(o.success_rate)
        assert math.isclose(row["side_effect_kl"], o.side_effect_kl, rel_tol=1e-2, abs_tol=1e-6)


def test_interference_diagonal_matches_sweep(tiny, small, sweep):
    t, neu = small
    inter = su.cross_task_interference(tiny, t, 2, 5, 2.0, neutral=neu)
    diag = inter[inter["same_task"]].set_index("target_task")
    rows = sweep[(sweep["layer"] == 2) & (sweep["k"] == 5) & (sweep["multiplier"] == 2.0)].set_index("task")
    for name in diag.index:
        assert math.isclose(diag.loc[name, "p_sna"], rows.loc[name, "p_sna"], rel_tol=1e-4)
        assert diag.loc[name, "jaccard"] == 1.0
    summary = su.interference_summary(inter)
    assert list(summary["source_task"]) == [x.name for x in t]
    assert summary["own_improvement_pct"].tolist() == pytest.approx(diag.loc[summary["source_task"],
                                                                               "improvement_pct"].tolist())


@pytest.mark.parametrize("kwargs,message", [
    (dict(layer=3), "Layer 3 does not exist"),
    (dict(k=0), "k=0 is out of range"),
    (dict(multiplier=float("nan")), "finite number"),
    (dict(positions="first"), "positions='first'"),
    (dict(score_method="max"), "Unknown scoring method"),
])
def test_interference_rejects_bad_input(tiny, small, kwargs, message):
    t, neu = small
    args = dict(layer=1, k=5, multiplier=2.0) | kwargs
    with pytest.raises(su.SNAError, match=message):
        su.cross_task_interference(tiny, t, neutral=neu, **args)


def test_interference_rejects_empty_and_repeated_tasks(tiny, small):
    t, neu = small
    with pytest.raises(su.SNAError, match="No tasks"):
        su.cross_task_interference(tiny, [], 1, 5, 2.0, neutral=neu)
    with pytest.raises(su.SNAError, match="repeat"):
        su.cross_task_interference(tiny, [t[0], t[0]], 1, 5, 2.0, neutral=neu)


# --- neuron overlap ------------------------------------------------------------

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


# --- discovery tables ------------------------------------------------------------

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


# --- summary tables -----------------------------------------------------------------

def test_task_baselines_match_measure(tiny, small, sweep):
    t, _ = small
    b = su.task_baselines(tiny, t).set_index("task")
    for x in t:
        base, _ = su.measure(tiny, x.evaluation, su.Intervention(0, [0], 1.0))
        assert math.isclose(b.loc[x.name, "p_base"], base.p_mean, rel_tol=1e-6)
        assert b.loc[x.name, "zone"] == su.zone_of(base.p_mean)
        assert math.isclose(b.loc[x.name, "p_base"], sweep[sweep["task"] == x.name]["p_base"].iloc[0], rel_tol=1e-4)


def test_control_layer_golden_and_shared_config(sweep):
    cmp = su.control_comparison(sweep).set_index("task")
    for name, g in sweep.groupby("task"):
        assert cmp.loc[name, "share_sna_beats_control"] == pytest.approx((g["gain_over_control_pct"] > 0).mean())
        assert cmp.loc[name, "best_improvement_pct"] == g["improvement_pct"].max()
    prof = su.layer_profile(sweep)
    assert len(prof) == sweep["task"].nunique() * 3
    gold = su.golden_zone_summary(sweep, 5.0, 0.1).set_index("task")
    for name, g in sweep.groupby("task"):
        assert gold.loc[name, "n_golden"] == len(su.golden_zone(g, 5.0, 0.1))
    cfg = su.best_shared_config(sweep)
    mean = sweep.groupby(["layer", "k", "multiplier"])["improvement_pct"].mean()
    assert cfg["mean_improvement_pct"] == pytest.approx(mean.max())
    with pytest.raises(su.SNAError, match="one model"):
        su.best_shared_config(pd.concat([sweep, sweep.assign(model="other")]))


def test_layer_specialisation_on_hand_table():
    rows = []
    for task, cat, best in [("t1", "mathematics", 2), ("t2", "mathematics", 2), ("t3", "coding", 0)]:
        for layer in range(3):
            for m in (2.0, 5.0):
                rows.append(dict(model="x", task=task, category=cat, layer=layer, k=5, multiplier=m,
                                 improvement_pct=(50.0 if layer == best else 1.0) * m))
    spec = su.layer_specialisation(pd.DataFrame(rows)).set_index("category")
    assert spec.loc["mathematics", "best_layer"] == 2
    assert spec.loc["coding", "best_layer"] == 0
    assert spec.loc["mathematics", "mean_best_improvement_pct"] == 250.0
    assert spec.loc["mathematics", "task_best_layers"] == "t1: 2, t2: 2"
    assert spec.loc["mathematics", "paper_best_layer"] == 8


def test_paper_comparison(sweep):
    summary = su.task_summary(sweep)
    rho, p = su.confidence_gain_correlation(summary)
    table = su.paper_comparison(sweep, "smoke", pythia=sweep.assign(model="tiny-pythia"))
    assert {"claim", "paper", "this_run", "unit", "model", "profile"} <= set(table.columns)
    assert (table["profile"] == "smoke").all()
    by = table.set_index("claim")
    assert by.loc["configurations in the grid", "this_run"] == len(sweep)
    assert by.filter(like="Spearman rho", axis=0)["this_run"].iloc[0] == pytest.approx(rho, nan_ok=True)
    assert by.filter(like="Pythia", axis=0)["model"].iloc[0] == "tiny-pythia"
    only_pythia = su.paper_comparison(None, "smoke", pythia=sweep)
    assert len(only_pythia) == 1


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


def test_restrict_to_single_token(tiny, small):
    t, _ = small
    bad = su.Task("x", "poetry", "", t[0].discovery + (su.Item("Roses are", " red roses"),), t[0].evaluation)
    kept, dropped = su.restrict_to_single_token(tiny, [bad, t[1]])
    assert [len(k.discovery) for k in kept] == [len(t[0].discovery), len(t[1].discovery)]
    assert dropped.to_dict("records") == [dict(task="x", half="discovery", prompt="Roses are", target=" red roses",
                                               n_tokens=2)]
    empty = su.Task("y", "poetry", "", (su.Item("a", " b c"),), t[0].evaluation)
    with pytest.raises(su.SNAError, match="no single-token targets"):
        su.restrict_to_single_token(tiny, [empty])


# --- plots ---------------------------------------------------------------------------

def _sst2_report():
    rng = np.random.default_rng(0)
    n = 60
    p = rng.uniform(0.0, 0.3, n)
    ex = pd.DataFrame(dict(label=rng.integers(0, 2, n), p_correct_base=p, p_correct_sna=p * 1.5,
                           p_correct_control=p, correct_base=rng.random(n) < 0.5, correct_sna=rng.random(n) < 0.7,
                           correct_control=rng.random(n) < 0.5, confidence_2way=rng.uniform(0, 0.5, n)))
    ex["zone"] = [su.zone_of(x) for x in p]
    return su.sst2_zone_report(ex)


def test_every_plot_writes_png_and_pdf(tiny, small, sweep, tmp_path):
    import matplotlib.pyplot as plt

    t, neu = small
    summary = su.task_summary(sweep)
    rho, p = su.confidence_gain_correlation(summary)
    inter = su.cross_task_interference(tiny, t, 1, 5, 2.0, neutral=neu)
    scores = su.discovery_scores(tiny, t, neutral=neu)
    top = su.top_neurons_by_task(scores, 2, 5)
    two_models = pd.concat([summary, summary.assign(model="other", p_base=summary["p_base"] * 1e4)])
    figures = {
        "baseline": su.plot_baseline_zones(su.task_baselines(tiny, t)),
        "sna_vs_control": su.plot_sna_vs_control(sweep),
        "layers": su.plot_layer_specialisation(sweep),
        "interference": su.plot_interference(inter),
        "scores": su.plot_score_distributions(scores, k=5),
        "overlap": su.plot_neuron_overlap(su.neuron_overlap(dict(zip(top["task"], top["neurons"])))),
        "fig3": su.plot_confidence_vs_improvement(summary, rho, p),
        "fig3_two_models": su.plot_confidence_vs_improvement(two_models, {"tiny": rho, "other": rho},
                                                             {"tiny": p, "other": p}),
        "fig4": su.plot_sst2_zones(_sst2_report()),
        "fig4_bands": su.plot_sst2_zones(_sst2_report(), view="2-way confidence"),
        "heatmaps": su.plot_layer_multiplier_heatmaps(sweep, k=5),
        "heatmaps_default_k": su.plot_layer_multiplier_heatmaps(sweep),
        "k": su.plot_improvement_vs_k(sweep),
        "golden": su.plot_golden_zone(sweep),
        "comparison": su.plot_model_comparison(two_models),
    }
    for name, fig in figures.items():
        paths = su.save_figure(fig, name, tmp_path, note=su.model_note("tiny", "smoke"))
        assert [p.name for p in paths] == [f"{name}.png", f"{name}.pdf"]
        assert all(p.stat().st_size > 1000 for p in paths), name
        assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"
        plt.close(fig)


def test_plot_input_errors_and_figures_dir(sweep, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    with pytest.raises(su.SNAError, match="k = 7 is not in the table"):
        su.plot_layer_multiplier_heatmaps(sweep, k=7)
    with pytest.raises(su.SNAError, match="not in the table"):
        su.plot_layer_multiplier_heatmaps(sweep, model="gpt2-small")
    with pytest.raises(su.SNAError, match="No rows with view"):
        su.plot_sst2_zones(_sst2_report(), view="nope")
    fig = su.plot_improvement_vs_k(sweep)
    with pytest.raises(su.SNAError, match="plain file name"):
        su.save_figure(fig, "../escape", tmp_path)
    monkeypatch.setenv("SNA_FIGURES_DIR", str(tmp_path / "env"))
    assert su.save_figure(fig, "k")[0] == tmp_path / "env" / "k.png"
    plt.close(fig)
    for z in (1, 2, 3):  # one colour per zone, the same everywhere
        assert su.ZONE_COLORS[z].startswith("#")
