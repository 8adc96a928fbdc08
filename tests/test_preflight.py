"""The pre-flight: model shapes without weights, the FLOP floor of each grid against the loaded model's, the
estimate, the downloads, and the refusal of the `paper` profile on a CPU-only machine."""
import dataclasses

import pytest

import sna_utils as su
from sna_utils.run import preflight as pf


@pytest.mark.parametrize("name", ["tiny", "tiny-pythia"])
def test_shape_without_weights_matches_the_loaded_model(request, name):
    model = request.getfixturevalue(name.replace("-", "_"))
    shape = su.run.profiles.model_shape(name)
    assert (shape.n_layers, shape.d_model, shape.d_mlp, shape.d_vocab) == (
        model.cfg.n_layers, model.cfg.d_model, model.cfg.d_mlp, model.cfg.d_vocab)


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-gemma2"])
def test_gated_gqa_shape_gives_the_loaded_models_flop_floor(name):
    """A gated, grouped-query family's shape without weights gives the same FLOP floor as the loaded model."""
    model, shape = su.load_model(name), su.run.profiles.model_shape(name)
    assert shape.gated_mlp and shape.n_key_value_heads < shape.n_heads
    assert (shape.n_layers, shape.d_model, shape.d_mlp, shape.d_vocab) == (
        model.cfg.n_layers, model.cfg.d_model, model.cfg.d_mlp, model.cfg.d_vocab)
    assert su.grid_flop_floor(shape, 1, 4, 2, 9) == su.grid_flop_floor(model, 1, 4, 2, 9)
    gpt2_formula = su.run.profiles.ModelShape(shape.n_layers, shape.d_model, shape.d_mlp, shape.d_vocab)
    assert su.grid_flop_floor(shape, 1, 4, 2, 9) != su.grid_flop_floor(gpt2_formula, 1, 4, 2, 9)


def test_hub_shapes_match_the_random_standins_and_checkpoint_folders(tmp_path):
    for hub in ("gpt2-small", "gpt2-medium", "pythia-160m"):
        assert su.run.profiles.model_shape(hub) == su.run.profiles.model_shape(f"random:{hub}")
    (tmp_path / "config.json").write_text('{"n_layer": 6, "n_embd": 128, "vocab_size": 1000}')
    assert su.run.profiles.model_shape(str(tmp_path)) == su.run.profiles.ModelShape(6, 128, 512, 1000)
    assert su.n_layers_of(str(tmp_path)) == 6
    with pytest.raises(su.SNAError, match="Unknown model 'gpt5'"):
        su.run.profiles.model_shape("gpt5")


def test_token_lengths_are_the_models(tiny, small):
    tasks, neutral = small
    prompts = [i.prompt for i in tasks[0].evaluation] + list(neutral.heldout)
    lengths, counted = pf.token_lengths(prompts)
    assert counted and lengths == (su.encode_prompts(tiny, prompts).last + 1).tolist()


def test_grid_flops_equal_the_floor_on_the_loaded_model(tiny, small):
    """The shape-only count equals flops.grid_flop_floor on the model, one prompt at a time at its length, for
    every arm the sweep runs."""
    tasks, neutral = small
    layers, ks, ms = [0, 2], 3, 2
    eval_lengths = [(su.encode_prompts(tiny, [i.prompt for i in t.evaluation]).last + 1).tolist() for t in tasks]
    neutral_lengths = (su.encode_prompts(tiny, list(neutral.heldout)).last + 1).tolist()
    format_lengths = [[5, 7 + i] for i in range(len(tasks))]
    c = ks * ms

    def floor(L, configs, lengths):
        return sum(su.grid_flop_floor(tiny, L, configs, 1, T) for T in lengths)

    # three arms and the steering-vector baselines on each task's prompts, SNA on neutral and formats, both
    # controls on neutral once per layer
    n_steer = len(su.STEER_ALPHAS) + 1
    expected = sum(floor(L, 3 * c + n_steer, lengths) + floor(L, c, [*neutral_lengths, *fmt]) for lengths, fmt in
                   zip(eval_lengths, format_lengths) for L in layers) + sum(floor(L, 2 * c, neutral_lengths)
                                                                           for L in layers)
    got = pf.grid_flops(su.run.profiles.model_shape("tiny"), eval_lengths, neutral_lengths, layers, ks, ms, format_lengths)
    assert got == pytest.approx(expected, rel=1e-12) and got > 0
    assert pf.grid_flops(su.run.profiles.model_shape("tiny"), eval_lengths, neutral_lengths, layers, ks, ms) < got


