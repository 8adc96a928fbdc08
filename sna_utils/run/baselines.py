"""The field's two baselines beside SNA: a residual-stream steering vector and a softmax temperature.

* ``steer``: the steering vector of a task at layer L (ActAdd / Contrastive Activation Addition), the mean of
  the residual stream after block L (``blocks.L.hook_resid_post``) at the last token over the task's discovery
  prompts minus the same mean over discovery's reference prompts (those SNA ranks its neurons against),
  ``v_L = mean_task r_L - mean_ref r_L``; ``alpha * v_L`` is added at the positions SNA changes. One
  :class:`Steer` is one added residual row per configuration in the engine (``engine._final_resid``).
* ``steer_matched``: the same vector scaled to SNA's own push at that layer (:func:`matched_scale`), so SNA and
  steering are compared at equal strength.
* ``temperature``: the unmodified final logits divided by T (:func:`temperature_metrics`), no model change;
  top-1 never changes under a temperature.

:func:`baseline_prompt_rows` computes all three for one (task, layer) unit of the sweep, per prompt. The
lean options (:data:`LEAN`: the second control, the formats KL, the per-prompt table, these baselines) say
what a sweep may leave out. Imports ``core`` and ``engine``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..core import (Baseline, NeutralSet, Positions, Task, hook_name, last_token_captures, model_device,
                    resid_hook, scores_from_activations, top_neurons)
from .engine import (IDENTITY, _final_resid, _logits, _reduce, check_precision,
                     compute_dtype, engine_metrics, engine_weights, neuron_push, precision_mode)
from ..errors import SNAError

STEER_ALPHAS = (0.5, 1.0, 2.0, 4.0)  # multiples of the steering vector v_L itself (alpha = 1: the mean difference)
TEMPERATURES = (0.5, 0.7, 0.85, 1.25, 1.5, 2.0)  # T < 1 sharpens the softmax, T > 1 flattens it


@dataclass(frozen=True)
class Steer:
    """One steering configuration: ``scale * vector`` added to the residual after the state's layer, at every
    position the engine changes. Hashed and compared by ``label`` (one vector per label) and ``scale``."""

    label: str
    scale: float
    vector: torch.Tensor = field(compare=False, repr=False)  # [d_model]

    def residual_change(self, resid: torch.Tensor) -> torch.Tensor:
        """What this configuration adds to residuals ``resid`` ``[n, T, d]``: the same row at every position."""
        return (self.scale * self.vector.to(resid)).expand_as(resid)


def steering_vector(task_resid: torch.Tensor, reference_resid: torch.Tensor) -> torch.Tensor:
    """``v = mean(task_resid) - mean(reference_resid)`` ``[d_model]`` (float64) from last-token residuals
    ``[n, d]`` and ``[m, d]``."""
    if task_resid.ndim != 2 or reference_resid.ndim != 2 or task_resid.shape[1] != reference_resid.shape[1]:
        raise SNAError(f"steering_vector needs residuals [n, d] and [m, d], got {tuple(task_resid.shape)} and "
                       f"{tuple(reference_resid.shape)}.")
    return task_resid.double().mean(0) - reference_resid.double().mean(0)


@torch.no_grad()  # the engine's weights are the model's own parameters (GPT-2's hand-written layout too)
def sna_push(model, layer: int, acts: torch.Tensor, neurons: Sequence[int], multiplier: float) -> float:
    """Mean over prompts of the norm of SNA's change to the residual after block ``layer`` at the last token,
    ``||(m - 1) act[S] @ W_out[S]||`` (through the post-MLP norm where a family has one; ``engine.neuron_push``),
    from ``acts`` ``[n, d_mlp]``, in the residual's units."""
    return float(neuron_push(model, layer, acts, neurons, multiplier).norm(dim=-1).mean())


def matched_scale(push: float, vector: torch.Tensor) -> float:
    """The multiple of ``vector`` whose norm equals SNA's ``push`` (0 for a zero vector: nothing to scale)."""
    norm = float(vector.double().norm())
    return push / norm if norm > 0 else 0.0


