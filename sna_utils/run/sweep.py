"""The grid: every (task, layer, k, multiplier) through the engine, SNA beside its two random-neuron controls.

:func:`run_sweep` cuts the grid into units of work, one per (task, layer); :func:`run_unit` computes one
and writes its file to the results dataset, in this process or as a Ray task (``executor="ray"``). A sweep
resumes where an interrupted run stopped and never mixes settings.
:func:`cross_task_interference` amplifies one task's neurons and measures every other task.
Imports ``core``, ``engine``, ``flops``, ``heldout``, ``store``, ``cluster`` and ``explore`` (for the neuron-set overlap).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .baselines import (LEAN, STEER_ALPHAS, TEMPERATURES, SteerInputs, baseline_grids, baseline_prompt_rows,
                        check_lean, check_same_options, dropped_options, steering_vector)
from .cluster import RayExecutor, as_executor
from ..core import (Baseline, Batch, NeutralSet, Positions, Task, check_k, check_layer, check_multiplier,
                   check_positions, check_prompts, check_score_method, d_mlp, encode_prompts, hook_name,
                   last_token_activations, last_token_captures, load_neutral, load_tasks, model_device, model_name,
                   outcome_from, random_neurons, rank_neurons, resid_hook, scores_from_activations, split_neutral,
                   split_selection_test, target_token_ids, top_neurons, zone_of)
from .engine import (IDENTITY, Config, LayerState, Metrics, Reference, check_precision, compute_dtype,
                     engine_metrics, layer_state, reference)
from .prompt_run import PROMPT_RUN_BYTES, PromptRun
from ..errors import SNAError
from ..show.explore import load_neutral_formats, neuron_overlap
from ..judge.heldout import ARMS, PARTS, arm_column, part_column
from .flops import ENGINE_OVER_FLOOR, matmul_rate, sweep_unit_flops
from .hub import model_revision
from .store import SweepSettings, data_fingerprint, existing_rows, write_unit


def engine_baseline(model, state: LayerState, layer: int, ids: torch.Tensor, precision: str | None) -> Baseline:
    """A prompt set's baseline (target probability, top-1) through the engine, as its configurations are."""
    m = engine_metrics(model, state, layer, [IDENTITY], target_ids=ids, precision=precision)
    return Baseline(ids, m.p[0], m.top1[0])


def selection_test_ids(task: Task, seed: int) -> dict[str, torch.Tensor]:
    """Indices into ``task.evaluation`` of its selection and test parts, exactly as ``core.split_selection_test``
    cuts them (the split depends only on the task's name, its number of prompts and ``seed``)."""
    ids = split_selection_test(dataclasses.replace(task, evaluation=tuple(range(len(task.evaluation)))), seed)
    return {part: torch.tensor(i, dtype=torch.long) for part, i in zip(PARTS, ids)}


def control_configs(model, layer: int, ks: Sequence[int], ms: Sequence[float], seed: int, arm: str) -> list[Config]:
    """The random-neuron control's configurations: ``control`` draws with ``seed``, ``control_b`` with ``seed + 1``."""
    s = seed + ARMS.index(arm) - 1
    return [Config(tuple(random_neurons(d_mlp(model), k, s, layer)), m) for k in ks for m in ms]


def _arm_columns(arm: str, base: Baseline, p: torch.Tensor, top1: torch.Tensor,
                 parts: dict[str, torch.Tensor]) -> dict:
    """One arm's metrics over all evaluation prompts and on each part, from per-prompt ``p``, ``top1`` ``[n]``."""
    out = {}
    for part, idx in {None: slice(None), **parts}.items():
        b = base if part is None else Baseline(base.target_ids[idx], base.p[idx], base.top1[idx])
        o = outcome_from(b, p[idx], top1[idx], float("nan"))
        for metric in ("p_sna", "improvement_pct", "success_rate", "top1_sna"):
            col = arm_column(metric, arm)
            out[col if part is None else part_column(col, part)] = getattr(o, metric)
    return out


