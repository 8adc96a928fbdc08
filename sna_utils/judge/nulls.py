"""The matched null: many random neuron sets like SNA's, at each task's configuration chosen on selection prompts.

SNA picks neurons that fire strongly on the task's prompts, so amplifying them pushes the residual stream
harder, ``||(m - 1) act W_out||`` (through the post-MLP norm where a family has one), than amplifying a uniformly
random set does. The matched null replaces each SNA neuron by a random neuron from the same cell of a joint
quantile grid (``n_bins`` quantiles of the mean last-token activation on the task's discovery prompts x
``n_bins`` quantiles of the output-weight norm ``||W_out[i]||``), ``n_draws`` times, and measures every draw at
the task's configuration chosen on selection prompts (``heldout.choose_on_selection``) on its test prompts (the
held-out part). A second control amplifies the other tasks' top-k neurons at the same configuration. Neither
uses an evaluation prompt to pick neurons or a configuration. :func:`reference_overlap` says how much the chosen
neurons change when discovery contrasts against the task's format-matched neutral prompts instead of neutral prose.
Imports ``core``, ``engine``, ``explore``, ``stats`` and ``sweep``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..core import (NeutralSet, Task, check_k, check_layer, check_multiplier, check_score_method, d_mlp,
                   encode_prompts, last_token_activations, load_neutral, model_name, random_neurons,
                   scores_from_activations, split_neutral, target_token_ids, top_neurons)
from ..run.engine import Config, engine_metrics, layer_state, mlp_out_weight, neuron_push
from ..errors import SNAError
from ..show.explore import neuron_overlap
from .stats import grouped_relative_pct
from ..run.sweep import engine_baseline, format_sets, selection_test_ids

NULL_COLUMNS = ["model", "settings_id", "task", "layer", "k", "multiplier", "draw", "prompt_id", "part", "p_base", "p"]


def neuron_profile(model, prompts: Sequence[str], layer: int) -> tuple[np.ndarray, np.ndarray]:
    """Every neuron of ``layer``: mean last-token activation over ``prompts`` and output-weight norm ``[d_mlp]``."""
    acts = last_token_activations(model, list(prompts), [layer])[layer].double()
    w_out = mlp_out_weight(model, layer).detach().double().cpu()
    return acts.mean(0).numpy(), w_out.norm(dim=1).numpy()


def joint_bins(mean_act: np.ndarray, w_norm: np.ndarray, n_bins: int) -> np.ndarray:
    """Each neuron's cell ``[d_mlp]`` of the ``n_bins x n_bins`` grid of activation and norm quantiles."""
    def quantile(x: np.ndarray) -> np.ndarray:
        return np.minimum(np.argsort(np.argsort(x, kind="stable"), kind="stable") * n_bins // len(x), n_bins - 1)

    return quantile(mean_act) * n_bins + quantile(w_norm)


def matched_draws(mean_act: np.ndarray, w_norm: np.ndarray, neurons: Sequence[int], n_draws: int,
                  n_bins: int = 5, seed: int = 0) -> list[tuple[int, ...]]:
    """``n_draws`` sets, each SNA neuron replaced by a random other neuron of its joint quantile cell (no neuron
    twice in a set, none of SNA's); a cell with no neuron left falls back to the activation quantile, then to all."""
    if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 1:
        raise SNAError(f"n_draws={n_draws!r}: draw at least 1 matched set (the null needs >= 100).")
    if not isinstance(n_bins, (int, np.integer)) or not 1 <= n_bins <= len(mean_act):
        raise SNAError(f"n_bins={n_bins!r}: use 1 <= n_bins <= {len(mean_act)} quantiles per axis.")
    neurons = [int(i) for i in neurons]
    if len(neurons) > len(mean_act) // 2:
        raise SNAError(f"k={len(neurons)} is more than half of the layer's {len(mean_act)} neurons: no room to match.")
    cell = joint_bins(mean_act, w_norm, n_bins)
    act_bin = cell // n_bins
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_draws):
        free = np.ones(len(mean_act), dtype=bool)
        free[neurons] = False
        chosen = []
        for i in neurons:
            for pool in (cell == cell[i], act_bin == act_bin[i], np.ones_like(free)):
                options = np.flatnonzero(pool & free)
                if options.size:
                    j = int(rng.choice(options))
                    free[j] = False
                    chosen.append(j)
                    break
        draws.append(tuple(chosen))
    return draws


