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
