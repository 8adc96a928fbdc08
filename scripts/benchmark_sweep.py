"""Benchmark the sweep engine against the plain per-configuration loop and the FLOP floor.

One task x all layers x the paper's 56 (k, multiplier) pairs on an offline stand-in
(default random:gpt2-small; any model ``load_model`` takes, e.g. ``random:llama-1b``, the Llama-3.2-1B
shape). ``--reduced`` is the small CPU grid for ~1B models: three layers, k in {1, 10, 100},
multipliers {2, 5, 10}, 8 discovery prompts of each kind, 4 evaluation, 4 neutral and 4 format-matched
prompts, 6 plain-loop samples, float32 only.
Prints times, where the engine's time goes (the configurations, the baselines and each unmodified run:
discovery, the states at layer L, the baselines and KL references from L), and, at the end, each ratio against
its reference in one block (engine vs plain loop, engine vs FLOP floor, also with one unmodified pass of every
prompt set counted in the floor, positions="last" vs "all"); it is not a test.

    python scripts/benchmark_sweep.py [--model random:gpt2-small] [--device cpu] [--plain-sample 24]
        [--layers 0,6,11] [--n-eval 10] [--n-neutral 20] [--precisions float32,bfloat16] [--max-tokens N]
        [--n-disc 8] [--n-formats 4] [--reduced] [--no-plain] [--no-last]

* plain loop: for each configuration, full hooked forward passes (``su.next_token_logits`` with an
  ``Intervention``) of every arm ``run_sweep`` computes: SNA, the control (``seed``) and the second control
  (``seed + 1``) on the evaluation prompts and on the held-out neutral prompts, and SNA on the task's
  held-out format-matched neutral prompts (``side_effect_kl_formats``): the same numbers the engine produces.
  It times a fixed-seed random sample of configurations and scales up to the whole grid (said in the output).
* engine: ``su.run_sweep`` on the whole grid, discovery and baselines included, per precision
  (float32, bfloat16, and TF32 on CUDA), with ``positions="all"`` and ``positions="last"``.
* the sweep's extra arms: the full sweep (baselines on) over the sweep without baselines, and the lean sweep
  (``su.LEAN``) over SNA plus one control through the engine alone (``--options-only``: only these).
* FLOP floor: the matrix-multiply FLOPs the grid strictly needs (``su.run.flops.sweep_unit_flops``: blocks L..
  for every arm, configuration and prompt at its real length, plus last-token logits) divided by this
  machine's measured matmul rate at that precision (the faster of two measurements, before and after the run).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import time
from typing import Iterator

import torch

import sna_utils as su

SWEEP_SEED = 0  # run_sweep's default seed, as the engine runs here: the controls' draws and the format split


def floor_seconds(model, layers, n_pairs, lengths: dict[str, list[int]], rate) -> tuple[float, float]:
    """(FLOPs, seconds at ``rate``) of one task's ``n_pairs`` (k, m) pairs at each layer, every arm counted."""
    flops = sum(su.run.flops.sweep_unit_flops(model, L, n_pairs, lengths["eval"], lengths["neutral"], lengths["formats"],
                                              n_steer=len(su.STEER_ALPHAS) + 1) for L in layers)
    return flops, flops / rate


