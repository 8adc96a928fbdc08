"""Benchmark the sweep engine against the plain per-configuration loop and the FLOP floor.

One task x all layers x the paper's 56 (k, multiplier) pairs on an offline stand-in
(default random:gpt2-small). Prints times and ratios; it is not a test.

    python scripts/benchmark_sweep.py [--model random:gpt2-small] [--device cpu] [--plain-sample 24]

* plain loop: for each configuration, full hooked forward passes (``su.measure``) of the
  evaluation prompts and held-out neutral prompts, for the SNA neurons and for the random
  control neurons: the same numbers the engine produces. It times a fixed-seed random sample
  of configurations and scales up to the whole grid (said in the output).
* engine: ``su.run_sweep`` on the whole grid, discovery and baselines included.
* FLOP floor: the matrix-multiply FLOPs the grid strictly needs (blocks L.. for every
  configuration and prompt at its real length, plus last-token logits) divided by this
  machine's measured float32 matmul rate.
"""
from __future__ import annotations

import argparse
import os
import random
import time

import torch

import sna_utils as su


def floor_seconds(model, layers, n_configs, prompt_lengths, rate) -> tuple[float, float]:
    """(FLOPs, seconds at ``rate``) for ``n_configs`` configurations at each layer."""
    flops = sum(su.engine.prompts_flop_floor(model, L, n_configs, prompt_lengths) for L in layers)
    return flops, flops / rate


def time_plain(model, task, neutral, layers, ks, ms, sample, seed) -> tuple[float, int]:
    """Seconds per configuration of the plain loop, over a fixed-seed sample of the grid.

    Baselines and discovery are computed once (as the engine does); each configuration then
    runs four full hooked forward passes: SNA and control neurons, on the evaluation prompts
    (target probabilities) and on the held-out neutral prompts (side effect).
    """
    grid = [(L, k, m) for L in layers for k in ks for m in ms]
    picked = random.Random(seed).sample(grid, min(sample, len(grid)))
    prompts = [i.prompt for i in task.evaluation]
    base = su.baseline_of(su.target_token_ids(model, task.evaluation), su.next_token_logits(model, prompts))
    neutral_base = su.next_token_logits(model, neutral.heldout)
    rankings = {}
    t0 = time.perf_counter()
    for L, k, m in picked:
        if L not in rankings:  # discovery once per layer, as the engine does
            scores = su.neuron_scores(model, [i.prompt for i in task.discovery], neutral.discovery, L)
            rankings[L] = su.rank_neurons(scores)
        for neurons in (rankings[L][:k].tolist(), su.random_neurons(su.d_mlp(model), k, seed, L)):
            iv = su.Intervention(L, neurons, m)
            su.outcome_of(base, su.next_token_logits(model, prompts, iv), neutral_base,
                          su.next_token_logits(model, neutral.heldout, iv))
    return (time.perf_counter() - t0) / len(picked), len(picked)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="random:gpt2-small")
    ap.add_argument("--device", default=su.default_device())
    ap.add_argument("--task", default="addition")
    ap.add_argument("--plain-sample", type=int, default=24, help="configurations the plain loop times")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", default="all", help="comma-separated layers (default: all)")
    ap.add_argument("--n-eval", type=int, default=0, help="evaluation prompts to use (default: all)")
    ap.add_argument("--n-neutral", type=int, default=0, help="held-out neutral prompts to use (default: all)")
    args = ap.parse_args()

    model = su.load_model(args.model, device=args.device)
    task = su.load_tasks([args.task])[0]
    neutral = su.split_neutral(su.load_neutral())
    if args.n_eval:
        task = su.Task(task.name, task.category, task.description, task.discovery, task.evaluation[: args.n_eval])
    if args.n_neutral:
        neutral = su.NeutralSet(neutral.discovery, neutral.heldout[: args.n_neutral])
    layers = list(range(su.n_layers(model))) if args.layers == "all" else [int(x) for x in args.layers.split(",")]
    ks, ms = su.PAPER_KS, su.PAPER_MULTIPLIERS
    n_grid = len(layers) * len(ks) * len(ms)
    print(f"model {args.model} on {args.device} ({torch.get_num_threads()} CPU threads); task {task.name}: "
          f"{len(task.evaluation)} evaluation prompts, {len(neutral.heldout)} held-out neutral prompts; "
          f"grid {len(layers)} layers x {len(ks)} k x {len(ms)} multipliers = {n_grid} configurations")

    su.run_sweep(model, [task], [0], [1], [2.0], neutral=neutral, progress=False)  # warm-up
    sync(args.device)
    t0 = time.perf_counter()
    su.run_sweep(model, [task], layers, ks, ms, neutral=neutral, progress=False)
    sync(args.device)
    engine = time.perf_counter() - t0

    per_cfg, n_sampled = time_plain(model, task, neutral, layers, ks, ms, args.plain_sample, args.seed)
    plain = per_cfg * n_grid

    rate = su.matmul_rate(args.device, n=2048 if args.device.startswith("cuda") else 1024)
    lengths = [len(model.to_tokens(p)[0]) for p in [i.prompt for i in task.evaluation] + list(neutral.heldout)]
    flops, floor = floor_seconds(model, layers, 2 * len(ks) * len(ms), lengths, rate)

    print(f"plain loop : {plain:9.2f} s  (timed {n_sampled} random configurations, seed {args.seed}, "
          f"{per_cfg:.3f} s each, scaled to {n_grid})")
    print(f"engine     : {engine:9.2f} s  ({engine / n_grid * 1e3:.1f} ms per configuration)")
    print(f"FLOP floor : {floor:9.2f} s  ({flops / 1e12:.2f} TFLOP at a measured {rate / 1e9:.0f} GFLOP/s)")
    print(f"speed-up over plain loop : {plain / engine:6.1f}x")
    print(f"engine / FLOP floor      : {engine / floor:6.2f}x")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
