"""Any bridged decoder-only model's own Hugging Face layers, run from the residual after block L.

The engine's general path: the model's decoder layers (unwrapped from TransformerBridge's hooks, sharing
its weights), called with the right rotary position embeddings and an additive attention mask that is
causal and, per layer, sliding-window; then the final norm, the unembedding and any final logit
soft-capping. Two mask shapes cover METHOD's positions: ``run_all`` runs every position of many
configurations stacked along the batch; ``run_last`` runs C configurations of each of n prompts as C
queries at each prompt's last position, each seeing the unmodified run's keys and values of its prompt's
positions < T-1 (padded to the longest prompt; a duck-typed cache hands them to the attention) and its own
key only. Per run, not per layer: the rotary position embeddings (one per layer type where the model's rotary
module computes one per type, as Gemma-3's does: its local sliding-window layers and global ones have their own
rope theta), and one mask per window kind. Attention runs fused (PyTorch's scaled-dot-product kernel) wherever
the model's own attention allows it (not with attention-score soft-capping, Gemma-2). Imports only ``errors``.
"""

from __future__ import annotations

import copy
import inspect
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
    """A model's decoder layers, final norm, unembedding, rotary module, per-layer sliding windows and rotary kinds."""

    layers: list  # Hugging Face decoder layers, bridge hooks removed
    norm: torch.nn.Module
    lm_head: torch.nn.Module
    rotary: torch.nn.Module | None
    windows: list  # per layer: the sliding window in tokens, or None
    softcap: float | None  # final logit soft-capping (Gemma-2)
    down: list  # per layer: the MLP's output projection
    post_mlp: list  # per layer: a norm applied to the MLP's output before the residual add, or None
    rope_kinds: list  # per layer: the layer type its rotary embedding is computed for (Gemma-3), or None (one for all)
    w_u: torch.Tensor = field(init=False)
    fused: list = field(init=False)  # per layer: the layer on the fused attention kernel where it allows it

    def __post_init__(self):
        self.w_u = self.lm_head.weight
        self.fused = [fused_attention(L) for L in self.layers]


def _runs(dec: Decoder, L: int, dtype: torch.dtype) -> torch.nn.Module:
    """The module layer ``L`` runs as in ``dtype``: the fused-attention copy, or the model's own attention in
    float64 (PyTorch's fused CPU kernel departs from it by ~5e-7 relative there, far above float64 rounding)."""
    return dec.layers[L] if dtype == torch.float64 else dec.fused[L]


def _rope_kinds(rotary: torch.nn.Module | None, config, n: int) -> list:
    """Each layer's rotary kind: its layer type where the rotary module computes one embedding per type (its
    ``forward`` takes ``layer_type``: Gemma-3), else None (one embedding for every layer)."""
    if rotary is None or "layer_type" not in inspect.signature(rotary.forward).parameters:
        return [None] * n
    types = getattr(config, "layer_types", None)
    if types is None or len(types) < n:
        raise SNAError(f"{type(rotary).__name__} computes one rotary embedding per layer type, but the config names "
                       f"{'no' if types is None else len(types)} layer types for {n} layers.")
    return list(types[:n])


def _windows(config, n: int) -> list:
    """Each layer's sliding window (None: full causal attention), as Hugging Face masks them."""
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if types is not None:
        return [window if t == "sliding_attention" else None for t in types]
    return [window] * n


FUSED = "sdpa"  # the Hugging Face attention implementation the engine runs where a layer's attention allows it


def _attention_config(module: torch.nn.Module):
    """The config a Hugging Face attention module reads its implementation from, or None (not an attention)."""
    cfg = getattr(module, "config", None)
    return cfg if hasattr(cfg, "_attn_implementation") and hasattr(module, "layer_idx") else None


def fused_attention(layer: torch.nn.Module) -> torch.nn.Module:
    """``layer`` with its attention on PyTorch's fused scaled-dot-product kernel where it ran "eager" (a shallow
    copy with its own config; the weights and the model's own modules untouched). Soft-capped attention (Gemma-2)
    stays eager: the fused kernel cannot cap scores."""
    for name, child in layer.named_children():
        cfg = _attention_config(child)
        if cfg is None:
            continue
        if cfg._attn_implementation != "eager" or getattr(cfg, "attn_logit_softcapping", None) is not None:
            return layer
        attn, attn.config = copy.copy(child), copy.copy(cfg)
        attn.config._attn_implementation = FUSED
        plain = copy.copy(layer)
        plain._modules = {**layer._modules, name: attn}
        return plain
    return layer