def time_plain(model, task, neutral, formats, layers, ks, ms, sample, seed) -> tuple[float, int]:
    """Seconds per configuration of the plain loop, over a fixed-seed sample of the grid.

    Baselines and discovery are computed once (as the engine does); each configuration then runs seven
    full hooked forward passes: each of the three arms on the evaluation prompts (target probabilities) and
    on the held-out neutral prompts (side effect), and SNA on the format-matched neutral prompts.
    """
    grid = [(L, k, m) for L in layers for k in ks for m in ms]
    picked = random.Random(seed).sample(grid, min(sample, len(grid)))
    prompts = [i.prompt for i in task.evaluation]
    base = su.baseline_of(su.target_token_ids(model, task.evaluation), su.next_token_logits(model, prompts))
    neutral_base = su.next_token_logits(model, neutral.heldout)
    formats_base = su.next_token_logits(model, formats) if formats else None
    rankings = {}
    t0 = time.perf_counter()
    for L, k, m in picked:
        if L not in rankings:  # discovery once per layer, as the engine does
            scores = su.neuron_scores(model, [i.prompt for i in task.discovery], neutral.discovery, L)
            rankings[L] = su.rank_neurons(scores)
        arms = [rankings[L][:k].tolist()] + [su.run.sweep.control_configs(model, L, [k], [m], SWEEP_SEED, arm)[0].neurons
                                             for arm in su.judge.heldout.ARMS[1:]]
        for neurons in arms:
            iv = su.Intervention(L, list(neurons), m)
            su.outcome_of(base, su.next_token_logits(model, prompts, iv), neutral_base,
                          su.next_token_logits(model, neutral.heldout, iv))
        if formats:
            su.kl_divergence(formats_base, su.next_token_logits(model, formats, su.Intervention(L, arms[0], m)))
    return (time.perf_counter() - t0) / len(picked), len(picked)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# Where the engine's time goes: each of these names, as ``run_sweep``'s module calls it, is timed where it is the
# outermost of them (``engine_baseline``'s own ``engine_metrics`` call counts as the baseline's); the rest is the
# sweep's Python and tables.
STAGES = {"engine_metrics": "configurations (SNA and controls)",
          "baseline_prompt_rows": "the field's baselines (steering rows)",
          "last_token_captures": "unmodified: discovery captures",
          "_state_at": "unmodified: states at layer L (a run a prompt set)",
          "engine_baseline": "unmodified: baselines from L",
          "reference": "unmodified: KL references from L"}


@contextlib.contextmanager
def stage_times(module, names) -> Iterator[dict[str, float]]:
    """Seconds spent in each of ``module``'s functions ``names`` while inside, where it is the outermost of them."""
    times, depth = dict.fromkeys(names, 0.0), [0]
    originals = {n: getattr(module, n) for n in names}

    def timed(name, f):
        def run(*args, **kwargs):
            depth[0] += 1
            t = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                depth[0] -= 1
                if not depth[0]:
                    times[name] += time.perf_counter() - t
        return run

    for n, f in originals.items():
        setattr(module, n, timed(n, f))
    try:
        yield times
    finally:
        for n, f in originals.items():
            setattr(module, n, f)


def time_engine(model, task, neutral, formats, layers, ks, ms, positions, precision, max_tokens,
                device) -> tuple[float, dict[str, float]]:
    """Seconds for ``su.run_sweep`` on the whole grid (discovery and baselines included), and per ``STAGES``."""
    with stage_times(su.run.sweep, STAGES) as stages:
        sync(device)
        t0 = time.perf_counter()
        su.run_sweep(model, [task], layers, ks, ms, positions, neutral=neutral, progress=False, precision=precision,
                     max_tokens=max_tokens, formats=formats)
        sync(device)
        total = time.perf_counter() - t0
    return total, dict(stages)


def stages_section(precision: str, total: float, stages: dict[str, float], floor: float, unmodified: float) -> str:
    """Where the engine's time went, and the configurations' own time against their FLOP floor."""
    lines = [f"[{precision}] where the time goes (positions 'all', {total:.1f} s):"]
    lines += [f"    {STAGES[n]:45s} {t:7.2f} s" for n, t in stages.items()]
    lines.append(f"    {'the rest (the sweep in Python, its tables)':45s} {total - sum(stages.values()):7.2f} s")
    own = stages["engine_metrics"] + stages["baseline_prompt_rows"]
    lines.append(f"[{precision}] configurations and baselines alone / FLOP floor: {own / floor:5.2f}x; the unmodified "
                 f"runs {sum(t for n, t in stages.items() if STAGES[n].startswith('unmodified')):.1f} s against a "
                 f"floor of {unmodified:.1f} s for one unmodified pass of every prompt set")
    return "\n".join(lines)


