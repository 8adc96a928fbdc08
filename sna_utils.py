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
def _pythia(d: int, layers: int, heads: int, n_ctx: int) -> dict:
    """GPT-NeoX config overrides with Pythia's fixed choices (parallel residual, 25 % rotary, padded vocab)."""
    return dict(hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=4 * d,
                max_position_embeddings=n_ctx, vocab_size=50304, use_parallel_residual=True,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25})


STANDINS: dict[str, tuple[str, dict, float]] = {
    "random:gpt2-small": ("gpt2", dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024), 0.02),
    "random:gpt2-medium": ("gpt2", dict(n_layer=24, n_embd=1024, n_head=16, n_positions=1024), 0.02),
    "random:pythia-160m": ("neox", _pythia(768, 12, 12, 2048), 0.02),
    "tiny": ("gpt2", dict(n_layer=3, n_embd=64, n_head=4, n_positions=256), 0.2),
    "tiny-pythia": ("neox", _pythia(64, 3, 4, 256), 0.2),
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


SCORE_METHODS = ("mean_diff", "zscore")


def check_score_method(method: str) -> str:
    if method not in SCORE_METHODS:
        raise SNAError(f"Unknown scoring method {method!r}: use 'mean_diff' or 'zscore'.")
    return method


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


def target_tokens(model, target: str) -> list[int]:
    """The token ids of ``target`` alone (no BOS): a valid target has exactly one."""
    return model.tokenizer(target, add_special_tokens=False)["input_ids"]


def target_token_ids(model, items: Sequence[Item] | Sequence[str], what: str = "target") -> torch.Tensor:
    """Token id of each target ``[n]``; raises naming the item when a target is not exactly one token."""
    ids = []
    for i, it in enumerate(items):
        target, label = (it.target, f"item {i} ({it.prompt!r} -> {it.target!r})") if isinstance(it, Item) \
            else (it, f"{what} {i} ({it!r})")
        toks = target_tokens(model, target)
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
    check_score_method(method)
    diff = task_acts.mean(0) - reference_acts.mean(0)
    if method == "mean_diff":
        return diff
    n1, n2 = len(task_acts), len(reference_acts)  # zscore: divide by the pooled standard deviation
    if n1 + n2 < 3:
        raise SNAError("zscore needs at least 3 prompts in total.")
    pooled = ((n1 - 1) * task_acts.var(0, unbiased=True).nan_to_num() +
              (n2 - 1) * reference_acts.var(0, unbiased=True).nan_to_num()) / (n1 + n2 - 2)
    return diff / pooled.sqrt().clamp_min(1e-8)


def neuron_scores(model, prompts: Sequence[str], reference_prompts: Sequence[str], layer: int,
                  method: str = "mean_diff") -> torch.Tensor:
    """Differential activation score of every neuron of ``layer`` ``[d_mlp]`` (task minus reference)."""
    check_layer(model, layer)
    check_prompts(prompts, "prompts")
    check_prompts(reference_prompts, "reference_prompts")
    check_score_method(method)
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
    check_score_method(score_method)
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


def golden_zone_summary(df: pd.DataFrame, min_improvement_pct: float = 10.0, max_kl: float = 0.05) -> pd.DataFrame:
    """Per (model, task): how many configurations are golden, and the best golden one."""
    gold = golden_zone(df, min_improvement_pct, max_kl)
    counts = df.groupby(["model", "task"]).agg(category=("category", "first"), p_base=("p_base", "first"),
                                               zone=("zone", "first"), n_configs=("improvement_pct", "size"))
    counts["n_golden"] = gold.groupby(["model", "task"]).size().reindex(counts.index).fillna(0).astype(int)
    counts["share_golden"] = counts["n_golden"] / counts["n_configs"]
    best = best_per_task(gold)[["model", "task", "improvement_pct", "side_effect_kl", "layer", "k", "multiplier"]] \
        if len(gold) else pd.DataFrame(columns=["model", "task"])
    best = best.rename(columns={c: f"golden_best_{c}" for c in best.columns if c not in ("model", "task")})
    return counts.reset_index().merge(best, on=["model", "task"], how="left").sort_values(
        ["model", "p_base"], ignore_index=True)


# --- Tables the notebooks show: baselines, control, layers, interference, overlap ---

PAPER_NUMBERS = {  # METHOD, "What the paper reports"
    "configurations": 24192, "spearman_rho": -0.762, "spearman_p": 0.004, "zone1_mean_improvement_pct": 27.85,
    "zone1_best_improvement_pct": 70.3, "zone3_rarely_above_pct": 7.0, "sst2_uncertain_change_pp": 57.3,
    "pythia_zone1_mean_improvement_pct": 178.98,
}
PAPER_BEST_LAYERS = {"mathematics": 8, "logical_reasoning": 10, "abstract_semantics": 21, "coding": 22}

TABLE_MAKERS = {  # results table (file name or prefix) -> the notebook that writes it
    "validation.parquet": "01_gpt2_small_validation",
    "sweep_": "03_gpt2_medium_sweep",
    "interference_": "03_gpt2_medium_sweep",
    "sst2_examples.parquet": "04_sst2_zone_analysis",
    "pythia.parquet": "06_pythia_160m",
}


def is_random_model(name: str) -> bool:
    """True for the offline stand-ins (random weights): their numbers say nothing about GPT-2."""
    return str(name) in STANDINS


def model_note(name: str | Sequence[str], profile: str | None = None) -> str:
    """One line naming the model(s) (and profile) that flags random-weight stand-ins."""
    names = [name] if isinstance(name, str) else list(dict.fromkeys(name))
    note = f"model{'s' if len(names) > 1 else ''} {', '.join(map(str, names))}" + (f", profile {profile}" if profile else "")
    random_ = [n for n in names if is_random_model(n)]
    if random_:
        one = len(random_) == 1
        note += (f" (RANDOM WEIGHTS: {', '.join(random_)} {'is an offline stand-in' if one else 'are offline stand-ins'};"
                 f" {'its' if one else 'their'} numbers say nothing about GPT-2)")
    return note


def safe_name(name: str) -> str:
    """A model name as part of a file name: 'random:gpt2-small' -> 'random-gpt2-small'; a folder -> its name."""
    import re

    name = Path(str(name)).name if ("/" in str(name) or os.sep in str(name)) else str(name)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def sweep_table_name(model: str) -> str:
    """File name of a model's sweep table in a profile's results folder (written by notebook 03)."""
    return f"sweep_{safe_name(model)}.parquet"


def interference_table_name(model: str) -> str:
    """File name of a model's cross-task interference table (written by notebook 03)."""
    return f"interference_{safe_name(model)}.parquet"


