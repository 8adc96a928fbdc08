"""GPT-2's hand-written path: its blocks in a uniform ``x @ W + b`` layout, run from the residual after block L.

The one family the engine runs with its own kernels, kept for speed (every other family runs its own
Hugging Face layers, ``decoder``; ``tests/test_engine.py`` checks the two agree). ``run_all`` runs every
position of many configurations stacked along the batch; ``run_last`` runs C configurations of each of n
prompts at the last position only, over the unmodified run's keys and values of the earlier positions
(padded to the longest prompt and masked). Imports nothing of the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass
class BlockWeights:
    """One transformer block in the engine's uniform ``x @ W + b`` layout (W is ``[d_in, d_out]``)."""

    ln1: tuple[torch.Tensor, torch.Tensor]
    ln2: tuple[torch.Tensor, torch.Tensor]
    w_qkv: torch.Tensor  # [d_model, 3 d_model], columns [q | k | v], heads contiguous
    b_qkv: torch.Tensor
    w_o: torch.Tensor  # [d_model, d_model]
    b_o: torch.Tensor
    w_in: torch.Tensor  # [d_model, d_mlp]
    b_in: torch.Tensor
    w_out: torch.Tensor  # [d_mlp, d_model]: row i is what neuron i writes to the residual stream
    b_out: torch.Tensor


@dataclass
class EngineWeights:
    """GPT-2's blocks in the engine's layout: the one hand-written path, kept for speed (every other family
    runs its own Hugging Face layers through ``decoder``; ``tests/test_engine.py`` checks the two agree)."""

    arch: str
    blocks: list[BlockWeights]
    ln_f: tuple[torch.Tensor, torch.Tensor]
    w_u: torch.Tensor  # [d_vocab, d_model] (F.linear layout)
    n_heads: int
    eps: float
    act: Callable[[torch.Tensor], torch.Tensor]


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The MLP nonlinearity as one fused kernel (HF's ``gelu_new`` runs ~7 separate ones)."""
    from transformers.activations import ACT2FN

    fused = {"gelu_new": lambda x: F.gelu(x, approximate="tanh"), "gelu_pytorch_tanh":
             lambda x: F.gelu(x, approximate="tanh"), "gelu": F.gelu, "relu": F.relu}
    return fused.get(name) or ACT2FN[name]


def read_gpt2(model) -> EngineWeights:
    """Read a bridged GPT-2's weights into the engine's layout (the very tensors: GPT-2's Conv1D is ``x @ W + b``)."""
    hf = model.original_model
    blocks = [
        BlockWeights(
            ln1=(h.ln_1.weight, h.ln_1.bias), ln2=(h.ln_2.weight, h.ln_2.bias),
            w_qkv=h.attn.c_attn.weight, b_qkv=h.attn.c_attn.bias,
            w_o=h.attn.c_proj.weight, b_o=h.attn.c_proj.bias,
            w_in=h.mlp.c_fc.weight, b_in=h.mlp.c_fc.bias,
            w_out=h.mlp.c_proj.weight, b_out=h.mlp.c_proj.bias,
        )
        for h in hf.transformer.h
    ]
    cfg = hf.config
    return EngineWeights("gpt2", blocks, (hf.transformer.ln_f.weight, hf.transformer.ln_f.bias),
                         hf.get_output_embeddings().weight, cfg.n_head, cfg.layer_norm_epsilon,
                         _activation(cfg.activation_function))


def layer_norm(x: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor], eps: float) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), wb[0], wb[1], eps)


