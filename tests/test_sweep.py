"""The sweep's bookkeeping (table, resume, input checks) and cross-task interference."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

import sna_utils as su
from helpers import assert_same_sweep, trim


def test_table_records_settings_and_zone(tiny, tasks, neutral, tmp_path):
    small, neu = trim(tasks, neutral, n_tasks=2)
    df = su.run_sweep(tiny, small, [1], [2], [2.0], out=tmp_path / "s.csv", neutral=neu, progress=False)
    for col in su.run.store.KEY_COLUMNS + ["zone", "category", "settings_id", "score_method", "seed", "kit_version",
                                 "gain_over_control_pct"]:
        assert col in df
    assert (df["model"] == "tiny").all()
    assert all(df["zone"] == [su.zone_of(p) for p in df["p_base"]])
    on_disk = su.read_table(tmp_path / "s.csv")
    assert len(on_disk) == len(df)


def test_interrupted_sweep_resumes_without_recomputing(tiny, tasks, neutral, tmp_path, monkeypatch):
    small, neu = trim(tasks, neutral, n_tasks=2)
    out = tmp_path / "sweep.parquet"
    grid = dict(layers=[0, 1, 2], ks=[1, 5], multipliers=[2.0, 5.0])
    full = su.run_sweep(tiny, small, out=tmp_path / "ref.parquet", neutral=neu, progress=False, **grid)

    calls = {"n": 0}
    real = su.run.sweep._sweep_rows

    def dies_after_three(*args, **kwargs):
        if calls["n"] == 3:
            raise KeyboardInterrupt("power cut")
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(su.run.sweep, "_sweep_rows", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        su.run_sweep(tiny, small, out=out, neutral=neu, progress=False, **grid)
    with pytest.warns(UserWarning, match="holes in its grid: .*units missing"):  # reading it says so
        assert len(su.read_table(out)) == 3 * 2 * 2  # three (task, layer) chunks survived

    calls["n"] = -100  # count the chunks the rerun computes
    resumed = su.run_sweep(tiny, small, out=out, neutral=neu, progress=False, **grid)
    assert calls["n"] == -100 + 3, "the rerun computes only the 3 missing (task, layer) chunks"
    # the uninterrupted sweep took layers 1 and 2 from its one shared run, the resumed one from the bridge at layer 1
    assert_same_sweep(resumed.drop(columns="settings_id"), full.drop(columns="settings_id"))
    key = su.run.store.PROMPT_KEY[2:]  # the per-prompt rows resume too: each unit's file is there, once
    got, want = (su.read_prompt_table(p).sort_values(key, ignore_index=True) for p in (out, tmp_path / "ref.parquet"))
    pd.testing.assert_frame_equal(got[key], want[key])
    calls["n"] = -100
    su.run_sweep(tiny, small, out=out, neutral=neu, progress=False, **grid)
    assert calls["n"] == -100, "a finished sweep recomputes nothing"


def test_sweep_rejects_bad_grid_before_work(tiny, tasks, neutral, tmp_path):
    small, neu = trim(tasks, neutral, n_tasks=2)
    bad = dict(out=tmp_path / "x.parquet", neutral=neu, progress=False)
    with pytest.raises(su.SNAError, match="does not exist"):
        su.run_sweep(tiny, small, [0, 7], [1], [2.0], **bad)
    with pytest.raises(su.SNAError, match="out of range"):
        su.run_sweep(tiny, small, [0], [1, 1000], [2.0], **bad)
    with pytest.raises(su.SNAError, match="finite"):
        su.run_sweep(tiny, small, [0], [1], [2.0, float("nan")], **bad)
    broken = [su.Task("broken", "x", "", small[0].discovery, (su.Item("2 + 2 =", " four score"),))]
    with pytest.raises(su.SNAError, match="four score"):
        su.run_sweep(tiny, broken, [0], [1], [2.0], **bad)
    with pytest.raises(su.SNAError, match=".parquet or .csv"):
        su.run_sweep(tiny, small, [0], [1], [2.0], out=tmp_path / "x.xlsx", neutral=neu)
    assert not (tmp_path / "x.parquet").exists()


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
    sid = sweep["settings_id"].iloc[0]
    inter = su.cross_task_interference(tiny, t, 2, 5, 2.0, neutral=neu, settings_id=sid)
    assert (inter["settings_id"] == sid).all()
    check = su.run.store.check_made_for
    check(inter, sweep, "interference table", "")  # made for this sweep
    with pytest.raises(su.SNAError, match=f"interference table was made for the sweep with settings_id "
                                          f"0123456789ab; this sweep's is {sid}"):
        check(inter.assign(settings_id="0123456789ab"), sweep, "interference table", "")
    diag = inter[inter["same_task"]].set_index("target_task")
    rows = sweep[(sweep["layer"] == 2) & (sweep["k"] == 5) & (sweep["multiplier"] == 2.0)].set_index("task")
    for name in diag.index:
        assert math.isclose(diag.loc[name, "p_sna"], rows.loc[name, "p_sna"], rel_tol=1e-4)
        assert diag.loc[name, "jaccard"] == 1.0
        for col in ("p_base_selection", "p_base_test", "improvement_pct_selection", "improvement_pct_test"):
            assert math.isclose(diag.loc[name, col], rows.loc[name, col], rel_tol=1e-4, abs_tol=1e-6), col
    summary = su.interference_summary(inter)
    assert list(summary["source_task"]) == [x.name for x in t]
    assert summary["own_improvement_pct"].tolist() == pytest.approx(diag.loc[summary["source_task"],
                                                                               "improvement_pct"].tolist())
    test = su.interference_summary(inter, part="test")  # the held-out reading of the same table
    assert test["own_improvement_pct"].tolist() == pytest.approx(diag.loc[test["source_task"],
                                                                           "improvement_pct_test"].tolist())
    assert not np.allclose(test["own_improvement_pct"], summary["own_improvement_pct"])
    with pytest.raises(su.SNAError, match="improvement_pct_test"):
        su.interference_summary(inter.drop(columns="improvement_pct_test"), part="test")


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


def test_task_names_are_loaded(tiny, tasks, neutral):
    _, neu = trim(tasks, neutral)
    grid = dict(layers=[1], ks=[2], multipliers=[2.0], neutral=neu, progress=False)
    by_name = su.run_sweep(tiny, ["addition"], **grid)
    by_task = su.run_sweep(tiny, su.load_tasks(["addition"]), **grid)
    pd.testing.assert_frame_equal(by_name, by_task)
    with pytest.raises(su.SNAError, match="Unknown task"):
        su.run_sweep(tiny, ["addition", "telepathy"], **grid)
    with pytest.raises(su.SNAError, match="Task objects .* or task names"):
        su.run_sweep(tiny, [3], **grid)
    pd.testing.assert_frame_equal(su.run_sweep(tiny, "addition", **grid), by_task)  # one name alone
    with pytest.raises(su.SNAError, match="No tasks"):
        su.run_sweep(tiny, [], **grid)


def test_start_line_without_out_path(tiny, tasks, neutral, capsys):
    small, neu = trim(tasks, neutral, n_tasks=1)
    su.run_sweep(tiny, small, [1], [2], [2.0], neutral=neu, progress=False)
    line = capsys.readouterr().out.splitlines()[0]
    assert "None" not in line and "nothing saved (no `out` path), 1 to run" in line


def test_unknown_option_is_refused_before_work(tiny, tasks, neutral, tmp_path):
    small, neu = trim(tasks, neutral, n_tasks=1)
    with pytest.raises(su.SNAError, match=r"unknown option\(s\) \['precisoin'\]"):
        su.run_sweep(tiny, small, [1], [2], [2.0], neutral=neu, out=tmp_path / "s.parquet", precisoin="fp16")
    assert not (tmp_path / "s.parquet").exists()


def test_units_computed_one_by_one_equal_the_sweep(tiny, small, sweep):
    """run_unit (what a Ray task runs) in one worker's cache, units out of order, gives the sweep's rows."""
    t, neu = small
    fmt = {x.name: f for x in t for n, f in su.run.sweep.format_sets(None, 0).items() if n == x.name}
    settings = su.run.store.SweepSettings("tiny", "all", "mean_diff", 0, su.run.store.data_fingerprint(t, neu, fmt),
                                          revision=su.model_revision(tiny),
                                          baseline_grids=su.run.baselines.baseline_grids({}))
    plan = su.run.sweep.SweepPlan({x.name: x for x in t}, (0, 1, 2), (1, 5), (2.0, 5.0), "all", neu, "mean_diff", 0,
                              settings, None, frozenset(), dict(max_tokens=16384), fmt)
    cache: dict = {}  # one worker's cache across units, out of the sweep's order (a shared run falls back)
    units = [su.run.sweep.run_unit(tiny, plan, x.name, L, cache) for L in (2, 0) for x in t[::-1]]
    got = pd.concat(units).sort_values(["task", "layer", "k", "multiplier"], ignore_index=True)
    expected = sweep[sweep["layer"].isin([0, 2])].reset_index(drop=True)  # the sweep's layer 2: its shared run
    assert_same_sweep(got, expected)


def test_a_last_position_sweep_on_the_general_path_equals_its_units_from_the_bridge(tiny_pythia, small):
    """positions="last" on the general path (float32, fused attention): the sweep, whose layers 1 and 2 come from one
    shared run a prompt set (states, final residual, keys and values), equals each unit computed alone from the
    bridge's states."""
    t, neu = small
    grid = dict(layers=[0, 1, 2], ks=[1, 5], multipliers=[2.0, 5.0], positions="last", neutral=neu, progress=False)
    swept = su.run_sweep(tiny_pythia, t[:2], **grid)
    alone = [su.run_sweep(tiny_pythia, [x], [L], **{k: v for k, v in grid.items() if k != "layers"})
             for x in t[:2] for L in (1, 2)]
    per_run = ["settings_id", "data_sha"]  # the runs' task sets differ, so their fingerprints do
    got = swept[swept["layer"] > 0].drop(columns=per_run).reset_index(drop=True)
    want = pd.concat(alone).sort_values(["task", "layer", "k", "multiplier"], ignore_index=True)
    assert_same_sweep(got, want.drop(columns=per_run))