def test_parts_follow_the_profile():
    for name in ("smoke", "quick", "paper"):
        prof = su.get_profile(name)
        parts, _ = pf.profile_parts(prof)
        sweep = [p for p in parts if p.notebook == su.run.profiles.TABLE_MAKERS["sweep_"]]
        grid = su.sweep_grid(prof.sweep_models, 12, prof.layers, prof.ks, prof.multipliers)
        assert [p.model for p in sweep] == list(grid["model"])
        assert [p.configurations for p in sweep] == list(grid["configurations"])
    paper, _ = pf.profile_parts(su.get_profile("paper"))
    assert sum(p.configurations for p in paper if p.notebook.startswith("03")) == 24192
    medium = next(p for p in paper if p.model == "gpt2-medium")
    small = next(p for p in paper if p.model == "gpt2-small" and p.notebook.startswith("03"))
    assert medium.flops > 5 * small.flops  # twice the layers, each about 1.8x the arithmetic


def test_estimate_is_floor_over_rate_times_the_measured_ratio():
    p = pf.plan("paper", device="cpu", rate=1e11)
    assert p.seconds() == pytest.approx(sum(x.flops for x in p.parts) / 1e11 * su.run.flops.ENGINE_OVER_FLOOR)
    only_sweep = pf.plan("paper", [su.run.profiles.TABLE_MAKERS["sweep_"]], device="cpu", rate=1e11)
    assert {x.model for x in only_sweep.parts} == {"gpt2-small", "gpt2-medium"}
    assert only_sweep.seconds() < p.seconds()
    text = "\n".join(p.lines())
    assert "ESTIMATE" in text and "device    cpu" in text and "100 GFLOP/s" in text
    assert "gpt2-medium (openai-community/gpt2-medium)" in text
    assert pf.fmt_seconds(30) == "30 s" and pf.fmt_seconds(600) == "10 min" and pf.fmt_seconds(36000) == "10.0 h"


def test_paper_on_cpu_stops_with_the_ways_on(monkeypatch):
    monkeypatch.delenv(pf.CONFIRM_VARIABLE, raising=False)
    paper = pf.plan("paper", device="cpu", rate=1e11)
    with pytest.raises(su.SNAError, match="Nothing was started") as info:
        pf.check_can_start(paper)
    assert "PROFILE=quick" in str(info.value) and f"{pf.CONFIRM_VARIABLE}=1" in str(info.value)
    pf.check_can_start(paper, confirmed=True)
    monkeypatch.setenv(pf.CONFIRM_VARIABLE, "1")
    pf.check_can_start(paper)
    monkeypatch.delenv(pf.CONFIRM_VARIABLE)
    pf.check_can_start(pf.plan("quick", device="cpu", rate=1e11))
    pf.check_can_start(pf.plan("paper", ["06_figures"], device="cpu", rate=1e11))  # no sweep chosen
    pf.check_can_start(pf.Plan("paper", "cuda", 1e13, paper.parts, True))


def test_beyond_model_part_and_unknown_shape(monkeypatch):
    """Notebook 07's grid is in the plan at the modern model's shape; a Hub id of unknown shape (offline, never
    downloaded) gets 'shape unknown' and no estimate instead of a crash; any other unknown name still raises."""
    paper, _ = pf.profile_parts(su.get_profile("paper"))
    beyond = next(p for p in paper if p.notebook == "07_beyond_gpt2")
    assert beyond.model == "Qwen/Qwen2.5-0.5B" and beyond.configurations == 12 * 24 * 7 * 8
    small = next(p for p in paper if p.model == "gpt2-small" and p.notebook.startswith("03"))
    assert beyond.flops > 5 * small.flops  # twice the layers, a wider MLP, a 3x larger vocabulary
    quick, _ = pf.profile_parts(su.get_profile("quick"))
    assert next(p for p in quick if p.notebook == "07_beyond_gpt2").configurations == 12 * 4 * 3 * 3
    monkeypatch.setattr(su.run.profiles, "hub_config", lambda hub_id: None)
    unknown = dataclasses.replace(su.get_profile("quick"), name="quick", beyond_model="org/never-downloaded")
    monkeypatch.setitem(su.run.profiles.PROFILES, "quick", unknown)
    p = pf.plan("quick", device="cpu", rate=1e11)
    part = next(x for x in p.parts if x.notebook == "07_beyond_gpt2")
    assert part.flops is None and p.seconds() == pytest.approx(sum(x.flops for x in p.parts if x.flops) / 1e11
                                                               * su.run.flops.ENGINE_OVER_FLOOR)
    text = "\n".join(p.lines())
    assert "07_beyond_gpt2: org/never-downloaded, shape unknown" in text and "total     about" in text
    assert "org/never-downloaded: to download, shape unknown" in text
    monkeypatch.setitem(su.run.profiles.PROFILES, "quick", dataclasses.replace(unknown, beyond_model="no-such-model"))
    with pytest.raises(su.SNAError, match="Unknown model 'no-such-model'"):
        pf.plan("quick", device="cpu", rate=1e11)


