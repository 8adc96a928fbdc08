"""The sweep engine: the same numbers as the plain hooked loop, with far less arithmetic.

The plain way runs the whole hooked model once per configuration. The engine instead
(i) runs the unmodified model once per prompt set (``prompt_run`` shares that one run across a sweep's
layers), keeping the residual stream after block L and the neuron activations of layer L; (ii) adds each
configuration's change, ``(m - 1) * act[S] @ W_out[S]``, to that residual (the only thing an MLP-neuron
multiplier changes in block L); (iii) runs blocks L+1.. for many configurations stacked along the batch, the final
block for the last real token only; with ``positions="last"`` only the last token at all, over the
unmodified run's keys and values of the earlier positions, every prompt of the set in one batch (keys
padded to the longest prompt and masked); (iv) unembeds only that token and reduces the logits on the
device to the target probability, top-1 and KL. It groups prompts by length, so no padding is computed
with ``positions="all"``. The unmodified run from block L is computed once per prompt set and arithmetic
(in a sweep, once for all its layers) and serves the reference distribution, the baseline and the keys and
values ``"last"`` reuses.
``tests/test_engine.py`` checks it against the plain loop.

Holds the choice of path (GPT-2's hand-written kernels in ``handwritten``, every other family's own
layers in ``decoder``), their weights read once per model and cast once per precision, the per-layer
state and chunk sizes (the FLOP model is in ``flops``), and the public face other modules read a layer's MLP
through (``mlp_out_weight``, ``neuron_push``: any family, either path). Imports ``core``, ``decoder`` and
``handwritten``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from . import decoder, handwritten
from ..core import (Batch, Positions, check_layer, check_neurons, chunk_slices, hook_name, model_device, resid_hook,
                    run_and_capture)
from .decoder import Decoder, down_weight
from .handwritten import BlockWeights, EngineWeights
from ..errors import SNAError

HAND_WRITTEN = {"gpt2": handwritten.read_gpt2}  # Hugging Face model_type -> reader of the one hand-written fast path
Weights = EngineWeights | Decoder  # what the engine runs: the hand-written GPT-2 path or the general one

_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {dtype or None: Weights}


def _cast(eng: Weights, dtype: torch.dtype) -> Weights:
    """A copy of the engine's weights in ``dtype`` (the rotary module computes in its input's dtype)."""
    if isinstance(eng, Decoder):
        return decoder.cast(eng, dtype)

    def to(t):
        return tuple(x.to(dtype) for x in t) if isinstance(t, tuple) else t.to(dtype)

    blocks = [BlockWeights(**{f.name: to(getattr(b, f.name)) for f in dataclasses.fields(b)}) for b in eng.blocks]
    return dataclasses.replace(eng, blocks=blocks, ln_f=to(eng.ln_f), w_u=to(eng.w_u))


def engine_weights(model, dtype: torch.dtype | None = None) -> Weights:
    """The engine's view of ``model``'s weights, read once per model (the bridge's HF modules hold them),
    and cast once per other ``dtype``: GPT-2's hand-written layout, or any other family's own layers."""
    if model not in _WEIGHTS:
        read = HAND_WRITTEN.get(model.original_model.config.model_type, decoder.decoder_of)
        _WEIGHTS[model] = {None: read(model)}
    views = _WEIGHTS[model]
    if dtype is not None and dtype != views[None].w_u.dtype and dtype not in views:
        views[dtype] = _cast(views[None], dtype)
    return views.get(dtype, views[None])


def n_blocks(eng: Weights) -> int:
    return len(eng.layers) if isinstance(eng, Decoder) else len(eng.blocks)


def _w_out(eng: Weights, layer: int) -> torch.Tensor:
    """Layer ``layer``'s output projection ``[d_mlp, d_model]``: row i is what neuron i writes."""
    return down_weight(eng.down[layer]) if isinstance(eng, Decoder) else eng.blocks[layer].w_out


def mlp_out_weight(model, layer: int) -> torch.Tensor:
    """Layer ``layer``'s MLP output (down) projection weight ``[d_mlp, d_model]``, any family, a detached view of the
    model's own tensor: row i is what neuron i writes (before a post-MLP norm where a family has one, Gemma-2/3)."""
    return _w_out(engine_weights(model), check_layer(model, layer)).detach()


@torch.no_grad()
def neuron_push(model, layer: int, acts: torch.Tensor, neurons: Sequence[int], multiplier: float) -> torch.Tensor:
    """What multiplying ``neurons`` by ``multiplier`` adds to the residual stream after block ``layer``, from the
    layer's activations ``acts`` ``[..., d_mlp]`` (all of them: a post-MLP norm needs the MLP's whole output):
    ``(m - 1) act[S] @ W_out[S]``, through the post-MLP norm where a family has one; ``[..., d_model]`` float64
    (CPU)."""
    w_out = mlp_out_weight(model, layer)
    idx = torch.tensor(check_neurons(model, neurons), dtype=torch.long, device=w_out.device)
    act = acts.to(w_out.device)
    delta = (multiplier - 1.0) * act[..., idx].double() @ w_out[idx].double()
    return _change(engine_weights(model), layer, act.to(w_out.dtype))(delta).double().cpu()


# ---------------------------------------------------------------------------
# Precision and chunk sizes: what the device runs the engine in, and how much at a time
# ---------------------------------------------------------------------------

PRECISIONS = ("float64", "float32", "tf32", "bfloat16")  # None: the model's own dtype


def check_precision(model, precision: str | None) -> str:
    """The engine's precision on ``model``'s device (None: the model's dtype); SNAError if it cannot run there."""
    if precision is None:
        return str(model.cfg.dtype).removeprefix("torch.")
    if precision not in PRECISIONS:
        raise SNAError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)} (or None: the model's dtype).")
    if precision == "tf32" and model_device(model).type != "cuda":
        raise SNAError(f"precision='tf32' needs a CUDA device; the model is on {model_device(model)}.")
    return precision


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype blocks L+1.. run in (TF32 is float32 storage with TF32 matrix multiplies)."""
    return {"float64": torch.float64, "bfloat16": torch.bfloat16}.get(precision, torch.float32)


@contextlib.contextmanager
def precision_mode(precision: str) -> Iterator[None]:
    """TF32 matrix multiplies on CUDA while inside (for ``precision='tf32'``); restores the flags after."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


CPU_CHUNK_TOKENS = 4096  # a quarter of the activation memory of the former 16,384 (host-memory test)
CPU_LOGIT_BYTES = 64 << 20  # float64 logits reduced at a time on the CPU


def _free_bytes(device: torch.device) -> int:
    """Memory the engine may use on ``device`` at once: 40 % of free GPU memory (0 on the CPU)."""
    return int(0.4 * torch.cuda.mem_get_info(device)[0]) if device.type == "cuda" else 0


def chunk_tokens(eng: Weights, device: torch.device, dtype: torch.dtype) -> int:
    """Token rows per forward chunk: sized to free GPU memory on CUDA, cache-friendly on the CPU."""
    free = _free_bytes(device)
    if not free:
        return CPU_CHUNK_TOKENS
    d, d_mlp_ = eng.w_u.shape[1], _w_out(eng, 0).shape[0]
    per_token = dtype.itemsize * (3 * d_mlp_ + 10 * d)  # MLP in/out, q/k/v, attention output, residuals
    return max(256, min(1 << 20, free // 2 // per_token))


def logit_rows(eng: Weights, device: torch.device) -> int:
    """Rows of full-vocabulary logits reduced at a time (float32 and float64 copies and temporaries: ~32 B a value)."""
    free = _free_bytes(device) // 2 or CPU_LOGIT_BYTES
    return max(1, free // (eng.w_u.shape[0] * 32))


# ---------------------------------------------------------------------------
# The kernels: blocks L+1.. on many configurations at once
# ---------------------------------------------------------------------------

def _run_all(eng: Weights, x: torch.Tensor, layer: int, keep=None, last: torch.Tensor | None = None,
             entering: dict | None = None) -> torch.Tensor:
    """Blocks ``layer+1..`` on residuals ``[B, T, d]``; position ``last`` ``[B]`` (None: T-1) ``[B, d]`` (keys and
    values of positions < T-1 into ``keep``, the residual entering each block of ``entering``'s keys there)."""
    return (decoder.run_all if isinstance(eng, Decoder) else handwritten.run_all)(eng, x, layer, keep, last, entering)


def _run_last(eng: Weights, x: torch.Tensor, layer: int, kv) -> torch.Tensor:
    """Blocks ``layer+1..`` for the last position of C configurations ``[n, C, d]``, over the unmodified ``kv``
    (a ``PrefixKV`` of prompts of any lengths, or one length group's keys and values)."""
    kv, last = (kv.kv, kv.last) if isinstance(kv, PrefixKV) else (kv, None)
    return (decoder.run_last if isinstance(eng, Decoder) else handwritten.run_last)(eng, x, layer, kv, last)


# ---------------------------------------------------------------------------
# The state of a prompt set at one layer
# ---------------------------------------------------------------------------

@dataclass
class LengthGroup:
    """Prompts of one token length at one layer, without intervention (on the model's device)."""

    index: torch.Tensor  # where these prompts sit in the prompt set  [n_g] (on the device)
    resid_after: torch.Tensor  # residual stream after block L          [n_g, T_g, d_model]
    act: torch.Tensor  # hook_post of layer L                           [n_g, T_g, d_mlp]


@dataclass
class PrefixKV:
    """Keys and values of positions < T-1 of prompts of several lengths, padded to the longest (zeros, masked)."""

    kv: list | dict  # per block L+1..: (keys, values) [n, heads, K, d_head]
    last: torch.Tensor  # each prompt's last position T-1 (its real keys are 0..T-2)  [n]


@dataclass
class LayerState:
    """One prompt set at one layer, grouped by prompt length so the engine never computes padding."""

    n_prompts: int
    groups: list[LengthGroup]
    last: dict = field(default_factory=dict)  # arithmetic -> every prompt's last position as one group (_last_group)
    base: dict = field(default_factory=dict)  # arithmetic -> the unmodified run from block L (``_unmodified``)


@torch.no_grad()
def layer_state(model, batch: Batch, layer: int, batch_size: int = 32) -> LayerState:
    """Run the unmodified model once over the (right-padded) prompts, ``batch_size`` at a time, and keep what the
    engine needs at ``layer``, grouped by prompt length (a causal model's real positions never see the padding)."""
    dev = model_device(model)
    T = int(batch.last.max()) + 1
    names = [hook_name(layer), resid_hook(layer)]
    runs = [run_and_capture(model, batch.tokens[sl, :T].to(dev), names)
            for sl in chunk_slices(len(batch.last), batch_size)]
    resid, act = (torch.cat([r[n] for r in runs]) for n in (resid_hook(layer), hook_name(layer)))
    return grouped_state(batch.last + 1, resid, act)


def _by_length(lengths: torch.Tensor, device) -> list[tuple[torch.Tensor, int]]:
    """Prompts grouped by token length, shortest first: (where they sit in the set ``[n_g]``, length)."""
    return [((lengths == t).nonzero().squeeze(1).to(device), t) for t in sorted(set(lengths.tolist()))]


def grouped_state(lengths: torch.Tensor, resid: torch.Tensor, act: torch.Tensor,
                  in_group_order: bool = False) -> LayerState:
    """A ``LayerState`` of right-padded ``resid`` ``[n, T, d]`` and ``act`` ``[n, T, d_mlp]`` of prompts of
    ``lengths`` ``[n]``, rows in the set's order (or, ``in_group_order``, already in the groups' order)."""
    groups, start = [], 0
    for index, t in _by_length(lengths, resid.device):
        rows = slice(start, start + len(index)) if in_group_order else index
        groups.append(LengthGroup(index, resid[rows, :t], act[rows, :t]))
        start += len(index)
    return LayerState(len(lengths), groups)


def arithmetic(dtype: torch.dtype) -> tuple:
    """What an unmodified run's rounding depends on: its dtype and whether CUDA multiplies in TF32 now."""
    return dtype, torch.backends.cuda.matmul.allow_tf32


def padded_residuals(state: LayerState) -> tuple[torch.Tensor, torch.Tensor]:
    """The state's residuals right-padded to the longest prompt in the groups' order ``[n, T, d]``, and each
    prompt's last position ``[n]``."""
    T = max(g.resid_after.shape[1] for g in state.groups)
    x = torch.cat([F.pad(g.resid_after, (0, 0, 0, T - g.resid_after.shape[1])) for g in state.groups])
    last = torch.cat([torch.full((len(g.index),), g.resid_after.shape[1] - 1, device=x.device) for g in state.groups])
    return x, last


def run_unmodified(eng: Weights, x: torch.Tensor, last: torch.Tensor, layer: int, max_tokens: int, need_kv: bool,
                   entering: Sequence[int] = ()) -> tuple[torch.Tensor, PrefixKV | None, dict]:
    """Blocks ``layer+1..`` on right-padded residuals ``x`` ``[n, T, d]``, ``max_tokens`` at a time: the residual
    before ``ln_f`` at positions ``last`` ``[n, d]``, the keys and values of the earlier positions (if
    ``need_kv``) and the residual entering each block of ``entering`` ``{block: [n, T, d]}``."""
    outs, keeps, snaps = [], [], []
    for sl in chunk_slices(len(x), max(1, max_tokens // x.shape[1])):
        keeps.append(({} if isinstance(eng, Decoder) else []) if need_kv else None)
        snaps.append(dict.fromkeys(entering))
        outs.append(_run_all(eng, x[sl], layer, keeps[-1], last[sl], snaps[-1]))
    kv = PrefixKV(_joined(keeps), last) if need_kv else None
    return torch.cat(outs), kv, {L: torch.cat([s[L] for s in snaps]) for L in entering}


def _unmodified(eng: Weights, state: LayerState, layer: int, max_tokens: int,
                need_kv: bool = False) -> tuple[torch.Tensor, PrefixKV | None]:
    """The unmodified run of blocks L+1.. over every prompt of ``state``, right-padded to the longest and
    ``max_tokens`` at a time (computed once per ``arithmetic``, or given by ``prompt_run.PromptRun``): the residual
    before ``ln_f`` at each prompt's last position ``[n, d]`` and, if ``need_kv``, the keys and values of the
    earlier positions (``PrefixKV``), both in the groups' order."""
    key = arithmetic(eng.w_u.dtype)
    if key not in state.base or (need_kv and state.base[key][1] is None):
        x, last = padded_residuals(state)
        state.base[key] = run_unmodified(eng, x.to(eng.w_u.dtype), last, layer, max_tokens, need_kv)[:2]
    return state.base[key]


def _joined(keeps: list) -> list | dict:
    """Chunks' keys and values (per block: a list, or a dict by layer) joined along the prompts."""
    def cat(key):
        return tuple(torch.cat([k[key][i] for k in keeps]) for i in (0, 1))
    return {key: cat(key) for key in keeps[0]} if isinstance(keeps[0], dict) else [cat(j) for j in range(len(keeps[0]))]


def _last_group(eng: Weights, state: LayerState, layer: int, max_tokens: int) -> tuple[LengthGroup, PrefixKV]:
    """Every prompt of ``state`` at its last position as one group ``[n, 1, ...]``, with the unmodified run's keys
    and values of the earlier positions (``_unmodified``), so ``positions="last"`` runs all prompts in one batch."""
    key = arithmetic(eng.w_u.dtype)
    if key not in state.last:
        gs = state.groups
        merged = LengthGroup(torch.cat([g.index for g in gs]), torch.cat([g.resid_after[:, -1:] for g in gs]),
                             torch.cat([g.act[:, -1:] for g in gs]))
        state.last[key] = merged, _unmodified(eng, state, layer, max_tokens, need_kv=True)[1]
    return state.last[key]


def _change(eng: Weights, layer: int, act: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Residual change after block ``layer`` from a change of its MLP output projection's output (of activations
    ``act``): the same for plain blocks; through the post-MLP norm where a family has one (Gemma-2, Gemma-3), both
    terms in the change's dtype (a float64 change of a bfloat16 model is not swamped by bfloat16 rounding)."""
    post = eng.post_mlp[layer] if isinstance(eng, Decoder) else None
    if post is None:
        return lambda delta: delta
    out = eng.down[layer](act)
    return lambda delta: post(out.to(delta.dtype) + delta) - post(out.to(delta.dtype))


# ---------------------------------------------------------------------------
# The engine: final residuals per configuration, reduced to METHOD's numbers on the device
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    """One configuration of the engine: neurons of the state's layer and their multiplier."""

    neurons: tuple[int, ...]
    multiplier: float


IDENTITY = Config((), 1.0)


def _final_resid(model, state: LayerState, layer: int, configs: Sequence, positions: Positions,
                 precision: str, max_tokens: int | None) -> Iterator[tuple[slice, LengthGroup, torch.Tensor]]:
    """For chunks of configurations (``Config``, or any with a ``residual_change`` of the residual after block L)
    and each length group: the residual before ``ln_f`` at the last position ``[c, n_g, d]`` (precision's dtype)."""
    own = engine_weights(model)  # the model's dtype, like the state
    w_out = _w_out(own, layer)
    eng = engine_weights(model, compute_dtype(precision))
    max_tokens = max_tokens or chunk_tokens(eng, model_device(model), eng.w_u.dtype)
    if all(c == IDENTITY for c in configs):  # the unmodified run, computed once (``_unmodified``)
        out, start = _unmodified(eng, state, layer, max_tokens)[0], 0
        for g in state.groups:
            start += len(g.index)
            yield slice(0, len(configs)), g, out[start - len(g.index):start].expand(len(configs), -1, -1)
        return
    runs = [(g, None) for g in state.groups] if positions == "all" else [_last_group(eng, state, layer, max_tokens)]
    for g, kv in runs:
        n, T, d = g.resid_after.shape
        kv = kv if layer < n_blocks(eng) - 1 else None  # the last block: nothing runs after the change
        change = _change(own, layer, g.act if positions == "all" else g.act[:, -1:])
        for sl in chunk_slices(len(configs), max(1, max_tokens // (n * (T if kv is None else 1)))):
            deltas = []
            for c in configs[sl]:
                if hasattr(c, "residual_change"):  # a residual-stream arm (``baselines.Steer``) adds its own row
                    deltas.append(c.residual_change(g.resid_after if positions == "all" else g.resid_after[:, -1:]))
                    continue
                idx = torch.tensor(c.neurons, dtype=torch.long, device=w_out.device)
                act = g.act[..., idx] if positions == "all" else g.act[:, -1:, idx]
                deltas.append(change((c.multiplier - 1.0) * act @ w_out[idx]))  # [n, T or 1, d]
            if positions == "all":
                x = torch.cat([g.resid_after + dl for dl in deltas]).to(eng.w_u.dtype)  # [c n, T, d]
                yield sl, g, _run_all(eng, x, layer).view(len(deltas), n, d)
            else:
                x = (g.resid_after[:, -1:] + torch.cat(deltas, 1)).to(eng.w_u.dtype)  # [n, c, d]
                yield sl, g, (_run_last(eng, x, layer, kv) if kv is not None else x).transpose(0, 1)


@dataclass
class Reference:
    """A prompt set's next-token distribution without intervention, kept on the device for KL."""

    probs: torch.Tensor  # [n_prompts, V] float64
    neg_entropy: torch.Tensor  # sum_v p log p  [n_prompts] float64


@dataclass
class Metrics:
    """METHOD's per-(configuration, prompt) numbers, the only thing that leaves the device ``[C, n]`` (CPU)."""

    p: torch.Tensor  # target probability (float64)
    top1: torch.Tensor  # the target is the argmax (bool)
    kl: torch.Tensor  # KL(base || new) in nats (float64; NaN without a reference)


def _logits(eng: Weights, x: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary logits of final residuals ``[..., d] -> [..., V]``, at least float32."""
    if isinstance(eng, Decoder):
        return decoder.logits(eng, x)
    z = F.linear(handwritten.layer_norm(x, eng.ln_f, eng.eps), eng.w_u)
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


def _reduce(z: torch.Tensor, target: torch.Tensor | None, ref: Reference | None, index: torch.Tensor):
    """Target probability, top-1 and KL of logits ``z`` ``[c, n, V]`` of prompts ``index`` ``[n]``, on the device.
    KL(p || q) = sum p log p - sum p z + logsumexp(z), all in float64 (no [c, n, V] log-probabilities)."""
    c, n, _ = z.shape
    p = top1 = kl = None
    if target is not None:
        t = target[index]
        p = (z.gather(-1, t.expand(c, n)[..., None])[..., 0] - z.logsumexp(-1)).exp().double()
        top1 = z.argmax(-1) == t
    if ref is not None:
        z64 = z.double()
        kl = (ref.neg_entropy[index] - torch.einsum("cnv,nv->cn", z64, ref.probs[index])
              + z64.logsumexp(-1)).clamp_min(0.0)
    return p, top1, kl


@torch.no_grad()
def engine_metrics(model, state: LayerState, layer: int, configs: Sequence[Config], positions: Positions = "all",
                   target_ids: torch.Tensor | None = None, reference: Reference | None = None,
                   precision: str | None = None, max_tokens: int | None = None) -> Metrics:
    """METHOD's numbers for every (configuration, prompt), computed where the logits are; ``target_ids``
    ``[n_prompts]`` for the target probability and top-1, ``reference`` for the KL side effect."""
    precision = check_precision(model, precision)
    eng = engine_weights(model, compute_dtype(precision))
    dev = model_device(model)
    target = None if target_ids is None else target_ids.to(dev)
    out = [torch.full((len(configs), state.n_prompts), float("nan"), dtype=torch.float64) for _ in range(3)]
    out[1] = torch.zeros(out[1].shape, dtype=torch.bool)
    with precision_mode(precision):
        for sl, g, x in _final_resid(model, state, layer, configs, positions, precision, max_tokens):
            step = max(1, logit_rows(eng, dev) // x.shape[1])
            for i in range(0, x.shape[0], step):
                cfg = slice(sl.start + i, min(sl.stop, sl.start + i + step))
                for o, r in zip(out, _reduce(_logits(eng, x[i:i + step]), target, reference, g.index)):
                    if r is not None:
                        o[cfg, g.index.cpu()] = r.cpu()
    return Metrics(*out)


@torch.no_grad()
def reference(model, state: LayerState, layer: int, precision: str | None = None) -> Reference:
    """The prompt set's unmodified next-token distribution through the same engine (on the device)."""
    precision = check_precision(model, precision)
    eng = engine_weights(model, compute_dtype(precision))
    dev = model_device(model)
    ref = Reference(torch.empty(state.n_prompts, eng.w_u.shape[0], dtype=torch.float64, device=dev),
                    torch.empty(state.n_prompts, dtype=torch.float64, device=dev))
    with precision_mode(precision):
        for _, g, x in _final_resid(model, state, layer, [IDENTITY], "all", precision, None):
            logp = _logits(eng, x[0]).double().log_softmax(-1)
            ref.probs[g.index] = logp.exp()
            ref.neg_entropy[g.index] = (logp.exp() * logp).sum(-1)
    return ref


@torch.no_grad()
def engine_logits(model, state: LayerState, layer: int, configs: Sequence[Config], positions: Positions = "all",
                  max_tokens: int | None = None, precision: str | None = None) -> torch.Tensor:
    """Full logits at the last token ``[n_configs, n_prompts, V]`` on the host (for inspection; the sweep
    uses :func:`engine_metrics`, which never moves logits off the device)."""
    precision = check_precision(model, precision)
    eng = engine_weights(model, compute_dtype(precision))
    dtype = torch.promote_types(eng.w_u.dtype, torch.float32)
    out = torch.empty(len(configs), state.n_prompts, eng.w_u.shape[0], dtype=dtype)
    with precision_mode(precision):
        for sl, g, x in _final_resid(model, state, layer, configs, positions, precision, max_tokens):
            out[sl, g.index.cpu()] = _logits(eng, x).cpu()
    return out


@torch.no_grad()
def engine_token_probs(model, state: LayerState, layer: int, configs: Sequence[Config], token_ids: torch.Tensor,
                       positions: Positions = "all", precision: str | None = None,
                       max_tokens: int | None = None) -> torch.Tensor:
    """Full-vocabulary next-token probabilities of ``token_ids`` ``[k]`` for every (configuration, prompt)
    ``[n_configs, n_prompts, k]`` float64 on the host, the softmax in float64 as ``core``'s plain path takes it;
    only those k numbers leave the device."""
    precision = check_precision(model, precision)
    eng = engine_weights(model, compute_dtype(precision))
    dev = model_device(model)
    ids = token_ids.to(dev)
    out = torch.empty(len(configs), state.n_prompts, len(token_ids), dtype=torch.float64)
    with precision_mode(precision):
        for sl, g, x in _final_resid(model, state, layer, configs, positions, precision, max_tokens):
            step = max(1, logit_rows(eng, dev) // x.shape[1])
            for i in range(0, x.shape[0], step):
                z = _logits(eng, x[i:i + step]).double()
                p = (z[..., ids] - z.logsumexp(-1, keepdim=True)).exp()
                out[sl.start + i:min(sl.stop, sl.start + i + step), g.index.cpu()] = p.cpu()
    return out


def base_logits(model, state: LayerState, layer: int, precision: str | None = None) -> torch.Tensor:
    """The prompt set's logits without intervention, through the same engine ``[n_prompts, V]`` (host)."""
    return engine_logits(model, state, layer, [IDENTITY], precision=precision)[0]