def test_a_bfloat16_model_takes_every_layer_from_the_bridge(small):
    """A 16-bit model's own blocks round unlike the bridge's (1.5e-2 of a probability), so its sweep shares no
    states across layers: its numbers equal each unit computed alone, to the bit, whatever the order units ran in."""
    model = su.load_model("tiny-pythia", device="cpu", dtype=torch.bfloat16)
    t, neu = small
    grid = dict(ks=[1, 5], multipliers=[2.0, 5.0], neutral=neu, progress=False)
    swept = su.run_sweep(model, t[:1], [0, 1, 2], **grid)
    alone = pd.concat([su.run_sweep(model, t[:1], [L], **grid) for L in (1, 2)], ignore_index=True)
    pd.testing.assert_frame_equal(swept[swept["layer"] > 0].reset_index(drop=True), alone, check_exact=True)


# --- issue 15: selection/test parts, the second control, per-prompt results, format-matched prompts ---------

def _small_formats(t, n=8):
    """Trimmed format-matched neutral prompts for the trimmed tasks (``n`` per task)."""
    return {x.name: su.load_neutral_formats()[x.name][:n] for x in t}


@pytest.fixture(scope="module")
def saved(tiny, small, tmp_path_factory):
    """A sweep of the tiny model into a dataset, with its per-prompt table."""
    t, neu = small
    t = [su.Task(x.name, x.category, x.description, x.discovery, x.evaluation + x.discovery[:4]) for x in t]
    out = tmp_path_factory.mktemp("saved") / "s.parquet"
    df = su.run_sweep(tiny, t, [1, 2], [1, 5], [2.0, 5.0], neutral=neu, out=out, progress=False,
                      formats=_small_formats(t))
    return t, neu, df, su.read_prompt_table(out)


