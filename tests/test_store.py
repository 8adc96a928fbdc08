"""The results table: settings never mix, and a cut-off write never corrupts it."""

import pandas as pd
import pytest

import sna_utils as su
from helpers import trim


def test_other_settings_never_mix(tiny, tasks, neutral, tmp_path):
    small, neu = trim(tasks, neutral, n_tasks=2)
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