def results_table(name: str, profile: str, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read table ``name`` of ``profile``; a missing one raises naming the notebook that writes it."""
    path = results_dir(profile, root) / name
    if not path.is_file():
        maker = next((nb for key, nb in TABLE_MAKERS.items() if name == key or name.startswith(key)), None)
        raise SNAError(f"Missing results table {path}: it is written by notebook "
                       f"{maker or '(none of the series)'}. Run that notebook in profile {profile!r} first "
                       f"(`make run PROFILE={profile}` runs the whole series in order).")
    return read_table(path)


def task_table(tasks: Sequence[Task]) -> pd.DataFrame:
    """One row per task: name, category, number of items and of discovery/evaluation prompts."""
    return pd.DataFrame([dict(task=t.name, category=t.category, items=len(t.items), discovery=len(t.discovery),
                              evaluation=len(t.evaluation)) for t in tasks])


def task_baselines(model, tasks: Sequence[Task], batch_size: int = 32) -> pd.DataFrame:
    """Per task, without intervention, on the evaluation half: mean target probability, zone, top-1 accuracy."""
    rows = []
    for t in tasks:
        ids = target_token_ids(model, t.evaluation)
        base = baseline_of(ids, next_token_logits(model, [i.prompt for i in t.evaluation], batch_size=batch_size))
        rows.append(dict(model=model_name(model), task=t.name, category=t.category, n_eval=len(ids),
                         p_base=base.p_mean, zone=zone_of(base.p_mean), top1_base=float(base.top1.float().mean())))
    return pd.DataFrame(rows).sort_values(["model", "p_base"], ignore_index=True)


def control_comparison(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task): SNA against the random-neuron control over the grid, and at SNA's best configuration."""
    out = df.groupby(["model", "task"]).agg(
        category=("category", "first"), p_base=("p_base", "first"), zone=("zone", "first"),
        n_configs=("improvement_pct", "size"), mean_improvement_pct=("improvement_pct", "mean"),
        mean_control_improvement_pct=("control_improvement_pct", "mean"),
        share_sna_beats_control=("gain_over_control_pct", lambda s: float((s > 0).mean())))
    best = best_per_task(df)[["model", "task", "improvement_pct", "control_improvement_pct", "layer", "k",
                              "multiplier"]].rename(columns={
        "improvement_pct": "best_improvement_pct", "control_improvement_pct": "control_at_best_pct",
        "layer": "best_layer", "k": "best_k", "multiplier": "best_multiplier"})
    return out.reset_index().merge(best, on=["model", "task"]).sort_values(["model", "p_base"], ignore_index=True)


def layer_profile(df: pd.DataFrame) -> pd.DataFrame:
    """Best improvement over (k, multiplier) for every (model, task, layer)."""
    return df.groupby(["model", "category", "task", "layer"], as_index=False)["improvement_pct"].max()


def layer_specialisation(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, category): the layer whose best improvement, averaged over the category's tasks, is highest,
    and each task's own best layer."""
    per_layer = layer_profile(df)
    cat = per_layer.groupby(["model", "category", "layer"], as_index=False)["improvement_pct"].mean()
    best = cat.loc[cat.groupby(["model", "category"])["improvement_pct"].idxmax()]
    task_best = per_layer.loc[per_layer.groupby(["model", "task"])["improvement_pct"].idxmax()]
    listing = task_best.groupby(["model", "category"]).apply(
        lambda g: ", ".join(f"{t}: {L}" for t, L in zip(g["task"], g["layer"])), include_groups=False)
    out = best.rename(columns={"layer": "best_layer", "improvement_pct": "mean_best_improvement_pct"})
    out["task_best_layers"] = [listing[(m, c)] for m, c in zip(out["model"], out["category"])]
    out["paper_best_layer"] = out["category"].map(PAPER_BEST_LAYERS)
    return out.reset_index(drop=True)


def best_shared_config(df: pd.DataFrame) -> dict:
    """The (layer, k, multiplier) with the highest improvement averaged over tasks (one model's table)."""
    if df["model"].nunique() != 1:
        raise SNAError(f"best_shared_config needs one model's table, got {sorted(df['model'].unique())}.")
    mean = df.groupby(["layer", "k", "multiplier"])["improvement_pct"].mean()
    layer, k, m = mean.idxmax()
    return dict(layer=int(layer), k=int(k), multiplier=float(m), mean_improvement_pct=float(mean.max()))


def zones_by_model(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`zone_summary` per model, with the tasks of each zone named."""
    parts = []
    for model, s in summary.groupby("model"):
        z = zone_summary(s)
        z.insert(0, "model", model)
        z["tasks"] = [", ".join(s.loc[s["zone"] == zz, "task"]) for zz in z["zone"]]
        parts.append(z)
    return pd.concat(parts, ignore_index=True)


def neuron_overlap(neuron_sets: dict[str, Sequence[int]]) -> pd.DataFrame:
    """Jaccard index |A & B| / |A | B| between every pair of named neuron sets (a square DataFrame)."""
    if not isinstance(neuron_sets, dict) or not neuron_sets:
        raise SNAError("Give a non-empty dict {name: neuron indices}.")
    sets = {}
    for name, ns in neuron_sets.items():
        ns = ns.tolist() if hasattr(ns, "tolist") else ns
        if isinstance(ns, (str, bytes)) or not isinstance(ns, Iterable):
            raise SNAError(f"Neuron set {name!r} must be a list of neuron indices, got {ns!r}.")
        ns = list(ns)
        if not ns:
            raise SNAError(f"Neuron set {name!r} is empty: Jaccard overlap is undefined.")
        bad = [v for v in ns if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0]
        if bad:
            raise SNAError(f"Neuron set {name!r} holds {bad[:3]}: neuron indices are integers >= 0.")
        sets[name] = {int(v) for v in ns}
    names = list(sets)
    mat = [[len(sets[a] & sets[b]) / len(sets[a] | sets[b]) for b in names] for a in names]
    return pd.DataFrame(mat, index=pd.Index(names, name="set"), columns=names)


def discovery_scores(model, tasks: Sequence[Task], layers: Sequence[int] | None = None,
                     neutral: NeutralSet | None = None, method: str = "mean_diff", seed: int = 0) -> pd.DataFrame:
    """Differential score of every neuron of ``layers`` (default all) for every task: one row per
    (task, layer, neuron), with its rank (0 = selected first)."""
    layers = list(range(n_layers(model))) if layers is None else [check_layer(model, L) for L in layers]
    neutral = neutral or split_neutral(load_neutral(), seed)
    ref = last_token_activations(model, neutral.discovery, layers)
    parts = []
    for t in tasks:
        acts = last_token_activations(model, [i.prompt for i in t.discovery], layers)
        for L in layers:
            scores = scores_from_activations(acts[L], ref[L], method)
            rank = torch.empty_like(scores, dtype=torch.long)
            rank[rank_neurons(scores)] = torch.arange(len(scores))
            parts.append(pd.DataFrame(dict(task=t.name, category=t.category, layer=L, neuron=np.arange(len(scores)),
                                           score=scores.numpy(), rank=rank.numpy())))
    out = pd.concat(parts, ignore_index=True)
    out.insert(0, "model", model_name(model))
    return out


def top_neurons_by_task(scores: pd.DataFrame, layer: int, k: int) -> pd.DataFrame:
    """Per task at ``layer``: its top-k neurons (a list, best first) and their scores."""
    sub = scores[(scores["layer"] == layer) & (scores["rank"] < k)].sort_values(["task", "rank"])
    if sub.empty:
        raise SNAError(f"No scores for layer {layer} (layers present: {sorted(scores['layer'].unique())}).")
    return sub.groupby(["task", "category"], sort=False).agg(
        neurons=("neuron", list), top_score=("score", "max"), mean_topk_score=("score", "mean")).reset_index()


def top_activating_prompts(model, layer: int, neuron: int, prompts: Sequence[str], n: int = 5,
                           sources: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``n`` prompts on which ``neuron`` of ``layer`` fires most at the last token (highest first);
    ``sources`` optionally labels each prompt (e.g. its task)."""
    check_layer(model, layer)
    neuron = check_neurons(model, [neuron])[0]
    prompts = check_prompts(prompts)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SNAError(f"n={n!r}: ask for at least 1 prompt.")
    if sources is not None and len(sources) != len(prompts):
        raise SNAError(f"{len(sources)} source labels for {len(prompts)} prompts.")
    acts = last_token_activations(model, prompts, [layer])[layer][:, neuron]
    order = torch.sort(acts, descending=True, stable=True).indices[:n].tolist()
    out = pd.DataFrame(dict(rank=range(1, len(order) + 1), prompt=[prompts[i] for i in order],
                            activation=acts[order].double().numpy()))
    if sources is not None:
        out.insert(1, "source", [sources[i] for i in order])
    return out


@torch.no_grad()
def cross_task_interference(model, tasks: Sequence[Task], layer: int, k: int, multiplier: float,
                            positions: Positions = "all", neutral: NeutralSet | None = None,
                            score_method: str = "mean_diff", seed: int = 0, max_tokens: int = 16384) -> pd.DataFrame:
    """Every (source, target) task pair: the source's top-k neurons (its discovery half against neutral
    prose) amplified by ``multiplier`` at ``layer``, measured on the target's evaluation half."""
    tasks = list(tasks)
    if not tasks:
        raise SNAError("No tasks given.")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise SNAError(f"Task names repeat: {names}.")
    layer, k, m = check_layer(model, layer), check_k(model, k), check_multiplier(multiplier)
    check_positions(positions)
    check_score_method(score_method)
    neutral = neutral or split_neutral(load_neutral(), seed)
    ids = {t.name: target_token_ids(model, t.evaluation) for t in tasks}  # check every target first
    ref = last_token_activations(model, neutral.discovery, [layer])[layer]
    sets = {t.name: tuple(top_neurons(scores_from_activations(
        last_token_activations(model, [i.prompt for i in t.discovery], [layer])[layer], ref, score_method), k))
        for t in tasks}
    configs = [Config(sets[n], m) for n in names]
    nstate = layer_state(model, encode_prompts(model, neutral.heldout), layer)
    nbase = base_logits(model, nstate, layer)
    kl = [float(kl_divergence(nbase, lg).mean()) for lg in engine_logits(model, nstate, layer, configs, positions,
                                                                         max_tokens)]
    jac = neuron_overlap({n: list(s) for n, s in sets.items()})
    cat = {t.name: t.category for t in tasks}
    rows = []
    for tgt in tasks:
        state = layer_state(model, encode_prompts(model, [i.prompt for i in tgt.evaluation]), layer)
        base = baseline_of(ids[tgt.name], base_logits(model, state, layer))
        for i, lg in enumerate(engine_logits(model, state, layer, configs, positions, max_tokens)):
            o = outcome_of(base, lg, None, None)
            rows.append(dict(model=model_name(model), layer=layer, k=k, multiplier=m, positions=positions,
                             source_task=names[i], source_category=cat[names[i]], target_task=tgt.name,
                             target_category=tgt.category, same_task=names[i] == tgt.name,
                             jaccard=float(jac.loc[names[i], tgt.name]), p_base=base.p_mean,
                             target_zone=zone_of(base.p_mean), p_sna=o.p_sna, improvement_pct=o.improvement_pct,
                             success_rate=o.success_rate, top1_base=float(base.top1.float().mean()),
                             top1_sna=o.top1_sna, side_effect_kl=kl[i], score_method=score_method, seed=seed,
                             neurons=",".join(map(str, configs[i].neurons))))
    return pd.DataFrame(rows)


def restrict_to_single_token(model, tasks: Sequence[Task]) -> tuple[list[Task], pd.DataFrame]:
    """Drop the items whose target is not exactly one token for ``model``'s tokenizer (e.g. Pythia's);
    returns the kept tasks and a table of what was dropped."""
    kept, dropped = [], []
    for t in tasks:
        halves = []
        for half_name, half in (("discovery", t.discovery), ("evaluation", t.evaluation)):
            ok = []
            for it in half:
                n = len(target_tokens(model, it.target))
                (ok.append(it) if n == 1 else dropped.append(dict(task=t.name, half=half_name, prompt=it.prompt,
                                                                   target=it.target, n_tokens=n)))
            halves.append(tuple(ok))
        if not halves[0] or not halves[1]:
            raise SNAError(f"Task {t.name!r} has no single-token targets left in one half for {model_name(model)}.")
        kept.append(Task(t.name, t.category, t.description, *halves))
    return kept, pd.DataFrame(dropped, columns=["task", "half", "prompt", "target", "n_tokens"])


def n_layers_of(name: str) -> int:
    """Number of layers of a model by kit name or checkpoint folder, without loading its weights."""
    known = {"gpt2-small": 12, "gpt2-medium": 24, "pythia-160m": 12}  # METHOD, "Models"
    if name in STANDINS:
        overrides = STANDINS[name][1]
        return int(overrides.get("n_layer", overrides.get("num_hidden_layers", 0)))
    if name in known:
        return known[name]
    config = Path(name) / "config.json"
    if config.is_file():
        cfg = json.loads(config.read_text())
        return int(cfg.get("n_layer") or cfg.get("num_hidden_layers"))
    raise SNAError(f"Unknown model {name!r}: use one of {MODEL_NAMES} or a local checkpoint folder.")


def sweep_grid(models: Sequence[str], n_tasks: int, layers: Sequence[int] | None, ks: Sequence[int],
               multipliers: Sequence[float]) -> pd.DataFrame:
    """The size of a sweep per model: tasks x layers (``None`` = all) x k x multipliers."""
    rows = []
    for m in models:
        n_l = n_layers_of(m) if layers is None else len(set(layers))
        rows.append(dict(model=m, tasks=n_tasks, layers=n_l, ks=len(set(ks)), multipliers=len(set(multipliers)),
                         configurations=n_tasks * n_l * len(set(ks)) * len(set(multipliers))))
    return pd.DataFrame(rows)


def prompt_pool(tasks: Sequence[Task], neutral: NeutralSet | None = None) -> tuple[list[str], list[str]]:
    """Every task prompt (and the held-out neutral prompts), with the name of the set each comes from."""
    prompts = [i.prompt for t in tasks for i in t.items]
    sources = [t.name for t in tasks for _ in t.items]
    if neutral is not None:
        prompts += list(neutral.heldout)
        sources += ["neutral"] * len(neutral.heldout)
    return prompts, sources


def interference_summary(inter: pd.DataFrame) -> pd.DataFrame:
    """Per source task: the gain on its own task, the mean effect on the other tasks of its category and of
    other categories, and the mean Jaccard overlap of its neurons with theirs."""
    rows = []
    for (model, src), g in inter.groupby(["model", "source_task"], sort=False):
        own = g[g["same_task"]]
        same_cat = g[~g["same_task"] & (g["target_category"] == g["source_category"])]
        other = g[g["target_category"] != g["source_category"]]
        rows.append(dict(model=model, source_task=src, category=g["source_category"].iloc[0],
                         own_improvement_pct=float(own["improvement_pct"].mean()),
                         same_category_mean_pct=float(same_cat["improvement_pct"].mean()) if len(same_cat) else float("nan"),
                         other_categories_mean_pct=float(other["improvement_pct"].mean()) if len(other) else float("nan"),
                         n_targets_hurt=int((g.loc[~g["same_task"], "improvement_pct"] < 0).sum()),
                         mean_jaccard_others=float(g.loc[~g["same_task"], "jaccard"].mean()) if len(g) > 1 else float("nan")))
    return pd.DataFrame(rows)


def first_available_table(names: Sequence[str], profile: str,
                          root: str | os.PathLike | None = None) -> tuple[str | None, pd.DataFrame | None]:
    """The first of ``names`` present in ``profile``'s results folder, read; ``(None, None)`` if none is."""
    for name in names:
        if (results_dir(profile, root) / name).is_file():
            return name, read_table(results_dir(profile, root) / name)
    return None, None


def paper_comparison(sweep: pd.DataFrame | None, profile: str, sst2_report: pd.DataFrame | None = None,
                     sst2_model: str | None = None, pythia: pd.DataFrame | None = None) -> pd.DataFrame:
    """METHOD's published numbers beside this run's, with the model and profile behind each.

    Our readings: 'Zone 1 mean improvement' is the mean over Zone-1 tasks of each task's best configuration,
    'best configuration' the largest of those; the SST-2 claim is the accuracy change (pp) of Zone-1 examples.
    """
    rows = []
    nan = float("nan")

    def add(claim, paper, value, unit, model):
        rows.append(dict(claim=claim, paper=paper, this_run=float(value), unit=unit, model=model, profile=profile))

    P = PAPER_NUMBERS
    sweep = sweep if sweep is not None else pd.DataFrame(columns=["model", "task"])
    if len(sweep):
        add("configurations in the grid", P["configurations"], len(sweep), "rows",
            ", ".join(sorted(sweep["model"].unique())))
    for model, s in (task_summary(sweep).groupby("model") if len(sweep) else []):
        rho, p = confidence_gain_correlation(s)
        z1, z3 = s[s["zone"] == 1]["best_improvement_pct"], s[s["zone"] == 3]["best_improvement_pct"]
        add(f"Spearman rho, P_base vs best improvement (n = {len(s)} tasks)", P["spearman_rho"], rho, "", model)
        add("Spearman p-value", P["spearman_p"], p, "", model)
        add(f"Zone 1 mean improvement ({len(z1)} tasks)", P["zone1_mean_improvement_pct"],
            z1.mean() if len(z1) else nan, "%", model)
        add("Zone 1 best configuration", P["zone1_best_improvement_pct"], z1.max() if len(z1) else nan, "%", model)
        add(f"Zone 3 best improvement, 'rarely above' ({len(z3)} tasks)", P["zone3_rarely_above_pct"],
            z3.max() if len(z3) else nan, "%", model)
        spec = layer_specialisation(sweep[sweep["model"] == model]).set_index("category")["best_layer"]
        for cat, layer in PAPER_BEST_LAYERS.items():
            add(f"best layer: {cat}", layer, spec.get(cat, nan), "layer", model)
    if sst2_report is not None:
        z = sst2_report[sst2_report["view"] == "METHOD zone"].set_index("group")["accuracy_change_pp"]
        add("SST-2 accuracy change, Zone 1 (uncertain) examples", P["sst2_uncertain_change_pp"],
            z.get(ZONE_NAMES[1], nan), "pp", sst2_model)
        add("SST-2 accuracy change, Zone 3 (confident) examples: 'stable'", 0.0, z.get(ZONE_NAMES[3], nan), "pp",
            sst2_model)
    if pythia is not None:
        for model, s in task_summary(pythia).groupby("model"):
            z1 = s[s["zone"] == 1]["best_improvement_pct"]
            add(f"Pythia Zone 1 mean improvement, arithmetic ({len(z1)} tasks)",
                P["pythia_zone1_mean_improvement_pct"], z1.mean() if len(z1) else nan, "%", model)
    return pd.DataFrame(rows)


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


# ---------------------------------------------------------------------------
# 10. Plots
# ---------------------------------------------------------------------------
#
# One style for every figure: the zone colours ZONE_COLORS wherever a zone appears, probabilities on
# log axes, improvements in % of the baseline (symlog once they span orders of magnitude), KL in nats.
# Each function returns the Figure; save_figure writes it as PNG and PDF.

PLOT_STYLE = {
    "figure.dpi": 100, "savefig.dpi": 200, "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 8.5, "legend.frameon": False,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25,
}
GOLDEN_COLOR = "#e6ab02"
CONTROL_COLOR = "0.35"
ACCENT_COLOR = "#2c7fb8"
MODEL_MARKERS = ("o", "s", "^", "D", "v")
MODEL_HATCHES = ("", "///", "...", "xxx")
IMPROVEMENT_CMAP = "RdBu_r"


def set_plot_style() -> None:
    """Apply the kit's one figure style (matplotlib rcParams)."""
    import matplotlib as mpl

    mpl.rcParams.update(PLOT_STYLE)


def _subplots(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6.4, 4.2), **kw):
    """A styled figure and a 2-D array of axes; ``size`` is per panel (inches)."""
    import matplotlib.pyplot as plt

    set_plot_style()
    return plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False,
                        layout="constrained", **kw)