def part_labels(n: int, parts: dict[str, torch.Tensor]) -> np.ndarray:
    """Each evaluation prompt's part name ``[n]`` ("selection" or "test")."""
    part = np.empty(n, dtype=object)
    for name, idx in parts.items():
        part[idx.numpy()] = name
    return part


def _prompt_rows(task: Task, layer: int, configs: Sequence[Config], base: Baseline, m: Metrics,
                 parts: dict[str, torch.Tensor], arms: Sequence[str] = ARMS) -> pd.DataFrame:
    """The per-prompt table of one unit (``PROMPT_COLUMNS`` less model and settings): every arm, configuration
    and evaluation prompt; ``configs`` and the rows of ``m`` ``[len(arms) C, n]`` hold the arms one after another."""
    n, c = len(base.p), len(configs) // len(arms)
    part = part_labels(n, parts)
    return pd.DataFrame(dict(
        task=task.name, layer=layer, k=np.repeat([len(x.neurons) for x in configs], n),
        multiplier=np.repeat([x.multiplier for x in configs], n), arm=np.repeat(arms, c * n), strength=np.nan,
        prompt_id=np.tile(np.arange(n), len(configs)), part=np.tile(part, len(configs)),
        p_base=np.tile(base.p.double().numpy(), len(configs)), p=m.p.reshape(-1).numpy(),
        top1=m.top1.reshape(-1).numpy()))


def _sweep_rows(model, task: Task, layer: int, ranking: torch.Tensor, ks, ms, positions,
                base: Baseline, task_state: LayerState, neutral_base: Reference,
                neutral_state: LayerState, control_cache: dict, seed: int, max_tokens: int | None,
                precision: str | None = None, formats: tuple[LayerState, Reference] | None = None,
                steer_inputs: SteerInputs | None = None, control_b: bool = True, formats_kl: bool = True,
                prompt_table: bool = True, baselines: bool = True, steer_alphas: Sequence[float] = STEER_ALPHAS,
                temperatures: Sequence[float] = TEMPERATURES) -> tuple[list[dict], pd.DataFrame | None]:
    """All configurations of one task at one layer: SNA and two random-neuron controls (metrics from the
    device), as table rows and as the per-prompt table (None without ``prompt_table``), which also holds the
    baselines (``baselines``: ``steer_inputs`` given). ``formats``: the state and reference of the task's
    held-out format-matched neutral prompts (for ``side_effect_kl_formats``). The lean options
    (``run.baselines.LEAN``) turn off the second control, the formats KL, the per-prompt table and the baselines."""
    arm_names = ARMS if control_b else ARMS[:2]
    sna = [Config(tuple(ranking[:k].tolist()), m) for k in ks for m in ms]
    controls = {arm: control_configs(model, layer, ks, ms, seed, arm) for arm in arm_names[1:]}
    configs = sna + [c for arm in arm_names[1:] for c in controls[arm]]
    run = dict(positions=positions, precision=precision, max_tokens=max_tokens)
    task_m = engine_metrics(model, task_state, layer, configs, target_ids=base.target_ids, **run)
    missing = list(dict.fromkeys(c for c in configs[len(sna):] if c not in control_cache))  # controls: once a layer
    kl = engine_metrics(model, neutral_state, layer, sna + missing, reference=neutral_base, **run).kl.mean(1)
    neutral_kl = kl[:len(sna)]
    control_cache.update(zip(missing, kl[len(sna):].tolist()))
    format_kl = (engine_metrics(model, formats[0], layer, sna, reference=formats[1], **run).kl.mean(1)
                 if formats is not None and formats_kl else torch.full((len(sna),), float("nan")))
    parts = selection_test_ids(task, seed)
    rows = []
    for i, c in enumerate(sna):
        arms = {arm: i + j * len(sna) for j, arm in enumerate(arm_names)}
        o = outcome_from(base, task_m.p[i], task_m.top1[i], neutral_kl[i])
        oc = outcome_from(base, task_m.p[arms["control"]], task_m.top1[arms["control"]], float("nan"))
        row = dict(
            task=task.name, category=task.category, layer=layer, k=len(c.neurons), multiplier=c.multiplier,
            positions=positions, n_eval=len(base.p), p_base=base.p_mean, zone=zone_of(base.p_mean),
            p_sna=o.p_sna, improvement_pct=o.improvement_pct, success_rate=o.success_rate,
            top1_base=float(base.top1.float().mean()), top1_sna=o.top1_sna, side_effect_kl=o.side_effect_kl,
            control_p_sna=oc.p_sna, control_improvement_pct=oc.improvement_pct,
            control_success_rate=oc.success_rate, control_top1_sna=oc.top1_sna,
            control_side_effect_kl=control_cache[controls["control"][i]],
            gain_over_control_pct=o.improvement_pct - oc.improvement_pct,
        )
        row |= {f"n_{part}": len(idx) for part, idx in parts.items()}
        for part, idx in parts.items():
            row[part_column("p_base", part)] = float(base.p[idx].mean())
            row[part_column("top1_base", part)] = float(base.top1[idx].float().mean())
        for arm, r in arms.items():
            row |= _arm_columns(arm, base, task_m.p[r], task_m.top1[r], parts)
        if control_b:
            row["control_b_side_effect_kl"] = control_cache[controls["control_b"][i]]
        row["side_effect_kl_formats"] = float(format_kl[i])
        row["dropped"] = dropped_options(control_b, formats_kl, prompt_table, baselines)
        rows.append(row)
    if not prompt_table:
        return rows, None
    prompts = _prompt_rows(task, layer, configs, base, task_m, parts, arm_names)
    if baselines and steer_inputs is not None:
        best = int(np.nanargmax([r["improvement_pct_selection"] for r in rows])) if any(
            np.isfinite(r["improvement_pct_selection"]) for r in rows) else 0
        prompts = pd.concat([prompts, baseline_prompt_rows(
            model, task.name, layer, task_state, base, part_labels(len(base.p), parts), steer_inputs,
            (sna[best].neurons, sna[best].multiplier), positions, steer_alphas, temperatures, precision,
            max_tokens)], ignore_index=True)
    return rows, prompts