def plain_section(per_cfg: float, n_grid: int, engine: float) -> str:
    """The engine against the plain per-configuration loop (the reference): the speed-up."""
    plain = per_cfg * n_grid
    return f"engine vs plain loop      : {plain / engine:6.2f}x faster (plain {plain:.1f} s, scaled up)"


def floor_section(engine: float, floor: float, unmodified: float) -> str:
    """The engine against the FLOP floor at this machine's measured matmul rate (1.00x: no overhead at all), also
    with the one unmodified pass of every prompt set counted in the floor."""
    return (f"engine / FLOP floor       : {engine / floor:6.2f}x (floor {floor:.1f} s); with one unmodified pass of "
            f"every prompt set in the floor: {engine / (floor + unmodified):4.2f}x")


def last_section(last: float, engine: float) -> str:
    """positions="last" against positions="all" on the same grid."""
    return f"positions 'last' / 'all'  : {last / engine:6.2f}x ({last:.1f} s beside {engine:.1f} s)"


# Further sections add a function above and a line in ``ratios``; the sweep's options (baselines, lean) are
# timed whole, by ``compare_options`` below.


def ratios(precision: str, plain: tuple[float, int] | None, engine: float, floor: float, unmodified: float,
           last: float | None) -> list[str]:
    """Every ratio of one precision against its reference, one line each."""
    lines = [plain_section(*plain, engine)] if plain else []
    lines.append(floor_section(engine, floor, unmodified))
    if last is not None:
        lines.append(last_section(last, engine))
    return [f"[{precision}] {line}" for line in lines]


# ---------------------------------------------------------------------------
# The sweep's extra arms: the baselines' cost and the lean sweep's (issues 23 and 25)
# ---------------------------------------------------------------------------

def time_sna_one_control(model, task, neutral, layers, ks, ms, precision, device) -> float:
    """Seconds for the engine's least: discovery, then per layer SNA and one control on the evaluation prompts
    and on the held-out neutral prompts (their side effect), no table, no second control, no baselines."""
    sync(device)
    t0 = time.perf_counter()
    eng = su.run.engine
    acts = su.last_token_activations(model, [i.prompt for i in task.discovery], layers)
    ref = su.last_token_activations(model, neutral.discovery, layers)
    ids = su.target_token_ids(model, task.evaluation)
    batch, nbatch = su.encode_prompts(model, [i.prompt for i in task.evaluation]), su.encode_prompts(model, neutral.heldout)
    for L in layers:
        ranking = su.rank_neurons(su.scores_from_activations(acts[L], ref[L]))
        configs = [eng.Config(tuple(ranking[:k].tolist()), m) for k in ks for m in ms]
        configs += su.run.sweep.control_configs(model, L, ks, ms, SWEEP_SEED, "control")
        state, nstate = eng.layer_state(model, batch, L), eng.layer_state(model, nbatch, L)
        eng.engine_metrics(model, state, L, [eng.IDENTITY], target_ids=ids, precision=precision)
        eng.engine_metrics(model, state, L, configs, target_ids=ids, precision=precision)
        eng.engine_metrics(model, nstate, L, configs, reference=eng.reference(model, nstate, L, precision),
                           precision=precision)
    sync(device)
    return time.perf_counter() - t0


