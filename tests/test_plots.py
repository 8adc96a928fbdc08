"""Every figure writes PNG and PDF; plot input errors; the figures folder."""

import numpy as np
import pandas as pd
import pytest

import sna_utils as su


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
        "interference_test": su.plot_interference(inter, part="test"),
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
    for name, col in (("interference", "improvement_pct"), ("interference_test", "improvement_pct_test")):
        shown = sorted(t.get_text() for t in figures[name].axes[0].texts)  # each cell's annotation
        assert shown == sorted(f"{v:+.0f}" for v in inter[col]), name
    assert sorted(f"{v:+.0f}" for v in inter["improvement_pct"]) != sorted(f"{v:+.0f}" for v in
                                                                         inter["improvement_pct_test"])
    assert "test prompts" in figures["interference_test"].axes[0].get_title()


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
    with pytest.raises(su.SNAError, match="needs a folder or a profile"):
        su.save_figure(fig, "k")
    monkeypatch.setenv("SNA_FIGURES_DIR", str(tmp_path / "env"))
    assert su.save_figure(fig, "k", profile="smoke")[0] == tmp_path / "env" / "smoke" / "k.png"
    plt.close(fig)
    for z in (1, 2, 3):  # one colour per zone, the same everywhere
        assert su.ZONE_COLORS[z].startswith("#")


def test_profiles_keep_their_figures_apart(sweep, tmp_path, monkeypatch):
    """A smoke run's figures never replace a paper run's: figures/<profile>/, as results/<profile>/."""
    import matplotlib.pyplot as plt

    monkeypatch.delenv("SNA_FIGURES_DIR", raising=False)
    assert su.figures_dir("smoke", tmp_path) == tmp_path / "smoke"
    assert su.figures_dir("paper") == su.FIGURES_DIR / "paper" != su.figures_dir("smoke")
    monkeypatch.setenv("SNA_FIGURES_DIR", str(tmp_path))
    written = {}
    for profile in ("paper", "smoke"):
        fig = su.plot_improvement_vs_k(sweep)
        written[profile] = su.save_figure(fig, "improvement_vs_k", su.figures_dir(profile))[0]
        plt.close(fig)
    assert written["paper"].is_file() and written["smoke"].is_file() and written["paper"] != written["smoke"]
    with pytest.raises(su.SNAError, match="plain name"):
        su.figures_dir("../paper")


def test_random_weights_flag_is_on_the_figure(sweep, tmp_path):
    """A stand-in's figure carries the flag inside the plot (watermark and banner), not only in the footer."""
    import matplotlib.pyplot as plt

    for name, flagged in (("tiny", True), ("gpt2-small", False)):
        fig = su.plot_improvement_vs_k(sweep)
        su.save_figure(fig, "k", tmp_path, note=su.model_note(name, "smoke"))
        inside = [t for t in fig.texts if "RANDOM WEIGHTS" in t.get_text() and 0 <= t.get_position()[1] <= 1]
        assert bool(inside) == flagged, name
        plt.close(fig)


def _overlapping_labels(fig, names) -> list[tuple[str, str]]:
    """Pairs of task labels whose drawn boxes overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = {t.get_text(): t.get_window_extent(renderer) for ax in fig.axes for t in ax.texts
             if t.get_text() in names}
    assert set(boxes) == set(names)
    keys = sorted(boxes)
    return [(a, b) for i, a in enumerate(keys) for b in keys[i + 1:] if boxes[a].overlaps(boxes[b])]


def test_task_labels_do_not_overlap(sweep):
    """Tasks with nearly the same P_base and gain (Figure 3) or the same curve end (improvement vs k) still get
    labels that do not overlap."""
    import matplotlib.pyplot as plt

    names = [f"task_{i}" for i in range(8)]
    summary = pd.DataFrame(dict(model="tiny", task=names, category="mathematics", p_base=0.02 + 1e-4 * np.arange(8),
                                best_improvement_pct=50 + 0.1 * np.arange(8), zone=1))
    fig = su.plot_confidence_vs_improvement(summary, -0.5, 0.1)
    assert _overlapping_labels(fig, names) == []
    plt.close(fig)
    same = pd.concat([sweep.assign(task=name) for name in names[:5]], ignore_index=True)  # five identical curves
    fig = su.plot_improvement_vs_k(same)
    assert _overlapping_labels(fig, names[:5]) == []
    plt.close(fig)


def test_sst2_figure_units_and_band_colours():
    """Figure 4: the P panel is a probability with changes as Δp (no 'pp' on a probability); accuracy changes are pp;
    the 2-way confidence bands have colours of their own, not the zones'."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    report = _sst2_report()
    fig = su.plot_sst2_zones(report)
    acc, prob = fig.axes[:2]
    assert "%" in acc.get_ylabel() and all(t.get_text().endswith(" pp") for t in acc.texts)
    assert "%" not in prob.get_ylabel() and all(t.get_text().startswith("Δp ") for t in prob.texts)
    zone_rows = report[report["view"] == "METHOD zone"]
    assert max(b.get_height() for b in prob.patches) <= 1.0 + 1e-9
    assert float(prob.texts[0].get_text().split()[-1]) == pytest.approx(
        float(zone_rows.sort_values("group")["p_change_pp"].iloc[0]) / 100, rel=0.05)
    plt.close(fig)
    fig = su.plot_sst2_zones(report, view="2-way confidence")
    colours = {to_hex(b.get_facecolor(), keep_alpha=False) for b in fig.axes[0].patches}
    colours.discard("#ffffff")
    assert colours and not colours & {c.lower() for c in su.ZONE_COLORS.values()}
    plt.close(fig)