@dataclass(frozen=True)
class SweepPlan:
    """What every unit of one sweep shares; shipped once to each Ray worker. ``options`` go to ``_sweep_rows``."""

    tasks: dict[str, Task]
    layers: tuple[int, ...]
    ks: tuple[int, ...]
    ms: tuple[float, ...]
    positions: Positions
    neutral: NeutralSet
    score_method: str
    seed: int
    settings: SweepSettings
    out: Path | None
    done: frozenset  # (task, layer, k, multiplier) already in the table
    options: dict = field(default_factory=dict)
    formats: dict[str, NeutralSet] = field(default_factory=dict)  # task -> its format-matched neutral prompts
    reference: str = "neutral"  # discovery's reference: "neutral" prose or the task's "formats"


REFERENCES = ("neutral", "formats")


def check_reference(reference: str, tasks: Sequence[Task], formats: dict[str, NeutralSet]) -> str:
    """Discovery's reference set: ``neutral`` prose or each task's ``formats`` (its own templates, off-task)."""
    if reference not in REFERENCES:
        raise SNAError(f"reference={reference!r}: choose one of {REFERENCES}.")
    lacking = [t.name for t in tasks if reference == "formats" and t.name not in formats]
    if lacking:
        raise SNAError(f"reference='formats' needs format-matched neutral prompts for every task; none for "
                       f"{lacking} (data/neutral_formats.json, or pass formats={{task: prompts}}).")
    return reference


