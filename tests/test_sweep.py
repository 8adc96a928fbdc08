"""The sweep engine against the plain per-configuration loop, and its bookkeeping."""
import math

import pandas as pd
import pytest
import torch

import sna_utils as su

METRICS = ["p_base", "p_sna", "improvement_pct", "success_rate", "top1_base", "top1_sna", "side_effect_kl",
           "control_p_sna", "control_improvement_pct", "control_success_rate", "control_side_effect_kl"]


def _small(tasks, neutral):
    """Two tasks, trimmed prompt sets: enough to exercise every code path quickly."""
    two = [su.Task(t.name, t.category, t.description, t.discovery[:8], t.evaluation[:6]) for t in tasks[:2]]
    return two, su.NeutralSet(neutral.discovery[:10], neutral.heldout[:6])


def _plain_rows(model, tasks, neutral, layers, ks, ms, positions, seed=0):
    """The plain way: discover with neuron_scores, measure each configuration with full hooked passes."""
    rows = []
    for t in tasks:
        for L in layers:
            scores = su.neuron_scores(model, [i.prompt for i in t.discovery], neutral.discovery, L)
            for k in ks:
                for m in ms:
                    base, o = su.measure(model, t.evaluation, su.Intervention(L, su.top_neurons(scores, k), m, positions),
                                         neutral.heldout)
                    ctrl = su.Intervention(L, su.random_neurons(su.d_mlp(model), k, seed, L), m, positions)
                    _, oc = su.measure(model, t.evaluation, ctrl, neutral.heldout)
                    rows.append(dict(task=t.name, layer=L, k=k, multiplier=m, p_base=base.p_mean, p_sna=o.p_sna,
                                     improvement_pct=o.improvement_pct, success_rate=o.success_rate,
                                     top1_base=float(base.top1.float().mean()), top1_sna=o.top1_sna,
                                     side_effect_kl=o.side_effect_kl, control_p_sna=oc.p_sna,
                                     control_improvement_pct=oc.improvement_pct,
                                     control_success_rate=oc.success_rate, control_side_effect_kl=oc.side_effect_kl))
    return pd.DataFrame(rows).sort_values(["task", "layer", "k", "multiplier"], ignore_index=True)


def _assert_close(a, b, col, rtol=1e-4):
    for x, y in zip(a[col], b[col]):
        assert math.isclose(x, y, rel_tol=rtol, abs_tol=1e-9), (col, x, y)


@pytest.fixture(scope="module", params=["tiny", "tiny-pythia"])
def tiny64(request):
    """Float64 copies: fp32 rounding (~1e-6) cannot hide or fake a difference between the two paths."""
    return su.load_model(request.param, device="cpu", dtype=torch.float64)


def _engine_vs_plain(model, tasks, neutral, positions, out):
    small, neu = _small(tasks, neutral)
    layers, ks, ms = [0, 1, 2], [1, 40], [0.0, 10.0]
    engine = su.run_sweep(model, small, layers, ks, ms, positions, out=out, neutral=neu, progress=False)
    plain = _plain_rows(model, small, neu, layers, ks, ms, positions)
    assert len(engine) == len(plain) == 2 * 3 * 2 * 2
    assert engine[["task", "layer", "k", "multiplier"]].equals(plain[["task", "layer", "k", "multiplier"]])
    assert (engine["improvement_pct"].abs() > 1).any(), "the grid must actually move probabilities"
    assert (engine["side_effect_kl"] > 1e-4).any()
    return engine, plain


@pytest.mark.parametrize("positions", ["all", "last"])
def test_engine_equals_plain_loop(tiny64, tasks, neutral, positions, tmp_path):
    """Every metric of every configuration within a relative error of 1e-4 (float64 on both paths)."""
    engine, plain = _engine_vs_plain(tiny64, tasks, neutral, positions, tmp_path / "s.parquet")
    for col in METRICS:
        _assert_close(engine, plain, col)


def test_engine_equals_plain_loop_float32(any_tiny, tasks, neutral, tmp_path):
    """The same in float32, the kit's working precision: probabilities to 1e-4 relative; differences
    of nearly equal probabilities (improvement %, KL) to float32 noise."""
    engine, plain = _engine_vs_plain(any_tiny, tasks, neutral, "all", tmp_path / "s.parquet")
    for col in METRICS:
        if "kl" in col:
            for x, y in zip(engine[col], plain[col]):
                assert math.isclose(x, y, rel_tol=1e-2, abs_tol=1e-6), (col, x, y)
        elif "improvement" in col:
            for x, y in zip(engine[col], plain[col]):
                assert math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-3), (col, x, y)
        else:
            _assert_close(engine, plain, col)


