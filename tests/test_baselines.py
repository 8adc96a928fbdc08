"""The field's baselines beside SNA: the engine's steering and temperature arms against independent Hugging Face
computations, the lean options, and verdicts on planted worlds (SNA's neurons carry the task, or a steering
vector does, or a sharper softmax reproduces the negative rho)."""
import pytest
import torch

import sna_utils as su
from helpers import add_baseline_rows, synthetic_tables, trim
from sna_utils.judge.baselines import baseline_claims
from sna_utils.judge.claims import claim_of
from sna_utils.core import resid_hook
from sna_utils.run.baselines import LEAN, Steer, temperature_metrics

BLOCK = {"gpt2": "transformer.h.{}", "llama": "model.layers.{}"}  # written out: independent of the kit's loading


@pytest.fixture(scope="module", params=["tiny", "tiny-llama"])
def pair(request):
    """(kit model in float64, an independent plain HF copy of the same random weights in float64)."""
    name = request.param
    return su.load_model(name, device="cpu", dtype=torch.float64), su.build_random_hf_model(name, seed=0).double()


@torch.no_grad()
def hooked_probs(hf, model, prompts, targets, layer, vector, positions):
    """Target probabilities of the plain HF model with a forward hook on block ``layer`` adding ``vector`` to its
    output (every position, or each prompt's last real one); right padding needs no mask (causal)."""
    batch = su.encode_prompts(model, prompts)
    rows = torch.arange(len(prompts))

    def add(module, args, output):
        h = (output[0] if isinstance(output, tuple) else output).clone()
        if positions == "all":
            h += vector
        else:
            h[rows, batch.last] += vector
        return (h, *output[1:]) if isinstance(output, tuple) else h

    handle = hf.get_submodule(BLOCK[hf.config.model_type].format(layer)).register_forward_hook(add)
    try:
        logits = hf(input_ids=batch.tokens).logits[rows, batch.last].double()
    finally:
        handle.remove()
    ids = torch.tensor([su.target_tokens(model, t)[0] for t in targets])
    return logits.softmax(-1)[rows, ids], logits


@pytest.mark.parametrize("positions", ["all", "last"])
def test_steer_arm_equals_an_independent_hook(pair, tasks, positions):
    """The engine's steer rows equal a forward hook adding alpha * v to the block's output, within 1e-4 relative
    (SNA's tolerance in test_families), at a middle and the last layer."""
    model, hf = pair
    items = tasks[0].evaluation[:6]
    prompts, targets = [i.prompt for i in items], [i.target for i in items]
    ids = su.target_token_ids(model, items)
    v = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for layer in (1, su.n_layers(model) - 1):
        state = su.run.engine.layer_state(model, su.encode_prompts(model, prompts), layer)
        got = su.run.engine.engine_metrics(model, state, layer, [Steer("v", a, v) for a in (0.5, 3.0)],
                                           positions, ids).p
        for row, a in zip(got, (0.5, 3.0)):
            want, _ = hooked_probs(hf, model, prompts, targets, layer, a * v, positions)
            assert float(((row - want).abs() / want).max()) < 1e-4, (layer, a)
        assert float((got[1] / got[0] - 1).abs().max()) > 1e-2, "the vector must move probabilities"