def time_options(model, task, neutral, formats, layers, ks, ms, precision, device, out, **options) -> float:
    """Seconds for ``su.run_sweep`` into a fresh folder (the per-prompt table written) with sweep ``options``."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    sync(device)
    t0 = time.perf_counter()
    su.run_sweep(model, [task], layers, ks, ms, neutral=neutral, progress=False, precision=precision, out=out,
                 formats=formats, **options)
    sync(device)
    return time.perf_counter() - t0


def compare_options(model, task, neutral, formats, layers, ks, ms, precision, device, repeats: int = 3) -> None:
    """Print the baselines' extra cost (full sweep / the sweep without them; goal <= 1.25x) and the lean sweep's
    (lean / SNA plus one control through the engine alone; goal <= 1.1x): medians of ``repeats`` interleaved runs."""
    import statistics
    import tempfile

    out = os.path.join(tempfile.mkdtemp(prefix="sna-bench-"), "s.parquet")
    runs = {"full": dict(), "no baselines": dict(baselines=False), "lean": su.LEAN}
    times: dict[str, list[float]] = {name: [] for name in [*runs, "SNA + one control"]}
    for _ in range(repeats):
        for name, options in runs.items():
            times[name].append(time_options(model, task, neutral, formats, layers, ks, ms, precision, device, out,
                                            **options))
        times["SNA + one control"].append(time_sna_one_control(model, task, neutral, layers, ks, ms, precision,
                                                               device))
    t = {name: statistics.median(v) for name, v in times.items()}
    print(f"[{precision}] medians of {repeats}: " + ", ".join(f"{n} {v:.2f} s" for n, v in t.items()))
    print(f"[{precision}] full sweep with baselines / without them: {t['full'] / t['no baselines']:4.2f}x "
          f"(goal <= 1.25x)")
    print(f"[{precision}] lean / SNA + one control: {t['lean'] / t['SNA + one control']:4.2f}x (goal <= 1.1x); "
          f"full / lean: {t['full'] / t['lean']:4.2f}x")


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
    ap.add_argument("--n-disc", type=int, default=0, help="discovery prompts of each kind (default: all)")
    ap.add_argument("--n-formats", type=int, default=0, help="held-out format-matched prompts (default: all)")
    ap.add_argument("--precisions", default="", help="comma-separated engine precisions (default: float32 and "
                    "bfloat16, and tf32 on CUDA)")
    ap.add_argument("--max-tokens", type=int, default=0, help="tokens per engine chunk (default: sized to the device)")
    ap.add_argument("--no-last", action="store_true", help='skip the positions="last" timing')
    ap.add_argument("--no-plain", action="store_true", help="skip the plain loop (no engine vs plain ratio)")
    ap.add_argument("--reduced", action="store_true", help="the reduced CPU grid for ~1B models (see above)")
    ap.add_argument("--options-only", action="store_true", help="only the baselines' and the lean sweep's ratios")
    ap.add_argument("--no-options", action="store_true", help="skip the baselines' and the lean sweep's ratios")
    args = ap.parse_args()
    for option in ("n_eval", "n_neutral", "n_disc", "n_formats", "plain_sample", "max_tokens"):
        if getattr(args, option) < 0:
            ap.error(f"--{option.replace('_', '-')} must be 0 (all, or the default) or positive, "
                     f"got {getattr(args, option)}")

    model = su.load_model(args.model, device=args.device)
    if args.reduced:
        n = su.n_layers(model)
        args.layers = args.layers if args.layers != "all" else f"0,{n // 2},{n - 1}"
        args.n_eval, args.n_neutral, args.n_disc = args.n_eval or 4, args.n_neutral or 4, args.n_disc or 8
        args.n_formats = args.n_formats or 4
        args.plain_sample, args.precisions = min(args.plain_sample, 6), args.precisions or "float32"
    task = su.load_tasks([args.task], model=model)[0]  # targets checked against this model's tokenizer
    neutral = su.split_neutral(su.load_neutral())
    if args.n_eval:
        task = su.Task(task.name, task.category, task.description, task.discovery, task.evaluation[: args.n_eval])
    if args.n_neutral:
        neutral = su.NeutralSet(neutral.discovery, neutral.heldout[: args.n_neutral])
    if args.n_disc:
        task = su.Task(task.name, task.category, task.description, task.discovery[: args.n_disc], task.evaluation)
        neutral = su.NeutralSet(neutral.discovery[: args.n_disc], neutral.heldout)
    raw_formats = su.load_neutral_formats()  # run_sweep halves each task's list; the engine gets the same lists
    if args.n_formats:
        raw_formats = {name: p[: 2 * args.n_formats] for name, p in raw_formats.items()}
    task_formats = su.run.sweep.format_sets(raw_formats, SWEEP_SEED).get(task.name)
    formats = list(task_formats.heldout) if task_formats else []  # run_sweep skips a task without them too
    layers = list(range(su.n_layers(model))) if args.layers == "all" else [int(x) for x in args.layers.split(",")]
    cuda = args.device.startswith("cuda")
    precisions = args.precisions.split(",") if args.precisions else ["float32", "bfloat16"] + ["tf32"] * cuda
    ks, ms = ((1, 10, 100), (2.0, 5.0, 10.0)) if args.reduced else (su.PAPER_KS, su.PAPER_MULTIPLIERS)
    n_grid = len(layers) * len(ks) * len(ms)
    print(f"{su.model_note(args.model)} on {args.device} ({torch.get_num_threads()} CPU threads); task {task.name}: "
          f"{len(task.evaluation)} evaluation prompts, {len(neutral.heldout)} held-out neutral prompts; "
          f"{len(formats)} held-out format-matched prompts; grid {len(layers)} layers {layers} x {len(ks)} k x "
          f"{len(ms)} multipliers = {n_grid} configurations, each with three arms (SNA, control, control_b)")

    if args.options_only:
        compare_options(model, task, neutral, raw_formats, layers, ks, ms, precisions[0], args.device)
        return
    plain_timing = None
    if not args.no_plain:
        per_cfg, n_sampled = time_plain(model, task, neutral, formats, layers, ks, ms, args.plain_sample, args.seed)
        plain, plain_timing = per_cfg * n_grid, (per_cfg, n_grid)
        print(f"plain loop : {plain:9.2f} s  (float32; timed {n_sampled} random configurations, seed {args.seed}, "
              f"{per_cfg:.3f} s each, scaled to {n_grid})")
    lengths = {name: (su.encode_prompts(model, prompts).last + 1).tolist() for name, prompts in
               (("eval", [i.prompt for i in task.evaluation]), ("neutral", neutral.heldout), ("formats", formats),
                ("discovery", [*[i.prompt for i in task.discovery], *neutral.discovery]))}
    summary = []
    for precision in precisions:
        su.run_sweep(model, [task], [layers[-1]], [1], [2.0], neutral=neutral, progress=False, formats=raw_formats,
                     precision=precision)  # warm-up (and the weights cast to this precision)
        def measured_rate() -> float:
            return su.matmul_rate(args.device, n=2048 if cuda else 1024, precision=precision)

        rates = [measured_rate()]
        engine, stages = time_engine(model, task, neutral, raw_formats, layers, ks, ms, "all", precision,
                                     args.max_tokens or None, args.device)
        rates.append(measured_rate())
        rate = max(rates)  # the faster of before and after the run: a CPU's clock drifts, and the floor stays a floor
        flops, floor = floor_seconds(model, layers, len(ks) * len(ms), lengths, rate)
        unmodified = su.run.flops.unmodified_flop_floor(
            model, [*lengths["eval"], *lengths["neutral"], *lengths["formats"]], lengths["discovery"], max(layers)) / rate
        print(f"[{precision}] engine {engine:9.2f} s ({engine / n_grid * 1e3:.1f} ms per configuration); "
              f"FLOP floor {floor:8.2f} s ({flops / 1e12:.2f} TFLOP at a measured {rate / 1e9:.0f} GFLOP/s; "
              f"{rates[0] / 1e9:.0f} before the run, {rates[1] / 1e9:.0f} after)")
        print(stages_section(precision, engine, stages, floor, unmodified))
        last = None
        if not args.no_last:
            last, _ = time_engine(model, task, neutral, raw_formats, layers, ks, ms, "last", precision,
                                  args.max_tokens or None, args.device)
            print(f"[{precision}] positions='last' {last:9.2f} s")
        summary += ratios(precision, plain_timing, engine, floor, unmodified, last)
    print(f"Ratios on {args.model} ({args.device}, {torch.get_num_threads()} CPU threads), each against its reference:")
    print("\n".join(summary))
    if not args.no_options:
        compare_options(model, task, neutral, raw_formats, layers, ks, ms, precisions[0], args.device)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