def test_parts_are_the_core_split_and_share_no_prompt(saved):
    t, _, df, prompts = saved
    for x in t:
        sel, test = su.split_selection_test(x, 0)
        p = prompts[(prompts["task"] == x.name)].drop_duplicates("prompt_id").set_index("prompt_id")["part"]
        got = {part: [x.evaluation[i] for i in sorted(p.index[p == part])] for part in ("selection", "test")}
        assert got == {"selection": list(sel), "test": list(test)}
        assert not set(p.index[p == "selection"]) & set(p.index[p == "test"])
        assert len(p) == len(x.evaluation)
        row = df[df["task"] == x.name].iloc[0]
        assert (row["n_selection"], row["n_test"]) == (len(sel), len(test))


def test_per_prompt_table_equals_the_plain_hooked_loop(tiny, saved):
    """Every arm's per-prompt probability equals the plain hooked forward pass with that arm's neurons."""
    t, neu, _, prompts = saved
    x, L, k, m = t[1], 2, 5, 5.0
    scores = su.neuron_scores(tiny, [i.prompt for i in x.discovery], neu.discovery, L)
    neurons = {"sna": su.top_neurons(scores, k), "control": su.random_neurons(su.d_mlp(tiny), k, 0, L),
               "control_b": su.random_neurons(su.d_mlp(tiny), k, 1, L)}
    assert neurons["control"] != neurons["control_b"]
    texts, targets = [i.prompt for i in x.evaluation], [i.target for i in x.evaluation]
    base = su.target_probs(tiny, texts, targets).double().numpy()
    for arm, ns in neurons.items():
        want = su.target_probs(tiny, texts, targets, su.Intervention(L, ns, m, "all")).double().numpy()
        got = prompts[(prompts["task"] == x.name) & (prompts["layer"] == L) & (prompts["k"] == k)
                      & (prompts["multiplier"] == m) & (prompts["arm"] == arm)].sort_values("prompt_id")
        np.testing.assert_allclose(got["p"], want, rtol=1e-4, atol=1e-10, err_msg=arm)
        np.testing.assert_allclose(got["p_base"], base, rtol=1e-4, atol=1e-10)


