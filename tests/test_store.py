"""The results table: a dataset of one file per unit that concurrent or killed writers never damage;
settings never mix; single-file tables of earlier versions still read."""

import os
import signal
import threading
import time

import pandas as pd
import pytest

import sna_utils as su
from helpers import GRID, assert_same_rows, sweep_process, trim


def count_units(monkeypatch) -> dict:
    """{"n": how many units the sweep computes from now on} (``_sweep_rows`` counted, still run)."""
    calls = {"n": 0}
    real = su.run.sweep._sweep_rows

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(su.run.sweep, "_sweep_rows", counting)
    return calls


def test_other_settings_never_mix(tiny, tasks, neutral, tmp_path):
    small, neu = trim(tasks, neutral, n_tasks=2)
    out = tmp_path / "s.parquet"
    su.run_sweep(tiny, small, [1], [2], [2.0], out=out, neutral=neu, progress=False)
    with pytest.raises(su.SNAError, match="other settings"):
        su.run_sweep(tiny, small, [1], [2], [2.0], positions="last", out=out, neutral=neu, progress=False)
    with pytest.raises(su.SNAError, match="other settings"):
        su.run_sweep(tiny, small, [1], [2], [2.0], score_method="zscore", out=out, neutral=neu, progress=False)
    with pytest.raises(su.SNAError, match="precision: float32 in the table, bfloat16 now"):
        su.run_sweep(tiny, small, [1], [2], [2.0], precision="bfloat16", out=out, neutral=neu, progress=False)
    assert len(su.read_table(out)) == 2  # untouched
    assert (su.read_table(out)["precision"] == "float32").all()


def test_settings_mismatch_names_each_setting_and_both_values(tiny, tasks, neutral, tmp_path):
    small, neu = trim(tasks, neutral, n_tasks=1)
    out = tmp_path / "s.parquet"
    su.run_sweep(tiny, small, [1], [2], [2.0], out=out, neutral=neu, progress=False)
    with pytest.raises(su.SNAError) as e:
        su.run_sweep(tiny, small, [1], [2], [2.0], positions="last", seed=3, out=out, neutral=neu, progress=False)
    msg = str(e.value)
    assert "positions: all in the table, last now" in msg and "seed: 0 in the table, 3 now" in msg
    assert "model:" not in msg and "score method:" not in msg
    other = [su.Task(small[0].name, "x", "", small[0].discovery[1:], small[0].evaluation)]
    with pytest.raises(su.SNAError, match=r"\(data: [0-9a-f]{12} in the table, [0-9a-f]{12} now\)"):
        su.run_sweep(tiny, other, [1], [2], [2.0], out=out, neutral=neu, progress=False)


def test_dataset_holds_one_file_per_unit_and_reads_anywhere(tiny, tasks, neutral, tmp_path):
    small, neu = trim(tasks, neutral, n_tasks=2)
    out = su.results_dir("smoke", tmp_path) / su.sweep_table_name("tiny")  # where notebook 03 writes it
    df = su.run_sweep(tiny, small, [0, 2], out=out, neutral=neu, progress=False, **GRID)
    files = su.run.store.unit_files(out)
    assert out.is_dir() and len(files) == 2 * 2
    assert all(len(su.read_table(f)) == 2 * 2 for f in files)  # one (task, layer) each, all its k x m
    assert_same_rows(su.read_table(out), df)
    assert_same_rows(pd.read_parquet(out), df)  # pandas/pyarrow read the folder directly
    assert_same_rows(su.results_table(out.name, "smoke", tmp_path), df)  # how notebook 05 reads it
    assert su.first_available_table([out.name], "smoke", tmp_path)[0] == out.name
    (out / ".sweep_tiny.tmp-1").write_bytes(b"PAR1 half")  # a killed writer's temporary is never read
    assert_same_rows(su.read_table(out), df)