def test_table_records_settings_and_zone(tiny, tasks, neutral, tmp_path):
    small, neu = _small(tasks, neutral)
    df = su.run_sweep(tiny, small, [1], [2], [2.0], out=tmp_path / "s.csv", neutral=neu, progress=False)
    for col in su.KEY_COLUMNS + ["zone", "category", "settings_id", "score_method", "seed", "kit_version",
                                 "gain_over_control_pct"]:
        assert col in df
    assert (df["model"] == "tiny").all()
    assert all(df["zone"] == [su.zone_of(p) for p in df["p_base"]])
    on_disk = su.read_table(tmp_path / "s.csv")
    assert len(on_disk) == len(df)


def test_interrupted_sweep_resumes_without_recomputing(tiny, tasks, neutral, tmp_path, monkeypatch):
    small, neu = _small(tasks, neutral)
    out = tmp_path / "sweep.parquet"
    grid = dict(layers=[0, 1, 2], ks=[1, 5], multipliers=[2.0, 5.0])
    full = su.run_sweep(tiny, small, out=tmp_path / "ref.parquet", neutral=neu, progress=False, **grid)

    calls = {"n": 0}
    real = su._sweep_rows

    def dies_after_three(*args, **kwargs):
        if calls["n"] == 3:
            raise KeyboardInterrupt("power cut")
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(su, "_sweep_rows", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        su.run_sweep(tiny, small, out=out, neutral=neu, progress=False, **grid)
    assert len(su.read_table(out)) == 3 * 2 * 2  # three (task, layer) chunks survived

    calls["n"] = -100  # count the chunks the rerun computes
    resumed = su.run_sweep(tiny, small, out=out, neutral=neu, progress=False, **grid)
    assert calls["n"] == -100 + 3, "the rerun computes only the 3 missing (task, layer) chunks"
    pd.testing.assert_frame_equal(resumed.drop(columns="settings_id"), full.drop(columns="settings_id"),
                                  check_exact=False, rtol=1e-6)
    calls["n"] = -100
    su.run_sweep(tiny, small, out=out, neutral=neu, progress=False, **grid)
    assert calls["n"] == -100, "a finished sweep recomputes nothing"


def test_other_settings_never_mix(tiny, tasks, neutral, tmp_path):
    small, neu = _small(tasks, neutral)
    out = tmp_path / "s.parquet"
    su.run_sweep(tiny, small, [1], [2], [2.0], out=out, neutral=neu, progress=False)
    with pytest.raises(su.SNAError, match="other settings"):
        su.run_sweep(tiny, small, [1], [2], [2.0], positions="last", out=out, neutral=neu, progress=False)
    with pytest.raises(su.SNAError, match="other settings"):
        su.run_sweep(tiny, small, [1], [2], [2.0], score_method="zscore", out=out, neutral=neu, progress=False)
    assert len(su.read_table(out)) == 2  # untouched


def test_cut_off_write_leaves_table_intact(tmp_path, monkeypatch):
    out = tmp_path / "t.parquet"
    good = pd.DataFrame({"a": [1, 2, 3]})
    su.write_table_atomic(good, out)

    def broken(self, path, **kw):
        with open(path, "wb") as f:
            f.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError):
        su.write_table_atomic(pd.DataFrame({"a": [9]}), out)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(su.read_table(out), good)


def test_sweep_rejects_bad_grid_before_work(tiny, tasks, neutral, tmp_path):
    small, neu = _small(tasks, neutral)
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


def test_engine_reuses_topk_ordering(tiny, tasks, neutral):
    """Top-k sets are nested prefixes of one ranking per (task, layer)."""
    t = tasks[0]
    scores = su.neuron_scores(tiny, [i.prompt for i in t.discovery], neutral.discovery, 2)
    ranking = su.rank_neurons(scores)
    for k in (1, 5, 50):
        assert su.top_neurons(scores, k) == ranking[:k].tolist()


def test_summary_statistics(tiny, tasks, neutral, tmp_path):
    small, neu = _small(tasks, neutral)
    df = su.run_sweep(tiny, small, [0, 2], [1, 5], [2.0, 5.0], neutral=neu, progress=False)
    summary = su.task_summary(df)
    assert len(summary) == 2
    for _, row in summary.iterrows():
        sub = df[df["task"] == row["task"]]
        assert row["best_improvement_pct"] == sub["improvement_pct"].max()
        assert row["mean_improvement_pct"] == pytest.approx(sub["improvement_pct"].mean())
    g = su.golden_zone(df, min_improvement_pct=-1e9, max_kl=1e9)
    assert len(g) == len(df)
    assert len(su.golden_zone(df, min_improvement_pct=1e9)) == 0
