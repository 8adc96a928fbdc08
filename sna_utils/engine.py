"""The sweep engine: the same numbers as the plain hooked loop, with far less arithmetic.

The plain way runs the whole hooked model once per configuration. The engine instead
(i) runs the unmodified model once per prompt set and layer, keeping the residual stream after
block L and the neuron activations of layer L; (ii) adds each configuration's change,
``(m - 1) * act[S] @ W_out[S]``, to that residual (the only thing an MLP-neuron multiplier changes
in block L); (iii) runs blocks L+1.. for many configurations stacked along the batch, the final
block for the last real token only; (iv) unembeds only that token. It groups prompts by length,
so no padding is computed. ``tests/test_engine.py`` checks it against the plain loop.

Holds the weights in the engine's layout (read once per model from the Hugging Face modules),
the kernels, the per-layer state, and the FLOP model used for estimates. Imports only ``core``.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .core import (Batch, Positions, chunk_slices, d_mlp, hook_name, model_device, n_layers, run_and_capture)
from .errors import SNAError

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
    """Everything the sweep engine needs to run blocks L..end itself (GPT-2 and GPT-NeoX)."""

    arch: str
    blocks: list[BlockWeights]
    ln_f: tuple[torch.Tensor, torch.Tensor]
    w_u: torch.Tensor  # [d_vocab, d_model] (F.linear layout)
    n_heads: int
    eps: float
    act: Callable[[torch.Tensor], torch.Tensor]
    parallel: bool  # GPT-NeoX: attention and MLP read the same residual
    rotary: torch.nn.Module | None  # GPT-NeoX rotary embedding module (cos, sin)


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The MLP nonlinearity as one fused kernel (HF's ``gelu_new`` runs ~7 separate ones)."""
    from transformers.activations import ACT2FN

    fused = {"gelu_new": lambda x: F.gelu(x, approximate="tanh"), "gelu_pytorch_tanh":
             lambda x: F.gelu(x, approximate="tanh"), "gelu": F.gelu, "relu": F.relu}
    return fused.get(name) or ACT2FN[name]


def _read_weights(hf) -> EngineWeights:
    """Read a GPT-2 or GPT-NeoX Hugging Face model's weights into the engine's layout (same tensors where
    the layout allows, transposed copies otherwise)."""
    cfg = hf.config
    if cfg.model_type == "gpt2":
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
        return EngineWeights("gpt2", blocks, (hf.transformer.ln_f.weight, hf.transformer.ln_f.bias),
                             hf.get_output_embeddings().weight, cfg.n_head, cfg.layer_norm_epsilon,
                             _activation(cfg.activation_function), False, None)
    if cfg.model_type == "gpt_neox":
        d, n_heads = cfg.hidden_size, cfg.num_attention_heads
        d_head = d // n_heads

        def qkv_columns(w: torch.Tensor) -> torch.Tensor:
            # NeoX interleaves [q_h, k_h, v_h] per head; regroup to [q | k | v].
            return w.reshape(n_heads, 3, d_head, *w.shape[1:]).transpose(0, 1).reshape(3 * d, *w.shape[1:])

        blocks = []
        for h in hf.gpt_neox.layers:
            a, m = h.attention, h.mlp
            blocks.append(BlockWeights(
                ln1=(h.input_layernorm.weight, h.input_layernorm.bias),
                ln2=(h.post_attention_layernorm.weight, h.post_attention_layernorm.bias),
                w_qkv=qkv_columns(a.query_key_value.weight).t().contiguous(),
                b_qkv=qkv_columns(a.query_key_value.bias),
                w_o=a.dense.weight.t().contiguous(), b_o=a.dense.bias,
                w_in=m.dense_h_to_4h.weight.t().contiguous(), b_in=m.dense_h_to_4h.bias,
                w_out=m.dense_4h_to_h.weight.t().contiguous(), b_out=m.dense_4h_to_h.bias,
            ))
        ln_f, rotary = hf.gpt_neox.final_layer_norm, hf.gpt_neox.rotary_emb
        return EngineWeights("neox", blocks, (ln_f.weight, ln_f.bias), hf.get_output_embeddings().weight, n_heads,
                             cfg.layer_norm_eps, _activation(cfg.hidden_act), bool(cfg.use_parallel_residual),
                             getattr(rotary, "_original_component", rotary))  # the HF module, not the bridge's
    raise SNAError(f"Architecture {cfg.model_type!r} is not supported: the kit runs GPT-2 and GPT-NeoX (Pythia).")