def check_strengths(values: Sequence[float], what: str, positive: bool) -> tuple[float, ...]:
    """A baseline's grid as sorted floats: finite, non-empty (temperatures > 0); SNAError naming ``what``."""
    vals = tuple(sorted({float(v) for v in values}))
    if not vals or not np.isfinite(vals).all() or (positive and min(vals) <= 0):
        raise SNAError(f"{what}={tuple(values)!r}: give a non-empty grid of finite numbers"
                       f"{' above 0' if positive else ''}.")
    return vals


@torch.no_grad()
def temperature_metrics(model, state, layer: int, temperatures: Sequence[float], target_ids: torch.Tensor,
                        precision: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Target probability under ``softmax(z / T)`` of the unmodified logits ``z`` and top-1 (unchanged by T),
    per temperature and prompt ``[n_T, n_prompts]`` (CPU), reduced on the device like the engine's arms."""
    precision = check_precision(model, precision)
    eng = engine_weights(model, compute_dtype(precision))
    target = target_ids.to(model_device(model))
    p = torch.full((len(temperatures), state.n_prompts), float("nan"), dtype=torch.float64)
    top1 = torch.zeros(p.shape, dtype=torch.bool)
    with precision_mode(precision):
        for _, g, x in _final_resid(model, state, layer, [IDENTITY], "all", precision, None):
            z = _logits(eng, x)  # [1, n_g, V]
            for i, t in enumerate(temperatures):
                pt, hit, _ = _reduce(z / t, target, None, g.index)
                p[i, g.index.cpu()], top1[i, g.index.cpu()] = pt[0].cpu(), hit[0].cpu()
    return p, top1


def steering_summary(model, tasks: Sequence[Task], neutral: NeutralSet, layer: int, k: int, multiplier: float,
                     score_method: str = "mean_diff") -> pd.DataFrame:
    """Per task at ``layer``: the steering vector's norm (discovery prompts against neutral discovery prose),
    SNA's push (its top-``k`` neurons at ``multiplier``, mean over discovery prompts) and the alpha that makes
    the two equal (what the sweep's ``steer_matched`` adds), in the residual's units."""
    hooks = [hook_name(layer), resid_hook(layer)]  # both from one forward pass a prompt set
    ref = last_token_captures(model, neutral.discovery, hooks)
    rows = []
    for t in tasks:
        got = last_token_captures(model, [i.prompt for i in t.discovery], hooks)
        acts, v = got[hooks[0]], steering_vector(got[hooks[1]], ref[hooks[1]])
        neurons = top_neurons(scores_from_activations(acts, ref[hooks[0]], score_method), k)
        push = sna_push(model, layer, acts, neurons, multiplier)
        rows.append(dict(task=t.name, layer=layer, steer_norm=float(v.norm()), k=k, multiplier=multiplier,
                         sna_push=push, matched_alpha=matched_scale(push, v)))
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class SteerInputs:
    """What a unit needs for the steering baselines: the vector ``[d_model]`` and the discovery prompts'
    last-token activations of the layer ``[n, d_mlp]`` (for SNA's push)."""

    vector: torch.Tensor
    discovery_acts: torch.Tensor


def baseline_prompt_rows(model, task: str, layer: int, state, base: Baseline, part: np.ndarray,
                         inputs: SteerInputs, matched: tuple[tuple[int, ...], float], positions: Positions,
                         alphas: Sequence[float], temperatures: Sequence[float], precision: str | None,
                         max_tokens: int | None) -> pd.DataFrame:
    """The per-prompt rows of the three baselines at one (task, layer): ``steer`` at every alpha,
    ``steer_matched`` at SNA's push of ``matched`` (its neurons and multiplier chosen on selection prompts at this
    layer) and ``temperature`` at every T; ``strength`` alpha or T; ``k`` 0 and ``multiplier`` 1 (no neurons),
    but for ``steer_matched`` the k and multiplier of the SNA configuration it was matched to."""
    scale = matched_scale(sna_push(model, layer, inputs.discovery_acts, *matched), inputs.vector)
    label = f"{task}@{layer}"
    steer = [Steer(label, a, inputs.vector) for a in (*alphas, scale)]
    m = engine_metrics(model, state, layer, steer, positions, base.target_ids, precision=precision,
                       max_tokens=max_tokens)
    tp, ttop1 = temperature_metrics(model, state, layer, temperatures, base.target_ids, precision)
    arms = ["steer"] * len(alphas) + ["steer_matched"] + ["temperature"] * len(temperatures)
    strength = [*alphas, scale, *temperatures]
    p, top1 = torch.cat([m.p, tp]), torch.cat([m.top1, ttop1])
    n = len(base.p)
    k = [len(matched[0]) if a == "steer_matched" else 0 for a in arms]
    mult = [float(matched[1]) if a == "steer_matched" else 1.0 for a in arms]
    return pd.DataFrame(dict(
        task=task, layer=layer, k=np.repeat(k, n), multiplier=np.repeat(mult, n), arm=np.repeat(arms, n),
        strength=np.repeat(strength, n),
        prompt_id=np.tile(np.arange(n), len(arms)), part=np.tile(part, len(arms)),
        p_base=np.tile(base.p.double().numpy(), len(arms)), p=p.reshape(-1).numpy(), top1=top1.reshape(-1).numpy()))


# ---------------------------------------------------------------------------
# The lean sweep: which of the sweep's extra arms and tables a run keeps
# ---------------------------------------------------------------------------

LEAN = dict(control_b=False, formats_kl=False, prompt_table=False, baselines=False)  # run_sweep(..., **LEAN)


def dropped_options(control_b: bool, formats_kl: bool, prompt_table: bool, baselines: bool) -> str:
    """The lean options turned off, comma-separated (the ``dropped`` column; "" for the full sweep)."""
    on = dict(control_b=control_b, formats_kl=formats_kl, prompt_table=prompt_table, baselines=baselines)
    return ",".join(name for name, value in on.items() if not value)


def check_lean(options: dict) -> dict:
    """The lean options and the baselines' grids checked before any work (SNAError naming the problem)."""
    if options.get("baselines", True) and not options.get("prompt_table", True):
        raise SNAError("baselines=True needs prompt_table=True (the baselines live in the per-prompt table); "
                       "pass baselines=False too, or su.run.baselines.LEAN for the leanest sweep.")
    for name in ("control_b", "formats_kl", "prompt_table", "baselines"):
        if not isinstance(options.get(name, True), bool):
            raise SNAError(f"{name}={options[name]!r}: pass True or False.")
    if "steer_alphas" in options:
        options["steer_alphas"] = check_strengths(options["steer_alphas"], "steer_alphas", positive=False)
    if "temperatures" in options:
        options["temperatures"] = check_strengths(options["temperatures"], "temperatures", positive=True)
    return options


def baseline_grids(options: dict) -> str:
    """The baselines' grids of a sweep's ``options`` as one settings value: 'steer 0.5,1,2,4; T 0.5,...' (or
    'none' without baselines), so that a table never mixes rivals chosen from different grids."""
    if not options.get("baselines", True):
        return "none"
    alphas = ",".join(f"{a:g}" for a in options.get("steer_alphas", STEER_ALPHAS))
    return f"steer {alphas}; T {','.join(f'{t:g}' for t in options.get('temperatures', TEMPERATURES))}"


def check_same_options(old: pd.DataFrame | None, out, dropped: str) -> None:
    """SNAError when the rows already in ``out`` were made with other lean options than this run's."""
    if old is None:
        return
    if "dropped" not in old:
        raise SNAError(f"{out} holds rows of an earlier kit version (no baselines, no `dropped` column); a table "
                       f"never mixes them. Choose another `out` path or delete the folder.")
    was = sorted(set(old["dropped"].fillna("").astype(str)))
    if was != [dropped]:
        raise SNAError(f"{out} holds rows made with other lean options (turned off there: "
                       f"{', '.join(w or 'none' for w in was)}; now: {dropped or 'none'}); a table never mixes "
                       f"them. Choose another `out` path or pass the same options.")
