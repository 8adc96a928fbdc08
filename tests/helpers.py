"""Helpers the test modules share: trimmed task sets, the plain per-configuration loop, the plain Hugging Face
reference (a pre-hook on the down projection), headless Chromium."""
import math
import os
import shutil
import signal
import subprocess

import pandas as pd
import torch

import sna_utils as su


METRICS = ["p_base", "p_sna", "improvement_pct", "success_rate", "top1_base", "top1_sna", "side_effect_kl",
           "control_p_sna", "control_improvement_pct", "control_success_rate", "control_side_effect_kl"]


def trim(tasks, neutral, n_tasks=3, n_disc=8, n_eval=6):
    """The first ``n_tasks`` tasks with trimmed prompt sets: enough to exercise every code path quickly."""
    small = [su.Task(t.name, t.category, t.description, t.discovery[:n_disc], t.evaluation[:n_eval])
             for t in tasks[:n_tasks]]
    return small, su.NeutralSet(neutral.discovery[:10], neutral.heldout[:6])


# Where each family's MLP output projection sits in the plain Hugging Face model (written out, not read
# from the bridge, so that the reference stays independent of the kit's loading).
DOWN_PROJ = {"gpt2": "transformer.h.{}.mlp.c_proj", "gpt_neox": "gpt_neox.layers.{}.mlp.dense_4h_to_h"}
LAYER = {"gpt2": "transformer.h.{}", "gpt_neox": "gpt_neox.layers.{}"}  # each decoder layer (block), likewise


@torch.no_grad()
def hf_target_probs(hf, model, prompts, targets, layer=None, neurons=(), m=1.0, positions="all"):
    """Target probabilities from the plain HF model, the chosen inputs of layer ``layer``'s down projection
    multiplied by ``m`` (at every position, or at each prompt's last one). Right padding needs no mask: the
    model is causal and each prompt is read at its last real token."""
    path = DOWN_PROJ.get(hf.config.model_type, "model.layers.{}.mlp.down_proj").format(layer or 0)
    batch = su.encode_prompts(model, prompts)
    rows, idx = torch.arange(len(prompts)), torch.tensor(list(neurons), dtype=torch.long)

    def scale(module, args):
        x = args[0].clone()
        if positions == "all":
            x[..., idx] *= m
        else:
            x[rows[:, None], batch.last[:, None], idx] *= m
        return (x,)

    handle = hf.get_submodule(path).register_forward_pre_hook(scale) if layer is not None else None
    try:
        logits = hf(input_ids=batch.tokens).logits[rows, batch.last].double()
    finally:
        if handle is not None:
            handle.remove()
    ids = torch.tensor([su.target_tokens(model, t)[0] for t in targets])
    return logits.softmax(-1)[rows, ids]


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


def same_tolerance(col: str) -> dict:
    """How close two runs of one sweep agree in column ``col``: the engine's 1e-4. Another thread count, or a layer's
    state from the bridge in one and from a shared run (``PromptRun``) in the other, is float32 rounding (~1e-6 of
    a probability), which a percentage near 0 turns into up to 1.2e-4 percentage points (measured): 1e-3 there."""
    return dict(rtol=1e-4, atol=1e-3 if "_pct" in col else 1e-8)


def assert_same_rows(a, b):
    """Same configurations, each once, and every metric equal up to float32 noise (``same_tolerance``)."""
    import numpy as np

    key = ["task", "layer", "k", "multiplier"]
    assert not a.duplicated(key).any() and not b.duplicated(key).any()
    a, b = a.sort_values(key, ignore_index=True), b.sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(a[key], b[key])
    for col in METRICS:
        np.testing.assert_allclose(a[col], b[col], **same_tolerance(col), err_msg=col)