def push_norm(model, layer: int, acts: torch.Tensor, neurons: Sequence[int], multiplier: float) -> float:
    """Mean over prompts of ``||(m - 1) act[S] @ W_out[S]||``: what amplifying ``neurons`` of ``layer`` adds to the
    residual stream at the last token (``acts [n, d_mlp]``; through the post-MLP norm where a family has one,
    ``engine.neuron_push``), in the residual's units."""
    return float(neuron_push(model, layer, acts, neurons, multiplier).norm(dim=-1).mean())


@dataclass
class MatchedNull:
    """The matched null's per-prompt table (``NULL_COLUMNS``), the other tasks' neurons as a second control
    (per prompt, with ``source_task``), and the push of SNA's set against the matched and unmatched controls."""

    table: pd.DataFrame
    other_tasks: pd.DataFrame
    push: pd.DataFrame


def _discovery(model, tasks: Sequence[Task], layer: int, reference: dict[str, Sequence[str]],
               score_method: str) -> dict[str, torch.Tensor]:
    """Each task's discovery scores at ``layer`` against its reference prompts ``[d_mlp]`` (as the sweep ranks)."""
    cache: dict = {}
    scores = {}
    for t in tasks:
        ref = tuple(reference[t.name])
        if ref not in cache:
            cache[ref] = last_token_activations(model, list(ref), [layer])[layer]
        acts = last_token_activations(model, [i.prompt for i in t.discovery], [layer])[layer]
        scores[t.name] = scores_from_activations(acts, cache[ref], score_method)
    return scores


def _per_prompt(model: str, task: Task, cfg: dict, prompt_ids: np.ndarray, base: torch.Tensor, p: torch.Tensor,
                label: str, labels: Sequence) -> pd.DataFrame:
    """Rows of ``p [n_sets, n_test]``: one per set (``label`` column = ``labels``) and test prompt."""
    n = p.shape[1]
    return pd.DataFrame({"model": model, "task": task.name, **cfg, label: np.repeat(list(labels), n),
                         "prompt_id": np.tile(prompt_ids, len(labels)), "part": "test",
                         "p_base": np.tile(base.double().numpy(), len(labels)), "p": p.reshape(-1).numpy()})


@torch.no_grad()
def matched_null(model, tasks: Sequence[Task], chosen: pd.DataFrame, n_draws: int = 100, n_bins: int = 5,
                 seed: int = 0, neutral: NeutralSet | None = None, score_method: str = "mean_diff",
                 positions: str = "all", reference: str = "neutral", formats: dict | None = None,
                 precision: str | None = None, settings_id: str | None = None) -> MatchedNull:
    """The matched null of every task at its chosen configuration (``chosen``: task, layer, k, multiplier, as
    ``choose_on_selection`` returns them), with the sweep's discovery (``neutral``, ``score_method``,
    ``reference``, ``seed``: pass the sweep's own) and ``n_draws`` matched sets per task. ``settings_id``, the
    sweep's (its table's column), is written into every table, so ``verdict()`` refuses a null of another sweep."""
    check_score_method(score_method)
    by_name = {t.name: t for t in tasks}
    missing = sorted(set(chosen["task"]) - set(by_name))
    if missing:
        raise SNAError(f"No Task given for chosen task(s) {missing}.")
    if n_draws < 100:
        raise SNAError(f"n_draws={n_draws}: a null distribution needs at least 100 matched draws.")
    neutral = neutral or split_neutral(load_neutral(), seed)
    fmt = format_sets(formats, seed) if reference == "formats" else {}
    ref = {t.name: (fmt[t.name].discovery if reference == "formats" else neutral.discovery) for t in tasks}
    name = model_name(model)
    tables, others, pushes, scores_at = [], [], [], {}
    for _, c in chosen.iterrows():
        t = by_name[c["task"]]
        L, k, m = check_layer(model, int(c["layer"])), check_k(model, int(c["k"])), check_multiplier(c["multiplier"])
        if L not in scores_at:
            scores_at[L] = _discovery(model, tasks, L, ref, score_method)
        scores = scores_at[L]
        sna = top_neurons(scores[t.name], k)
        mean_act, w_norm = neuron_profile(model, [i.prompt for i in t.discovery], L)
        draws = matched_draws(mean_act, w_norm, sna, n_draws, n_bins, seed)
        other = {u: tuple(top_neurons(s, k)) for u, s in scores.items() if u != t.name}
        test = selection_test_ids(t, seed)["test"].numpy()  # the null is read on test prompts only
        items = [t.evaluation[i] for i in test]
        ids = target_token_ids(model, items)
        state = layer_state(model, encode_prompts(model, [i.prompt for i in items]), L)
        base = engine_baseline(model, state, L, ids, precision).p
        configs = [Config(d, m) for d in draws] + [Config(o, m) for o in other.values()]
        got = engine_metrics(model, state, L, configs, positions, target_ids=ids, precision=precision).p
        cfg = dict(layer=L, k=k, multiplier=m)
        tables.append(_per_prompt(name, t, cfg, test, base, got[:n_draws], "draw", range(n_draws)))
        others.append(_per_prompt(name, t, cfg, test, base, got[n_draws:], "source_task", list(other)))
        acts = last_token_activations(model, [i.prompt for i in items], [L])[L].double()
        control = random_neurons(d_mlp(model), k, seed, L)
        row = dict(model=name, task=t.name, **cfg, push_sna=push_norm(model, L, acts, sna, m),
                   push_matched=float(np.mean([push_norm(model, L, acts, d, m) for d in draws])),
                   push_control=push_norm(model, L, acts, control, m),
                   mean_act_sna=float(mean_act[sna].mean()),
                   mean_act_matched=float(np.mean([mean_act[list(d)].mean() for d in draws])),
                   mean_act_control=float(mean_act[control].mean()))
        pushes.append(row | dict(push_ratio_matched=row["push_sna"] / row["push_matched"],
                                 push_ratio_control=row["push_sna"] / row["push_control"]))
    made_for = dict(settings_id=settings_id or "not recorded")
    return MatchedNull(pd.concat(tables, ignore_index=True).assign(**made_for)[NULL_COLUMNS],
                       pd.concat(others, ignore_index=True).assign(**made_for), pd.DataFrame(pushes).assign(**made_for))