def test_single_file_table_reads_and_becomes_a_dataset(tiny, tasks, neutral, tmp_path, monkeypatch):
    small, neu = trim(tasks, neutral, n_tasks=2)
    grid = dict(layers=[0, 1], neutral=neu, progress=False, **GRID)
    full = su.run_sweep(tiny, small, **grid)
    old = tmp_path / "old.parquet"
    su.write_table_atomic(full[full["layer"] == 0], old)  # what kit 0.1.0 wrote after layer 0
    assert len(su.read_table(old)) == 2 * 4
    calls = count_units(monkeypatch)
    with pytest.warns(UserWarning, match="per-prompt file .* is missing; moved aside") as caught:
        resumed = su.run_sweep(tiny, small, out=old, **grid)
    # kit 0.1.0 kept no per-prompt table, which the verdict reads: its layer-0 units are not done and are redone
    assert calls["n"] == 4 and len([w for w in caught if "moved aside" in str(w.message)]) == 2
    assert old.is_dir() and len(su.run.store.unit_files(old)) == 4 and not list(tmp_path.glob(".old*"))
    assert_same_rows(resumed, full)
    assert_same_rows(su.read_table(old), full)


def test_damaged_tables_are_named_and_left_untouched(tiny, tasks, neutral, tmp_path):
    small, neu = trim(tasks, neutral, n_tasks=1)
    bad = tmp_path / "s.parquet"
    bad.write_bytes(b"not a parquet file")
    with pytest.raises(su.SNAError, match=r"s\.parquet is not a readable parquet file"):
        su.run_sweep(tiny, small, [1], [2], [2.0], out=bad, neutral=neu, progress=False)
    assert bad.read_bytes() == b"not a parquet file"
    out = tmp_path / "d.parquet"
    su.run_sweep(tiny, small, [1], [2], [2.0], out=out, neutral=neu, progress=False)
    unit = su.run.store.unit_files(out)[0]
    unit.write_bytes(b"PAR1 cut")
    with pytest.raises(su.SNAError, match=unit.name.replace(".", r"\.")):
        su.read_table(out)
    assert unit.read_bytes() == b"PAR1 cut"


def _half(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {  # how a unit can be left not done, and what the warning says of it
    "prompt file deleted": (lambda u, p: p.unlink(), "its per-prompt file .* is missing"),
    "prompt file cut in half": (lambda u, p: _half(p), "its per-prompt file .* is not readable"),
    "unit file cut in half": (lambda u, p: _half(u), "its file is not readable"),
    "unit file at zero bytes": (lambda u, p: u.write_bytes(b""), "its file is not readable"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_unit_not_done_is_moved_aside_and_recomputed(tiny, tasks, neutral, tmp_path, monkeypatch, damage):
    """A unit is done only when its main and per-prompt files both read with every row; a resume recomputes
    exactly the one that is not, keeps the damaged files aside, and warns once naming it."""
    small, neu = trim(tasks, neutral, n_tasks=2)
    grid = dict(layers=[0, 1, 2], neutral=neu, progress=False, **GRID)
    out = tmp_path / "s.parquet"
    full = su.run_sweep(tiny, small, out=out, **grid)
    n_prompts = len(su.read_prompt_table(out))
    unit = su.run.store.unit_files(out)[1]
    hurt, says = DAMAGES[damage]
    hurt(unit, out / "_prompts" / unit.name)
    calls = count_units(monkeypatch)
    with pytest.warns(UserWarning, match=f"{unit.name}: {says}; moved aside") as caught:
        resumed = su.run_sweep(tiny, small, out=out, **grid)
    assert len([w for w in caught if "moved aside" in str(w.message)]) == 1
    assert calls["n"] == 1, "only the damaged unit is recomputed"
    assert_same_rows(resumed, full)
    assert_same_rows(su.read_table(out), full)
    assert len(su.read_prompt_table(out)) == n_prompts
    assert len(list(out.glob(f".{unit.name}.set-aside-*"))) == 1  # kept for inspection


def test_a_hole_in_the_per_prompt_table_names_the_missing_units(tiny, tasks, neutral, tmp_path):
    small, neu = trim(tasks, neutral, n_tasks=1)
    out = tmp_path / "s.parquet"
    su.run_sweep(tiny, small, [0, 1], [2], [2.0], out=out, neutral=neu, progress=False)
    unit = su.run.store.unit_files(out)[0]
    (out / "_prompts" / unit.name).unlink()
    with pytest.raises(su.SNAError, match=f"lacks 1 unit\\(s\\): {unit.name.replace('.', '[.]')}"):
        su.read_prompt_table(out)


def test_writes_use_unique_temporaries_and_fsync_file_and_folder(tmp_path, monkeypatch):
    """Threads of one process writing one path never share a temporary; the file and the folder are synced."""
    df = pd.DataFrame({"a": range(1000)})
    path = tmp_path / "t.parquet"
    errors = []

    def write():
        try:
            for _ in range(20):
                su.write_table_atomic(df, path)
        except Exception as e:  # noqa: BLE001 - the test reports any
            errors.append(e)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    pd.testing.assert_frame_equal(su.read_table(path), df)
    assert [f.name for f in tmp_path.iterdir()] == ["t.parquet"]  # no temporary left
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.path.isdir(f"/proc/self/fd/{fd}")), real(fd)))
    su.write_table_atomic(df, tmp_path / "u.csv")
    assert synced.count(False) >= 1 and synced.count(True) >= 2  # the file; the folder before and after