def save_figure(fig, name: str, figures_dir: str | os.PathLike | None = None, note: str | None = None) -> list[Path]:
    """Write ``<name>.png`` and ``<name>.pdf`` to ``figures_dir``, ``$SNA_FIGURES_DIR`` or ``figures/``;
    ``note`` (e.g. :func:`model_note`) is printed small under the figure."""
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise SNAError(f"Figure name {name!r} must be a plain file name without folders or extension.")
    folder = Path(figures_dir or os.environ.get("SNA_FIGURES_DIR") or FIGURES_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    if note:
        fig.text(0.995, -0.01, note, ha="right", va="top", fontsize=7, color="0.4")
    paths = [folder / f"{name}.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, bbox_inches="tight")
    return paths


def _zone_handles(zones: Iterable[int] = (1, 2, 3)) -> list:
    from matplotlib.patches import Patch

    return [Patch(color=ZONE_COLORS[z], label=ZONE_NAMES[z]) for z in zones]


def _p_floor(values) -> float:
    """Left end of a log probability axis: a power of ten below the data and below Zone 1's edge."""
    v = np.asarray(values, float)
    v = v[v > 0]
    return float(10 ** np.floor(np.log10(min(v.min() if len(v) else 1e-4, ZONE_LOW) / 2)))


def _shade_zones(ax, lo: float) -> None:
    """Shade the three zones on a log-x probability axis from ``lo`` to 1."""
    ax.set_xscale("log")
    for z, (a, b) in {1: (lo, ZONE_LOW), 2: (ZONE_LOW, ZONE_HIGH), 3: (ZONE_HIGH, 1.0)}.items():
        ax.axvspan(a, b, color=ZONE_COLORS[z], alpha=0.13, lw=0, zorder=0)
    ax.set_xlim(lo, 1.0)


def _improvement_axis(ax, values, axis: str = "y") -> None:
    """Linear when improvements stay within a few hundred %, symlog beyond."""
    v = np.abs(np.asarray(values, float))
    if len(v) and np.nanmax(v) > 500:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("symlog", linthresh=10)


def _symlog_norm(values, linthresh: float = 10.0):
    from matplotlib.colors import SymLogNorm

    v = np.asarray(values, float)
    vmax = max(float(np.nanmax(np.abs(v))) if np.isfinite(v).any() else 1.0, 2 * linthresh)
    return SymLogNorm(linthresh=linthresh, vmin=-vmax, vmax=vmax, base=10)


def _color_ticklabels(labels, zones) -> None:
    for label, z in zip(labels, zones):
        label.set_color(ZONE_COLORS[int(z)])


def _one_model(df: pd.DataFrame, model: str | None) -> tuple[str, pd.DataFrame]:
    models = list(dict.fromkeys(df["model"]))
    model = model or models[0]
    if model not in models:
        raise SNAError(f"Model {model!r} is not in the table (it has {models}).")
    return model, df[df["model"] == model]


def plot_baseline_zones(baselines: pd.DataFrame):
    """Each task's baseline target probability (log scale) in its zone, one panel per model."""
    models = list(dict.fromkeys(baselines["model"]))
    n_tasks = baselines.groupby("model").size().max()
    fig, axes = _subplots(1, len(models), size=(5.6, 0.3 * n_tasks + 1.4))
    lo = _p_floor(baselines["p_base"])
    for ax, model in zip(axes[0], models):
        b = baselines[baselines["model"] == model].sort_values("p_base")
        _shade_zones(ax, lo)
        y = np.arange(len(b))
        ax.hlines(y, lo, b["p_base"], color="0.7", lw=1)
        ax.scatter(b["p_base"], y, c=[ZONE_COLORS[z] for z in b["zone"]], s=45, zorder=3, edgecolors="k", lw=0.4)
        ax.set_yticks(y, b["task"])
        _color_ticklabels(ax.get_yticklabels(), b["zone"])
        ax.set_xlabel("baseline probability of the target, P_base (log scale)")
        ax.set_title(f"{model}: baseline confidence per task")
        ax.grid(axis="y", alpha=0)
    axes[0, -1].legend(handles=_zone_handles(), loc="lower right", frameon=True)
    return fig


def plot_sna_vs_control(df: pd.DataFrame):
    """Every configuration: SNA's improvement against the random-neuron control's (above the diagonal: SNA wins)."""
    models = list(dict.fromkeys(df["model"]))
    fig, axes = _subplots(1, len(models), size=(5.4, 4.8))
    for ax, model in zip(axes[0], models):
        d = df[df["model"] == model]
        ax.scatter(d["control_improvement_pct"], d["improvement_pct"], c=[ZONE_COLORS[z] for z in d["zone"]],
                   s=16, alpha=0.7, edgecolors="none")
        both = pd.concat([d["improvement_pct"], d["control_improvement_pct"]])
        lim = float(np.nanmax(np.abs(both))) * 1.2 or 1.0
        ax.plot([-lim, lim], [-lim, lim], color=CONTROL_COLOR, lw=0.9, ls="--", label="SNA = control")
        ax.axhline(0, color="0.6", lw=0.6)
        ax.axvline(0, color="0.6", lw=0.6)
        _improvement_axis(ax, both, "x")
        _improvement_axis(ax, both, "y")
        share = float((d["gain_over_control_pct"] > 0).mean())
        ax.set_title(f"{model}: SNA beats control in {share:.0%} of {len(d)} configs")
        ax.set_xlabel("random-neuron control: change in P(target) (%)")
        ax.set_ylabel("SNA: change in P(target) (%)")
    axes[0, 0].legend(handles=_zone_handles() + axes[0, 0].get_legend_handles_labels()[0], loc="upper left")
    return fig


def _task_heatmap(ax, fig, mat: pd.DataFrame, zones: Sequence[int], xlabel: str, ylabel: str, cbar: str,
                  annotate: bool = False):
    im = ax.imshow(mat.to_numpy(float), aspect="auto", cmap=IMPROVEMENT_CMAP, norm=_symlog_norm(mat.to_numpy(float)))
    ax.set_xticks(range(mat.shape[1]), [str(c) for c in mat.columns], rotation=90 if mat.shape[1] > 12 else 0)
    ax.set_yticks(range(mat.shape[0]), mat.index)
    _color_ticklabels(ax.get_yticklabels(), zones)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(False)
    if annotate:
        for (i, j), v in np.ndenumerate(mat.to_numpy(float)):
            ax.text(j, i, f"{v:+.0f}", ha="center", va="center", fontsize=6.5, color="0.1")
    fig.colorbar(im, ax=ax, label=cbar, shrink=0.9)
    return im


def plot_layer_specialisation(df: pd.DataFrame):
    """Tasks x layers: the best improvement over (k, m); circles mark each task's best layer."""
    prof = layer_profile(df)
    zone = df.groupby(["model", "task"])["zone"].first()
    models = list(dict.fromkeys(df["model"]))
    n_layers_max, n_tasks = prof["layer"].nunique(), prof["task"].nunique()
    fig, axes = _subplots(len(models), 1, size=(0.32 * n_layers_max + 4.5, 0.32 * n_tasks + 1.6))
    for ax, model in zip(axes[:, 0], models):
        p = prof[prof["model"] == model]
        order = p.drop_duplicates("task").sort_values(["category", "task"])["task"]
        mat = p.pivot(index="task", columns="layer", values="improvement_pct").loc[order]
        _task_heatmap(ax, fig, mat, [zone[(model, t)] for t in mat.index], "layer",
                      "task (label colour = zone)", "best improvement over k and m (%)")
        best = np.nanargmax(mat.to_numpy(float), axis=1)
        ax.scatter(best, range(len(mat)), s=70, facecolors="none", edgecolors="k", lw=1.2, label="best layer")
        ax.set_title(f"{model}: where each task gains most")
    axes[-1, 0].legend(loc="upper left", bbox_to_anchor=(0, -0.12), frameon=False)
    return fig


def plot_interference(inter: pd.DataFrame):
    """Source task's neurons (rows) measured on every target task (columns): improvement in %."""
    from matplotlib.patches import Rectangle

    model, d = _one_model(inter, None)
    order = d.drop_duplicates("target_task").sort_values(["target_category", "target_task"])["target_task"]
    mat = d.pivot(index="source_task", columns="target_task", values="improvement_pct").loc[order, order]
    zone = d.drop_duplicates("target_task").set_index("target_task")["target_zone"]
    n = len(order)
    fig, axes = _subplots(size=(0.55 * n + 3.5, 0.5 * n + 1.8))
    ax = axes[0, 0]
    _task_heatmap(ax, fig, mat, zone[order], "target task (measured on)", "source task (neurons from)",
                  "change in P(target) (%)", annotate=n <= 16)
    ax.set_xticks(range(n), order, rotation=45, ha="right")
    _color_ticklabels(ax.get_xticklabels(), zone[order])
    for i in range(n):
        ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, ec="k", lw=1.2))
    r = d.iloc[0]
    ax.set_title(f"{model}: cross-task interference (layer {r['layer']}, k = {r['k']}, m = {r['multiplier']:g})")
    return fig


