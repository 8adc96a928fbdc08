"""The FLOP model: what a grid strictly costs, this device's measured matmul rate, and the engine's overhead.

Used for the sweep's up-front estimate, the pre-flight of ``make run`` and the benchmark's floor.
The floor counts the matrix-multiply arithmetic a grid needs: blocks L.. for every configuration and
prompt at its real length, plus last-token logits. ``sweep_unit_flops`` says which prompts each arm of
a sweep runs on: the one count that the sweep's estimate, the pre-flight and the benchmark share.
Imports ``core`` and ``engine`` (precisions).
"""

from __future__ import annotations

import time
from typing import Sequence

import torch

from ..core import d_mlp, n_layers
from .engine import compute_dtype, precision_mode

# Engine time / FLOP floor, measured by `make bench` on the 2-core build CPU, float32: 1.10 on the GPT-2 Small
# shape (all layers, every arm), 1.35 on the Medium shape (before the third arm). Estimates use the larger;
# on a GPU it is not measured.
ENGINE_OVER_FLOOR = 1.35


def matmul_rate(device: str | torch.device = "cpu", n: int = 1024, repeats: int = 5,
                precision: str = "float32") -> float:
    """Measured matrix-multiply rate of ``device`` in FLOP/s at ``precision`` (best of ``repeats``)."""
    a = torch.randn(n, n, device=device, dtype=compute_dtype(precision))
    b = torch.randn(n, n, device=device, dtype=compute_dtype(precision))
    best = float("inf")
    with precision_mode(precision):
        for _ in range(repeats + 1):
            if str(device).startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            a @ b
            if str(device).startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def block_flops(d_model: int, d_mlp_: int, seq: int, d_kv: int | None = None, gated: bool = False,
                d_q: int | None = None) -> float:
    """Matrix-multiply FLOPs of one block on one sequence of ``seq`` tokens: queries and the heads' output ``d_q``
    wide (heads x head size; default ``d_model``), keys and values ``d_kv`` wide (grouped-query attention; default
    ``d_q``), an MLP of two matrices or, ``gated``, three (gate, up, down)."""
    d_q = d_model if d_q is None else d_q
    d_kv = d_q if d_kv is None else d_kv
    proj = 2 * seq * (2 * d_model * d_q + 2 * d_model * d_kv + (3 if gated else 2) * d_model * d_mlp_)
    attn = 2 * 2 * seq * seq * d_q  # scores and weighted values (full square, as run)
    return proj + attn


def _head_widths(cfg) -> tuple[int, int]:
    """Widths of the queries and of the keys (and values): heads x head size, key/value heads x head size (all
    heads without GQA); Gemma-2's heads x head size is not d_model."""
    heads = getattr(cfg, "n_heads", None)
    if not heads:
        return cfg.d_model, cfg.d_model
    d_head = getattr(cfg, "d_head", None) or cfg.d_model // heads
    return heads * d_head, (getattr(cfg, "n_key_value_heads", None) or heads) * d_head


def model_block_flops(model, seq: int) -> float:
    """``block_flops`` of one of ``model``'s blocks on one sequence of ``seq`` tokens."""
    cfg = model.cfg
    d_q, d_kv = _head_widths(cfg)
    return block_flops(cfg.d_model, d_mlp(model), seq, d_kv, bool(getattr(cfg, "gated_mlp", False)), d_q)


def grid_flop_floor(model, layer: int, n_configs: int, n_prompts: int, seq: int) -> float:
    """FLOPs a grid strictly needs at ``layer``: blocks L.. for every configuration, plus last-token logits."""
    per_seq = (n_layers(model) - layer) * model_block_flops(model, seq)
    logits = 2 * model.cfg.d_model * model.cfg.d_vocab
    return n_configs * n_prompts * (per_seq + logits)


def prompts_flop_floor(model, layer: int, n_configs: int, lengths: Sequence[int]) -> float:
    """``grid_flop_floor`` summed over prompts of the given token lengths (each run at its real length)."""
    return sum(grid_flop_floor(model, layer, n_configs, 1, int(T)) for T in lengths)


def unmodified_flop_floor(model, lengths: Sequence[int], discovery_lengths: Sequence[int], deepest: int) -> float:
    """FLOPs of the unmodified pass no sweep can skip, made once: prompts of ``lengths`` (evaluation, neutral,
    format-matched) through every block plus last-token logits, discovery prompts through blocks 0..``deepest``."""
    discovery = sum(model_block_flops(model, int(T)) for T in discovery_lengths)
    return prompts_flop_floor(model, 0, 1, lengths) + (deepest + 1) * discovery


def sweep_unit_flops(model, layer: int, n_pairs: int, eval_lengths: Sequence[int], neutral_lengths: Sequence[int],
                     format_lengths: Sequence[int] = (), n_tasks: int = 1, n_steer: int = 0,
                     n_arms: int = 3) -> float:
    """FLOP floor of one (task, layer) unit of ``run_sweep`` with ``n_pairs`` (k, m) pairs, every arm it computes.

    The ``n_arms`` arms (SNA, control and, unless lean, control_b) on the task's evaluation prompts; SNA on the
    held-out neutral prompts and on the task's held-out format-matched ones (none: no formats KL); the controls
    on the neutral prompts, which are computed once per layer and shared by the ``n_tasks`` tasks of the sweep
    (so counted 1 / n_tasks here); ``n_steer`` steering-vector configurations on the evaluation prompts (the
    baselines; temperature is free).
    """
    return (prompts_flop_floor(model, layer, n_arms * n_pairs + n_steer, eval_lengths)
            + prompts_flop_floor(model, layer, n_pairs, [*neutral_lengths, *format_lengths])
            + prompts_flop_floor(model, layer, (n_arms - 1) * n_pairs, neutral_lengths) / n_tasks)