def test_the_benchmark_times_and_counts_every_arm_the_sweep_runs(tiny, small, monkeypatch):
    """`make bench` is like for like: its plain loop runs seven hooked passes per configuration (the three arms
    on the evaluation and the neutral prompts, SNA on the format-matched ones), and its floor is the sweep's."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark_sweep", su.KIT_ROOT / "scripts" / "benchmark_sweep.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    tasks, neutral = small
    task, formats = tasks[0], ["Format prompt one:", "Another format prompt here:"]
    calls, real = [], su.next_token_logits

    def counted(model, prompts, intervention=None, **kw):
        if intervention is not None:
            calls.append((tuple(prompts), tuple(intervention.neurons)))
        return real(model, prompts, intervention, **kw)

    monkeypatch.setattr(su, "next_token_logits", counted)
    bench.time_plain(tiny, task, neutral, formats, [1], [2], [2.0], sample=1, seed=3)  # seed: which configurations
    eval_prompts = tuple(i.prompt for i in task.evaluation)
    sets = [p for p, _ in calls]
    assert sets.count(eval_prompts) == 3 and sets.count(tuple(neutral.heldout)) == 3 and sets.count(tuple(formats)) == 1
    ranking = su.rank_neurons(su.neuron_scores(tiny, [i.prompt for i in task.discovery], neutral.discovery, 1))
    arms = [tuple(ranking[:2].tolist())] + [su.run.sweep.control_configs(tiny, 1, [2], [2.0], 0, arm)[0].neurons
                                            for arm in ("control", "control_b")]  # run_sweep's draws (seed 0)
    assert [n for p, n in calls if p == eval_prompts] == arms and len(set(arms)) == 3
    assert [n for p, n in calls if p == tuple(formats)] == arms[:1]
    lengths = {"eval": [4, 6], "neutral": [5], "formats": [3, 7]}
    flops, seconds = bench.floor_seconds(tiny, [0, 2], 6, lengths, rate=1e9)
    shape = su.run.profiles.model_shape("tiny")
    assert flops == pytest.approx(pf.grid_flops(shape, [lengths["eval"]], lengths["neutral"], [0, 2], 3, 2,
                                                [lengths["formats"]]), rel=1e-12)
    assert seconds == pytest.approx(flops / 1e9)
    monkeypatch.setattr("sys.argv", ["benchmark_sweep.py", "--model", "tiny", "--n-formats", "-2"])
    monkeypatch.setattr(su, "load_model", lambda *a, **kw: pytest.fail("a model loaded before the checks"))
    with pytest.raises(SystemExit):  # argparse's error: a negative count is refused before any work
        bench.main()


def test_the_local_profile_plan_names_its_real_models_and_what_it_leaves_out():
    """local: both packaged models said to come from their PyPI packages, offline; Gemma-3's sweep at depth-matched
    layers; no Pythia part (notebook 05 left out) and no second Gemma-3 sweep for notebook 07 (it reads 03's)."""
    prof = su.get_profile("local")
    p = pf.plan("local", device="cpu", rate=1e11)
    text = "\n".join(p.lines())
    for name in ("smollm2-135m", "gemma3-270m"):
        m = su.run.packaged.PACKAGED_MODELS[name]
        assert f"{name} ({m.hub_id}): real pretrained weights, {m.file}" in text and m.package in text
    assert [(x.notebook[:2], x.model) for x in p.parts] == [("01", "smollm2-135m"), ("03", "smollm2-135m"),
                                                              ("03", "gemma3-270m")]
    validation, smol, gemma = p.parts
    assert validation.configurations == 12 * len(prof.validation_layers)
    assert smol.configurations == gemma.configurations == 12 * 2 * 1 * 2
    assert su.depth_matched_layers(prof, "gemma3-270m") == [5, 11]
    assert prof.skip_reason("05_pythia_160m") and prof.skip_reason("03_gpt2_medium_sweep") is None
    assert prof.beyond_table("gemma3-270m") == su.sweep_table_name("gemma3-270m")
    assert su.get_profile("quick").beyond_table("Qwen/Qwen2.5-0.5B").startswith("beyond_")