def assert_same_sweep(got, want) -> None:
    """Two sweeps' tables equal column by column, numbers to ``same_tolerance``."""
    pct = [c for c in want.columns if "_pct" in c]
    pd.testing.assert_frame_equal(got.drop(columns=pct), want.drop(columns=pct), check_exact=False,
                                  **same_tolerance(""))
    pd.testing.assert_frame_equal(got[pct], want[pct], check_exact=False, **same_tolerance("_pct"))


CATEGORIES = ("mathematics", "logical_reasoning", "abstract_semantics", "coding")


def synthetic_prompts(n_tasks=8, n_prompts=80, layers=(0, 1, 2), ks=(1, 5), multipliers=(2.0, 5.0), shift=0.4,
                      noise=0.5, saturation=0.0, layer_bonus=None, seed=0, model="synthetic"):
    """A per-prompt table with the contract's columns, no model: each prompt's baseline log-odds drawn around its
    task's centre (tasks spread over the three zones), each arm adding a log-odds shift per configuration (the same
    for every task) plus N(0, noise) per prompt. ``saturation`` plants a real effect: SNA's shift grows by that many
    nats per nat the prompt's baseline log-odds lies below -2. ``layer_bonus`` {category: (layer, nats)} plants a
    best layer for SNA."""
    import itertools

    import numpy as np

    rng = np.random.default_rng(seed)
    configs = list(itertools.product(layers, ks, multipliers))
    cfg_shift = {arm: shift * (0.5 + rng.random(len(configs))) * (1.0 if arm == "sna" else 0.6)
                 for arm in ("sna", "control", "control_b")}
    centres = np.linspace(-5.5, 0.0, n_tasks) + rng.normal(0, 0.2, n_tasks)
    frames = []
    for t in range(n_tasks):
        category = CATEGORIES[t % len(CATEGORIES)]
        z0 = centres[t] + rng.normal(0, 1.0, n_prompts)
        p_base = 1 / (1 + np.exp(-z0))
        part = np.where(rng.permutation(n_prompts) < n_prompts // 2, "selection", "test")
        for arm, shifts in cfg_shift.items():
            for c, (L, k, m) in enumerate(configs):
                s = shifts[c] + rng.normal(0, noise, n_prompts)
                if arm == "sna":
                    s = s + saturation * np.clip(-2.0 - z0, 0, None)
                    bonus = (layer_bonus or {}).get(category)
                    s = s + (bonus[1] if bonus and bonus[0] == L else 0.0)
                p = 1 / (1 + np.exp(-(z0 + s)))
                frames.append(pd.DataFrame(dict(
                    model=model, settings_id="synthetic", task=f"task{t:02d}", category=category, layer=L, k=k,
                    multiplier=m, arm=arm, prompt_id=np.arange(n_prompts), part=part, p_base=p_base, p=p,
                    top1=p > 0.5)))
    return pd.concat(frames, ignore_index=True)


def sweep_from_prompts(prompts):
    """The sweep table (contract columns: all-prompt metrics and their _selection/_test versions, every arm) that
    the per-prompt table implies: means of the prompts of each (task, configuration, arm)."""
    import numpy as np

    from sna_utils.judge.heldout import arm_column

    keys = ["model", "settings_id", "category", "task", "layer", "k", "multiplier"]
    df = prompts.assign(up=prompts["p"] > prompts["p_base"], top1_base=prompts["p_base"] > 0.5)
    parts = {"": df, **{f"_{part}": df[df["part"] == part] for part in ("selection", "test")}}
    out = None
    for suffix, d in parts.items():
        a = d.groupby([*keys, "arm"]).agg(p_base=("p_base", "mean"), p_sna=("p", "mean"), success_rate=("up", "mean"),
                                          top1_sna=("top1", "mean"), top1_base=("top1_base", "mean"),
                                          n=("p", "size"))
        a["improvement_pct"] = 100 * (a["p_sna"] - a["p_base"]) / a["p_base"]
        wide = a.unstack("arm")
        cols = {}
        for arm in ("sna", "control", "control_b"):
            for metric in ("p_sna", "improvement_pct", "success_rate", "top1_sna"):
                cols[arm_column(metric, arm) + suffix] = wide[(metric, arm)]
        cols["p_base" + suffix] = wide[("p_base", "sna")]
        if suffix:
            cols["n" + suffix] = wide[("n", "sna")].astype(int)
        else:
            cols["top1_base"] = wide[("top1_base", "sna")]
        part = pd.DataFrame(cols)
        out = part if out is None else out.join(part)
    out = out.reset_index()
    out["zone"] = [su.zone_of(p) for p in out["p_base"]]
    for arm in ("sna", "control", "control_b"):
        out[arm_column("side_effect_kl", arm)] = 0.004 * (out["multiplier"] - 1) * np.sqrt(out["k"])
    out["side_effect_kl_formats"] = out["side_effect_kl"]
    return out


def synthetic_tables(**kwargs):
    """(sweep table, per-prompt table with exactly the contract's columns) from :func:`synthetic_prompts`."""
    prompts = synthetic_prompts(**kwargs)
    return sweep_from_prompts(prompts), prompts.drop(columns="category")


def perturb_test_prompts(prompts, seed=1):
    """A copy of the per-prompt table whose test prompts' probabilities (base and every arm) are redrawn: nothing
    chosen on selection prompts may change."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = prompts.copy()
    test = out["part"] == "test"
    out.loc[test, "p"] = rng.uniform(0.001, 0.999, int(test.sum()))
    new_base = dict(zip(out.loc[test, "prompt_id"].unique(), rng.uniform(0.001, 0.5, test.sum())))
    out.loc[test, "p_base"] = out.loc[test, "prompt_id"].map(new_base)
    return out


# --- headless Chromium (the demo's browser test and the report's) -----------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync",
                  "--window-size=1400,1800", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]


def find_chromium():
    """The path of a Chromium (or Chrome) binary, or None."""
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def stop_process_group(proc: subprocess.Popen) -> None:
    """Terminate a process group we started (then kill it if it lingers)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def add_baseline_rows(prompts, shift=None, saturation=None, noise=0.3, alphas=(0.5, 1.0, 2.0),
                      temperatures=(0.5, 0.7, 0.85), seed=2):
    """The per-prompt table with the three baseline arms added (``run.baselines``' rows: k 0, multiplier 1,
    ``strength`` alpha or T; ``steer_matched`` once per SNA (k, multiplier), so any choice of SNA's has its match):
    each adds, per prompt, the log-odds shift ``shift[arm]`` (scaled by alpha / 2 for
    ``steer``) plus N(0, noise), and ``saturation[arm]`` nats more per nat the baseline log-odds lies below -2."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shift, saturation = shift or {}, saturation or {}
    base = prompts[prompts["arm"] == "sna"].drop_duplicates(["model", "task", "layer", "prompt_id"])
    z0 = np.log(base["p_base"] / (1 - base["p_base"])).to_numpy()
    grid = {"steer": [(a, a / 2) for a in alphas], "steer_matched": [(1.0, 1.0)],
            "temperature": [(t, 1.0) for t in temperatures]}
    frames = [prompts.assign(strength=np.nan)]
    for arm, strengths in grid.items():
        for strength, scale in strengths:
            s = shift.get(arm, 0.0) * scale + rng.normal(0, noise, len(base))
            s = s + saturation.get(arm, 0.0) * np.clip(-2.0 - z0, 0, None)
            p = 1 / (1 + np.exp(-(z0 + s)))
            configs = (sorted(set(zip(prompts.loc[prompts["arm"] == "sna", "k"],
                                      prompts.loc[prompts["arm"] == "sna", "multiplier"])))
                       if arm == "steer_matched" else [(0, 1.0)])
            frames += [base.assign(arm=arm, k=k, multiplier=m, strength=strength, p=p, top1=p > 0.5)
                       for k, m in configs]
    return pd.concat(frames, ignore_index=True)
