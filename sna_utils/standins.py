"""Offline stand-ins: the real architectures with random weights, built without any download.

Tests, CI and the ``smoke`` profile run on these. Their numbers say nothing about GPT-2, and
:func:`model_note` is the one line every table and figure uses to say so. Imports only ``errors``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .errors import SNAError

def _pythia(d: int, layers: int, heads: int, n_ctx: int) -> dict:
    """GPT-NeoX config overrides with Pythia's fixed choices (parallel residual, 25 % rotary, padded vocab)."""
    return dict(hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=4 * d,
                max_position_embeddings=n_ctx, vocab_size=50304, use_parallel_residual=True,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25})


# name -> (architecture, config overrides, default initializer_range); tiny ones are for tests.
STANDINS: dict[str, tuple[str, dict, float]] = {
    "random:gpt2-small": ("gpt2", dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024), 0.02),
    "random:gpt2-medium": ("gpt2", dict(n_layer=24, n_embd=1024, n_head=16, n_positions=1024), 0.02),
    "random:pythia-160m": ("neox", _pythia(768, 12, 12, 2048), 0.02),
    "tiny": ("gpt2", dict(n_layer=3, n_embd=64, n_head=4, n_positions=256), 0.2),
    "tiny-pythia": ("neox", _pythia(64, 3, 4, 256), 0.2),
}


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


def is_random_model(name: str) -> bool:
    """True for the offline stand-ins (random weights): their numbers say nothing about GPT-2."""
    return str(name) in STANDINS


RANDOM_FLAG = "RANDOM WEIGHTS"  # in every note, table and figure a stand-in made


def model_note(name: str | Sequence[str], profile: str | None = None) -> str:
    """One line naming the model(s) (and profile) that flags random-weight stand-ins."""
    names = [name] if isinstance(name, str) else list(dict.fromkeys(name))
    note = f"model{'s' if len(names) > 1 else ''} {', '.join(map(str, names))}" + (f", profile {profile}" if profile else "")
    random_ = [n for n in names if is_random_model(n)]
    if random_:
        one = len(random_) == 1
        note += (f" ({RANDOM_FLAG}: {', '.join(random_)} {'is an offline stand-in' if one else 'are offline stand-ins'};"
                 f" {'its' if one else 'their'} numbers say nothing about GPT-2)")
    return note