def test_part_columns_are_recomputed_from_the_per_prompt_table(saved):
    """Each arm's columns on each part equal the means of its per-prompt rows (and all-prompt columns stay)."""
    _, _, df, prompts = saved
    key = ["task", "layer", "k", "multiplier"]
    for arm in ("sna", "control", "control_b"):
        a = prompts[prompts["arm"] == arm]
        for part in (None, "selection", "test"):
            sub = a if part is None else a[a["part"] == part]
            g = sub.groupby(key)
            rec = pd.DataFrame({"p_sna": g["p"].mean(), "p_base": g["p_base"].mean(), "top1_sna": g["top1"].mean(),
                                "success_rate": g.apply(lambda d: (d["p"] > d["p_base"]).mean(), include_groups=False)})
            rec["improvement_pct"] = 100 * (rec["p_sna"] - rec["p_base"]) / rec["p_base"]
            merged = df.set_index(key).join(rec.add_suffix("_rec"))
            for metric in ("p_sna", "improvement_pct", "success_rate", "top1_sna"):
                col = su.arm_column(metric, arm)
                col = col if part is None else su.part_column(col, part)
                np.testing.assert_allclose(merged[col], merged[f"{metric}_rec"], rtol=1e-6, err_msg=col)  # float32 means
            if part is not None:
                np.testing.assert_allclose(merged[f"p_base_{part}"], merged["p_base_rec"], rtol=1e-9)
    np.testing.assert_allclose(df["gain_over_control_pct"], df["improvement_pct"] - df["control_improvement_pct"])


def test_side_effect_on_format_matched_prompts_equals_plain_kl(tiny, saved):
    t, neu, df, _ = saved
    x, L, k, m = t[0], 1, 5, 2.0
    held = su.split_neutral(_small_formats(t)[x.name], 0).heldout
    scores = su.neuron_scores(tiny, [i.prompt for i in x.discovery], neu.discovery, L)
    iv = su.Intervention(L, su.top_neurons(scores, k), m, "all")
    want = float(su.kl_divergence(su.next_token_logits(tiny, held), su.next_token_logits(tiny, held, iv)).mean())
    row = df[(df["task"] == x.name) & (df["layer"] == L) & (df["k"] == k) & (df["multiplier"] == m)].iloc[0]
    assert math.isclose(row["side_effect_kl_formats"], want, rel_tol=1e-2, abs_tol=1e-7)
    assert not math.isclose(row["side_effect_kl_formats"], row["side_effect_kl"], rel_tol=1e-3)


