"""Selective Neuron Amplification (SNA): the kit's one helper module.

Reads top to bottom like the method (see ../shared/METHOD.md in the development
checkout, and the notebooks): loading, tasks, discovery, intervention,
measurement, the sweep engine, zones and statistics, SST-2, plots.

Conventions. A *neuron* is one unit of ``blocks.{L}.mlp.hook_post`` (the MLP
activation after the nonlinearity, ``[batch, position, d_mlp]``). Prompts are
right-padded and read at each prompt's last real token, so batching never
changes a number. Probabilities are plain floats in [0, 1]; improvements are in
percent of the baseline probability; KL divergences are in nats.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

KIT_VERSION = "0.1.0"
KIT_ROOT = Path(__file__).resolve().parent
DATA_DIR = KIT_ROOT / "data"
FIGURES_DIR = KIT_ROOT / "figures"

Positions = Literal["all", "last"]


class SNAError(ValueError):
    """Bad input to the kit: the message names the problem and what to do."""


class ModelUnavailableError(RuntimeError):
    """A model or data set could not be fetched (no network, not cached)."""


# ---------------------------------------------------------------------------
# 1. Loading
# ---------------------------------------------------------------------------

HUB_MODELS = {  # kit name -> Hugging Face Hub id (METHOD, "Models")
    "gpt2-small": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "pythia-160m": "EleutherAI/pythia-160m",
}
GPT2_TOKENIZER_HUB_ID = "openai-community/gpt2"

# Offline stand-ins: the real architectures with random weights, and tiny models for tests.
# (architecture, config overrides, default initializer_range)
STANDINS: dict[str, tuple[str, dict, float]] = {
    "random:gpt2-small": ("gpt2", dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024), 0.02),
    "random:gpt2-medium": ("gpt2", dict(n_layer=24, n_embd=1024, n_head=16, n_positions=1024), 0.02),
    "random:pythia-160m": (
        "neox",
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
             max_position_embeddings=2048, vocab_size=50304, use_parallel_residual=True,
             rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}),
        0.02,
    ),
    "tiny": ("gpt2", dict(n_layer=3, n_embd=64, n_head=4, n_positions=256), 0.2),
    "tiny-pythia": (
        "neox",
        dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256,
             max_position_embeddings=256, vocab_size=50304, use_parallel_residual=True,
             rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}),
        0.2,
    ),
}
MODEL_NAMES = [*HUB_MODELS, *STANDINS]


def default_device() -> str:
    """'cuda' when a GPU is visible, else 'cpu'."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _hub_unavailable(what: str, hub_id: str, fix: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"Cannot load {what} ({hub_id!r}): the Hugging Face Hub is not reachable from this machine "
        f"and it is not in the local cache. {fix}"
    )


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """True when the Hub's host accepts a TCP connection (fast check before slow retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _hub_cached(hub_id: str, filename: str, repo_type: str = "model") -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(hub_id, filename, repo_type=repo_type), str)


def _require_hub(hub_id: str, filename: str, what: str, fix: str, repo_type: str = "model") -> None:
    """Raise one clear error, at once, when ``hub_id`` is neither cached nor reachable."""
    if not _hub_cached(hub_id, filename, repo_type) and not _hub_reachable():
        raise _hub_unavailable(what, hub_id, fix)


def gpt2_tokenizer(path: str | os.PathLike | None = None):
    """The GPT-2 BPE tokenizer from ``path``, ``$SNA_GPT2_TOKENIZER`` or the Hub (prepends BOS)."""
    from transformers import GPT2TokenizerFast

    path = path or os.environ.get("SNA_GPT2_TOKENIZER")
    if path:
        path = Path(path)
        if not (path / "vocab.json").is_file() or not (path / "merges.txt").is_file():
            raise SNAError(f"GPT-2 tokenizer folder {path} must contain vocab.json and merges.txt.")
        return GPT2TokenizerFast.from_pretrained(str(path), add_bos_token=True)
    _require_hub(GPT2_TOKENIZER_HUB_ID, "vocab.json", "the GPT-2 tokenizer",
                 "Set SNA_GPT2_TOKENIZER to a folder with vocab.json and merges.txt.")
    return GPT2TokenizerFast.from_pretrained(GPT2_TOKENIZER_HUB_ID, add_bos_token=True)


def build_random_hf_model(name: str, seed: int = 0, initializer_range: float | None = None):
    """A Hugging Face causal LM of stand-in ``name`` with random weights (deterministic in ``seed``)."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    if name not in STANDINS:
        raise SNAError(f"Unknown stand-in {name!r}; choose one of {sorted(STANDINS)}.")
    arch, overrides, default_init = STANDINS[name]
    init = default_init if initializer_range is None else initializer_range
    if arch == "gpt2":
        config, cls = GPT2Config(**overrides, initializer_range=init), GPT2LMHeadModel
    else:
        config, cls = GPTNeoXConfig(**overrides, initializer_range=init), GPTNeoXForCausalLM
    torch.manual_seed(seed)
    return cls(config).eval()


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


def _engine_weights(hf) -> EngineWeights:
    """Read a GPT-2 or GPT-NeoX Hugging Face model's weights before TransformerLens wraps it."""
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
        ln_f = hf.gpt_neox.final_layer_norm
        return EngineWeights("neox", blocks, (ln_f.weight, ln_f.bias), hf.get_output_embeddings().weight, n_heads,
                             cfg.layer_norm_eps, _activation(cfg.hidden_act), bool(cfg.use_parallel_residual),
                             hf.gpt_neox.rotary_emb)
    raise SNAError(f"Architecture {cfg.model_type!r} is not supported: the kit runs GPT-2 and GPT-NeoX (Pythia).")


def wrap_hf_model(hf, tokenizer, name: str, device: str | None = None, dtype: torch.dtype = torch.float32):
    """Wrap a Hugging Face GPT-2/GPT-NeoX model in a TransformerLens ``TransformerBridge`` for SNA."""
    from transformer_lens.model_bridge import TransformerBridge

    device = device or default_device()
    hf = hf.to(device=device, dtype=dtype).eval()
    weights = _engine_weights(hf)  # before the bridge rewires the modules
    arch_id = "gpt2" if weights.arch == "gpt2" else "EleutherAI/pythia-160m"
    model = TransformerBridge.boot_transformers(arch_id, hf_model=hf, tokenizer=tokenizer, device=device,
                                                dtype=dtype)
    model.eval()
    model.sna_name = name
    model.sna_engine = weights
    return model


