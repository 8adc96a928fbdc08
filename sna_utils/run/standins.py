"""Offline stand-ins: the real architectures with random weights, built without any download.

Tests, CI and the ``smoke`` profile run on these. Their numbers say nothing about GPT-2, and
:func:`model_note` is the one line every table and figure uses to say so. Imports only ``errors``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import SNAError

def _pythia(d: int, layers: int, heads: int, n_ctx: int) -> dict:
    """GPT-NeoX config overrides with Pythia's fixed choices (parallel residual, 25 % rotary, padded vocab)."""
    return dict(hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=4 * d,
                max_position_embeddings=n_ctx, vocab_size=50304, use_parallel_residual=True,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25})


def _tiny(**extra) -> dict:
    """A 3-layer, 64-wide decoder with grouped-query attention (4 query, 2 key/value heads) and a gated
    128-unit MLP, on the GPT-2 tokenizer's 50,257 ids (the family's own choices in ``extra``)."""
    return dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=128, max_position_embeddings=256, vocab_size=50257, pad_token_id=50256,
                bos_token_id=50256, eos_token_id=50256, **extra)


# Gemma-2's own choices: soft-capped attention scores and logits, four norms a block, the embedding scaled
# by sqrt(d), alternating sliding-window (here 4 tokens, shorter than the test prompts) and global layers.
_GEMMA2 = dict(head_dim=16, query_pre_attn_scalar=16, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
               sliding_window=4, layer_types=["sliding_attention", "full_attention", "sliding_attention"])

# Gemma-3's own choices: no soft-capping, RMS-normed queries and keys, a rotary embedding per layer type (local
# sliding-window layers at theta 1e4, global ones at 1e6), four norms a block, the embedding scaled by sqrt(d).
_GEMMA3_ROPE = {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}}
_GEMMA3 = dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=4, rope_parameters=_GEMMA3_ROPE,
               layer_types=["sliding_attention", "sliding_attention", "full_attention"])

# name -> (Hugging Face model_type, config overrides, default initializer_range); tiny ones are for tests.
STANDINS: dict[str, tuple[str, dict, float]] = {
    "random:gpt2-small": ("gpt2", dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024), 0.02),
    "random:gpt2-medium": ("gpt2", dict(n_layer=24, n_embd=1024, n_head=16, n_positions=1024), 0.02),
    "random:pythia-160m": ("gpt_neox", _pythia(768, 12, 12, 2048), 0.02),
    # Llama-3.2-1B's shape (16 layers, d 2048, 32 query / 8 key-value heads, MLP 8192) on GPT-2's vocabulary.
    "random:llama-1b": ("llama", dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                                      num_key_value_heads=8, intermediate_size=8192, max_position_embeddings=2048,
                                      vocab_size=50257, tie_word_embeddings=True, bos_token_id=50256,
                                      eos_token_id=50256, pad_token_id=50256), 0.02),
    # Qwen2.5-0.5B's shape (24 layers, d 896, 14 query / 2 key-value heads, MLP 4864) on GPT-2's vocabulary.
    "random:qwen2-0.5b": ("qwen2", dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                                        num_key_value_heads=2, intermediate_size=4864, max_position_embeddings=2048,
                                        vocab_size=50257, tie_word_embeddings=True, bos_token_id=50256,
                                        eos_token_id=50256, pad_token_id=50256), 0.02),
    # Gemma-2-2B's shape (26 layers, d 2304, 8 query / 4 key-value heads of 256, MLP 9216, soft-capping, sliding
    # and global layers alternating) on GPT-2's vocabulary.
    "random:gemma2-2b": ("gemma2", dict(hidden_size=2304, num_hidden_layers=26, num_attention_heads=8,
                                        num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
                                        intermediate_size=9216, attn_logit_softcapping=50.0,
                                        final_logit_softcapping=30.0, sliding_window=4096,
                                        layer_types=["sliding_attention", "full_attention"] * 13,
                                        max_position_embeddings=8192, vocab_size=50257, tie_word_embeddings=True,
                                        bos_token_id=50256, eos_token_id=50256, pad_token_id=50256), 0.02),
    # Gemma-3-270M's shape (18 layers, d 640, 4 query / 1 key-value heads of 256, MLP 2048, 512-token sliding window
    # on five layers of every six, the sixth global) on GPT-2's vocabulary.
    "random:gemma3-270m": ("gemma3_text", dict(hidden_size=640, num_hidden_layers=18, num_attention_heads=4,
                                               num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
                                               intermediate_size=2048, sliding_window=512,
                                               layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3,
                                               rope_parameters=_GEMMA3_ROPE, max_position_embeddings=32768,
                                               vocab_size=50257, tie_word_embeddings=True, bos_token_id=50256,
                                               eos_token_id=50256, pad_token_id=50256), 0.02),
    # SmolLM2-135M's shape (Llama: 30 layers, d 576, 9 query / 3 key-value heads, MLP 1536, rope theta 1e5, tied
    # embeddings) on GPT-2's vocabulary.
    "random:smollm2-135m": ("llama", dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                                          num_key_value_heads=3, intermediate_size=1536, max_position_embeddings=8192,
                                          rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                                          rms_norm_eps=1e-5, vocab_size=50257, tie_word_embeddings=True,
                                          bos_token_id=50256, eos_token_id=50256, pad_token_id=50256), 0.02),
    "tiny": ("gpt2", dict(n_layer=3, n_embd=64, n_head=4, n_positions=256), 0.2),
    "tiny-pythia": ("gpt_neox", _pythia(64, 3, 4, 256), 0.2),
    "tiny-llama": ("llama", _tiny(), 0.2),
    "tiny-qwen2": ("qwen2", _tiny(), 0.2),
    "tiny-gemma2": ("gemma2", _tiny(**_GEMMA2), 0.2),
    "tiny-gemma3": ("gemma3_text", _tiny(**_GEMMA3), 0.2),
    "tiny-mistral": ("mistral", _tiny(sliding_window=None), 0.2),
    "tiny-mistral-window": ("mistral", _tiny(sliding_window=4), 0.2),
    "tiny-phi3": ("phi3", _tiny(original_max_position_embeddings=256), 0.2),
    "tiny-olmo": ("olmo", _tiny(), 0.2),
}
TINY_FAMILIES = [n for n in STANDINS if n.startswith("tiny")]  # one small random model per tested family


def build_random_hf_model(name: str, seed: int = 0, initializer_range: float | None = None):
    """A Hugging Face causal LM of stand-in ``name`` with random weights (deterministic in ``seed``)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if name not in STANDINS:
        raise SNAError(f"Unknown stand-in {name!r}; choose one of {sorted(STANDINS)}.")
    model_type, overrides, default_init = STANDINS[name]
    init = default_init if initializer_range is None else initializer_range
    config = AutoConfig.for_model(model_type, **overrides, initializer_range=init)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()


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
