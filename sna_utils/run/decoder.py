"""Any bridged decoder-only model's own Hugging Face layers, run from the residual after block L.

The engine's general path: the model's decoder layers (unwrapped from TransformerBridge's hooks, sharing
its weights), called with the right rotary position embeddings and an additive attention mask that is
causal and, per layer, sliding-window; then the final norm, the unembedding and any final logit
soft-capping. Two mask shapes cover METHOD's positions: ``run_all`` runs every position of many
configurations stacked along the batch; ``run_last`` runs C configurations of one prompt as C queries
at the last position, each seeing the unmodified run's keys and values of positions < T-1 (a duck-typed
cache hands them to the attention) and its own key only. Imports only ``errors``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from ..errors import SNAError


def unwrapped(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with every bridge component replaced by the Hugging Face module it wraps (shallow copies
    sharing the weights; the bridge's own modules are left as they are)."""
    module = module._modules.get("_original_component", module)
    children = {n: unwrapped(c) if c is not None else None for n, c in module._modules.items()}
    if all(children[n] is c for n, c in module._modules.items()):
        return module
    plain = copy.copy(module)
    plain._modules = children
    return plain


def down_projection(model, layer: int) -> torch.nn.Module:
    """The Hugging Face module whose input is ``blocks.{layer}.mlp.hook_post`` (the MLP's output projection)."""
    return unwrapped(model.blocks[layer].mlp.out)


def down_weight(proj: torch.nn.Module) -> torch.Tensor:
    """The output projection's weight as ``[d_mlp, d_model]``: row i is what neuron i writes (Linear or Conv1D)."""
    return proj.weight if type(proj).__name__ == "Conv1D" else proj.weight.t()


class _KeysValues:
    """A duck-typed attention cache: records keys/values of positions < T-1 per layer (``record``), or
    puts the recorded ones in front of the new ones (``replay``)."""

    def __init__(self, stored: dict | None = None):
        self.stored = {} if stored is None else stored
        self.replay = stored is not None

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int, *args, **kwargs):
        if self.replay:
            k0, v0 = self.stored[layer_idx]
            return torch.cat([k0, k], -2), torch.cat([v0, v], -2)
        self.stored[layer_idx] = (k[:, :, :-1].contiguous(), v[:, :, :-1].contiguous())
        return k, v

    def get_seq_length(self, *args) -> int:
        return 0


@dataclass
class Decoder:
    """A model's decoder layers, final norm, unembedding, rotary module and per-layer sliding windows."""

    layers: list  # Hugging Face decoder layers, bridge hooks removed
    norm: torch.nn.Module
    lm_head: torch.nn.Module
    rotary: torch.nn.Module | None
    windows: list  # per layer: the sliding window in tokens, or None
    softcap: float | None  # final logit soft-capping (Gemma-2)
    down: list  # per layer: the MLP's output projection
    post_mlp: list  # per layer: a norm applied to the MLP's output before the residual add, or None
    w_u: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.w_u = self.lm_head.weight


def _windows(config, n: int) -> list:
    """Each layer's sliding window (None: full causal attention), as Hugging Face masks them."""
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if types is not None:
        return [window if t == "sliding_attention" else None for t in types]
    return [window] * n


def decoder_of(model) -> Decoder:
    """The general path's view of a bridged model (weights shared with it)."""
    hf = model.original_model
    n = len(model.blocks)
    rotary = getattr(model, "rotary_emb", None)
    layers = [unwrapped(b) for b in model.blocks]
    for L in layers:
        if not hasattr(L, "forward"):
            raise SNAError(f"{type(L).__name__} cannot be run layer by layer.")
    return Decoder(layers, unwrapped(model.ln_final), unwrapped(model.unembed),
                   None if rotary is None else unwrapped(rotary), _windows(hf.config, n),
                   getattr(hf.config, "final_logit_softcapping", None), [down_projection(model, i) for i in range(n)],
                   [getattr(L, "post_feedforward_layernorm", None) for L in layers])