def test_format_reference_changes_discovery_and_is_checked(tiny, small):
    t, neu = small
    fm = _small_formats(t)
    kw = dict(neutral=neu, progress=False, formats=fm)
    a = su.run_sweep(tiny, t[:1], [2], [5], [5.0], **kw)
    b = su.run_sweep(tiny, t[:1], [2], [5], [5.0], reference="formats", **kw)
    assert (b["reference"] == "formats").all() and b["settings_id"].iloc[0] != a["settings_id"].iloc[0]
    scores = su.neuron_scores(tiny, [i.prompt for i in t[0].discovery], su.split_neutral(fm[t[0].name]).discovery, 2)
    iv = su.Intervention(2, su.top_neurons(scores, 5), 5.0, "all")
    base, o = su.measure(tiny, t[0].evaluation, iv)
    assert math.isclose(b["p_sna"].iloc[0], o.p_sna, rel_tol=1e-4)
    with pytest.raises(su.SNAError, match="reference='formats' needs"):
        su.run_sweep(tiny, t[:1], [2], [5], [5.0], reference="formats", neutral=neu, formats={})
    with pytest.raises(su.SNAError, match="reference='prose'"):
        su.run_sweep(tiny, t[:1], [2], [5], [5.0], reference="prose", neutral=neu)


def test_every_unit_saves_its_per_prompt_rows_once(saved):
    t, _, df, prompts = saved
    assert not prompts.duplicated(su.run.store.PROMPT_KEY).any()
    arms = prompts["arm"].isin(su.judge.heldout.ARMS)
    assert arms.sum() == sum(3 * len(x.evaluation) for x in t) * 2 * 4
    per_unit = len(su.STEER_ALPHAS) + 1 + len(su.TEMPERATURES)  # the baselines: alphas, the matched one, Ts
    assert (~arms).sum() == sum(per_unit * len(x.evaluation) for x in t) * 2
    assert list(prompts.columns) == su.run.store.PROMPT_COLUMNS
    with pytest.raises(su.SNAError, match="No per-prompt table"):
        su.read_prompt_table(saved[0][0].name + "-missing.parquet")


@pytest.mark.parametrize("resume, lean", [(False, False), (True, False), (False, True)])
def test_the_flop_count_is_what_the_engine_runs(tiny, small, tmp_path, monkeypatch, capsys, resume, lean):
    """``flops.sweep_unit_flops`` (the sweep's estimate, the pre-flight, ``make bench``) counts exactly the
    configurations x prompts that ``run_sweep`` hands the engine, every arm and prompt set, also on a resume
    and in lean mode (two arms, no formats KL, no baselines)."""
    options = su.LEAN if lean else {}
    t, neu = small
    layers, ks, ms = [1, 2], [1, 3], [2.0]
    fmt = {x.name: [f"Off-task line {i} for {x.name}:" for i in range(4 + j)] for j, x in enumerate(t)}
    out = tmp_path / "s.parquet"
    if resume:  # an interrupted run: every unit at layer 1 but the first task's is saved
        su.run_sweep(tiny, t, [1], ks, ms, neutral=neu, formats=fmt, out=out, progress=False)
        lost = [f for f in out.rglob(f"*{t[0].name}*") if f.is_file()]
        assert len(lost) == 2  # its unit file and its per-prompt file
        for f in lost:
            f.unlink()
    ran, real = [], su.run.sweep.engine_metrics

    def counted(model, state, layer, configs, *args, **kw):
        if list(configs) != [su.run.engine.IDENTITY]:  # the unmodified run is not a configuration
            lengths = [g.resid_after.shape[1] for g in state.groups for _ in range(len(g.index))]
            ran.append(su.run.flops.prompts_flop_floor(model, layer, len(configs), lengths))
        return real(model, state, layer, configs, *args, **kw)

    monkeypatch.setattr(su.run.sweep, "engine_metrics", counted)
    monkeypatch.setattr(su.run.baselines, "engine_metrics", counted)  # the steering-vector baselines
    monkeypatch.setattr(su.run.sweep, "matmul_rate", lambda *a, **kw: 1e6)  # slow enough for a 0.1-min resolution
    su.run_sweep(tiny, t, layers, ks, ms, neutral=neu, formats=fmt, out=out, progress=False, **options)
    minutes = float(capsys.readouterr().out.split("estimated ")[-1].split(" min")[0])
    assert minutes > 10 and minutes == pytest.approx(sum(ran) / 1e6 * su.run.flops.ENGINE_OVER_FLOOR / 60, abs=0.051)
