"""Helpers the test modules share: trimmed task sets and the plain per-configuration loop."""
import math

import pandas as pd

import sna_utils as su


METRICS = ["p_base", "p_sna", "improvement_pct", "success_rate", "top1_base", "top1_sna", "side_effect_kl",
           "control_p_sna", "control_improvement_pct", "control_success_rate", "control_side_effect_kl"]


def trim(tasks, neutral, n_tasks=3, n_disc=8, n_eval=6):
    """The first ``n_tasks`` tasks with trimmed prompt sets: enough to exercise every code path quickly."""
    small = [su.Task(t.name, t.category, t.description, t.discovery[:n_disc], t.evaluation[:n_eval])
             for t in tasks[:n_tasks]]
    return small, su.NeutralSet(neutral.discovery[:10], neutral.heldout[:6])


def plain_rows(model, tasks, neutral, layers, ks, ms, positions, seed=0):
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


def assert_close(a, b, col, rtol=1e-4):
    for x, y in zip(a[col], b[col]):
        assert math.isclose(x, y, rel_tol=rtol, abs_tol=1e-9), (col, x, y)


SWEEP_SCRIPT = """
import sys
import torch
import sna_utils as su
from helpers import GRID, trim
torch.set_num_threads(1)
out, layers, n_tasks = sys.argv[1], [int(x) for x in sys.argv[2].split(",")], int(sys.argv[3])
small, neu = trim(su.load_tasks(), su.split_neutral(su.load_neutral()), n_tasks=n_tasks)
su.run_sweep(su.load_model("tiny", device="cpu"), small, layers, out=out, neutral=neu, progress=False, **GRID)
"""
GRID = dict(ks=[1, 5], multipliers=[2.0, 5.0])


def sweep_process(out, layers, n_tasks):
    """A sweep of the tiny model (``GRID``, trimmed tasks) into ``out``, in a separate Python process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = os.environ | {"PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.Popen([sys.executable, "-c", SWEEP_SCRIPT, str(out), ",".join(map(str, layers)), str(n_tasks)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_same_rows(a, b):
    """Same configurations, each once, and every metric equal up to float32 noise of another thread count."""
    import numpy as np

    key = ["task", "layer", "k", "multiplier"]
    assert not a.duplicated(key).any() and not b.duplicated(key).any()
    a, b = a.sort_values(key, ignore_index=True), b.sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(a[key], b[key])
    for col in METRICS:
        np.testing.assert_allclose(a[col], b[col], rtol=1e-4, atol=1e-4 if col.endswith("_pct") else 1e-8, err_msg=col)
