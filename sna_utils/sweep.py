"""The grid: every (task, layer, k, multiplier) through the engine, SNA beside its random-neuron control.

:func:`run_sweep` writes one row of METHOD's metrics per configuration to the results table after
every (task, layer), resumes where an interrupted run stopped, and never mixes settings.
:func:`cross_task_interference` amplifies one task's neurons and measures every other task.
Imports ``core``, ``engine``, ``store`` and ``explore`` (for the neuron-set overlap).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from .core import (KIT_VERSION, Baseline, NeutralSet, Positions, Task, check_k, check_layer,
                   check_multiplier, check_positions, check_prompts, check_score_method, d_mlp, encode_prompts,
                   last_token_activations, load_neutral, model_device, model_name, outcome_from,
                   random_neurons, rank_neurons, scores_from_activations, split_neutral, target_token_ids,
                   top_neurons, zone_of)
from .engine import IDENTITY, Config, LayerState, Reference, check_precision, engine_metrics, layer_state, reference
from .errors import SNAError
from .explore import neuron_overlap
from .flops import ENGINE_OVER_FLOOR, matmul_rate, prompts_flop_floor
from .store import SweepSettings, data_fingerprint, existing_rows, write_table_atomic


def _baseline(model, state: LayerState, layer: int, ids: torch.Tensor, precision: str | None) -> Baseline:
    """A prompt set's baseline (target probability, top-1) through the engine, as its configurations are."""
    m = engine_metrics(model, state, layer, [IDENTITY], target_ids=ids, precision=precision)
    return Baseline(ids, m.p[0], m.top1[0])


def _sweep_rows(model, task: Task, layer: int, ranking: torch.Tensor, ks, ms, positions,
                base: Baseline, task_state: LayerState, neutral_base: Reference,
                neutral_state: LayerState, control_cache: dict, seed: int, max_tokens: int | None,
                precision: str | None = None) -> list[dict]:
    """All configurations of one task at one layer: SNA and random-neuron control (metrics from the device)."""
    sna = [Config(tuple(ranking[:k].tolist()), m) for k in ks for m in ms]
    control = [Config(tuple(random_neurons(d_mlp(model), k, seed, layer)), m) for k in ks for m in ms]
    run = dict(positions=positions, precision=precision, max_tokens=max_tokens)
    task_m = engine_metrics(model, task_state, layer, sna + control, target_ids=base.target_ids, **run)
    neutral_kl = engine_metrics(model, neutral_state, layer, sna, reference=neutral_base, **run).kl.mean(1)
    missing = [c for c in control if c not in control_cache]
    if missing:
        kl = engine_metrics(model, neutral_state, layer, missing, reference=neutral_base, **run).kl.mean(1)
        control_cache.update(zip(missing, kl.tolist()))
    rows = []
    for i, (c, ctrl) in enumerate(zip(sna, control)):
        o = outcome_from(base, task_m.p[i], task_m.top1[i], neutral_kl[i])
        oc = outcome_from(base, task_m.p[len(sna) + i], task_m.top1[len(sna) + i], float("nan"))
        rows.append(dict(
            task=task.name, category=task.category, layer=layer, k=len(c.neurons), multiplier=c.multiplier,
            positions=positions, n_eval=len(base.p), p_base=base.p_mean, zone=zone_of(base.p_mean),
            p_sna=o.p_sna, improvement_pct=o.improvement_pct, success_rate=o.success_rate,
            top1_base=float(base.top1.float().mean()), top1_sna=o.top1_sna, side_effect_kl=o.side_effect_kl,
            control_p_sna=oc.p_sna, control_improvement_pct=oc.improvement_pct,
            control_success_rate=oc.success_rate, control_top1_sna=oc.top1_sna,
            control_side_effect_kl=control_cache[ctrl],
            gain_over_control_pct=o.improvement_pct - oc.improvement_pct,
        ))
    return rows