def test_steering_vector_reads_the_blocks_output(pair, tasks):
    """The residual after block L at the last token (the steering vector's input) is HF's hidden state L + 1."""
    model, hf = pair
    prompts = [i.prompt for i in tasks[0].discovery[:5]]
    got = su.last_token_activations(model, prompts, [1], hook=resid_hook)[1]
    batch = su.encode_prompts(model, prompts)
    with torch.no_grad():
        hidden = hf(input_ids=batch.tokens, output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(got.double(), hidden[torch.arange(len(prompts)), batch.last], rtol=1e-6, atol=1e-8)


def test_steering_summary_warns_nothing(pair, tasks, neutral):
    """Notebook 02's table (the vector's norm, SNA's push, the matched alpha) is computed without autograd: no
    warning (a tensor that requires grad turned into a number warned on GPT-2), and SNA's push is its plain
    formula, ||(m - 1) act[S] @ W_out[S]|| averaged over discovery prompts, from the HF model's own weights."""
    import warnings

    model, hf = pair
    task, layer, k, m = tasks[0], 1, 5, 4.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = su.steering_summary(model, [task], neutral, layer, k, m)
    hook = su.core.hook_name(layer)
    acts = su.core.last_token_captures(model, [i.prompt for i in task.discovery], [hook])[hook].double()
    ref = su.core.last_token_captures(model, neutral.discovery, [hook])[hook]
    neurons = su.top_neurons(su.core.scores_from_activations(acts, ref, "mean_diff"), k)
    block = hf.get_submodule(BLOCK[hf.config.model_type].format(layer))
    with torch.no_grad():  # GPT-2's Conv1D stores [d_mlp, d_model]; Llama's Linear [d_model, d_mlp]
        w = block.mlp.c_proj.weight if hf.config.model_type == "gpt2" else block.mlp.down_proj.weight.T
        push = ((m - 1) * acts[:, neurons] @ w[neurons].double()).norm(dim=-1).mean()
    assert table["sna_push"].iloc[0] == pytest.approx(float(push), rel=1e-9)


def test_temperature_equals_a_plain_softmax(pair, tasks):
    """p under softmax(z / T) of the unmodified logits z, per T; top-1 is the logits' own argmax at every T."""
    model, hf = pair
    items = tasks[1].evaluation[:6]
    prompts = [i.prompt for i in items]
    ids = su.target_token_ids(model, items)
    state = su.run.engine.layer_state(model, su.encode_prompts(model, prompts), 0)
    p, top1 = temperature_metrics(model, state, 0, (0.5, 0.85), ids)
    _, logits = hooked_probs(hf, model, prompts, [i.target for i in items], 0, 0.0, "all")
    for row, hits, t in zip(p, top1, (0.5, 0.85)):
        torch.testing.assert_close(row, (logits / t).softmax(-1)[torch.arange(len(items)), ids], rtol=1e-6, atol=0)
        assert torch.equal(hits, logits.argmax(-1) == ids)
    assert not torch.allclose(p[0], p[1]), "the temperature must change the probabilities"


def test_lean_options_drop_what_they_say(tiny, tasks, neutral, tmp_path):
    """LEAN: no second control, no formats KL, no per-prompt file, no baselines, recorded in ``dropped``; the
    verdict's table refuses naming the option; a full rerun into the same folder refuses to mix; without only the
    second control the verdict still has every row and the baselines keep the grids they are given."""
    small, neu = trim(tasks, neutral, n_tasks=3)  # the verdict's rhos need three tasks
    grid = dict(layers=[1], ks=[1, 5], multipliers=[3.0], neutral=neu, progress=False)
    lean = su.run_sweep(tiny, small, out=tmp_path / "lean.parquet", **grid, **LEAN)
    assert not [c for c in lean.columns if c.startswith("control_b")] and "control_improvement_pct" in lean
    assert lean["side_effect_kl_formats"].isna().all() and set(lean["dropped"]) == {
        "control_b,formats_kl,prompt_table,baselines"}
    assert not (tmp_path / "lean.parquet" / "_prompts").exists()
    with pytest.raises(su.SNAError, match="prompt_table=False"):
        su.read_prompt_table(tmp_path / "lean.parquet")
    with pytest.raises(su.SNAError, match="other lean options"):  # the same baselines (none), another option
        su.run_sweep(tiny, small, out=tmp_path / "lean.parquet", **grid, **(LEAN | dict(control_b=True)))
    with pytest.raises(su.SNAError, match="baseline grids: none in the table"):  # with the baselines back
        su.run_sweep(tiny, small, out=tmp_path / "lean.parquet", **grid)
    with pytest.raises(su.SNAError, match="baselines=True needs prompt_table=True"):
        su.run_sweep(tiny, small, **grid, prompt_table=False)
    part = su.run_sweep(tiny, small, out=tmp_path / "part.parquet", **grid, steer_alphas=(1.0, 2.0),
                        temperatures=(0.7,), control_b=False)
    assert "control_b_improvement_pct" not in part and part["side_effect_kl_formats"].notna().all()
    prompts = su.read_prompt_table(tmp_path / "part.parquet")
    assert "control_b" not in set(prompts["arm"])
    v = su.verdict(part, prompts, "lean")  # without the second control: its column empty, every row there
    assert v["control_b"].isna().all() and v["claim"].str.startswith("SNA beats temperature").any()
    strengths = prompts.groupby("arm")["strength"].unique()
    assert sorted(strengths["steer"]) == [1.0, 2.0] and list(strengths["temperature"]) == [0.7]
    matched = prompts[prompts["arm"] == "steer_matched"].groupby("task")["strength"]
    assert (matched.nunique() == 1).all() and (matched.first() > 0).all()  # one matched alpha per (task, layer)
    n = 3 * 6  # tasks x evaluation prompts
    assert prompts.groupby("arm").size().to_dict() == {"sna": 2 * n, "control": 2 * n, "steer": 2 * n,
                                                        "steer_matched": n, "temperature": n}


def _claims(shift=None, saturation=None):
    sweep, prompts = synthetic_tables(n_prompts=40, layers=(0, 1), ks=(1,), multipliers=(2.0, 5.0))
    out = baseline_claims(add_baseline_rows(prompts, shift, saturation), sweep, "planted")
    for text in out["claim"]:
        claim_of(text)  # each row belongs to exactly one claim of judge.claims
    return out


def _verdicts(table, start):
    return table[table["claim"].str.startswith(start)]["verdict"].value_counts()


def test_sna_carrying_the_task_beats_every_baseline():
    """Baselines that do nothing: SNA (a +0.4 nat shift) beats each of them on most tasks, none contradicted."""
    out = _claims()
    for start in ("SNA beats the steering vector at equal strength on", "SNA beats the steering vector at its best on",
                  "SNA beats temperature on"):
        v = _verdicts(out, start)
        assert v.get("supported", 0) >= 6 and v.get("contradicted", 0) == 0, (start, v)


def test_a_steering_vector_carrying_the_task_is_called_for_it():
    """A steering vector that shifts log-odds by 2 nats at its best: SNA is contradicted against it on most tasks,
    while it still beats a temperature that does nothing."""
    out = _claims(shift={"steer": 2.0, "steer_matched": 2.0})
    assert _verdicts(out, "SNA beats the steering vector at its best on").get("contradicted", 0) >= 6
    assert _verdicts(out, "SNA beats the steering vector at equal strength on").get("contradicted", 0) >= 6
    assert _verdicts(out, "SNA beats temperature on").get("supported", 0) >= 6


def test_temperature_reproducing_the_negative_rho_is_said_in_plain_words():
    """A temperature whose gain grows where the model is unsure: its rho row is 'supported' and says so."""
    out = _claims(saturation={"temperature": 1.0})
    row = out[out["claim"].str.startswith("Baseline rho: temperature")].iloc[0]
    assert row["verdict"] == "supported" and row["held_out"] < 0 and "alone reproduces the negative rho" in row["claim"]
    flat = out[out["claim"].str.startswith("Baseline rho: the steering vector at its best")].iloc[0]
    assert "alone reproduces" not in flat["claim"]


def test_a_steering_vector_matched_to_another_configuration_is_not_measured():
    """A grid grown after the baselines were computed: SNA now chooses a configuration its steering vector was not
    matched to, so "at equal strength" is not measured for that task (and says why), never read at the old match."""
    from sna_utils.judge.heldout import choose_on_selection

    sweep, prompts = synthetic_tables(n_prompts=40, layers=(0, 1), ks=(1,), multipliers=(2.0, 5.0))
    prompts = add_baseline_rows(prompts)
    chosen = choose_on_selection(sweep).set_index("task")
    task = chosen.index[0]
    stale = ((prompts["arm"] == "steer_matched") & (prompts["task"] == task)
             & (prompts["multiplier"] == chosen.loc[task, "multiplier"]))
    out = baseline_claims(prompts[~stale], sweep, "grown")
    rows = out[out["claim"].str.startswith(f"SNA beats the steering vector at equal strength on {task} ")]
    assert len(rows) == 1 and rows["verdict"].iloc[0] == "not measured"
    assert "matched to another SNA configuration" in rows["claim"].iloc[0]
    others = out[out["claim"].str.startswith("SNA beats the steering vector at equal strength on")]
    assert (others["verdict"] != "not measured").sum() == len(others) - 1


def test_a_resume_with_other_baseline_grids_is_refused(tiny, tasks, neutral, tmp_path):
    small, neu = trim(tasks, neutral, n_tasks=1)
    grid = dict(layers=[1], ks=[1], multipliers=[3.0], neutral=neu, progress=False, out=tmp_path / "s.parquet")
    su.run_sweep(tiny, small, **grid, steer_alphas=(1.0,), temperatures=(0.7,))
    with pytest.raises(su.SNAError, match=r"baseline grids: steer 1; T 0\.7 in the table, steer 2; T 0\.7 now"):
        su.run_sweep(tiny, small, **grid, steer_alphas=(2.0,), temperatures=(0.7,))


def test_a_table_without_baselines_is_not_measured_naming_the_option():
    sweep, prompts = synthetic_tables(n_prompts=20, layers=(0,), ks=(1,), multipliers=(2.0,), n_tasks=3)
    out = baseline_claims(prompts, sweep, "old")
    assert (out["verdict"] == "not measured").all() and out["claim"].str.contains("baselines=True").all()
    assert len(out) == 6


def test_baselines_are_chosen_on_selection_prompts_only():
    """Redrawing the test prompts' probabilities moves no baseline's chosen (layer, strength); redrawing the
    selection prompts' does (the choice reads them)."""
    import numpy as np

    from sna_utils.judge.baselines import chosen_baselines

    sweep, prompts = synthetic_tables(n_prompts=20, layers=(0, 1), ks=(1,), multipliers=(2.0,), n_tasks=4)
    prompts = add_baseline_rows(prompts, shift={"steer": 0.5, "temperature": 0.2}, noise=1.0)
    keys = ["task", "arm", "layer", "strength"]
    want = chosen_baselines(prompts, sweep)[keys]
    rng = np.random.default_rng(0)
    for part, same in (("test", True), ("selection", False)):
        p = prompts.assign(p=np.where(prompts["part"] == part, rng.uniform(0.001, 0.999, len(prompts)), prompts["p"]))
        assert chosen_baselines(p, sweep)[keys].equals(want) == same, part


def test_the_method_note_quotes_the_default_grids():
    from pathlib import Path

    doc = " ".join((Path(__file__).resolve().parents[1] / "docs" / "method.md").read_text().split())
    for values in (su.STEER_ALPHAS, su.TEMPERATURES):
        assert f"(default {', '.join(f'{v:g}' for v in values)}" in doc
    assert su.get_profile("paper").steer_alphas == su.STEER_ALPHAS and su.get_profile("smoke").lean == ()
