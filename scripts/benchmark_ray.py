"""Benchmark the Ray path of the sweep against the single-process run on the same grid.

The same units (task x layer, each with its whole k x multiplier grid) run three ways on an offline
stand-in (default random:gpt2-small, CPU):

* single process, 1 torch thread;
* Ray, local cluster of 1 CPU: the same serial work through Ray (model shipped once per worker, one task
  per unit, results back to the driver, unit files written). The ratio to the line above is the overhead;
* Ray, local cluster of ``--cpus`` CPUs against the single process with as many torch threads: what
  spreading units over workers gains on this machine.

Prints times and ratios; it is not a test. Needs Ray (pip install -e '.[ray]').

    python scripts/benchmark_ray.py [--model random:gpt2-small] [--tasks addition,antonyms] [--layers 0,6]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

import sna_utils as su


def timed_sweep(model, tasks, neutral, args, out: Path, executor=None) -> float:
    """Seconds of one sweep of the grid into a fresh dataset folder ``out``."""
    t0 = time.perf_counter()
    su.run_sweep(model, tasks, args.layers, args.ks, args.multipliers, out=out, neutral=neutral, progress=False,
                 executor=executor)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="random:gpt2-small")
    ap.add_argument("--tasks", default="addition,antonyms")
    ap.add_argument("--layers", default="0,6", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--ks", default="1,10,50", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--multipliers", default="2,5", type=lambda s: [float(x) for x in s.split(",")])
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()
    ray = su.run.cluster.import_ray()

    model = su.load_model(args.model, device="cpu")
    tasks = su.load_tasks(args.tasks.split(","))
    neutral = su.split_neutral(su.load_neutral())
    n_units = len(tasks) * len(args.layers)
    print(f"model {args.model} on cpu; {n_units} units ({len(tasks)} tasks x {len(args.layers)} layers), each "
          f"{len(args.ks)} k x {len(args.multipliers)} multipliers; this machine has {os.cpu_count()} CPUs")
    su.run_sweep(model, tasks[:1], args.layers[:1], [1], [2.0], neutral=neutral, progress=False)  # warm-up
    with tempfile.TemporaryDirectory() as tmp:
        times = {}
        for threads, cpus in ((1, 1), (args.cpus, args.cpus)):
            torch.set_num_threads(threads)
            times["single", threads] = timed_sweep(model, tasks, neutral, args, Path(tmp, f"single{threads}.parquet"))
            t0 = time.perf_counter()
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            start = time.perf_counter() - t0
            times["ray", cpus] = timed_sweep(model, tasks, neutral, args, Path(tmp, f"ray{cpus}.parquet"), "ray")
            ray.shutdown()
            print(f"single process, {threads} thread(s): {times['single', threads]:7.1f} s "
                  f"({times['single', threads] / n_units:.1f} s per unit)")
            print(f"Ray, {cpus} CPU(s)               : {times['ray', cpus]:7.1f} s "
                  f"(+ {start:.1f} s to start the local cluster, once per session)")
    print(f"Ray overhead, 1 CPU against 1 thread    : {times['ray', 1] / times['single', 1]:6.2f}x the time")
    print(f"Ray {args.cpus} CPUs against {args.cpus} threads          : "
          f"{times['single', args.cpus] / times['ray', args.cpus]:6.2f}x faster")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
