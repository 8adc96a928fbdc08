"""Units on Ray: the same rows as the single-process sweep, and nothing lost when a worker dies.

Ray is optional (``pip install -e '.[ray]'``); without it these tests skip, except the one that checks the
error a user gets without Ray.
"""
import sys
import threading
import time

import pytest

import sna_utils as su
from helpers import GRID, assert_same_rows


def test_without_ray_the_error_says_how_to_install(tiny, small, monkeypatch, tmp_path):
    t, neu = small
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(su.SNAError, match=r"pip install -e '\.\[ray\]'"):
        su.run_sweep(tiny, t, [0], [1], [2.0], neutral=neu, out=tmp_path / "s.parquet", executor="ray")
    with pytest.raises(su.SNAError, match="executor='dask'"):
        su.run_sweep(tiny, t, [0], [1], [2.0], neutral=neu, executor="dask")
    assert not (tmp_path / "s.parquet").exists()


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster on this machine: 2 CPUs, no dashboard."""
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install -e '.[ray]' to run the Ray tests")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_rows_equal_the_single_process_sweep(ray_cluster, tiny, small, sweep, tmp_path):
    t, neu = small
    out = tmp_path / "ray.parquet"
    got = su.run_sweep(tiny, t, [0, 1, 2], out=out, neutral=neu, progress=False, executor="ray", **GRID)
    assert_same_rows(got, sweep)
    assert_same_rows(su.read_table(out), sweep)
    assert len(su.run.store.unit_files(out)) == len(t) * 3
    again = su.run_sweep(tiny, t, [0, 1, 2], out=out, neutral=neu, progress=False, executor="ray", **GRID)
    assert_same_rows(again, sweep)  # resumed: nothing to run, nothing duplicated


def _kill_first_unit_worker(killed: list, stop: threading.Event) -> None:
    """SIGKILL the first Ray worker seen running a unit (its process title is ``ray::_run_task``)."""
    import psutil

    while not stop.is_set() and not killed:
        for p in psutil.process_iter(["pid", "cmdline"]):
            if any("ray::_run_task" in part for part in (p.info["cmdline"] or [])):
                p.kill()
                killed.append(p.info["pid"])
                return
        time.sleep(0.005)


def test_ray_survives_a_killed_worker(ray_cluster, tiny, small, sweep, tmp_path):
    t, neu = small
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_first_unit_worker, args=(killed, stop))
    killer.start()
    try:
        got = su.run_sweep(tiny, t, [0, 1, 2], out=tmp_path / "k.parquet", neutral=neu, progress=False,
                           executor=su.RayExecutor(max_retries=2), **GRID)
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was killed during the run"
    assert_same_rows(got, sweep)
    assert_same_rows(su.read_table(tmp_path / "k.parquet"), sweep)