def cast(dec: Decoder, dtype: torch.dtype) -> Decoder:
    """A copy of the decoder in ``dtype`` (the model's own weights are untouched)."""
    def to(m):
        return None if m is None else copy.deepcopy(m).to(dtype)

    layers = [to(L) for L in dec.layers]
    return Decoder(layers, to(dec.norm), to(dec.lm_head), dec.rotary, dec.windows, dec.softcap,
                   [to(m) for m in dec.down], [getattr(L, "post_feedforward_layernorm", None) for L in layers])


def _mask(window: int | None, q_pos: torch.Tensor, k_pos: torch.Tensor, own: int, dtype) -> torch.Tensor:
    """Additive mask ``[1, 1, Q, K0 + own]``: query at ``q_pos`` sees keys at ``k_pos`` ``[K0]`` that are causal and in
    its window; with ``own`` > 0, the last ``own`` keys are the queries' own (query i sees only key K0 + i)."""
    ok = k_pos[None] <= q_pos[:, None]
    if window is not None:
        ok &= k_pos[None] > q_pos[:, None] - window
    if own:
        ok = torch.cat([ok, torch.eye(own, dtype=torch.bool, device=ok.device)], 1)
    zero = torch.zeros((), dtype=dtype, device=q_pos.device)
    return torch.where(ok, zero, torch.finfo(dtype).min)[None, None]


def _layer(dec: Decoder, L: int, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor, cache) -> torch.Tensor:
    """Decoder layer ``L`` on ``x`` ``[B, S, d]`` at positions ``pos`` ``[S]``."""
    ids = pos[None]
    kw = dict(attention_mask=mask, position_ids=ids, past_key_values=cache, layer_past=cache, use_cache=False)
    if dec.rotary is not None:
        kw["position_embeddings"] = dec.rotary(x, ids)
    out = dec.layers[L](x, **kw)
    return out[0] if isinstance(out, tuple) else out


def run_all(dec: Decoder, x: torch.Tensor, layer: int, keep: dict | None = None) -> torch.Tensor:
    """Layers ``layer+1..`` on residuals ``[B, T, d]`` (every position changed); the last position ``[B, d]``.
    Records the keys and values of positions < T-1 per layer into ``keep`` if given."""
    T = x.shape[1]
    pos = torch.arange(T, device=x.device)
    cache = _KeysValues() if keep is not None else None
    for L in range(layer + 1, len(dec.layers)):
        x = _layer(dec, L, x, pos, _mask(dec.windows[L], pos, pos, 0, x.dtype), cache)
    if keep is not None:
        keep.update(cache.stored)
    return x[:, -1]


def run_last(dec: Decoder, x: torch.Tensor, layer: int, kv: dict) -> torch.Tensor:
    """Layers ``layer+1..`` for the last position only, ``[n, C, d]`` (C configurations of n prompts of length T,
    as C queries at position T-1); earlier positions are unchanged, so their keys/values ``kv`` come from the
    unmodified run."""
    C = x.shape[1]
    T = next(iter(kv.values()))[0].shape[2] + 1 if kv else 1
    q_pos = torch.full((C,), T - 1, device=x.device)
    k_pos = torch.arange(T - 1, device=x.device)
    cache = _KeysValues(kv)
    for L in range(layer + 1, len(dec.layers)):
        x = _layer(dec, L, x, q_pos, _mask(dec.windows[L], q_pos, k_pos, C, x.dtype), cache)
    return x


def logits(dec: Decoder, x: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary logits of final residuals ``[..., d] -> [..., V]`` (soft-capped where the model does),
    at least float32."""
    z = dec.lm_head(dec.norm(x))
    z = z if z.dtype in (torch.float32, torch.float64) else z.float()
    return z if dec.softcap is None else torch.tanh(z / dec.softcap) * dec.softcap