def null_summary(result: MatchedNull, chosen: pd.DataFrame) -> pd.DataFrame:
    """Per task, on test prompts: SNA's held-out gain (``chosen``), the matched null's mean and 95th percentile
    and SNA's one-sided p among the draws, the other tasks' neurons' mean and best gain, and the push ratios."""
    def gains(df: pd.DataFrame, by: str) -> pd.DataFrame:
        return grouped_relative_pct(df[df["part"] == "test"], ["task", by]).rename("gain").reset_index()

    null, other = gains(result.table, "draw"), gains(result.other_tasks, "source_task")
    rows = []
    for _, c in chosen.iterrows():
        d = null.loc[null["task"] == c["task"], "gain"].to_numpy()
        o = other.loc[other["task"] == c["task"], "gain"]
        rows.append(dict(task=c["task"], held_out=c["held_out"], null_mean=d.mean(), null_q95=np.quantile(d, 0.95),
                         null_p=(1 + (d >= c["held_out"]).sum()) / (1 + d.size),
                         other_tasks_mean=o.mean() if len(o) else np.nan, other_tasks_max=o.max() if len(o) else np.nan))
    return pd.DataFrame(rows).merge(result.push[["task", "push_ratio_matched", "push_ratio_control"]], on="task")


def reference_overlap(model, tasks: Sequence[Task], layer: int, k: int, neutral: NeutralSet | None = None,
                      formats: dict | None = None, score_method: str = "mean_diff", seed: int = 0) -> pd.DataFrame:
    """Per task: the Jaccard overlap of its top-k neurons at ``layer`` found against neutral prose and against
    its format-matched neutral prompts (1: discovery's reference does not matter; 0: it decides everything)."""
    layer, k = check_layer(model, layer), check_k(model, k)
    neutral = neutral or split_neutral(load_neutral(), seed)
    fmt = format_sets(formats, seed)
    lacking = [t.name for t in tasks if t.name not in fmt]
    if lacking:
        raise SNAError(f"No format-matched neutral prompts for {lacking} (data/neutral_formats.json).")
    prose = _discovery(model, tasks, layer, {t.name: neutral.discovery for t in tasks}, score_method)
    own = _discovery(model, tasks, layer, {t.name: fmt[t.name].discovery for t in tasks}, score_method)
    rows = []
    for t in tasks:
        a, b = top_neurons(prose[t.name], k), top_neurons(own[t.name], k)
        rows.append(dict(model=model_name(model), task=t.name, layer=layer, k=k,
                         jaccard=float(neuron_overlap({"prose": a, "formats": b}).loc["prose", "formats"]),
                         shared=len(set(a) & set(b))))
    return pd.DataFrame(rows)