@pytest.mark.slow
def test_concurrent_sweeps_into_one_dataset_lose_nothing(tiny, tasks, neutral, tmp_path):
    """Two processes sweep layers {0, 1} and {1, 2} of one model into one folder at the same time."""
    out = tmp_path / "shared.parquet"
    procs = [sweep_process(out, [0, 1], 6), sweep_process(out, [1, 2], 6)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    small, neu = trim(tasks, neutral, n_tasks=6)
    reference = su.run_sweep(tiny, small, [0, 1, 2], neutral=neu, progress=False, **GRID)
    assert_same_rows(su.read_table(out), reference)  # every row of both, none twice
    assert len(su.run.store.unit_files(out)) == 6 * 3


@pytest.mark.slow
def test_sigkilled_sweep_reruns_to_exactly_the_full_rows(tiny, tasks, neutral, tmp_path):
    out = tmp_path / "killed.parquet"
    proc = sweep_process(out, [0, 1, 2], 4)
    deadline = time.time() + 300
    while not (out.is_dir() and len(su.run.store.unit_files(out)) >= 2) and proc.poll() is None:
        assert time.time() < deadline, "the sweep wrote nothing"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = len(su.run.store.unit_files(out))
    assert proc.returncode == -signal.SIGKILL and 2 <= kept < 12, "killed mid-run"
    half = su.read_table(out)  # every file there is complete
    assert len(half) == kept * 4
    small, neu = trim(tasks, neutral, n_tasks=4)
    grid = dict(layers=[0, 1, 2], neutral=neu, progress=False, **GRID)
    resumed = su.run_sweep(tiny, small, out=out, **grid)
    assert_same_rows(resumed, su.run_sweep(tiny, small, **grid))
    assert_same_rows(su.read_table(out), resumed)


def test_cut_off_write_leaves_table_intact(tmp_path, monkeypatch):
    out = tmp_path / "t.parquet"
    good = pd.DataFrame({"a": [1, 2, 3]})
    su.write_table_atomic(good, out)

    def broken(self, f, **kw):
        f.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError):
        su.write_table_atomic(pd.DataFrame({"a": [9]}), out)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(su.read_table(out), good)
    assert [f.name for f in tmp_path.iterdir()] == ["t.parquet"]  # the temporary is gone


def test_a_hole_in_the_grid_is_named_on_reading_and_refused_by_the_verdict(tiny, tasks, neutral, tmp_path):
    """A unit file lost (deleted by hand, or a sweep killed before it) leaves a hole: reading warns naming the
    (task, layer) units missing, and the verdict refuses to choose configurations from an uneven grid."""
    small, neu = trim(tasks, neutral, n_tasks=2)
    out = tmp_path / "s.parquet"
    su.run_sweep(tiny, small, [0, 1], [2], [2.0, 3.0], out=out, neutral=neu, progress=False)
    whole = su.read_table(out)
    assert su.run.store.grid_holes(whole) == []
    lost = su.run.store.unit_files(out)[1]
    task, layer = su.read_table(lost)[["task", "layer"]].iloc[0]
    lost.unlink()
    with pytest.warns(UserWarning, match=f"units missing: {task} at layer {layer}"):
        holed = su.read_table(out)
    prompts = su.read_prompt_table(out)
    with pytest.raises(su.SNAError, match=f"holes .*{task} at layer {layer}"):
        su.verdict(holed, prompts[prompts["layer"] != layer], "smoke")
    short = whole.drop(index=whole.index[(whole["task"] == task) & (whole["multiplier"] == 3.0)][:1])
    assert any("units short" in h and "1 of 2" in h for h in su.run.store.grid_holes(short))
