"""How far each engine precision moves the sweep's numbers: against float64 and against float32.

Runs a grid (every task with trimmed prompt sets, all layers, by default the paper's k that fit
and its multipliers) on float64 copies of the offline stand-ins (``tiny``, ``tiny-pythia``: random weights
at initializer_range 0.2, so probabilities are not negligible) once per precision, and prints

* per configuration: the largest relative difference from float64 of p_sna, improvement_pct and the
  KL side effect, and the share of top-1 flips;
* per task (``su.task_summary``, what the notebooks report): the largest relative difference from
  float32 of each number, and whether the best (layer, k, multiplier) is the same.

    python scripts/precision_agreement.py [--models tiny,tiny-pythia] [--precisions float32,bfloat16,tf32-emulated]
        [--n-eval 8] [--n-neutral 16] [--ks 1,5,20,100] [--multipliers 2,5,10]

``tf32-emulated`` runs on the CPU: the operands of the engine's linear layers and unembedding are
rounded to TF32's 10-bit mantissa (accumulation stays float32, as on a GPU's tensor cores); the
attention products are left in float32. It is an emulation, not a GPU measurement.
"""
from __future__ import annotations

import argparse
import contextlib
import os

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

import sna_utils as su

ROW_COLS = ["p_sna", "improvement_pct", "side_effect_kl", "control_side_effect_kl"]
TASK_COLS = ["p_base", "best_improvement_pct", "mean_improvement_pct", "gain_over_control_pct", "side_effect_kl"]


def to_tf32(x: torch.Tensor) -> torch.Tensor:
    """Round float32 values to TF32 (10 explicit mantissa bits), nearest."""
    i = x.float().contiguous().view(torch.int32)
    return ((i + 0x1000) & ~0x1FFF).view(torch.float32)


@contextlib.contextmanager
def emulated_tf32():
    """The engine's linear layers and unembedding with TF32-rounded operands (CPU emulation)."""
    eng = su.run.engine
    affine, logits = eng._affine, eng._logits

    def affine_tf32(x, w, b):
        return torch.addmm(b, to_tf32(x.reshape(-1, x.shape[-1])), to_tf32(w)).view(*x.shape[:-1], w.shape[1])

    def logits_tf32(e, x):
        return F.linear(to_tf32(eng._layer_norm(x, e.ln_f, e.eps)), to_tf32(e.w_u))

    eng._affine, eng._logits = affine_tf32, logits_tf32
    try:
        yield
    finally:
        eng._affine, eng._logits = affine, logits


def sweep(model, tasks, neutral, precision: str, ks, ms) -> pd.DataFrame:
    ks = [k for k in ks if k <= su.d_mlp(model)]
    grid = dict(layers=range(su.n_layers(model)), ks=ks, multipliers=ms, neutral=neutral, progress=False)
    if precision == "tf32-emulated":
        with emulated_tf32():
            return su.run_sweep(model, tasks, precision="float32", **grid)
    return su.run_sweep(model, tasks, precision=precision, **grid)


def rel(a: pd.Series, b: pd.Series) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b)).clip(1e-12)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,tiny-pythia")
    ap.add_argument("--precisions", default="float32,bfloat16,tf32-emulated")
    ap.add_argument("--n-eval", type=int, default=8)
    ap.add_argument("--n-neutral", type=int, default=16)
    ap.add_argument("--ks", default=",".join(map(str, su.PAPER_KS)))
    ap.add_argument("--multipliers", default=",".join(map(str, su.PAPER_MULTIPLIERS)))
    args = ap.parse_args()
    grid = [int(k) for k in args.ks.split(",")], [float(m) for m in args.multipliers.split(",")]
    neutral = su.split_neutral(su.load_neutral())
    neutral = su.NeutralSet(neutral.discovery, neutral.heldout[: args.n_neutral])
    tasks = [su.Task(t.name, t.category, t.description, t.discovery, t.evaluation[: args.n_eval])
             for t in su.load_tasks()]
    for name in args.models.split(","):
        model = su.load_model(name, device="cpu", dtype=torch.float64)
        ref64 = sweep(model, tasks, neutral, "float64", *grid)
        ref32 = sweep(model, tasks, neutral, "float32", *grid)
        s32 = su.task_summary(ref32)
        for precision in args.precisions.split(","):
            df = ref32 if precision == "float32" else sweep(model, tasks, neutral, precision, *grid)
            rows = ", ".join(f"{c} {rel(df[c], ref64[c]):.1e}" for c in ROW_COLS)
            flips = float(np.mean(df["top1_sna"] != ref64["top1_sna"]))
            s = su.task_summary(df)
            per_task = ", ".join(f"{c} {rel(s[c], s32[c]):.1e}" for c in TASK_COLS)
            same = all((s[c].to_numpy() == s32[c].to_numpy()).all() for c in ["best_layer", "best_k",
                                                                             "best_multiplier"])
            print(f"{name} {precision:13s} vs float64, per configuration (max relative): {rows}; top-1 changed "
                  f"in {flips:.1%} of configurations")
            print(f"{name} {precision:13s} vs float32, per task (max relative): {per_task}; "
                  f"best (layer, k, m) {'the same' if same else 'DIFFERS'} for every task")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    main()