def is_fused(layer: torch.nn.Module) -> bool:
    """Whether ``layer``'s attention runs the fused kernel (then full causal attention needs no mask)."""
    cfgs = [c for c in map(_attention_config, layer.children()) if c is not None]
    return bool(cfgs) and cfgs[0]._attn_implementation == FUSED


def decoder_of(model) -> Decoder:
    """The general path's view of a bridged model (weights shared with it)."""
    hf = model.original_model
    n = len(model.blocks)
    rotary = getattr(model, "rotary_emb", None)
    rotary = None if rotary is None else unwrapped(rotary)
    layers = [unwrapped(b) for b in model.blocks]
    for L in layers:
        if not hasattr(L, "forward"):
            raise SNAError(f"{type(L).__name__} cannot be run layer by layer.")
    return Decoder(layers, unwrapped(model.ln_final), unwrapped(model.unembed), rotary, _windows(hf.config, n),
                   getattr(hf.config, "final_logit_softcapping", None), [down_projection(model, i) for i in range(n)],
                   [getattr(L, "post_feedforward_layernorm", None) for L in layers], _rope_kinds(rotary, hf.config, n))


def cast(dec: Decoder, dtype: torch.dtype) -> Decoder:
    """A copy of the decoder in ``dtype`` (the model's own weights are untouched)."""
    def to(m):
        return None if m is None else copy.deepcopy(m).to(dtype)

    layers = [to(L) for L in dec.layers]
    return Decoder(layers, to(dec.norm), to(dec.lm_head), dec.rotary, dec.windows, dec.softcap,
                   [to(m) for m in dec.down], [getattr(L, "post_feedforward_layernorm", None) for L in layers],
                   dec.rope_kinds)


def _mask(window: int | None, q_pos: torch.Tensor, k_pos: torch.Tensor, own: int, dtype,
          k_len: torch.Tensor | None = None) -> torch.Tensor:
    """Additive mask ``[B, 1, Q, K0 + own]`` (B = 1 or prompts): query at ``q_pos`` ``[Q]`` or ``[B, Q]`` sees keys
    at ``k_pos`` ``[K0]`` that are causal, in its window and, with ``k_len`` ``[B]``, real (not padding: ``k_pos <
    k_len``); with ``own`` > 0, the last ``own`` keys are the queries' own (query i sees only key K0 + i)."""
    q = q_pos[..., :, None]
    ok = k_pos <= q
    if window is not None:
        ok = ok & (k_pos > q - window)
    if k_len is not None:
        ok = ok & (k_pos < k_len[:, None, None])
    ok = ok if ok.dim() == 3 else ok[None]
    if own:
        eye = torch.eye(own, dtype=torch.bool, device=ok.device).expand(ok.shape[0], own, own)
        ok = torch.cat([ok, eye], -1)
    zero = torch.zeros((), dtype=dtype, device=q_pos.device)
    return torch.where(ok, zero, torch.finfo(dtype).min)[:, None]


def _masks(dec: Decoder, layers: range, dtype: torch.dtype, make) -> dict[int, torch.Tensor | None]:
    """Each layer's mask, built once per window kind by ``make(window)``; None for full causal attention on a
    fused layer without own keys (the kernel's ``is_causal``: ``make`` returns None)."""
    kinds: dict = {}
    out = {}
    for L in layers:
        key = (dec.windows[L], is_fused(_runs(dec, L, dtype)))
        if key not in kinds:
            kinds[key] = make(*key)
        out[L] = kinds[key]
    return out


def _layer(dec: Decoder, L: int, x: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None, cache,
           rope: dict) -> torch.Tensor:
    """Decoder layer ``L`` on ``x`` ``[B, S, d]`` at positions ``ids`` ``[1 or B, S]`` (``rope``: the position
    embeddings of those positions per rotary kind, computed once per run; the layer gets its own kind's)."""
    kw = dict(attention_mask=mask, position_ids=ids, past_key_values=cache, layer_past=cache, use_cache=False)
    if rope:
        kw["position_embeddings"] = rope[dec.rope_kinds[L]]
    out = _runs(dec, L, x.dtype)(x, **kw)
    return out[0] if isinstance(out, tuple) else out


