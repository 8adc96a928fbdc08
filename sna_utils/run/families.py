"""Which models the kit runs: decoder-only causal language models that TransformerBridge can wrap.

:func:`check_decoder_only` reads a Hugging Face config (no weights) and raises one :class:`SNAError`
naming the architecture and what is supported, before any loading; ``core.load_model`` calls it on
every checkpoint and stand-in, after :func:`checkpoint_source` has told a local folder from a Hub id, and
loads checkpoints with :func:`load_checkpoint` (at the pinned Hub revision, recorded). Imports only ``errors``
and ``hub``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import SNAError
from .hub import COMMIT, record_revision, require_hub, revision_to_load

BRIDGE_NAMES = {"gpt_neox": "EleutherAI/pythia-160m"}  # model_type -> the name the bridge boots it under

# Prompt conventions. GPT-2 and Pythia get a BOS token prepended to every prompt, as the paper's TransformerLens runs
# had it (GPT-2's tokenizer adds none by itself); every other family reads prompts as its own tokenizer writes them,
# special tokens included where the tokenizer adds them (Gemma-3: its <bos>; SmolLM2: none, its BOS is the chat token
# <|im_start|>, which its tokenizer never puts before plain text).
PAPER_BOS_MODEL_TYPES = ("gpt2", "gpt_neox")
BOS_PREPENDED = "BOS prepended (the paper's convention)"
TOKENIZER_OWN = "the tokenizer's own special tokens"


def prompt_convention_of(model_type: str) -> str:
    """How a model of Hugging Face ``model_type`` reads its prompts: :data:`BOS_PREPENDED` or :data:`TOKENIZER_OWN`."""
    return BOS_PREPENDED if model_type in PAPER_BOS_MODEL_TYPES else TOKENIZER_OWN


# Tested offline on random stand-ins (tests/test_families.py); the bridge wraps many more.
TESTED_FAMILIES = ("GPT-2", "GPT-NeoX (Pythia)", "Llama", "Qwen2", "Gemma-2", "Gemma-3", "Mistral", "Phi-3", "OLMo")
SUPPORTED = ("decoder-only causal language models that TransformerLens' TransformerBridge supports "
             f"(tested: {', '.join(TESTED_FAMILIES)})")


def bridge_architecture(config) -> str:
    """The architecture name TransformerBridge wraps ``config`` as ('LlamaForCausalLM'); SNAError if none."""
    from transformer_lens.model_bridge.sources._hf_format import determine_architecture_from_hf_config

    try:
        return determine_architecture_from_hf_config(config)
    except ValueError:
        raise SNAError(f"Architecture {config.model_type!r} is not supported: TransformerBridge has no adapter "
                       f"for it. The kit runs {SUPPORTED}.") from None


def check_decoder_only(config, source: str) -> str:
    """The bridge architecture of ``config`` (of model ``source``) if it is a supported decoder-only causal LM;
    one SNAError naming the architecture and what is supported otherwise."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    model_type = config.model_type
    kind = ("an encoder-decoder model" if getattr(config, "is_encoder_decoder", False)
            else "an encoder-only (bidirectional) model" if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
            else "not a causal language model" if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES else None)
    if kind:
        names = ", ".join(getattr(config, "architectures", None) or [model_type])
        raise SNAError(f"{source!r} is {kind} (architecture {names}, model_type {model_type!r}); SNA needs a "
                       f"next-token distribution from a causal decoder. The kit runs {SUPPORTED}.")
    return bridge_architecture(config)


def checkpoint_source(name: str, known: str) -> str:
    """Where ``name`` (not one of the ``known`` kit names) loads from: a local checkpoint folder, or a Hub id
    ('org/name') that is cached or reachable (one fast error offline)."""
    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise SNAError(f"{name} is a folder but not a Hugging Face checkpoint (no config.json).")
        return name
    if re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", name):
        require_hub(name, "config.json", f"model {name!r}", "Connect to the internet once (the weights are then "
                    "cached), or pass a local checkpoint folder.")
        return name
    if "/" in name or os.sep in name or name.startswith((".", "~")):
        raise SNAError(f"Model folder not found: {name} (no such folder, and not one of {known}).")
    raise SNAError(f"Unknown model {name!r}: use one of {known}, the Hub id of any decoder-only model "
                   f"('org/name') or a local checkpoint folder.")


def parameter_count(config) -> int:
    """Parameters of the causal LM a Hugging Face ``config`` describes, counted on the meta device (no weights
    are downloaded or allocated); tied embeddings are counted once."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once


def load_checkpoint(name: str, source: str, dtype, revision: str | None = None, fix: str | None = None):
    """(Hugging Face model, tokenizer, recorded revision) of checkpoint ``source`` (a Hub id or local folder) for
    model ``name``: config checked first, then weights (safetensors only from the Hub) and tokenizer, all at
    ``revision`` (default: the pinned commit, else 'main'); ``fix`` is the advice when the Hub is unreachable.
    The revision recorded is the commit of the snapshot the weights came from (else :func:`hub.record_revision`'s)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if os.path.isdir(source):
        if revision:
            raise SNAError(f"revision={revision!r} applies to Hub ids, not to the local folder {source}.")
        hub, recorded = {}, f"local folder {Path(source).resolve()}"
    else:
        require_hub(source, "config.json", f"model {name!r}", fix or "Connect to the internet once (the weights "
                    "are then cached), or pass a local checkpoint folder.", revision=revision)
        hub = dict(revision=revision_to_load(source, revision))
        recorded = record_revision(source, revision)
    check_decoder_only(AutoConfig.from_pretrained(source, **hub), name)
    hf = AutoModelForCausalLM.from_pretrained(source, attn_implementation="eager", dtype=dtype,  # Hub: no pickles
                                              use_safetensors=True if hub else None, **hub)
    loaded = getattr(hf.config, "_commit_hash", None)  # the snapshot transformers read the weights from
    recorded = loaded if hub and isinstance(loaded, str) and COMMIT.fullmatch(loaded) else recorded
    return hf, AutoTokenizer.from_pretrained(source, **hub), recorded