def load_model(name_or_path: str, device: str | None = None, *, seed: int = 0,
               initializer_range: float | None = None, dtype: torch.dtype = torch.float32):
    """Load a model by kit name (METHOD table), local checkpoint folder, or offline stand-in.

    Stand-ins are built from ``seed`` at ``initializer_range`` (default: the architecture's own,
    0.2 for the tiny test models); ``dtype`` float64 is for exactness tests.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = str(name_or_path)
    if name in STANDINS:
        hf = build_random_hf_model(name, seed=seed, initializer_range=initializer_range)
        return wrap_hf_model(hf, gpt2_tokenizer(), name, device, dtype)
    if name in HUB_MODELS:
        hub_id = HUB_MODELS[name]
        _require_hub(hub_id, "config.json", f"model {name!r}",
                     f"Connect to the internet once (the weights are then cached), pass a local checkpoint "
                     f"folder, or use the offline stand-in 'random:{name}' (random weights, for testing).")
        source = hub_id
    elif Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise SNAError(f"{name} is a folder but not a Hugging Face checkpoint (no config.json).")
        source = name
    else:
        raise SNAError(f"Unknown model {name!r}: use one of {MODEL_NAMES} or a local checkpoint folder.")
    hf = AutoModelForCausalLM.from_pretrained(source, attn_implementation="eager", dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(source)
    return wrap_hf_model(hf, tokenizer, name, device, dtype)


def model_name(model) -> str:
    """The kit name the model was loaded under."""
    return getattr(model, "sna_name", type(model).__name__)


def model_device(model) -> torch.device:
    """The device the model's weights live on."""
    return model.sna_engine.w_u.device


def n_layers(model) -> int:
    return model.cfg.n_layers


def d_mlp(model) -> int:
    return model.cfg.d_mlp


# ---------------------------------------------------------------------------
# 2. Tasks and prompts
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One prompt and its one-token target (GPT-2 targets usually start with a space)."""

    prompt: str
    target: str


@dataclass(frozen=True)
class Task:
    """A named task, split once by a fixed seed into discovery and evaluation halves."""

    name: str
    category: str
    description: str
    discovery: tuple[Item, ...]
    evaluation: tuple[Item, ...]

    @property
    def items(self) -> tuple[Item, ...]:
        return self.discovery + self.evaluation


@dataclass(frozen=True)
class NeutralSet:
    """Neutral prose: one half for discovery, one held out for side effects."""

    discovery: tuple[str, ...]
    heldout: tuple[str, ...]


def split_half(values: Sequence, seed: int) -> tuple[tuple, tuple]:
    """Shuffle by ``seed`` and cut in two (first half gets the extra element)."""
    order = list(range(len(values)))
    random.Random(seed).shuffle(order)
    cut = (len(values) + 1) // 2
    return tuple(values[i] for i in sorted(order[:cut])), tuple(values[i] for i in sorted(order[cut:]))


def _split_seed(seed: int, name: str) -> int:
    return int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:8], 16)


def load_task(path: str | os.PathLike, seed: int = 0) -> Task:
    """Read one task file (``data/tasks/<name>.json``) and split it by ``seed``."""
    path = Path(path)
    if not path.is_file():
        raise SNAError(f"Task file not found: {path}")
    raw = json.loads(path.read_text(encoding="utf-8"))
    for key in ("name", "category", "items"):
        if key not in raw:
            raise SNAError(f"Task file {path} has no {key!r} field.")
    items = []
    for i, it in enumerate(raw["items"]):
        if not isinstance(it, dict) or not it.get("prompt") or not it.get("target"):
            raise SNAError(f"{path}: item {i} needs a non-empty 'prompt' and 'target', got {it!r}.")
        items.append(Item(it["prompt"], it["target"]))
    if len(items) < 2:
        raise SNAError(f"{path}: a task needs at least 2 items to split, got {len(items)}.")
    discovery, evaluation = split_half(items, _split_seed(seed, raw["name"]))
    return Task(raw["name"], raw["category"], raw.get("description", ""), discovery, evaluation)


def load_tasks(names: Iterable[str] | None = None, data_dir: str | os.PathLike = DATA_DIR,
               seed: int = 0) -> list[Task]:
    """The kit's 12 tasks (or those named), each split into discovery/evaluation halves."""
    task_dir = Path(data_dir) / "tasks"
    available = {p.stem: p for p in sorted(task_dir.glob("*.json"))}
    if not available:
        raise SNAError(f"No task files in {task_dir}.")
    wanted = list(available) if names is None else list(names)
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise SNAError(f"Unknown task(s) {unknown}; available: {sorted(available)}.")
    return [load_task(available[n], seed) for n in wanted]