@torch.no_grad()
def run_sweep(model, tasks: Sequence[Task], layers: Sequence[int], ks: Sequence[int],
              multipliers: Sequence[float], positions: Positions = "all", out: str | os.PathLike | None = None,
              neutral: NeutralSet | None = None, score_method: str = "mean_diff", seed: int = 0,
              max_tokens: int | None = None, progress: bool = True, precision: str | None = None) -> pd.DataFrame:
    """Every (task, layer, k, multiplier) configuration: one row of METHOD's metrics each.

    Rows are written to ``out`` (.parquet or .csv) after every (task, layer); a rerun with the
    same settings skips what is there, a rerun with different settings refuses to mix rows.
    ``precision`` is the engine's (None: the model's dtype; see ``engine.PRECISIONS``); ``max_tokens``
    the tokens per forward chunk (None: sized to the device).
    """
    from tqdm.auto import tqdm

    tasks = list(tasks)
    if not tasks:
        raise SNAError("No tasks given.")
    layers = sorted({check_layer(model, L) for L in layers})
    ks = sorted({check_k(model, k) for k in ks})
    ms = sorted({check_multiplier(m) for m in multipliers})
    if not layers or not ks or not ms:
        raise SNAError("layers, ks and multipliers must each be non-empty.")
    check_positions(positions)
    check_score_method(score_method)
    precision = check_precision(model, precision)
    out = Path(out) if out is not None else None
    if out is not None and out.suffix not in (".parquet", ".csv"):
        raise SNAError(f"out={out}: use a .parquet or .csv file name.")
    neutral = neutral or split_neutral(load_neutral(), seed)
    ids = {t.name: target_token_ids(model, t.evaluation) for t in tasks}  # check every target first
    for t in tasks:
        check_prompts([i.prompt for i in t.discovery], f"{t.name} discovery prompts")
    eval_batches = {t.name: encode_prompts(model, [i.prompt for i in t.evaluation]) for t in tasks}
    neutral_batch = encode_prompts(model, neutral.heldout)

    settings = SweepSettings(model_name(model), positions, score_method, seed, data_fingerprint(tasks, neutral))
    old = existing_rows(out, settings)
    done = set() if old is None else set(zip(old["task"], old["layer"], old["k"], old["multiplier"]))
    todo = [(t, L) for L in layers for t in tasks
            if any((t.name, L, k, m) not in done for k in ks for m in ms)]
    n_cfg = len(tasks) * len(layers) * len(ks) * len(ms)
    n_todo = len(todo) * len(ks) * len(ms)

    neutral_lengths = (neutral_batch.last + 1).tolist()
    flops = sum(prompts_flop_floor(model, L, 2 * len(ks) * len(ms), (eval_batches[t.name].last + 1).tolist()
                                   + neutral_lengths) for t, L in todo)
    dev = model_device(model)
    est = flops / matmul_rate(dev, precision=precision) * ENGINE_OVER_FLOOR if todo else 0.0
    print(f"Sweep on {model_name(model)} ({dev}, {precision}): {n_cfg} configurations "
          f"({len(tasks)} tasks x {len(layers)} layers x {len(ks)} k x {len(ms)} multipliers), "
          f"{n_cfg - n_todo} already in {out}, {n_todo} to run; estimated {est / 60:.1f} min.")

    rows: list[dict] = [] if old is None else old.to_dict("records")
    rankings: dict[str, dict[int, torch.Tensor]] = {}
    bar = tqdm(total=n_todo, desc="SNA sweep", unit="config", disable=not progress)
    neutral_acts = None
    for L in layers:
        layer_todo = [t for t, LL in todo if LL == L]
        if not layer_todo:
            continue
        neutral_state = layer_state(model, neutral_batch, L)
        neutral_base = reference(model, neutral_state, L, precision)
        control_cache: dict = {}
        for t in layer_todo:
            if t.name not in rankings:  # discovery once per task, all layers at once
                if neutral_acts is None:
                    neutral_acts = last_token_activations(model, neutral.discovery, layers)
                acts = last_token_activations(model, [i.prompt for i in t.discovery], layers)
                rankings[t.name] = {LL: rank_neurons(scores_from_activations(acts[LL], neutral_acts[LL],
                                                                             score_method)) for LL in layers}
            state = layer_state(model, eval_batches[t.name], L)
            base = _baseline(model, state, L, ids[t.name], precision)
            new = _sweep_rows(model, t, L, rankings[t.name][L], ks, ms, positions, base, state,
                              neutral_base, neutral_state, control_cache, seed, max_tokens, precision)
            new = [r for r in new if (r["task"], r["layer"], r["k"], r["multiplier"]) not in done]
            for r in new:
                r.update(model=settings.model, score_method=score_method, seed=seed,
                         settings_id=settings.settings_id, kit_version=KIT_VERSION)
            rows.extend(new)
            if out is not None:
                write_table_atomic(pd.DataFrame(rows), out)
            bar.update(len(ks) * len(ms))
    bar.close()
    df = pd.DataFrame(rows)
    return df.sort_values(["task", "layer", "k", "multiplier"], ignore_index=True) if len(df) else df


@torch.no_grad()
def cross_task_interference(model, tasks: Sequence[Task], layer: int, k: int, multiplier: float,
                            positions: Positions = "all", neutral: NeutralSet | None = None,
                            score_method: str = "mean_diff", seed: int = 0, max_tokens: int | None = None,
                            precision: str | None = None) -> pd.DataFrame:
    """Every (source, target) task pair: the source's top-k neurons (its discovery half against neutral
    prose) amplified by ``multiplier`` at ``layer``, measured on the target's evaluation half."""
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
        base = _baseline(model, state, layer, ids[tgt.name], precision)
        got = engine_metrics(model, state, layer, configs, target_ids=ids[tgt.name], **run)
        for i in range(len(configs)):
            o = outcome_from(base, got.p[i], got.top1[i], float("nan"))
            rows.append(dict(model=model_name(model), layer=layer, k=k, multiplier=m, positions=positions,
                             source_task=names[i], source_category=cat[names[i]], target_task=tgt.name,
                             target_category=tgt.category, same_task=names[i] == tgt.name,
                             jaccard=float(jac.loc[names[i], tgt.name]), p_base=base.p_mean,
                             target_zone=zone_of(base.p_mean), p_sna=o.p_sna, improvement_pct=o.improvement_pct,
                             success_rate=o.success_rate, top1_base=float(base.top1.float().mean()),
                             top1_sna=o.top1_sna, side_effect_kl=kl[i], score_method=score_method, seed=seed,
                             neurons=",".join(map(str, configs[i].neurons))))
    return pd.DataFrame(rows)