def plot_score_distributions(scores: pd.DataFrame, k: int = 10):
    """Per layer: the spread of differential scores (box: 1st-99th percentile), each task's best
    score (dots) and the k-th best score, the selection threshold at k (line)."""
    model, s = _one_model(scores, None)
    layers = sorted(s["layer"].unique())
    fig, axes = _subplots(size=(max(6.0, 0.5 * len(layers) + 2), 4.4))
    ax = axes[0, 0]
    ax.boxplot([s.loc[s["layer"] == L, "score"].to_numpy() for L in layers], positions=layers, whis=(1, 99),
               showfliers=False, widths=0.6, patch_artist=True, boxprops=dict(facecolor="0.88", edgecolor="0.5"),
               medianprops=dict(color="0.3"), whiskerprops=dict(color="0.5"), capprops=dict(color="0.5"))
    best = s.groupby(["layer", "task"])["score"].max().reset_index()
    jitter = np.random.default_rng(0).uniform(-0.18, 0.18, len(best))
    ax.scatter(best["layer"] + jitter, best["score"], s=10, color=CONTROL_COLOR, label="best neuron of each task",
               zorder=3)
    kth = s[s["rank"] == k - 1].groupby("layer")["score"].mean()
    ax.plot(kth.index, kth.to_numpy(), "-o", color=ACCENT_COLOR, ms=4, label=f"k-th best score (k = {k}), mean over tasks")
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_xticks(layers, [str(L) for L in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("score = mean activation, task - neutral")
    ax.set_title(f"{model}: differential activation scores per layer (all tasks, all neurons)")
    ax.legend(loc="upper left")
    return fig


def plot_neuron_overlap(jaccard: pd.DataFrame, title: str = ""):
    """Jaccard overlap of the tasks' selected neuron sets (1 = identical sets)."""
    n = len(jaccard)
    fig, axes = _subplots(size=(0.5 * n + 3.2, 0.45 * n + 1.6))
    ax = axes[0, 0]
    im = ax.imshow(jaccard.to_numpy(float), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), jaccard.columns, rotation=45, ha="right")
    ax.set_yticks(range(n), jaccard.index)
    ax.grid(False)
    if n <= 16:
        for (i, j), v in np.ndenumerate(jaccard.to_numpy(float)):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6.5, color="w" if v > 0.6 else "0.15")
    fig.colorbar(im, ax=ax, label="Jaccard index |A & B| / |A | B|", shrink=0.9)
    ax.set_title(title or "Overlap of the tasks' top-k neuron sets")
    return fig