def _rope(dec: Decoder, x: torch.Tensor, ids: torch.Tensor, layers: range) -> dict:
    """The rotary position embeddings (cos, sin) of positions ``ids`` in ``x``'s dtype, per rotary kind of
    ``layers`` (a layer type, or None where one serves every layer); empty without a rotary module."""
    if dec.rotary is None:
        return {}
    kinds = dict.fromkeys(dec.rope_kinds[L] for L in layers)
    return {kind: dec.rotary(x, ids) if kind is None else dec.rotary(x, ids, layer_type=kind) for kind in kinds}


def _causal_masks(dec: Decoder, layers: range, pos: torch.Tensor, dtype: torch.dtype) -> dict:
    """Each layer's mask for every position ``pos`` ``[T]`` seeing the earlier ones (``_masks``)."""
    return _masks(dec, layers, dtype, lambda window, fused: None if window is None and fused
                  else _mask(window, pos, pos, 0, dtype))


def run_all(dec: Decoder, x: torch.Tensor, layer: int, keep: dict | None = None,
            last: torch.Tensor | None = None, entering: dict | None = None) -> torch.Tensor:
    """Layers ``layer+1..`` on residuals ``[B, T, d]`` (every position changed; right padding is never seen by a
    real position); each row's position ``last`` ``[B]`` (None: T-1) ``[B, d]``. Records the keys and values of
    positions < T-1 per layer into ``keep`` if given, and the residual entering each layer named in
    ``entering``'s keys there."""
    pos = torch.arange(x.shape[1], device=x.device)
    cache = _KeysValues() if keep is not None else None
    layers = range(layer + 1, len(dec.layers))
    masks = _causal_masks(dec, layers, pos, x.dtype)
    rope = _rope(dec, x, pos[None], layers)
    for L in layers:
        if entering is not None and L in entering:
            entering[L] = x
        x = _layer(dec, L, x, pos[None], masks[L], cache, rope)
    if keep is not None:
        keep.update(cache.stored)
    return x[:, -1] if last is None else x[torch.arange(len(x), device=x.device), last]


def layer_and_acts(dec: Decoder, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer ``layer`` on residuals ``[B, T, d]``: its output ``[B, T, d]`` and its neurons' activations
    (``hook_post``, the input of its MLP's output projection) ``[B, T, d_mlp]`` (needs the model's own dtype:
    a cast copy's projection is another module)."""
    pos = torch.arange(x.shape[1], device=x.device)
    acts: list = []
    hook = dec.down[layer].register_forward_pre_hook(lambda module, args: acts.append(args[0]))
    try:
        out = _layer(dec, layer, x, pos[None], _causal_masks(dec, range(layer, layer + 1), pos, x.dtype)[layer],
                     None, _rope(dec, x, pos[None], range(layer, layer + 1)))
    finally:
        hook.remove()
    if len(acts) != 1:
        raise SNAError(f"Layer {layer}'s MLP output projection ran {len(acts)} times in one layer call.")
    return out, acts[0]


def run_last(dec: Decoder, x: torch.Tensor, layer: int, kv: dict, last: torch.Tensor | None = None) -> torch.Tensor:
    """Layers ``layer+1..`` for the last position only, ``[n, C, d]`` (C configurations of n prompts, as C queries at
    each prompt's last position ``last`` ``[n]``; None: every prompt is one longer than the keys ``kv`` hold);
    earlier positions are unchanged, so their keys/values ``kv`` (padded to the longest prompt) come from the
    unmodified run."""
    n, C = x.shape[:2]
    K = next(iter(kv.values()))[0].shape[2] if kv else 0
    last = torch.full((n,), K, device=x.device) if last is None else last
    q_pos = last[:, None].expand(n, C)
    k_pos = torch.arange(K, device=x.device)
    cache = _KeysValues(kv)
    layers = range(layer + 1, len(dec.layers))
    masks = _masks(dec, layers, x.dtype, lambda window, fused: _mask(window, q_pos, k_pos, C, x.dtype, last))
    rope = _rope(dec, x, q_pos, layers)
    for L in layers:
        x = _layer(dec, L, x, q_pos, masks[L], cache, rope)
    return x


def logits(dec: Decoder, x: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary logits of final residuals ``[..., d] -> [..., V]`` (soft-capped where the model does),
    at least float32."""
    z = dec.lm_head(dec.norm(x))
    z = z if z.dtype in (torch.float32, torch.float64) else z.float()
    return z if dec.softcap is None else torch.tanh(z / dec.softcap) * dec.softcap