def _affine(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``x @ w + b`` as one fused matmul-with-bias, ``[..., d_in] -> [..., d_out]``."""
    return torch.addmm(b, x.reshape(-1, x.shape[-1]), w).view(*x.shape[:-1], w.shape[1])


def _qkv(eng: EngineWeights, w: BlockWeights, h: torch.Tensor):
    """Queries, keys, values ``[B, nh, S, dh]`` of normalised ``h`` ``[B, S, d]`` (GPT-2: no rotary)."""
    B, S, d = h.shape
    q, k, v = _affine(h, w.w_qkv, w.b_qkv).split(d, dim=-1)
    return (t.view(B, S, eng.n_heads, d // eng.n_heads).transpose(1, 2) for t in (q, k, v))


def _mlp(eng: EngineWeights, w: BlockWeights, h: torch.Tensor, acts: list | None = None) -> torch.Tensor:
    """The MLP of normalised ``h``; its neurons' activations (``hook_post``) appended to ``acts`` if given."""
    a = eng.act(_affine(h, w.w_in, w.b_in))
    if acts is not None:
        acts.append(a)
    return _affine(a, w.w_out, w.b_out)


def _residual(eng: EngineWeights, w: BlockWeights, x: torch.Tensor, z: torch.Tensor,
              acts: list | None = None) -> torch.Tensor:
    """The block's output from its input ``x`` and the heads' mixed values ``z`` (same leading shape)."""
    mid = x + _affine(z, w.w_o, w.b_o)
    return mid + _mlp(eng, w, layer_norm(mid, w.ln2, eng.eps), acts)


def _block(eng: EngineWeights, layer: int, x: torch.Tensor, last_only: bool, keep: list | None,
           last: torch.Tensor | None = None, acts: list | None = None) -> torch.Tensor:
    """One block on ``x`` ``[B, T, d]``; ``[B, T, d]``, or ``[B, d]`` at each row's position ``last`` ``[B]`` (None:
    T-1) if ``last_only``. Appends the keys and values of positions ``0..T-2`` to ``keep`` if given, and the
    MLP neurons' activations to ``acts``."""
    w = eng.blocks[layer]
    B, T, d = x.shape
    q, k, v = _qkv(eng, w, layer_norm(x, w.ln1, eng.eps))
    if keep is not None:
        keep.append((k[:, :, :-1].contiguous(), v[:, :, :-1].contiguous()))
    if last_only and last is None:
        z = F.scaled_dot_product_attention(q[:, :, -1:], k, v)  # the last query sees every key
        return _residual(eng, w, x[:, -1], z.reshape(B, d))
    if last_only:  # each row's query at its own last position sees keys 0..last
        rows = torch.arange(B, device=x.device)
        seen = (torch.arange(T, device=x.device) <= last[:, None])[:, None, None]  # [B, 1, 1, T]
        z = F.scaled_dot_product_attention(q[rows, :, last][:, :, None], k, v, attn_mask=seen)
        return _residual(eng, w, x[rows, last], z.reshape(B, d))
    z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return _residual(eng, w, x, z.transpose(1, 2).reshape(B, T, d), acts)


def block_and_acts(eng: EngineWeights, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Block ``layer`` on residuals ``[B, T, d]``: its output ``[B, T, d]`` and its neurons' activations
    (``hook_post``) ``[B, T, d_mlp]``."""
    acts: list = []
    return _block(eng, layer, x, False, None, acts=acts), acts[0]


def run_all(eng: EngineWeights, x: torch.Tensor, layer: int, keep: list | None = None,
            last: torch.Tensor | None = None, entering: dict | None = None) -> torch.Tensor:
    """Blocks ``layer+1..`` on residuals ``[B, T, d]`` (every position changed; right padding is never seen by a
    real position); each row's position ``last`` ``[B]`` (None: T-1) ``[B, d]``. Records the residual entering
    each block named in ``entering``'s keys there."""
    n = len(eng.blocks)
    for L in range(layer + 1, n):
        if entering is not None and L in entering:
            entering[L] = x
        x = _block(eng, L, x, L == n - 1, keep, last)
    return x if layer < n - 1 else (x[:, -1] if last is None else x[torch.arange(len(x), device=x.device), last])


def run_last(eng: EngineWeights, x: torch.Tensor, layer: int, kv: list,
                   last: torch.Tensor | None = None) -> torch.Tensor:
    """Blocks ``layer+1..`` for the last position only, ``[n, C, d]`` (C configurations of n prompts whose last
    positions are ``last`` ``[n]``; None: all one longer than ``kv``'s keys); earlier positions are unchanged, so
    their keys/values ``kv`` (padded to the longest prompt) come from the unmodified run."""
    n, C, d = x.shape
    pad = None if last is None or not kv else _padding(last, kv[0][0].shape[2], x.dtype)  # [n, 1, 1, K]
    for (k0, v0), L in zip(kv, range(layer + 1, len(eng.blocks))):
        w = eng.blocks[L]
        q, k, v = _qkv(eng, w, layer_norm(x, w.ln1, eng.eps))  # [n, nh, C, dh]: C queries per prompt
        scale = q.shape[-1] ** -0.5
        earlier = q @ k0.transpose(-1, -2) if pad is None else q @ k0.transpose(-1, -2) + pad
        scores = torch.cat([earlier, (q * k).sum(-1, keepdim=True)], -1) * scale
        a = scores.softmax(-1, dtype=torch.promote_types(x.dtype, torch.float32)).to(x.dtype)  # [n, nh, C, T]
        z = a[..., :-1] @ v0 + a[..., -1:] * v
        x = _residual(eng, w, x, z.transpose(1, 2).reshape(n, C, d))
    return x


def _padding(last: torch.Tensor, K: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask ``[n, 1, 1, K]`` of padded keys: key j of prompt i is real when j < ``last[i]``."""
    real = torch.arange(K, device=last.device) < last[:, None]
    zero = torch.zeros((), dtype=dtype, device=last.device)
    return torch.where(real, zero, torch.finfo(dtype).min)[:, None, None]