def plot_confidence_vs_improvement(summary: pd.DataFrame, rho, p, gain: str = "best_improvement_pct"):
    """Figure 3: each task's baseline probability (log x, zones shaded) against its improvement, with
    Spearman's rho and p (floats, or dicts by model) printed on the plot."""
    from matplotlib.lines import Line2D

    fig, axes = _subplots(size=(7.6, 5.0))
    ax = axes[0, 0]
    _shade_zones(ax, _p_floor(summary["p_base"]))
    models = list(dict.fromkeys(summary["model"]))
    for task, g in summary.groupby("task"):  # one label per task; a thin line joins its points across models
        if len(g) > 1:
            ax.plot(g["p_base"], g[gain], color="0.6", lw=0.7, alpha=0.6, zorder=2)
        ax.annotate(task, (g["p_base"].iloc[0], g[gain].iloc[0]), xytext=(4, 3), textcoords="offset points",
                    fontsize=7, color="0.3")
    for i, model in enumerate(models):
        s = summary[summary["model"] == model]
        ax.scatter(s["p_base"], s[gain], c=[ZONE_COLORS[z] for z in s["zone"]], marker=MODEL_MARKERS[i % 5],
                   s=60, edgecolors="k", lw=0.5, zorder=3)
    ax.axhline(0, color="0.4", lw=0.8)
    _improvement_axis(ax, summary[gain])
    rhos = rho if isinstance(rho, dict) else {None: rho}
    ps = p if isinstance(p, dict) else {None: p}
    lines = [f"{m + ': ' if m else ''}Spearman ρ = {rhos[m]:.3f}, p = {ps[m]:.3g}" for m in rhos]
    n = summary.groupby("model").size().max()
    ax.text(1.02, 0.0, "\n".join(lines) + f"\n(one point per task, n = {n})", transform=ax.transAxes, ha="left",
            va="bottom", fontsize=9, bbox=dict(boxstyle="round", fc="white", ec="0.6"))
    handles = _zone_handles()
    if len(models) > 1:
        handles += [Line2D([], [], marker=MODEL_MARKERS[i % 5], ls="", color="0.3", label=m) for i, m in enumerate(models)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xlabel("baseline probability of the target, P_base (log scale)")
    ax.set_ylabel("best improvement of P(target) (% of P_base)")
    ax.set_title("Confidence vs improvement across tasks (paper's Figure 3)")
    return fig


def _group_zone(group: str) -> int:
    inverse = {v: z for z, v in ZONE_NAMES.items()}
    if group in inverse:
        return inverse[group]
    return 1 if group.startswith("uncertain") else (3 if group.startswith("confident") else 2)


def plot_sst2_zones(report: pd.DataFrame, view: str = "METHOD zone", title: str = ""):
    """Figure 4: SST-2 accuracy and mean P(correct label word) per zone, before SNA, after, and control."""
    from matplotlib.patches import Patch

    r = report[report["view"] == view].copy()
    if r.empty:
        raise SNAError(f"No rows with view {view!r}; views: {sorted(report['view'].unique())}.")
    r["z"] = [_group_zone(g) for g in r["group"]]
    r = r.sort_values("z")
    fig, axes = _subplots(1, 2, size=(max(4.0, 1.7 * len(r) + 1), 4.4))
    x, w = np.arange(len(r)), 0.27
    colors = [ZONE_COLORS[z] for z in r["z"]]
    for ax, (metric, label) in zip(axes[0], [("accuracy", "accuracy (%)"), ("p", "mean P(correct label word) (%)")]):
        ax.bar(x - w, r[f"{metric}_base"], w, color=colors, alpha=0.35)
        ax.bar(x, r[f"{metric}_sna"], w, color=colors)
        ax.bar(x + w, r[f"{metric}_control"], w, color="white", edgecolor=colors, hatch="///", lw=1)
        for xi, top, chg in zip(x, np.maximum(r[f"{metric}_sna"], r[f"{metric}_base"]), r[f"{metric}_sna"] - r[f"{metric}_base"]):
            ax.annotate(f"{chg:+.1f} pp" if abs(chg) >= 0.05 else f"{chg:+.1g} pp", (xi, top), xytext=(0, 3), textcoords="offset points", ha="center",
                        fontsize=8, fontweight="bold")
        ax.set_xticks(x, [f"{g}\nn = {n}" for g, n in zip(r["group"], r["n"])], fontsize=8)
        ax.set_ylabel(label)
        ax.set_ylim(0, max(100.0 if metric == "accuracy" else 0, float(r[[f"{metric}_{k}" for k in
                                                                          ("base", "sna", "control")]].max().max()) * 1.15) or 1)
        ax.grid(axis="x", alpha=0)
    axes[0, 0].legend(handles=[Patch(fc="0.5", alpha=0.35, label="before SNA"), Patch(fc="0.35", label="after SNA"),
                               Patch(fc="white", ec="0.35", hatch="///", label="random-neuron control")],
                      loc="upper right")
    fig.suptitle(title or f"SST-2 by {view}: before and after SNA (change in percentage points)")
    return fig


def plot_layer_multiplier_heatmaps(df: pd.DataFrame, k: int | None = None, model: str | None = None):
    """One panel per task: improvement (%) over layer x multiplier at one k (default: the k with the highest
    mean improvement); panel titles in the task's zone colour."""
    model, d = _one_model(df, model)
    if k is None:
        k = int(d.groupby("k")["improvement_pct"].mean().idxmax())
    d = d[d["k"] == k]
    if d.empty:
        raise SNAError(f"k = {k} is not in the table (k values: {sorted(df['k'].unique())}).")
    order = d.drop_duplicates("task").sort_values(["category", "task"])
    ncols = min(4, len(order))
    nrows = -(-len(order) // ncols)
    n_l, n_m = d["layer"].nunique(), d["multiplier"].nunique()
    fig, axes = _subplots(nrows, ncols, size=(0.3 * n_m + 1.6, 0.13 * n_l + 1.5), sharex=True, sharey=True)
    norm = _symlog_norm(d["improvement_pct"])
    for ax, (_, t) in zip(axes.ravel(), order.iterrows()):
        mat = d[d["task"] == t["task"]].pivot(index="layer", columns="multiplier", values="improvement_pct")
        im = ax.imshow(mat.to_numpy(float), aspect="auto", origin="lower", cmap=IMPROVEMENT_CMAP, norm=norm)
        ax.set_title(f"{t['task']} (Zone {t['zone']})", color=ZONE_COLORS[int(t["zone"])], fontsize=9)
        ax.set_xticks(range(n_m), [f"{m:g}" for m in mat.columns], fontsize=7)
        step = max(1, n_l // 6)
        ax.set_yticks(range(0, n_l, step), [str(L) for L in mat.index[::step]], fontsize=7)
        ax.grid(False)
    for ax in axes.ravel()[len(order):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("multiplier m")
    for ax in axes[:, 0]:
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes.ravel().tolist(), label=f"improvement of P(target) at k = {k} (%)", shrink=0.8)
    fig.suptitle(f"{model}: improvement by layer and multiplier, k = {k}")
    return fig


def plot_improvement_vs_k(df: pd.DataFrame):
    """Per task: the best improvement over layers and multipliers at each k (log x), coloured by zone;
    dashed: the random-neuron control's best, averaged over tasks."""
    from matplotlib.lines import Line2D

    models = list(dict.fromkeys(df["model"]))
    fig, axes = _subplots(1, len(models), size=(6.0, 4.4))
    for ax, model in zip(axes[0], models):
        d = df[df["model"] == model]
        best = d.groupby(["task", "k"], as_index=False)[["improvement_pct", "control_improvement_pct"]].max()
        zone = d.groupby("task")["zone"].first()
        for task, g in best.groupby("task"):
            ax.plot(g["k"], g["improvement_pct"], "-o", color=ZONE_COLORS[zone[task]], ms=3.5, lw=1.3, alpha=0.85)
            ax.annotate(task, (g["k"].iloc[-1], g["improvement_pct"].iloc[-1]), xytext=(3, 0),
                        textcoords="offset points", fontsize=6.5, color="0.35", va="center")
        ctrl = best.groupby("k")["control_improvement_pct"].mean()
        ax.plot(ctrl.index, ctrl.to_numpy(), "--", color=CONTROL_COLOR, lw=2)
        ks = sorted(d["k"].unique())
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        _improvement_axis(ax, best["improvement_pct"])
        ax.set_xlabel("number of amplified neurons k (log scale)")
        ax.set_ylabel("best improvement over layers and m (%)")
        ax.set_title(f"{model}: improvement vs k")
    axes[0, 0].legend(handles=_zone_handles() + [Line2D([], [], ls="--", color=CONTROL_COLOR, lw=2,
                                                        label="random control (mean over tasks)")], loc="best")
    return fig


def plot_golden_zone(df: pd.DataFrame, min_improvement_pct: float = 10.0, max_kl: float = 0.05):
    """Left: every configuration's side effect (KL, log x) against its improvement, the golden zone shaded.
    Right: the golden-zone map, the number of golden configurations per (layer, multiplier)."""
    models = list(dict.fromkeys(df["model"]))
    n_l = df.groupby("model")["layer"].nunique().max()
    fig, axes = _subplots(len(models), 2, size=(5.6, max(4.2, 0.16 * n_l + 2.2)))
    for (ax, axm), model in zip(axes, models):
        d = df[df["model"] == model]
        kl = d["side_effect_kl"].clip(lower=1e-6)
        ax.scatter(kl, d["improvement_pct"], c=[ZONE_COLORS[z] for z in d["zone"]], s=9, alpha=0.5, edgecolors="none")
        ax.set_xscale("log")
        _improvement_axis(ax, d["improvement_pct"])
        (x0, _), (_, y1) = ax.get_xlim(), ax.get_ylim()
        ax.fill_between([x0, max_kl], min_improvement_pct, max(y1, min_improvement_pct * 2), color=GOLDEN_COLOR,
                        alpha=0.25, lw=0, label=f"golden zone: ≥ {min_improvement_pct:g} %, KL ≤ {max_kl:g} nats")
        ax.set_xlim(x0, max(ax.get_xlim()[1], max_kl * 2))
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_xlabel("side effect: KL(base || SNA) on neutral prompts (nats, log scale)")
        ax.set_ylabel("improvement of P(target) (%)")
        ax.set_title(f"{model}: {len(golden_zone(d, min_improvement_pct, max_kl))} of {len(d)} configs golden")
        ax.legend(handles=_zone_handles() + ax.get_legend_handles_labels()[0], loc="lower left", fontsize=7.5)
        counts = golden_zone(d, min_improvement_pct, max_kl).groupby(["layer", "multiplier"]).size()
        grid = counts.reindex(pd.MultiIndex.from_product([sorted(d["layer"].unique()), sorted(d["multiplier"].unique())],
                                                         names=["layer", "multiplier"]), fill_value=0).unstack()
        im = axm.imshow(grid.to_numpy(float), aspect="auto", origin="lower", cmap="cividis", vmin=0)
        axm.set_xticks(range(grid.shape[1]), [f"{m:g}" for m in grid.columns])
        step = max(1, len(grid) // 12)
        axm.set_yticks(range(0, len(grid), step), [str(L) for L in grid.index[::step]])
        axm.grid(False)
        axm.set_xlabel("multiplier m")
        axm.set_ylabel("layer")
        axm.set_title("golden-zone map (summed over tasks and k)")
        fig.colorbar(im, ax=axm, label="golden configurations", shrink=0.9)
    return fig


def plot_model_comparison(summary: pd.DataFrame):
    """Tasks side by side across models: baseline probability (log x, zones shaded) and best improvement."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    models = list(dict.fromkeys(summary["model"]))
    tasks = sorted(summary["task"].unique())
    fig, axes = _subplots(1, 2, size=(5.4, 0.25 * len(tasks) * len(models) + 1.8))
    lo = _p_floor(summary["p_base"])
    _shade_zones(axes[0, 0], lo)
    h = 0.8 / len(models)
    for i, model in enumerate(models):
        s = summary[summary["model"] == model].set_index("task").reindex(tasks)
        y = np.arange(len(tasks)) - 0.4 + h * (i + 0.5)
        colors = [ZONE_COLORS[int(z)] if z == z else "0.8" for z in s["zone"]]
        axes[0, 0].scatter(s["p_base"], y, c=colors, marker=MODEL_MARKERS[i % 5], s=50, edgecolors="k", lw=0.4, zorder=3)
        axes[0, 1].barh(y, s["best_improvement_pct"], h * 0.9, color=colors, hatch=MODEL_HATCHES[i % 4],
                        edgecolor="0.2", lw=0.4)
    for ax in axes[0]:
        ax.set_yticks(range(len(tasks)), tasks)
        ax.grid(axis="y", alpha=0)
    axes[0, 0].set_xlabel("baseline probability of the target, P_base (log scale)")
    axes[0, 1].set_xlabel("best improvement of P(target) (%)")
    axes[0, 1].axvline(0, color="0.4", lw=0.8)
    _improvement_axis(axes[0, 1], summary["best_improvement_pct"], "x")
    axes[0, 0].legend(handles=_zone_handles() + [Line2D([], [], marker=MODEL_MARKERS[i % 5], ls="", color="0.3",
                                                        label=m) for i, m in enumerate(models)],
                      loc="lower right", frameon=True)
    axes[0, 1].legend(handles=[Patch(fc="0.85", ec="0.2", hatch=MODEL_HATCHES[i % 4], label=m)
                               for i, m in enumerate(models)], loc="best", frameon=True)
    fig.suptitle("Baseline zone and best improvement per task, by model")
    return fig


def notebook_defaults(profile: str | None = None) -> None:
    """Settings shared by the notebooks: pandas widths, figure style, quiet tqdm, and CPU threads.

    Threads: ``$SNA_TORCH_THREADS`` if set; else one thread in the ``smoke`` profile, whose tiny models gain
    nothing from more and slow down many times when their threads compete with other processes for the cores.
    """
    import warnings

    threads = os.environ.get("SNA_TORCH_THREADS") or ("1" if profile == "smoke" else "")
    if threads:
        torch.set_num_threads(int(threads))
    warnings.filterwarnings("ignore", message="IProgress not found")
    pd.set_option("display.precision", 4)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 40)
    pd.set_option("display.max_colwidth", 80)
    set_plot_style()
