"""One prompt set's unmodified run, shared by every layer a sweep visits.

A sweep goes layer by layer, and at each layer L the engine needs a prompt set's state after block L (the
residual and the neurons' activations) and the unmodified run of blocks L+1.. (the baseline, the KL reference,
the keys and values ``positions="last"`` reuses). Taken one layer at a time that is a whole forward pass per
layer. ``PromptRun`` serves the layers in increasing order for about the cost of one: the bridge's forward pass
to the first layer asked, then the engine's own blocks once to the end, keeping the residual entering each later
layer of the sweep; each later state is that one block run once more, and the unmodified run (which does not
depend on L) is shared. ``tests/test_families.py`` checks every state and run against the bridge's.
Imports ``core``, ``decoder``, ``handwritten`` and ``engine``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from . import decoder, handwritten
from ..core import Batch, chunk_slices
from .engine import (EngineWeights, LayerState, PrefixKV, arithmetic, chunk_tokens, engine_weights, grouped_state,
                     layer_state, padded_residuals, run_unmodified)

PROMPT_RUN_BYTES = 2 << 30  # what a sweep's prompt runs keep, all together: keys and values, residuals entering layers
SHARED_STATE_DTYPES = (torch.float32, torch.float64)  # models whose later layers' states come from the one run


class PromptRun:
    """One prompt set's unmodified run, served a layer at a time (``at``); keeps at most ``max_bytes`` of the keys
    and values of later blocks (``need_kv``) and the residuals entering later layers of ``layers`` (past that,
    and for a layer behind the last one served, it starts again from the bridge at the layer asked). Runs in
    the model's own dtype: its final residual and keys and values serve an engine of that dtype (no TF32). A model
    of another dtype (bfloat16) takes every layer's state from the bridge, so its numbers never depend on the order
    layers are asked in: its own blocks would differ from the bridge's by up to 1.5e-2 of a probability (measured
    on ``tiny-pythia``), not float32's 1e-6."""

    def __init__(self, model, batch: Batch, layers: Sequence[int], need_kv: bool = False,
                 max_bytes: int = PROMPT_RUN_BYTES):
        self.model, self.batch, self.need_kv, self.max_bytes = model, batch, need_kv, max_bytes
        self.layers = sorted(set(layers)) if model.cfg.dtype in SHARED_STATE_DTYPES else []
        self.entering: dict[int, torch.Tensor] = {}  # layer ahead -> the residual entering its block [n, T, d]

    @torch.no_grad()
    def at(self, layer: int) -> LayerState:
        """The set's state at ``layer`` (groups as ``engine.layer_state``), its unmodified run from block
        ``layer + 1`` given in ``state.base``."""
        if layer not in self.entering:
            state = layer_state(self.model, self.batch, layer)
            self._run_from(state, layer)
            return state
        for L in [L for L in self.entering if L < layer]:
            del self.entering[L]
        x = self.entering.pop(layer)
        own = engine_weights(self.model)
        one_block = handwritten.block_and_acts if isinstance(own, EngineWeights) else decoder.layer_and_acts
        step = max(1, chunk_tokens(own, x.device, x.dtype) // x.shape[1])
        parts = [one_block(own, layer, x[sl]) for sl in chunk_slices(len(x), step)]
        state = grouped_state(self.batch.last + 1, *(torch.cat([p[i] for p in parts]) for i in (0, 1)),
                              in_group_order=True)
        if self.kv is not None:  # blocks up to this one are behind every later state: let them go
            self.kv, self.first = PrefixKV(_kv_after(self.kv.kv, self.first, layer), self.kv.last), layer
        state.base[self.key] = self.out, self.kv
        return state

    def _run_from(self, state: LayerState, layer: int) -> None:
        """The unmodified run of blocks ``layer+1..`` of ``state``, keeping what later layers' states need within
        ``max_bytes``: the keys and values first (if they do not fit, none: the engine recomputes them a layer
        at a time), then the residuals entering the next layers."""
        own = engine_weights(self.model)
        x, last = padded_residuals(state)
        per_layer = max(1, x.numel() * x.element_size())
        later = [L for L in self.layers if L > layer][:self.max_bytes // per_layer]
        self.key, self.first = arithmetic(own.w_u.dtype), layer
        self.out, self.kv, self.entering = run_unmodified(own, x, last, layer, chunk_tokens(own, x.device, x.dtype),
                                                          self.need_kv, later)
        left = self.max_bytes - (_nbytes(self.kv.kv) if self.kv is not None else 0)
        if left < 0:
            self.kv, left = None, self.max_bytes
        for L in later[max(0, left) // per_layer:]:
            del self.entering[L]
        state.base[self.key] = self.out, self.kv


def _kv_after(kv: list | dict, first: int, layer: int) -> list | dict:
    """The keys and values of blocks ``layer+1..`` of a run that started after block ``first`` (per block: a
    dict by block on the general path, a list from block ``first + 1`` on GPT-2's)."""
    return {L: t for L, t in kv.items() if L > layer} if isinstance(kv, dict) else kv[layer - first:]


def _nbytes(kv: list | dict) -> int:
    """Bytes of per-block (keys, values) pairs."""
    return sum(t.numel() * t.element_size() for pair in (kv.values() if isinstance(kv, dict) else kv) for t in pair)