def format_sets(formats: dict[str, Sequence[str]] | None, seed: int) -> dict[str, NeutralSet]:
    """Each task's format-matched neutral prompts (None: the kit's file) split into discovery / held-out halves."""
    formats = load_neutral_formats() if formats is None else formats
    return {name: split_neutral(check_prompts(list(p), f"format-matched neutral prompts of {name!r}"), seed)
            for name, p in formats.items()}


def _discovery_captures(model, plan: "SweepPlan", task: Task, cache: dict) -> tuple[dict, dict]:
    """Last-token ``hook_post`` (and, with the baselines, the residual after the block: the steering vector's
    input) at every layer of the plan, of the task's discovery prompts and of discovery's reference prompts:
    ``({hook: [n, width]}, {hook: [n_ref, width]})``, one forward pass a prompt set, cached (the neutral
    reference shared by every task)."""
    names = [hook_name(L) for L in plan.layers]
    names += [resid_hook(L) for L in plan.layers] if plan.options.get("baselines", True) else []
    key = ("reference", task.name if plan.reference == "formats" else None)
    if key not in cache:
        prompts = plan.formats[task.name].discovery if plan.reference == "formats" else plan.neutral.discovery
        cache[key] = last_token_captures(model, prompts, names)
    if ("discovery", task.name) not in cache:
        cache["discovery", task.name] = last_token_captures(model, [i.prompt for i in task.discovery], names)
    return cache["discovery", task.name], cache[key]


