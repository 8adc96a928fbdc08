"""Looking inside: the tables notebooks 01-02 show about tasks and neurons.

Task sizes and baselines, every neuron's differential score, the top neurons per task, the overlap
of neuron sets, and the prompts a neuron fires on most. Each is a short composition of ``core``
steps, returned as a DataFrame. Imports only ``core``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from ..core import (DATA_DIR, read_json, NeutralSet, Task, baseline_of, check_layer, check_neurons, check_prompts,
                   last_token_activations, load_neutral, model_name, n_layers, next_token_logits, rank_neurons,
                   scores_from_activations, split_neutral, target_token_ids, zone_of)
from ..errors import SNAError


def task_table(tasks: Sequence[Task]) -> pd.DataFrame:
    """One row per task: name, category, number of items and of discovery/evaluation prompts."""
    return pd.DataFrame([dict(task=t.name, category=t.category, items=len(t.items), discovery=len(t.discovery),
                              evaluation=len(t.evaluation)) for t in tasks])


def task_baselines(model, tasks: Sequence[Task], batch_size: int = 32) -> pd.DataFrame:
    """Per task, without intervention, on the evaluation half: mean target probability, zone, top-1 accuracy."""
    rows = []
    for t in tasks:
        ids = target_token_ids(model, t.evaluation)
        base = baseline_of(ids, next_token_logits(model, [i.prompt for i in t.evaluation], batch_size=batch_size))
        rows.append(dict(model=model_name(model), task=t.name, category=t.category, n_eval=len(ids),
                         p_base=base.p_mean, zone=zone_of(base.p_mean), top1_base=float(base.top1.float().mean())))
    return pd.DataFrame(rows).sort_values(["model", "p_base"], ignore_index=True)


def discovery_scores(model, tasks: Sequence[Task], layers: Sequence[int] | None = None,
                     neutral: NeutralSet | None = None, method: str = "mean_diff", seed: int = 0) -> pd.DataFrame:
    """Differential score of every neuron of ``layers`` (default all) for every task: one row per
    (task, layer, neuron), with its rank (0 = selected first)."""
    layers = list(range(n_layers(model))) if layers is None else [check_layer(model, L) for L in layers]
    neutral = neutral or split_neutral(load_neutral(), seed)
    ref = last_token_activations(model, neutral.discovery, layers)
    parts = []
    for t in tasks:
        acts = last_token_activations(model, [i.prompt for i in t.discovery], layers)
        for L in layers:
            scores = scores_from_activations(acts[L], ref[L], method)
            rank = torch.empty_like(scores, dtype=torch.long)
            rank[rank_neurons(scores)] = torch.arange(len(scores))
            parts.append(pd.DataFrame(dict(task=t.name, category=t.category, layer=L, neuron=np.arange(len(scores)),
                                           score=scores.numpy(), rank=rank.numpy())))
    out = pd.concat(parts, ignore_index=True)
    out.insert(0, "model", model_name(model))
    return out


def top_neurons_by_task(scores: pd.DataFrame, layer: int, k: int) -> pd.DataFrame:
    """Per task at ``layer``: its top-k neurons (a list, best first) and their scores."""
    sub = scores[(scores["layer"] == layer) & (scores["rank"] < k)].sort_values(["task", "rank"])
    if sub.empty:
        raise SNAError(f"No scores for layer {layer} (layers present: {sorted(scores['layer'].unique())}).")
    return sub.groupby(["task", "category"], sort=False).agg(
        neurons=("neuron", list), top_score=("score", "max"), mean_topk_score=("score", "mean")).reset_index()


def neuron_overlap(neuron_sets: dict[str, Sequence[int]]) -> pd.DataFrame:
    """Jaccard index |A & B| / |A | B| between every pair of named neuron sets (a square DataFrame)."""
    if not isinstance(neuron_sets, dict) or not neuron_sets:
        raise SNAError("Give a non-empty dict {name: neuron indices}.")
    sets = {}
    for name, ns in neuron_sets.items():
        ns = ns.tolist() if hasattr(ns, "tolist") else ns
        if isinstance(ns, (str, bytes)) or not isinstance(ns, Iterable):
            raise SNAError(f"Neuron set {name!r} must be a list of neuron indices, got {ns!r}.")
        ns = list(ns)
        if not ns:
            raise SNAError(f"Neuron set {name!r} is empty: Jaccard overlap is undefined.")
        bad = [v for v in ns if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0]
        if bad:
            raise SNAError(f"Neuron set {name!r} holds {bad[:3]}: neuron indices are integers >= 0.")
        sets[name] = {int(v) for v in ns}
    names = list(sets)
    mat = [[len(sets[a] & sets[b]) / len(sets[a] | sets[b]) for b in names] for a in names]
    return pd.DataFrame(mat, index=pd.Index(names, name="set"), columns=names)


def top_activating_prompts(model, layer: int, neuron: int, prompts: Sequence[str], n: int = 5,
                           sources: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``n`` prompts on which ``neuron`` of ``layer`` fires most at the last token (highest first);
    ``sources`` optionally labels each prompt (e.g. its task)."""
    check_layer(model, layer)
    neuron = check_neurons(model, [neuron])[0]
    prompts = check_prompts(prompts)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SNAError(f"n={n!r}: ask for at least 1 prompt.")
    if sources is not None and len(sources) != len(prompts):
        raise SNAError(f"{len(sources)} source labels for {len(prompts)} prompts.")
    acts = last_token_activations(model, prompts, [layer])[layer][:, neuron]
    order = torch.sort(acts, descending=True, stable=True).indices[:n].tolist()
    out = pd.DataFrame(dict(rank=range(1, len(order) + 1), prompt=[prompts[i] for i in order],
                            activation=acts[order].double().numpy()))
    if sources is not None:
        out.insert(1, "source", [sources[i] for i in order])
    return out


def prompt_pool(tasks: Sequence[Task], neutral: NeutralSet | None = None) -> tuple[list[str], list[str]]:
    """Every task prompt (and the held-out neutral prompts), with the name of the set each comes from."""
    prompts = [i.prompt for t in tasks for i in t.items]
    sources = [t.name for t in tasks for _ in t.items]
    if neutral is not None:
        prompts += list(neutral.heldout)
        sources += ["neutral"] * len(neutral.heldout)
    return prompts, sources


def load_neutral_formats(data_dir: str | os.PathLike = DATA_DIR) -> dict[str, list[str]]:
    """Each task's format-matched neutral prompts (``data/neutral_formats.json``): its templates, none of its skill.

    An alternative discovery reference (not used by discovery yet); it lives here until it is.
    """
    path = Path(data_dir) / "neutral_formats.json"
    tasks = read_json(path, "Format-matched neutral prompt file").get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise SNAError(f"{path} needs a 'tasks' object mapping each task name to a list of prompts.")
    return {name: check_prompts(prompts, f"{path.name} tasks[{name!r}]") for name, prompts in tasks.items()}