_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def engine_weights(model) -> EngineWeights:
    """The engine's view of ``model``'s weights, read once per model (the bridge's HF modules hold them)."""
    if model not in _WEIGHTS:
        _WEIGHTS[model] = _read_weights(model.original_model)
    return _WEIGHTS[model]

# ---------------------------------------------------------------------------
# The kernels: blocks L+1.. on many configurations at once
# ---------------------------------------------------------------------------

def _layer_norm(x: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor], eps: float) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), wb[0], wb[1], eps)


def _affine(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``x @ w + b`` as one fused matmul-with-bias, ``[..., d_in] -> [..., d_out]``."""
    return torch.addmm(b, x.reshape(-1, x.shape[-1]), w).view(*x.shape[:-1], w.shape[1])


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    r = cos.shape[-1]
    return torch.cat((x[..., :r] * cos + _rotate_half(x[..., :r]) * sin, x[..., r:]), dim=-1)


def _attention(eng: EngineWeights, w: BlockWeights, h: torch.Tensor, last: torch.Tensor | None) -> torch.Tensor:
    """Causal self-attention of normalised ``h`` ``[B, T, d]``; only at rows' ``last`` positions if given."""
    B, T, d = h.shape
    nh, dh = eng.n_heads, d // eng.n_heads
    q, k, v = _affine(h, w.w_qkv, w.b_qkv).split(d, dim=-1)
    q, k, v = (t.view(B, T, nh, dh).transpose(1, 2) for t in (q, k, v))  # [B, nh, T, dh]
    if eng.rotary is not None:
        pos = torch.arange(T, device=h.device)[None]
        cos, sin = eng.rotary(h, pos)  # [1, T, r]
        q, k = _apply_rotary(q, cos[:, None], sin[:, None]), _apply_rotary(k, cos[:, None], sin[:, None])
    if last is None:
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return _affine(z.transpose(1, 2).reshape(B, T, d), w.w_o, w.b_o)
    rows = torch.arange(B, device=h.device)
    q = q[rows, :, last][:, :, None]  # [B, nh, 1, dh]
    mask = (torch.arange(T, device=h.device)[None] <= last[:, None])[:, None, None]  # [B, 1, 1, T]
    z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return _affine(z.reshape(B, d), w.w_o, w.b_o)


def _mlp(eng: EngineWeights, w: BlockWeights, h: torch.Tensor) -> torch.Tensor:
    return _affine(eng.act(_affine(h, w.w_in, w.b_in)), w.w_out, w.b_out)


def _block(eng: EngineWeights, layer: int, x: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
    """One transformer block on ``x`` ``[B, T, d]``; returns ``[B, T, d]``, or ``[B, d]`` at ``last``."""
    w = eng.blocks[layer]
    attn = _attention(eng, w, _layer_norm(x, w.ln1, eng.eps), last)
    x_q = x if last is None else x[torch.arange(x.shape[0], device=x.device), last]
    if eng.parallel:
        return x_q + attn + _mlp(eng, w, _layer_norm(x_q, w.ln2, eng.eps))
    mid = x_q + attn
    return mid + _mlp(eng, w, _layer_norm(mid, w.ln2, eng.eps))


def _logits_from_resid(eng: EngineWeights, resid_after: torch.Tensor, layer: int,
                       last: torch.Tensor) -> torch.Tensor:
    """Run blocks ``layer+1..`` from the residual after block ``layer``; logits at ``last`` ``[B, V]``."""
    x = resid_after
    n = len(eng.blocks)
    rows = torch.arange(x.shape[0], device=x.device)
    for L in range(layer + 1, n - 1):
        x = _block(eng, L, x)
    x = _block(eng, n - 1, x, last) if layer < n - 1 else x[rows, last]
    return F.linear(_layer_norm(x, eng.ln_f, eng.eps), eng.w_u)


# ---------------------------------------------------------------------------
# The state of a prompt set at one layer, and the engine itself
# ---------------------------------------------------------------------------

@dataclass
class LengthGroup:
    """Prompts of one token length at one layer, without intervention (on the model's device)."""

    index: torch.Tensor  # where these prompts sit in the prompt set  [n_g]
    resid_after: torch.Tensor  # residual stream after block L          [n_g, T_g, d_model]
    act: torch.Tensor  # hook_post of layer L                           [n_g, T_g, d_mlp]


@dataclass
class LayerState:
    """One prompt set at one layer, grouped by prompt length so the engine never computes padding."""

    n_prompts: int
    groups: list[LengthGroup]


@torch.no_grad()
def layer_state(model, batch: Batch, layer: int) -> LayerState:
    """Run the unmodified model once per prompt length and keep what the engine needs at ``layer``."""
    dev = model_device(model)
    lengths = batch.last + 1
    groups = []
    for T in sorted(set(lengths.tolist())):
        index = (lengths == T).nonzero().squeeze(1)
        cache = run_and_capture(model, batch.tokens[index, :T].to(dev),
                                [hook_name(layer), f"blocks.{layer}.hook_resid_post"])
        groups.append(LengthGroup(index, cache[f"blocks.{layer}.hook_resid_post"], cache[hook_name(layer)]))
    return LayerState(len(lengths), groups)


@dataclass(frozen=True)
class Config:
    """One configuration of the engine: neurons of the state's layer and their multiplier."""

    neurons: tuple[int, ...]
    multiplier: float


@torch.no_grad()
def engine_logits(model, state: LayerState, layer: int, configs: Sequence[Config],
                  positions: Positions = "all", max_tokens: int = 16384) -> torch.Tensor:
    """Logits at the last token for every (configuration, prompt) ``[n_configs, n_prompts, V]`` (CPU)."""
    eng = engine_weights(model)
    w_out = eng.blocks[layer].w_out
    out = torch.empty(len(configs), state.n_prompts, eng.w_u.shape[0], dtype=w_out.dtype)
    for g in state.groups:
        n, T, _ = g.resid_after.shape
        for sl in chunk_slices(len(configs), max(1, max_tokens // (n * T))):
            resid = []
            for c in configs[sl]:
                idx = torch.tensor(c.neurons, dtype=torch.long, device=w_out.device)
                delta = (c.multiplier - 1.0) * g.act[..., idx] @ w_out[idx]  # [n, T, d]
                if positions == "last":
                    delta[:, :-1] = 0.0
                resid.append(g.resid_after + delta)
            x = torch.cat(resid)  # [configs * n, T, d]
            last = torch.full((x.shape[0],), T - 1, device=x.device)
            out[sl, g.index] = _logits_from_resid(eng, x, layer, last).cpu().view(len(resid), n, -1)
    return out


def base_logits(model, state: LayerState, layer: int) -> torch.Tensor:
    """The prompt set's logits without intervention, through the same engine ``[n_prompts, V]``."""
    return engine_logits(model, state, layer, [Config((), 1.0)])[0]


# ---------------------------------------------------------------------------
# The FLOP model (for estimates and the benchmark)
# ---------------------------------------------------------------------------

# Engine time / FLOP floor, measured by `make bench` on the 2-core build CPU, float32: 1.18 on the GPT-2 Small
# shape, 1.35 on the Medium shape (README, Speed). Estimates use the larger; on a GPU it is not measured.
ENGINE_OVER_FLOOR = 1.35


def matmul_rate(device: str | torch.device = "cpu", n: int = 1024, repeats: int = 5) -> float:
    """Measured float32 matrix-multiply rate of ``device`` in FLOP/s (best of ``repeats``)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats + 1):
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def block_flops(d_model: int, d_mlp_: int, seq: int) -> float:
    """Matrix-multiply FLOPs of one block on one sequence of ``seq`` tokens."""
    proj = 2 * seq * (4 * d_model * d_model + 2 * d_model * d_mlp_)
    attn = 2 * 2 * seq * seq * d_model  # scores and weighted values (full square, as run)
    return proj + attn


def grid_flop_floor(model, layer: int, n_configs: int, n_prompts: int, seq: int) -> float:
    """FLOPs a grid strictly needs at ``layer``: blocks L.. for every configuration, plus last-token logits."""
    per_seq = (n_layers(model) - layer) * block_flops(model.cfg.d_model, d_mlp(model), seq)
    logits = 2 * model.cfg.d_model * model.cfg.d_vocab
    return n_configs * n_prompts * (per_seq + logits)


def prompts_flop_floor(model, layer: int, n_configs: int, lengths: Sequence[int]) -> float:
    """``grid_flop_floor`` summed over prompts of the given token lengths (each run at its real length)."""
    return sum(grid_flop_floor(model, layer, n_configs, 1, int(T)) for T in lengths)