def _state_at(model, plan: "SweepPlan", cache: dict, key, batch: Batch, layer: int) -> LayerState:
    """The state at ``layer`` of the prompt set ``key`` (encoded as ``batch``), served by that set's ``PromptRun``
    (kept in ``cache``: units go layer by layer); the sweep's prompt sets share ``PROMPT_RUN_BYTES``."""
    runs = cache.setdefault("runs", {})
    if key not in runs:
        n_sets = 1 + len(plan.tasks) * (2 if plan.formats and plan.options.get("formats_kl", True) else 1)
        precision = plan.options.get("precision") or check_precision(model, None)
        same = compute_dtype(precision) == model.cfg.dtype and precision != "tf32"  # else the engine runs its own
        tasks = plan.tasks if key == "neutral" else [key[1]]  # a resumed sweep keeps nothing for finished units
        to_do = [L for L in plan.layers if any((t, L, k, m) not in plan.done for t in tasks for k in plan.ks
                                               for m in plan.ms)]
        runs[key] = PromptRun(model, batch, to_do, need_kv=plan.positions == "last" and same,
                              max_bytes=PROMPT_RUN_BYTES // n_sets)
    return runs[key].at(layer)


@torch.no_grad()
def run_unit(model, plan: SweepPlan, task_name: str, layer: int, cache: dict) -> pd.DataFrame:
    """One unit of work, (task, layer): discovery ranking, layer state, baseline, the grid's rows, its files
    (the rows and the per-prompt table).

    ``cache`` keeps what later units of the same process reuse: encoded prompts, discovery rankings (all of
    the plan's layers at once) and the current layer's neutral state with its control KLs.
    """
    t, L = plan.tasks[task_name], layer
    precision = plan.options.get("precision")
    if "neutral_batch" not in cache:
        cache["neutral_batch"] = encode_prompts(model, plan.neutral.heldout)
    acts, ref = _discovery_captures(model, plan, t, cache)
    if ("ranking", t.name) not in cache:
        cache["ranking", t.name] = {LL: rank_neurons(scores_from_activations(
            acts[hook_name(LL)], ref[hook_name(LL)], plan.score_method)) for LL in plan.layers}
    steer = None
    if plan.options.get("baselines", True):
        resid = acts[resid_hook(L)]
        steer = SteerInputs(steering_vector(resid, ref[resid_hook(L)]).to(resid.dtype), acts[hook_name(L)])
    if cache.get("layer", (None,))[0] != L:  # the neutral state of one layer at a time bounds memory
        neutral_state = _state_at(model, plan, cache, "neutral", cache["neutral_batch"], L)
        cache["layer"] = (L, neutral_state, reference(model, neutral_state, L, precision), {})
    _, neutral_state, neutral_base, control_cache = cache["layer"]
    if ("eval", t.name) not in cache:
        cache["eval", t.name] = (target_token_ids(model, t.evaluation),
                                 encode_prompts(model, [i.prompt for i in t.evaluation]))
    formats = None
    if t.name in plan.formats and plan.options.get("formats_kl", True):
        if ("formats", t.name) not in cache:
            cache["formats", t.name] = encode_prompts(model, plan.formats[t.name].heldout)
        fstate = _state_at(model, plan, cache, ("formats", t.name), cache["formats", t.name], L)
        formats = (fstate, reference(model, fstate, L, precision))
    ids, batch = cache["eval", t.name]
    state = _state_at(model, plan, cache, ("eval", t.name), batch, L)
    base = engine_baseline(model, state, L, ids, precision)
    rows, prompts = _sweep_rows(model, t, L, cache["ranking", t.name][L], plan.ks, plan.ms, plan.positions, base,
                                state, neutral_base, neutral_state, control_cache, plan.seed, formats=formats,
                                steer_inputs=steer, **plan.options)
    s = plan.settings
    df = pd.DataFrame([r | dict(model=s.model, score_method=s.score_method, seed=s.seed, data_sha=s.data_sha,
                                settings_id=s.settings_id, kit_version=s.kit_version, precision=s.precision,
                                reference=s.reference, revision=s.revision, baseline_grids=s.baseline_grids)
                       for r in rows
                       if (r["task"], r["layer"], r["k"], r["multiplier"]) not in plan.done])
    if prompts is not None:
        fresh = not any((t.name, L, k, m) in plan.done for k in plan.ks for m in plan.ms)
        keep = [(tk, L_, k, m) not in plan.done if arm in ARMS else fresh for tk, L_, k, m, arm in
                zip(prompts["task"], prompts["layer"], prompts["k"], prompts["multiplier"], prompts["arm"])]
        prompts = prompts[keep].reset_index(drop=True)  # a grown grid keeps the unit's first baselines
        prompts.insert(0, "settings_id", s.settings_id)
        prompts.insert(0, "model", s.model)
    if plan.out is not None and len(df):
        write_unit(df, plan.out, s.settings_id, prompts)
    return df


def _as_tasks(tasks: Sequence[Task | str], seed: int) -> list[Task]:
    """Tasks as given; names ("addition", or one name alone) are loaded with :func:`load_tasks` and ``seed``."""
    tasks = [tasks] if isinstance(tasks, (str, Task)) else list(tasks)
    if not tasks:
        raise SNAError("No tasks given: pass a list of Task objects (su.load_tasks()) or task names.")
    bad = [t for t in tasks if not isinstance(t, (Task, str))]
    if bad:
        raise SNAError(f"tasks must be Task objects (su.load_tasks()) or task names, got {type(bad[0]).__name__}"
                       f" {bad[0]!r:.60}.")
    names = [t for t in tasks if isinstance(t, str)]
    loaded = dict(zip(names, load_tasks(names, seed=seed))) if names else {}
    tasks = [loaded[t] if isinstance(t, str) else t for t in tasks]
    if len({t.name for t in tasks}) != len(tasks):
        raise SNAError(f"Task names repeat: {[t.name for t in tasks]}.")
    return tasks


def _check_options(options: dict) -> None:
    """Extra run_sweep keywords must be options of the per-unit computation (``_sweep_rows``)."""
    params = inspect.signature(_sweep_rows).parameters
    known = set(params) - set(_UNIT_ARGS)
    unknown = sorted(set(options) - known)
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise SNAError(f"run_sweep got unknown option(s) {unknown}; it accepts {sorted(known)} besides its own.")


_UNIT_ARGS = ("model", "task", "layer", "ranking", "ks", "ms", "positions", "base", "task_state", "neutral_base",
              "neutral_state", "control_cache", "seed", "formats", "steer_inputs")


@torch.no_grad()
def run_sweep(model, tasks: Sequence[Task | str], layers: Sequence[int], ks: Sequence[int],
              multipliers: Sequence[float], positions: Positions = "all", out: str | os.PathLike | None = None,
              neutral: NeutralSet | None = None, score_method: str = "mean_diff", seed: int = 0,
              max_tokens: int | None = None, progress: bool = True, precision: str | None = None,
              executor: str | RayExecutor | None = None, reference: str = "neutral",
              formats: dict[str, Sequence[str]] | None = None, **options) -> pd.DataFrame:
    """Every (task, layer, k, multiplier) configuration: one row of METHOD's metrics each.

    ``tasks`` are Task objects or task names. ``out`` (``.parquet`` or ``.csv``) names a dataset folder that
    gets one file per (task, layer) as it finishes; a rerun with the same settings skips what is there, a
    rerun with different settings refuses to mix rows, and concurrent runs into one folder lose nothing.
    ``precision`` is the engine's (None: the model's dtype; see ``engine.PRECISIONS``); ``max_tokens`` the
    tokens per forward chunk (None: sized to the device). ``executor="ray"`` (or a :class:`RayExecutor`) runs
    the units as Ray tasks, one GPU each where the cluster has GPUs. ``reference`` is discovery's reference
    set: ``"neutral"`` prose (METHOD) or ``"formats"``, each task's own templates filled off-task;
    ``formats`` maps task names to those prompts (None: ``data/neutral_formats.json``), whose held-out half
    also measures ``side_effect_kl_formats``. Further keyword ``options`` are passed to each unit's computation.

    Every row also carries the metrics on the selection and test parts of the evaluation prompts
    (``core.split_selection_test`` with ``seed``) and a second control drawn with ``seed + 1``
    (``control_b_*``); with ``out`` each unit also saves its per-prompt table (:func:`read_prompt_table`),
    which also holds the field's baselines per prompt (``baselines``: the steering vector at ``steer_alphas``
    and at SNA's push, the temperatures ``temperatures``; ``run.baselines``). The lean options
    ``control_b``, ``formats_kl``, ``prompt_table``, ``baselines`` (all True by default; ``su.LEAN`` turns
    all off) drop what they name; the ``dropped`` column records them and a table never mixes them.
    """
    from tqdm.auto import tqdm

    tasks = _as_tasks(tasks, seed)
    layers = sorted({check_layer(model, L) for L in layers})
    ks = sorted({check_k(model, k) for k in ks})
    ms = sorted({check_multiplier(m) for m in multipliers})
    if not layers or not ks or not ms:
        raise SNAError("layers, ks and multipliers must each be non-empty.")
    check_positions(positions)
    check_score_method(score_method)
    precision = check_precision(model, precision)
    options = dict(max_tokens=max_tokens, precision=precision) | options
    _check_options(options)
    options = check_lean(options)
    executor = as_executor(executor)
    out = Path(out) if out is not None else None
    if out is not None and out.suffix not in (".parquet", ".csv"):
        raise SNAError(f"out={out}: use a .parquet or .csv name (it becomes a folder of one file per unit).")
    neutral = neutral or split_neutral(load_neutral(), seed)
    fmt = {n: f for n, f in format_sets(formats, seed).items() if n in {t.name for t in tasks}}
    reference = check_reference(reference, tasks, fmt)
    cache: dict = {("eval", t.name): (target_token_ids(model, t.evaluation),  # checks every target first
                                      encode_prompts(model, [i.prompt for i in t.evaluation])) for t in tasks}
    for t in tasks:
        check_prompts([i.prompt for i in t.discovery], f"{t.name} discovery prompts")

    settings = SweepSettings(model_name(model), positions, score_method, seed, data_fingerprint(tasks, neutral, fmt),
                             precision=precision, reference=reference, revision=model_revision(model),
                             baseline_grids=baseline_grids(options))
    old = existing_rows(out, settings)
    check_same_options(old, out, dropped_options(**{k: options.get(k, True) for k in LEAN}))
    done = frozenset() if old is None else frozenset(zip(old["task"], old["layer"], old["k"], old["multiplier"]))
    todo = [(t.name, L) for L in layers for t in tasks if any((t.name, L, k, m) not in done for k in ks for m in ms)]
    n_cfg = len(tasks) * len(layers) * len(ks) * len(ms)
    n_todo = len(todo) * len(ks) * len(ms)
    cache["neutral_batch"] = encode_prompts(model, neutral.heldout)
    cache |= {("formats", n): encode_prompts(model, f.heldout) for n, f in fmt.items()}
    n_steer = len(options.get("steer_alphas", STEER_ALPHAS)) + 1 if options.get("baselines", True) else 0
    _print_start(model, tasks, layers, ks, ms, neutral, cache, todo, out, n_cfg, n_todo, executor, precision, n_steer,
                 n_arms=3 if options.get("control_b", True) else 2, formats_kl=options.get("formats_kl", True))

    plan = SweepPlan({t.name: t for t in tasks}, tuple(layers), tuple(ks), tuple(ms), positions, neutral,
                     score_method, seed, settings, out, done, options, fmt, reference)
    frames = [] if old is None else [old]
    bar = tqdm(total=n_todo, desc="SNA sweep", unit="config", disable=not progress)

    def finished(unit: tuple[str, int], df: pd.DataFrame) -> None:
        frames.append(df)
        bar.update(len(ks) * len(ms))

    if executor is None:
        for name, L in todo:
            finished((name, L), run_unit(model, plan, name, L, cache))
    else:
        executor.map(_unit_task, dict(model=model, plan=plan), todo, finished)
    bar.close()
    df = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else pd.DataFrame()
    return df.sort_values(["task", "layer", "k", "multiplier"], ignore_index=True) if len(df) else df


def _unit_task(shared: dict, unit: tuple[str, int], cache: dict) -> pd.DataFrame:
    """A unit as a Ray task: the model moves to the worker's GPU once, if it was given one."""
    if "model" not in cache:
        model = shared["model"]
        cache["model"] = model.to("cuda") if torch.cuda.is_available() else model
    return run_unit(cache["model"], shared["plan"], *unit, cache)


def _print_start(model, tasks, layers, ks, ms, neutral, cache, todo, out, n_cfg, n_todo, executor,
                 precision, n_steer: int = 0, n_arms: int = 3, formats_kl: bool = True) -> None:
    """The sweep's first line: the grid, what is already saved, what runs where, and an estimate (of the arms
    and prompt sets the lean options leave)."""
    def lengths(batch) -> list[int]:
        return (batch.last + 1).tolist() if batch is not None else []

    # the controls' neutral side effect runs once per layer in one process (shared by the units left at that
    # layer); each Ray worker keeps its own cache, so there every unit counts it
    sharing = Counter(L for _, L in todo) if executor is None else Counter()
    flops = sum(sweep_unit_flops(model, L, len(ks) * len(ms), lengths(cache["eval", n][1]),
                                 lengths(cache["neutral_batch"]),
                                 lengths(cache.get(("formats", n)) if formats_kl else None),
                                 sharing.get(L, 1), n_steer, n_arms) for n, L in todo)
    dev = model_device(model)
    est = flops / matmul_rate(dev, precision=precision) * ENGINE_OVER_FLOOR if todo else 0.0
    saved = f"{n_cfg - n_todo} already in {out}" if out is not None else "nothing saved (no `out` path)"
    where = "" if executor is None else f" as {len(todo)} Ray tasks"
    print(f"Sweep on {model_name(model)} ({dev}, {precision}): {n_cfg} configurations "
          f"({len(tasks)} tasks x {len(layers)} layers x {len(ks)} k x {len(ms)} multipliers), "
          f"{saved}, {n_todo} to run{where}; estimated {est / 60:.1f} min on one {dev.type.upper()}.")


@torch.no_grad()
def cross_task_interference(model, tasks: Sequence[Task], layer: int, k: int, multiplier: float,
                            positions: Positions = "all", neutral: NeutralSet | None = None,
                            score_method: str = "mean_diff", seed: int = 0, max_tokens: int | None = None,
                            precision: str | None = None, settings_id: str | None = None) -> pd.DataFrame:
    """Every (source, target) task pair: the source's top-k neurons (its discovery half against neutral
    prose) amplified by ``multiplier`` at ``layer``, measured on the target's evaluation half: on all of it and
    on its selection and test parts (``*_selection``, ``*_test``; ``core.split_selection_test`` with ``seed``),
    so that a configuration chosen on selection prompts is reported on test prompts. ``settings_id``: the sweep
    whose table chose the configuration (its ``settings_id`` column), written into every row."""
    tasks = list(tasks)
    if not tasks:
        raise SNAError("No tasks given.")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise SNAError(f"Task names repeat: {names}.")
    layer, k, m = check_layer(model, layer), check_k(model, k), check_multiplier(multiplier)
    check_positions(positions)
    check_score_method(score_method)
    precision = check_precision(model, precision)
    neutral = neutral or split_neutral(load_neutral(), seed)
    ids = {t.name: target_token_ids(model, t.evaluation) for t in tasks}  # check every target first
    ref = last_token_activations(model, neutral.discovery, [layer])[layer]
    sets = {t.name: tuple(top_neurons(scores_from_activations(
        last_token_activations(model, [i.prompt for i in t.discovery], [layer])[layer], ref, score_method), k))
        for t in tasks}
    configs = [Config(sets[n], m) for n in names]
    nstate = layer_state(model, encode_prompts(model, neutral.heldout), layer)
    run = dict(positions=positions, precision=precision, max_tokens=max_tokens)
    kl = engine_metrics(model, nstate, layer, configs, reference=reference(model, nstate, layer, precision),
                        **run).kl.mean(1).tolist()
    jac = neuron_overlap({n: list(s) for n, s in sets.items()})
    cat = {t.name: t.category for t in tasks}
    rows = []
    for tgt in tasks:
        state = layer_state(model, encode_prompts(model, [i.prompt for i in tgt.evaluation]), layer)
        base = engine_baseline(model, state, layer, ids[tgt.name], precision)
        got = engine_metrics(model, state, layer, configs, target_ids=ids[tgt.name], **run)
        parts = selection_test_ids(tgt, seed)
        for i in range(len(configs)):
            o = outcome_from(base, got.p[i], got.top1[i], float("nan"))
            rows.append(dict(model=model_name(model), layer=layer, k=k, multiplier=m, positions=positions,
                             source_task=names[i], source_category=cat[names[i]], target_task=tgt.name,
                             target_category=tgt.category, same_task=names[i] == tgt.name,
                             jaccard=float(jac.loc[names[i], tgt.name]), p_base=base.p_mean,
                             target_zone=zone_of(base.p_mean), p_sna=o.p_sna, improvement_pct=o.improvement_pct,
                             success_rate=o.success_rate, top1_base=float(base.top1.float().mean()),
                             top1_sna=o.top1_sna, side_effect_kl=kl[i], score_method=score_method, seed=seed,
                             settings_id=settings_id or "not recorded",
                             neurons=",".join(map(str, configs[i].neurons))))
            rows[-1] |= {part_column("p_base", part): float(base.p[idx].mean()) for part, idx in parts.items()}
            rows[-1] |= _arm_columns("sna", base, got.p[i], got.top1[i], parts)
    return pd.DataFrame(rows)