def load_neutral(data_dir: str | os.PathLike = DATA_DIR) -> list[str]:
    """The neutral reference prompts (``data/neutral.txt``, one per line)."""
    path = Path(data_dir) / "neutral.txt"
    if not path.is_file():
        raise SNAError(f"Neutral prompt file not found: {path}")
    return [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def split_neutral(prompts: Sequence[str], seed: int = 0) -> NeutralSet:
    """Split neutral prompts into a discovery half and a held-out half (fixed seed)."""
    discovery, heldout = split_half(list(prompts), _split_seed(seed, "neutral"))
    return NeutralSet(discovery, heldout)


# ---------------------------------------------------------------------------
# Input checks (each raises SNAError naming the problem, before any work)
# ---------------------------------------------------------------------------

def check_prompts(prompts: Sequence[str], what: str = "prompts") -> list[str]:
    if isinstance(prompts, str):
        raise SNAError(f"{what} must be a list of strings, not one string.")
    prompts = list(prompts)
    if not prompts:
        raise SNAError(f"{what} is empty: give at least one prompt.")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise SNAError(f"{what}[{i}] is empty or not a string: {p!r}.")
    return prompts


def check_layer(model, layer: int) -> int:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < n_layers(model):
        raise SNAError(f"Layer {layer!r} does not exist: {model_name(model)} has layers 0..{n_layers(model) - 1}.")
    return int(layer)


def check_k(model, k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= d_mlp(model):
        raise SNAError(f"k={k!r} is out of range: choose 1 <= k <= d_mlp={d_mlp(model)}.")
    return int(k)


def check_multiplier(m: float) -> float:
    if isinstance(m, bool) or not isinstance(m, (int, float, np.number)) or not math.isfinite(float(m)):
        raise SNAError(f"Multiplier {m!r} must be a finite number (1 = no change, 0 = ablation).")
    return float(m)


def check_positions(positions: str) -> str:
    if positions not in ("all", "last"):
        raise SNAError(f"positions={positions!r}: choose 'all' or 'last'.")
    return positions


def check_neurons(model, neurons: Sequence[int]) -> tuple[int, ...]:
    neurons = tuple(int(i) for i in neurons)
    if not neurons:
        raise SNAError("The neuron list is empty.")
    bad = [i for i in neurons if not 0 <= i < d_mlp(model)]
    if bad:
        raise SNAError(f"Neuron indices {bad[:5]} are outside 0..{d_mlp(model) - 1}.")
    if len(set(neurons)) != len(neurons):
        raise SNAError("The neuron list repeats an index.")
    return neurons


def target_token_ids(model, items: Sequence[Item] | Sequence[str], what: str = "target") -> torch.Tensor:
    """Token id of each target ``[n]``; raises naming the item when a target is not exactly one token."""
    ids = []
    for i, it in enumerate(items):
        target, label = (it.target, f"item {i} ({it.prompt!r} -> {it.target!r})") if isinstance(it, Item) \
            else (it, f"{what} {i} ({it!r})")
        toks = model.tokenizer(target, add_special_tokens=False)["input_ids"]
        if len(toks) != 1:
            raise SNAError(f"The target of {label} is {len(toks)} tokens {toks} for {model_name(model)}; "
                           f"a target must be exactly one token (GPT-2 targets usually start with a space).")
        ids.append(toks[0])
    return torch.tensor(ids, dtype=torch.long)


# ---------------------------------------------------------------------------
# Tokenisation: right padding, read at the last real token
# ---------------------------------------------------------------------------

@dataclass
class Batch:
    """Right-padded token ids ``[n, T]`` and each prompt's last real position ``[n]``."""

    tokens: torch.Tensor
    last: torch.Tensor


def encode_prompts(model, prompts: Sequence[str]) -> Batch:
    """Tokenise (with the model's BOS convention) and right-pad; rejects prompts longer than the context."""
    prompts = check_prompts(prompts)
    rows = [model.to_tokens(p, truncate=False, move_to_device=False)[0] for p in prompts]
    for i, r in enumerate(rows):
        if len(r) > model.cfg.n_ctx:
            raise SNAError(f"Prompt {i} is {len(r)} tokens, longer than the model's context of "
                           f"{model.cfg.n_ctx}: {prompts[i][:60]!r}...")
    lengths = torch.tensor([len(r) for r in rows])
    pad = model.tokenizer.pad_token_id or 0
    tokens = torch.full((len(rows), int(lengths.max())), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
    return Batch(tokens, lengths - 1)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


# ---------------------------------------------------------------------------
# 3. Discovery: differential activation analysis
# ---------------------------------------------------------------------------

def hook_name(layer: int) -> str:
    """The TransformerLens hook of layer ``layer``'s MLP neurons."""
    return f"blocks.{layer}.mlp.hook_post"


class _StopForward(Exception):
    """Raised by a capturing hook to end a forward pass once everything needed is in hand."""


def run_and_capture(model, tokens: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Forward ``tokens`` through the model (with any active hooks) and return the activations at
    hook ``names``; the pass stops as soon as the last of them has fired."""
    captured: dict[str, torch.Tensor] = {}

    def grabber(name: str):
        def grab(x: torch.Tensor, hook=None):
            captured[name] = x
            if len(captured) == len(names):
                raise _StopForward
        return grab

    try:
        with model.hooks(fwd_hooks=[(n, grabber(n)) for n in names]):
            model(tokens, return_type=None)
    except _StopForward:
        pass
    missing = set(names) - set(captured)
    if missing:
        raise RuntimeError(f"Hooks {sorted(missing)} never fired.")
    return captured


@torch.no_grad()
def last_token_activations(model, prompts: Sequence[str], layers: Sequence[int],
                           batch_size: int = 32) -> dict[int, torch.Tensor]:
    """``hook_post`` at each prompt's last real token: ``{layer: [n_prompts, d_mlp]}`` (on CPU)."""
    layers = [check_layer(model, L) for L in layers]
    batch = encode_prompts(model, prompts)
    names = sorted({hook_name(L) for L in layers})
    out: dict[int, list[torch.Tensor]] = {L: [] for L in layers}
    for sl in _chunks(len(batch.tokens), batch_size):
        tokens = batch.tokens[sl].to(model_device(model))
        rows = torch.arange(tokens.shape[0])
        cache = run_and_capture(model, tokens, names)
        for L in layers:
            out[L].append(cache[hook_name(L)][rows, batch.last[sl]].cpu())
    return {L: torch.cat(v) for L, v in out.items()}


def scores_from_activations(task_acts: torch.Tensor, reference_acts: torch.Tensor,
                            method: str = "mean_diff") -> torch.Tensor:
    """Differential score per neuron ``[d_mlp]`` from ``[n_task, d_mlp]`` and ``[n_ref, d_mlp]``."""
    diff = task_acts.mean(0) - reference_acts.mean(0)
    if method == "mean_diff":
        return diff
    if method == "zscore":
        n1, n2 = len(task_acts), len(reference_acts)
        if n1 + n2 < 3:
            raise SNAError("zscore needs at least 3 prompts in total.")
        pooled = ((n1 - 1) * task_acts.var(0, unbiased=True).nan_to_num() +
                  (n2 - 1) * reference_acts.var(0, unbiased=True).nan_to_num()) / (n1 + n2 - 2)
        return diff / pooled.sqrt().clamp_min(1e-8)
    raise SNAError(f"Unknown scoring method {method!r}: use 'mean_diff' or 'zscore'.")


def neuron_scores(model, prompts: Sequence[str], reference_prompts: Sequence[str], layer: int,
                  method: str = "mean_diff") -> torch.Tensor:
    """Differential activation score of every neuron of ``layer`` ``[d_mlp]`` (task minus reference)."""
    check_layer(model, layer)
    check_prompts(prompts, "prompts")
    check_prompts(reference_prompts, "reference_prompts")
    if method not in ("mean_diff", "zscore"):
        raise SNAError(f"Unknown scoring method {method!r}: use 'mean_diff' or 'zscore'.")
    task = last_token_activations(model, prompts, [layer])[layer]
    ref = last_token_activations(model, reference_prompts, [layer])[layer]
    return scores_from_activations(task, ref, method)


def rank_neurons(scores: torch.Tensor) -> torch.Tensor:
    """All neuron indices, best score first, ties broken by the lower index ``[d_mlp]``."""
    if torch.isnan(scores).any():
        raise SNAError("Scores contain NaN.")
    return torch.sort(scores, descending=True, stable=True).indices


def top_neurons(scores: torch.Tensor, k: int) -> list[int]:
    """The ``k`` highest-scoring neurons (ties: lower index first)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(scores):
        raise SNAError(f"k={k!r} is out of range: choose 1 <= k <= {len(scores)}.")
    return rank_neurons(scores)[:k].tolist()


def random_neurons(n_neurons: int, k: int, seed: int, layer: int) -> list[int]:
    """``k`` control neurons drawn with a fixed seed per layer; nested in k (the first k of one draw)."""
    g = torch.Generator().manual_seed(_split_seed(seed, f"control-layer-{layer}"))
    return torch.randperm(n_neurons, generator=g)[:k].tolist()


# ---------------------------------------------------------------------------
# 4. Intervention
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Intervention:
    """Multiply neurons ``neurons`` of layer ``layer`` by ``multiplier`` at ``positions``."""

    layer: int
    neurons: tuple[int, ...]
    multiplier: float
    positions: Positions = "all"

    def __post_init__(self):
        object.__setattr__(self, "neurons", tuple(int(i) for i in self.neurons))
        check_multiplier(self.multiplier)
        check_positions(self.positions)

    def check(self, model) -> "Intervention":
        """Raise SNAError unless this intervention fits ``model``."""
        check_layer(model, self.layer)
        check_neurons(model, self.neurons)
        return self


def _scaling_hook(intervention: Intervention, n_mlp: int, last: torch.Tensor | None):
    scale = torch.ones(n_mlp)
    scale[list(intervention.neurons)] = intervention.multiplier

    def hook(act: torch.Tensor, hook=None) -> torch.Tensor:
        s = scale.to(act.device, act.dtype)
        if intervention.positions == "all":
            return act * s
        rows = torch.arange(act.shape[0], device=act.device)
        cols = (torch.full((act.shape[0],), act.shape[1] - 1) if last is None else last).to(act.device)
        out = act.clone()
        out[rows, cols] = act[rows, cols] * s
        return out

    return hook


@contextlib.contextmanager
def amplify(model, intervention: Intervention, last: torch.Tensor | None = None):
    """Context manager: run ``model`` with the intervention; the hook is always removed.

    With ``positions="last"``, ``last`` ``[batch]`` gives each row's last real position
    (default: the final position of every row).
    """
    intervention.check(model)
    with model.hooks(fwd_hooks=[(hook_name(intervention.layer), _scaling_hook(intervention, d_mlp(model), last))]):
        yield model


# ---------------------------------------------------------------------------
# 5. Measurement
# ---------------------------------------------------------------------------

@torch.no_grad()
def next_token_logits(model, prompts: Sequence[str], intervention: Intervention | None = None,
                      batch_size: int = 32) -> torch.Tensor:
    """Logits of the next token at each prompt's last real token ``[n_prompts, d_vocab]`` (on CPU)."""
    if intervention is not None:
        intervention.check(model)
    batch = encode_prompts(model, prompts)
    out = []
    for sl in _chunks(len(batch.tokens), batch_size):
        tokens = batch.tokens[sl].to(model_device(model))
        last = batch.last[sl]
        ctx = amplify(model, intervention, last) if intervention is not None else contextlib.nullcontext()
        with ctx:
            final = run_and_capture(model, tokens, ["ln_final.hook_out"])["ln_final.hook_out"]
        x = final[torch.arange(len(last)), last.to(final.device)]  # unembed only the token that is read
        out.append(model.unembed(x[:, None])[:, 0].cpu())
    return torch.cat(out)


def target_probs(model, prompts: Sequence[str], targets: Sequence[str],
                 intervention: Intervention | None = None, batch_size: int = 32) -> torch.Tensor:
    """Next-token probability of each prompt's target ``[n_prompts]``."""
    prompts = check_prompts(prompts)
    if len(prompts) != len(targets):
        raise SNAError(f"{len(prompts)} prompts but {len(targets)} targets.")
    ids = target_token_ids(model, [Item(p, t) for p, t in zip(prompts, targets)])
    probs = next_token_logits(model, prompts, intervention, batch_size).softmax(-1)
    return probs[torch.arange(len(ids)), ids]


def kl_divergence(base_logits: torch.Tensor, new_logits: torch.Tensor) -> torch.Tensor:
    """KL(base || new) of next-token distributions ``[n]`` in nats."""
    lp, lq = base_logits.double().log_softmax(-1), new_logits.double().log_softmax(-1)
    return (lp.exp() * (lp - lq)).sum(-1).clamp_min(0.0)


def improvement_pct(p_base: float, p_sna: float) -> float:
    """Relative change of a probability, in percent of the baseline."""
    return 100.0 * (p_sna - p_base) / p_base if p_base > 0 else float("nan")


@dataclass
class Outcome:
    """What one configuration did to one prompt set (all means over prompts)."""

    p_sna: float
    improvement_pct: float
    success_rate: float  # share of prompts whose target probability rose
    top1_sna: float
    side_effect_kl: float  # mean KL(base || sna) on held-out neutral prompts, nats


@dataclass
class Baseline:
    """A prompt set without intervention: target ids, logits, probabilities ``[n]``."""

    target_ids: torch.Tensor
    p: torch.Tensor
    top1: torch.Tensor  # bool [n]

    @property
    def p_mean(self) -> float:
        return float(self.p.mean())


def baseline_of(target_ids: torch.Tensor, logits: torch.Tensor) -> Baseline:
    probs = logits.softmax(-1)
    return Baseline(target_ids, probs[torch.arange(len(target_ids)), target_ids], logits.argmax(-1) == target_ids)


def outcome_of(base: Baseline, logits: torch.Tensor, neutral_base: torch.Tensor | None,
               neutral_new: torch.Tensor | None) -> Outcome:
    """Compare a configuration's task logits ``[n, V]`` (and neutral logits) with the baseline."""
    p = logits.softmax(-1)[torch.arange(len(base.target_ids)), base.target_ids]
    kl = float("nan") if neutral_base is None else float(kl_divergence(neutral_base, neutral_new).mean())
    return Outcome(
        p_sna=float(p.mean()),
        improvement_pct=improvement_pct(base.p_mean, float(p.mean())),
        success_rate=float((p > base.p).float().mean()),
        top1_sna=float((logits.argmax(-1) == base.target_ids).float().mean()),
        side_effect_kl=kl,
    )


def measure(model, items: Sequence[Item], intervention: Intervention,
            neutral_prompts: Sequence[str] | None = None) -> tuple[Baseline, Outcome]:
    """The plain reference measurement of one configuration: full hooked forward passes."""
    items = list(items)
    prompts = [it.prompt for it in items]
    ids = target_token_ids(model, items)
    intervention.check(model)
    base = baseline_of(ids, next_token_logits(model, prompts))
    new = next_token_logits(model, prompts, intervention)
    nb = nn = None
    if neutral_prompts is not None:
        nb = next_token_logits(model, neutral_prompts)
        nn = next_token_logits(model, neutral_prompts, intervention)
    return base, outcome_of(base, new, nb, nn)


# ---------------------------------------------------------------------------
# 6. The sweep engine
# ---------------------------------------------------------------------------
#
# The plain way runs the whole hooked model once per configuration. The engine
# instead (i) runs the unmodified model once per prompt set and layer, keeping
# the residual stream after block L and the neuron activations of layer L;
# (ii) adds each configuration's change, (m - 1) * act[S] @ W_out[S], to that
# residual (the only thing an MLP-neuron multiplier changes in block L);
# (iii) runs blocks L+1.. for many configurations stacked along the batch, the
# final block for the last real token only; (iv) unembeds only that token.

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
    eng = model.sna_engine
    w_out = eng.blocks[layer].w_out
    out = torch.empty(len(configs), state.n_prompts, eng.w_u.shape[0], dtype=w_out.dtype)
    for g in state.groups:
        n, T, _ = g.resid_after.shape
        for sl in _chunks(len(configs), max(1, max_tokens // (n * T))):
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


# --- the sweep table -------------------------------------------------------

KEY_COLUMNS = ["model", "task", "layer", "k", "multiplier", "positions"]


@dataclass(frozen=True)
class SweepSettings:
    """Everything besides the grid that determines a sweep's numbers; its hash keys the results table."""

    model: str
    positions: str
    score_method: str
    seed: int
    data_sha: str
    kit_version: str = KIT_VERSION

    @property
    def settings_id(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def data_fingerprint(tasks: Sequence[Task], neutral: NeutralSet) -> str:
    """Hash of every prompt, target and split the sweep uses."""
    payload = json.dumps([[t.name, [dataclasses.astuple(i) for i in t.discovery],
                           [dataclasses.astuple(i) for i in t.evaluation]] for t in tasks]
                         + [list(neutral.discovery), list(neutral.heldout)])
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a results table (Parquet or CSV by extension)."""
    path = Path(path)
    if not path.is_file():
        raise SNAError(f"Results table not found: {path}")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def write_table_atomic(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write Parquet/CSV to a temporary file, then rename: a cut-off write never corrupts ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if path.suffix == ".parquet":
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def _existing_rows(out: Path | None, settings: SweepSettings) -> pd.DataFrame | None:
    if out is None or not out.is_file():
        return None
    old = read_table(out)
    ids = set(old["settings_id"]) if "settings_id" in old else {"?"}
    if ids != {settings.settings_id}:
        raise SNAError(
            f"{out} holds results made with other settings (settings_id {sorted(ids)} != "
            f"{settings.settings_id}: model, positions, score method, seed, data or kit version differ). "
            f"Choose another `out` path or delete the file; rows of different settings are never mixed.")
    return old


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


def _sweep_rows(model, task: Task, layer: int, ranking: torch.Tensor, ks, ms, positions,
                base: Baseline, task_state: LayerState, neutral_base: torch.Tensor,
                neutral_state: LayerState, control_cache: dict, seed: int, max_tokens: int) -> list[dict]:
    """All configurations of one task at one layer: SNA and random-neuron control."""
    sna = [Config(tuple(ranking[:k].tolist()), m) for k in ks for m in ms]
    control = [Config(tuple(random_neurons(d_mlp(model), k, seed, layer)), m) for k in ks for m in ms]
    task_logits = engine_logits(model, task_state, layer, sna + control, positions, max_tokens)
    neutral_logits = engine_logits(model, neutral_state, layer, sna, positions, max_tokens)
    missing = [c for c in control if c not in control_cache]
    if missing:
        for c, lg in zip(missing, engine_logits(model, neutral_state, layer, missing, positions, max_tokens)):
            control_cache[c] = float(kl_divergence(neutral_base, lg).mean())
    rows = []
    for i, (c, ctrl) in enumerate(zip(sna, control)):
        o = outcome_of(base, task_logits[i], neutral_base, neutral_logits[i])
        oc = outcome_of(base, task_logits[len(sna) + i], None, None)
        rows.append(dict(
            task=task.name, category=task.category, layer=layer, k=len(c.neurons), multiplier=c.multiplier,
            positions=positions, n_eval=len(base.p), p_base=base.p_mean, zone=zone_of(base.p_mean),
            p_sna=o.p_sna, improvement_pct=o.improvement_pct, success_rate=o.success_rate,
            top1_base=float(base.top1.float().mean()), top1_sna=o.top1_sna, side_effect_kl=o.side_effect_kl,
            control_p_sna=oc.p_sna, control_improvement_pct=oc.improvement_pct,
            control_success_rate=oc.success_rate, control_top1_sna=oc.top1_sna,
            control_side_effect_kl=control_cache[ctrl],
            gain_over_control_pct=o.improvement_pct - oc.improvement_pct,
        ))
    return rows


@torch.no_grad()
def run_sweep(model, tasks: Sequence[Task], layers: Sequence[int], ks: Sequence[int],
              multipliers: Sequence[float], positions: Positions = "all", out: str | os.PathLike | None = None,
              neutral: NeutralSet | None = None, score_method: str = "mean_diff", seed: int = 0,
              max_tokens: int = 16384, progress: bool = True) -> pd.DataFrame:
    """Every (task, layer, k, multiplier) configuration: one row of METHOD's metrics each.

    Rows are written to ``out`` (.parquet or .csv) after every (task, layer); a rerun with the
    same settings skips what is there, a rerun with different settings refuses to mix rows.
    """
    from tqdm.auto import tqdm

    tasks = list(tasks)
    if not tasks:
        raise SNAError("No tasks given.")
    layers = sorted({check_layer(model, L) for L in layers})
    ks = sorted({check_k(model, k) for k in ks})
    ms = sorted({check_multiplier(m) for m in multipliers})
    if not layers or not ks or not ms:
        raise SNAError("layers, ks and multipliers must each be non-empty.")
    check_positions(positions)
    if score_method not in ("mean_diff", "zscore"):
        raise SNAError(f"Unknown scoring method {score_method!r}: use 'mean_diff' or 'zscore'.")
    out = Path(out) if out is not None else None
    if out is not None and out.suffix not in (".parquet", ".csv"):
        raise SNAError(f"out={out}: use a .parquet or .csv file name.")
    neutral = neutral or split_neutral(load_neutral(), seed)
    ids = {t.name: target_token_ids(model, t.evaluation) for t in tasks}  # check every target first
    for t in tasks:
        check_prompts([i.prompt for i in t.discovery], f"{t.name} discovery prompts")
    eval_batches = {t.name: encode_prompts(model, [i.prompt for i in t.evaluation]) for t in tasks}
    neutral_batch = encode_prompts(model, neutral.heldout)

    settings = SweepSettings(model_name(model), positions, score_method, seed, data_fingerprint(tasks, neutral))
    old = _existing_rows(out, settings)
    done = set() if old is None else set(zip(old["task"], old["layer"], old["k"], old["multiplier"]))
    todo = [(t, L) for L in layers for t in tasks
            if any((t.name, L, k, m) not in done for k in ks for m in ms)]
    n_cfg = len(tasks) * len(layers) * len(ks) * len(ms)
    n_todo = len(todo) * len(ks) * len(ms)

    seq = int(round(float(np.mean([(b.last + 1).float().mean() for b in eval_batches.values()]))))
    flops = sum(grid_flop_floor(model, L, 2 * len(ks) * len(ms), len(t.evaluation) + len(neutral.heldout), seq)
                for t, L in todo)
    dev = model_device(model)
    est = flops / matmul_rate(dev) * 1.5 if todo else 0.0
    print(f"Sweep on {model_name(model)} ({dev}): {n_cfg} configurations "
          f"({len(tasks)} tasks x {len(layers)} layers x {len(ks)} k x {len(ms)} multipliers), "
          f"{n_cfg - n_todo} already in {out}, {n_todo} to run; estimated {est / 60:.1f} min.")

    rows: list[dict] = [] if old is None else old.to_dict("records")
    rankings: dict[str, dict[int, torch.Tensor]] = {}
    bar = tqdm(total=n_todo, desc="SNA sweep", unit="config", disable=not progress)
    neutral_acts = None
    for L in layers:
        layer_todo = [t for t, LL in todo if LL == L]
        if not layer_todo:
            continue
        neutral_state = layer_state(model, neutral_batch, L)
        neutral_base = base_logits(model, neutral_state, L)
        control_cache: dict = {}
        for t in layer_todo:
            if t.name not in rankings:  # discovery once per task, all layers at once
                if neutral_acts is None:
                    neutral_acts = last_token_activations(model, neutral.discovery, layers)
                acts = last_token_activations(model, [i.prompt for i in t.discovery], layers)
                rankings[t.name] = {LL: rank_neurons(scores_from_activations(acts[LL], neutral_acts[LL],
                                                                             score_method)) for LL in layers}
            state = layer_state(model, eval_batches[t.name], L)
            base = baseline_of(ids[t.name], base_logits(model, state, L))
            new = _sweep_rows(model, t, L, rankings[t.name][L], ks, ms, positions, base, state,
                              neutral_base, neutral_state, control_cache, seed, max_tokens)
            new = [r for r in new if (r["task"], r["layer"], r["k"], r["multiplier"]) not in done]
            for r in new:
                r.update(model=settings.model, score_method=score_method, seed=seed,
                         settings_id=settings.settings_id, kit_version=KIT_VERSION)
            rows.extend(new)
            if out is not None:
                write_table_atomic(pd.DataFrame(rows), out)
            bar.update(len(ks) * len(ms))
    bar.close()
    df = pd.DataFrame(rows)
    return df.sort_values(["task", "layer", "k", "multiplier"], ignore_index=True) if len(df) else df


# ---------------------------------------------------------------------------
# 7. Zones and statistics
# ---------------------------------------------------------------------------

ZONE_LOW, ZONE_HIGH = 0.07, 0.10  # METHOD: Zone 1 < 0.07 <= Zone 2 <= 0.10 < Zone 3
ZONE_NAMES = {1: "Zone 1 (uncertain)", 2: "Zone 2 (transition)", 3: "Zone 3 (confident)"}
ZONE_COLORS = {1: "#d95f02", 2: "#7570b3", 3: "#1b9e77"}


def zone_of(p: float) -> int:
    """Zone of a baseline probability: 1 if p < 0.07, 2 if 0.07 <= p <= 0.10, 3 if p > 0.10."""
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise SNAError(f"Probability {p!r} is outside [0, 1].")
    return 1 if p < ZONE_LOW else (2 if p <= ZONE_HIGH else 3)


def best_per_task(df: pd.DataFrame, metric: str = "improvement_pct") -> pd.DataFrame:
    """Each (model, task)'s best configuration by ``metric``."""
    idx = df.groupby(["model", "task"])[metric].idxmax()
    return df.loc[idx].reset_index(drop=True)


def task_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task): baseline P, zone, best and mean improvement, best layer."""
    best = best_per_task(df)
    mean = df.groupby(["model", "task"])["improvement_pct"].mean().rename("mean_improvement_pct")
    out = best[["model", "task", "category", "p_base", "zone", "improvement_pct", "layer", "k", "multiplier",
                "gain_over_control_pct", "side_effect_kl"]].rename(
        columns={"improvement_pct": "best_improvement_pct", "layer": "best_layer", "k": "best_k",
                 "multiplier": "best_multiplier"})
    return out.merge(mean, on=["model", "task"]).sort_values(["model", "p_base"], ignore_index=True)


def confidence_gain_correlation(summary: pd.DataFrame, gain: str = "best_improvement_pct") -> tuple[float, float]:
    """Spearman's rho and p between baseline P and a task's gain (METHOD: one point per task)."""
    from scipy.stats import spearmanr

    if len(summary) < 3:
        return float("nan"), float("nan")
    res = spearmanr(summary["p_base"], summary[gain])
    return float(res.statistic), float(res.pvalue)


def zone_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """Per zone: number of tasks, mean and max best improvement."""
    return summary.groupby("zone").agg(n_tasks=("task", "count"), mean_best_improvement_pct=(
        "best_improvement_pct", "mean"), max_best_improvement_pct=("best_improvement_pct", "max")).reset_index()


def golden_zone(df: pd.DataFrame, min_improvement_pct: float = 10.0, max_kl: float = 0.05) -> pd.DataFrame:
    """Configurations with improvement >= ``min_improvement_pct`` and side effect <= ``max_kl`` nats."""
    return df[(df["improvement_pct"] >= min_improvement_pct) & (df["side_effect_kl"] <= max_kl)]


# ---------------------------------------------------------------------------
# 8. SST-2 zone analysis
# ---------------------------------------------------------------------------

SST2_TEMPLATE = "Review: {sentence}\nSentiment:"
SST2_LABEL_WORDS = (" negative", " positive")  # label 0, label 1
SST2_HUB_ID = "nyu-mll/glue"
SST2_FILES = {"validation": "dev.tsv", "train": "train.tsv"}


def _read_sst2_tsv(path: Path) -> pd.DataFrame:
    """Strictly parse a GLUE SST-2 TSV (header ``sentence\tlabel``); errors name the line."""
    if not path.is_file():
        raise SNAError(f"SST-2 file not found: {path}")
    sentences, labels = [], []
    with path.open(encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header != ["sentence", "label"]:
            raise SNAError(f"{path}, line 1: header must be 'sentence<TAB>label', got {header!r}.")
        for lineno, line in enumerate(f, start=2):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 2:
                raise SNAError(f"{path}, line {lineno}: expected 2 tab-separated columns, got {len(fields)}.")
            sentence, label = fields
            if not sentence.strip():
                raise SNAError(f"{path}, line {lineno}: empty sentence.")
            if label not in ("0", "1"):
                raise SNAError(f"{path}, line {lineno}: label must be 0 or 1, got {label!r}.")
            sentences.append(sentence)
            labels.append(int(label))
    return pd.DataFrame({"sentence": sentences, "label": labels})


def load_sst2(split: str = "validation", data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """GLUE SST-2 ``split`` as a DataFrame (sentence, label): from ``data_dir``/``$SNA_SST2_DIR`` TSVs or the Hub."""
    if split not in SST2_FILES:
        raise SNAError(f"SST-2 split {split!r}: choose one of {sorted(SST2_FILES)}.")
    data_dir = data_dir or os.environ.get("SNA_SST2_DIR")
    if data_dir:
        return _read_sst2_tsv(Path(data_dir) / SST2_FILES[split])
    _require_hub(SST2_HUB_ID, "README.md", "GLUE SST-2",
                 "Connect once (datasets caches it), or set SNA_SST2_DIR to a folder with GLUE's dev.tsv and "
                 "train.tsv.", repo_type="dataset")
    import datasets

    ds = datasets.load_dataset(SST2_HUB_ID, "sst2", split=split)
    return pd.DataFrame({"sentence": ds["sentence"], "label": ds["label"]})


def sst2_prompts(sentences: Iterable[str], template: str = SST2_TEMPLATE) -> list[str]:
    """Fill the template with each sentence (surrounding whitespace stripped)."""
    return [template.format(sentence=s.strip()) for s in sentences]


def check_sst2_setup(model, template: str, label_words: Sequence[str]) -> torch.Tensor:
    """Check the template has a ``{sentence}`` slot and the two label words are distinct single tokens."""
    if "{sentence}" not in template:
        raise SNAError(f"SST-2 template {template!r} has no '{{sentence}}' placeholder.")
    if len(label_words) != 2 or label_words[0] == label_words[1]:
        raise SNAError(f"Give two distinct label words (negative, positive), got {label_words!r}.")
    return target_token_ids(model, list(label_words), what="label word")


def score_sst2(model, data: pd.DataFrame, intervention: Intervention | None = None,
               template: str = SST2_TEMPLATE, label_words: Sequence[str] = SST2_LABEL_WORDS,
               batch_size: int = 32) -> pd.DataFrame:
    """Per example: p of the correct label word, 2-way P(positive), prediction and correctness."""
    ids = check_sst2_setup(model, template, label_words)
    logits = next_token_logits(model, sst2_prompts(data["sentence"], template), intervention, batch_size)
    probs = logits.double().softmax(-1)[:, ids]  # [n, 2]: P(negative), P(positive)
    labels = torch.tensor(data["label"].to_numpy())
    p_correct = probs[torch.arange(len(labels)), labels]
    pred = (probs[:, 1] > probs[:, 0]).long()
    return pd.DataFrame({"p_correct": p_correct.numpy(), "p2_positive": (probs[:, 1] / probs.sum(-1)).numpy(),
                         "pred": pred.numpy(), "correct": (pred == labels).numpy()}, index=data.index)


def sst2_neurons(model, layer: int, k: int, n_train: int = 256, seed: int = 0,
                 neutral: Sequence[str] | None = None, template: str = SST2_TEMPLATE,
                 data_dir: str | os.PathLike | None = None, method: str = "mean_diff") -> tuple[list[int], torch.Tensor]:
    """Top-k neurons of ``layer`` for SST-2: a fixed-seed sample of train prompts against neutral prose."""
    check_layer(model, layer)
    check_k(model, k)
    train = load_sst2("train", data_dir)
    sample = train.sample(n=min(n_train, len(train)), random_state=seed)
    neutral = list(neutral) if neutral is not None else list(split_neutral(load_neutral(), seed).discovery)
    scores = neuron_scores(model, sst2_prompts(sample["sentence"], template), neutral, layer, method)
    return top_neurons(scores, k), scores


def run_sst2(model, layer: int, k: int, multiplier: float, positions: Positions = "all", n_train: int = 256,
             seed: int = 0, data_dir: str | os.PathLike | None = None, template: str = SST2_TEMPLATE,
             label_words: Sequence[str] = SST2_LABEL_WORDS, limit: int | None = None) -> pd.DataFrame:
    """The SST-2 study: every validation example before SNA, after SNA, and with random control neurons."""
    check_layer(model, layer)
    check_k(model, k)
    check_multiplier(multiplier)
    check_sst2_setup(model, template, label_words)
    val = load_sst2("validation", data_dir)
    val = val.iloc[:limit] if limit else val
    neurons, _ = sst2_neurons(model, layer, k, n_train, seed, template=template, data_dir=data_dir)
    control = random_neurons(d_mlp(model), k, seed, layer)
    runs = {"base": None, "sna": Intervention(layer, neurons, multiplier, positions),
            "control": Intervention(layer, control, multiplier, positions)}
    out = val.copy()
    for name, iv in runs.items():
        scored = score_sst2(model, val, iv, template, label_words)
        out[[f"{c}_{name}" for c in scored.columns]] = scored.to_numpy()
    out["zone"] = [zone_of(p) for p in out["p_correct_base"]]
    out["confidence_2way"] = (out["p2_positive_base"] - 0.5).abs()
    out = out.assign(model=model_name(model), layer=layer, k=k, multiplier=multiplier, positions=positions,
                     neurons=",".join(map(str, neurons)))
    for col in ("correct_base", "correct_sna", "correct_control"):
        out[col] = out[col].astype(bool)
    return out


def sst2_zone_report(examples: pd.DataFrame, confidence_bins: Sequence[float] = (0.1, 0.3)) -> pd.DataFrame:
    """Per zone of the baseline p (and per 2-way-confidence band): accuracy and mean p before/after, in pp."""
    df = examples.copy()
    lo, hi = confidence_bins
    df["band"] = np.where(df["confidence_2way"] < lo, f"uncertain (|q-0.5| < {lo})",
                          np.where(df["confidence_2way"] < hi, f"moderate ({lo} <= |q-0.5| < {hi})",
                                   f"confident (|q-0.5| >= {hi})"))
    views = [("METHOD zone", df["zone"].map(ZONE_NAMES)), ("2-way confidence", df["band"]),
             ("all", pd.Series("all examples", index=df.index))]
    rows = []
    for view, groups in views:
        for group, sub in df.groupby(groups, sort=True):
            row = dict(view=view, group=group, n=len(sub))
            for run in ("base", "sna", "control"):
                row[f"accuracy_{run}"] = 100 * sub[f"correct_{run}"].mean()
                row[f"p_{run}"] = 100 * sub[f"p_correct_{run}"].mean()
            row["accuracy_change_pp"] = row["accuracy_sna"] - row["accuracy_base"]
            row["p_change_pp"] = row["p_sna"] - row["p_base"]
            row["control_accuracy_change_pp"] = row["accuracy_control"] - row["accuracy_base"]
            row["control_p_change_pp"] = row["p_control"] - row["p_base"]
            rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# 9. Profiles: how much of the study to run
# ---------------------------------------------------------------------------

PAPER_KS = (1, 5, 10, 20, 50, 100, 200)
PAPER_MULTIPLIERS = (1.5, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0)


@dataclass(frozen=True)
class Profile:
    """One scale of the study. ``layers=None`` means every layer of the model."""

    name: str
    small_model: str  # notebook 01-02: GPT-2 Small validation and discovery
    sweep_models: tuple[str, ...]  # notebook 03: the grid
    layers: tuple[int, ...] | None
    ks: tuple[int, ...]
    multipliers: tuple[float, ...]
    validation_ks: tuple[int, ...]  # notebook 01's small grid over all layers
    validation_multipliers: tuple[float, ...]
    sst2_model: str
    sst2_layer: int
    sst2_k: int = 20
    sst2_multiplier: float = 5.0
    sst2_n_train: int = 256
    pythia_model: str = "pythia-160m"
    description: str = ""


PROFILES = {
    "smoke": Profile("smoke", "tiny", ("tiny",), None, (1, 5), (2.0, 5.0), (5,), (2.0, 5.0),
                     sst2_model="tiny", sst2_layer=2, sst2_k=10, sst2_n_train=64, pythia_model="tiny-pythia",
                     description="offline random tiny models, a handful of configurations: tests and CI"),
    "quick": Profile("quick", "gpt2-small", ("gpt2-small",), (2, 5, 8, 10), (5, 20, 100), (2.0, 5.0, 10.0),
                     (10,), (3.0,), sst2_model="gpt2-small", sst2_layer=10,
                     description="GPT-2 Small, a few layers, k and m: a first real look on a laptop"),
    "paper": Profile("paper", "gpt2-small", ("gpt2-small", "gpt2-medium"), None, PAPER_KS, PAPER_MULTIPLIERS,
                     (10,), (3.0,), sst2_model="gpt2-medium", sst2_layer=21,
                     description="GPT-2 Small and Medium, the full 24,192-configuration grid (GPU recommended)"),
}


def get_profile(name: str) -> Profile:
    """The named profile ('smoke', 'quick', 'paper')."""
    if name not in PROFILES:
        raise SNAError(f"Unknown profile {name!r}: choose one of {sorted(PROFILES)}.")
    return PROFILES[name]


def results_dir(profile: str, root: str | os.PathLike | None = None) -> Path:
    """Where a profile's tables go: ``$SNA_RESULTS_DIR`` or ``results/<profile>`` (git-ignored)."""
    root = Path(root or os.environ.get("SNA_RESULTS_DIR") or KIT_ROOT / "results")
    path = root / profile
    path.mkdir(parents=True, exist_ok=True)
    return path
