"""Is the Hugging Face Hub reachable, or the file already cached? Which commit of each model the kit loads, and
the GPT-2 tokenizer (from a local folder or the Hub).

Loading (``core``) and SST-2 (``sst2``) call :func:`require_hub` so that an offline machine gets one
clear error within seconds instead of minutes of retries. :data:`PINNED_REVISIONS` is the one table of the
Hub commits the kit loads its named models (and the GPT-2 tokenizer) at; :func:`record_revision` says which
commit a load used, and says so plainly when that cannot be looked up offline. Imports only ``errors``.
"""

from __future__ import annotations

import os
import re
import socket
import warnings
from pathlib import Path

from ..errors import ModelUnavailableError, SNAError

OFFLINE_HINT = ("Offline quick-start (README): SNA_GPT2_TOKENIZER=<folder with vocab.json and merges.txt> "
                "SNA_SST2_DIR=<folder with dev.tsv and train.tsv> make run PROFILE=smoke.")


def _hub_unavailable(what: str, hub_id: str, fix: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"Cannot load {what} ({hub_id!r}): the Hugging Face Hub is not reachable from this machine "
        f"and it is not in the local cache. {fix} {OFFLINE_HINT}"
    )


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """True when the Hub's host accepts a TCP connection (fast check before slow retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def hub_cached(hub_id: str, filename: str, repo_type: str = "model", revision: str | None = None) -> bool:
    """True when ``filename`` of ``hub_id`` at ``revision`` (a model's default: the revision it loads at,
    :func:`revision_to_load`) is in the local cache."""
    from huggingface_hub import try_to_load_from_cache

    if repo_type == "model":
        revision = revision_to_load(hub_id, revision)
    return isinstance(try_to_load_from_cache(hub_id, filename, revision=revision, repo_type=repo_type), str)


def require_hub(hub_id: str, filename: str, what: str, fix: str, repo_type: str = "model",
                revision: str | None = None) -> None:
    """Raise one clear error, at once, when ``hub_id`` (at ``revision``) is neither cached nor reachable."""
    if not hub_cached(hub_id, filename, repo_type, revision) and not hub_reachable():
        raise _hub_unavailable(what, hub_id, fix)


# Hub id -> the commit the kit loads it at (``revision=``): every Hub model the kit names (HUB_MODELS, notebook 07's
# default and the two alternatives its text names) and the GPT-2 tokenizer (openai-community/gpt2's). The Hub was not
# reachable where the kit was built, so each commit was taken from a public record of it; none was guessed. Sources
# (also in docs/models.md, "Pinned revisions"):
#   gpt2, gpt2-medium, pythia-160m, OLMo-1B-hf: the Open LLM Leaderboard's request files, which record the commit
#     each model was evaluated at (huggingface.co/datasets/open-llm-leaderboard/requests, files
#     <id>_eval_request_False_<precision>_Original.json, June 2024). gpt2's is also pinned by public code on GitHub
#     and a tokenizers documentation example; gpt2-medium's is the commit huggingface_hub's documentation shows
#     resolve_revision("openai-community/gpt2-medium") returning for "main".
#   Qwen2.5-0.5B: public code on GitHub pinning revision= (one project's set-up notes, another's model table).
#   Llama-3.2-1B (gated): public code on GitHub pinning revision= (one data-preparation script, in two copies).
#   SmolLM2-135M-Instruct and gemma-3-270m (gated), the originals of the kit's packaged GGUF models (run.packaged):
#     public code on GitHub pinning revision= (SmolLM2: a test of a numpy Llama that loads it by revision, several
#     projects' model tables and CI notes; gemma-3-270m: a fine-tuning script's MODEL_REVISION and several
#     projects' pinned model records).
PINNED_REVISIONS = {
    "openai-community/gpt2": "607a30d783dfa663caf39e06633721c8d4cfcd7e",
    "openai-community/gpt2-medium": "6dcaa7a952f72f9298047fd5137cd6e4f05f41da",
    "EleutherAI/pythia-160m": "50f5173d932e8e61f858120bcb800b97af589f46",
    "Qwen/Qwen2.5-0.5B": "060db6499f32faf8b98477b0a26969ef7d8b9987",
    "allenai/OLMo-1B-hf": "8e995430edd24416ccfa98b5b283fa07b0c9f1a9",
    "meta-llama/Llama-3.2-1B": "4e20de362430cd3b72f300e6b0f18e50e7166e08",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "12fd25f77366fa6b3b4b768ec3050bf629380bac",
    "google/gemma-3-270m": "9b0cfec892e2bc2afd938c98eabe4e4a7b1e0ca1",
}
COMMIT = re.compile(r"[0-9a-f]{40}")
NOT_RECORDED = "not recorded"


def revision_to_load(hub_id: str, revision: str | None = None) -> str:
    """The ``revision=`` to load ``hub_id`` at: ``revision`` when given ('main', a tag, a commit), else the pinned
    commit, else 'main'."""
    return revision or PINNED_REVISIONS.get(hub_id, "main")


def random_weights_revision(seed: int) -> str:
    """What an offline stand-in records as its revision: its weights come from ``seed``."""
    return f"random weights, seed {seed}"


def record_revision(hub_id: str, revision: str | None = None) -> str:
    """The commit ``hub_id`` loads at (``revision`` or the pinned one): a commit as it is; a branch or tag resolved
    on the Hub (model_info's sha) or, offline, from the cached snapshot's folder name. Offline, one warning says
    that revision lookup needs the Hub and which revision is recorded instead."""
    wanted = revision_to_load(hub_id, revision)
    online = hub_reachable()
    if COMMIT.fullmatch(wanted):
        if not online:
            kind = "given" if revision else "pinned"
            _offline_warning(f"recorded the {kind} revision {wanted} of {hub_id} without checking it on the Hub")
        return wanted
    if online:
        from huggingface_hub import HfApi

        return HfApi().model_info(hub_id, revision=wanted).sha
    cached = _cached_commit(hub_id, wanted)
    _offline_warning(f"recorded {hub_id} at {cached or wanted!r}"
                     + (f" (the local cache's snapshot of {wanted!r})" if cached else " unresolved"))
    return cached or wanted


def _cached_commit(hub_id: str, revision: str) -> str | None:
    """The commit of the cached snapshot of ``hub_id`` at ``revision`` (its folder name), or None."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(hub_id, "config.json", revision=revision)
    name = Path(path).parent.name if isinstance(path, str) else ""
    return name if COMMIT.fullmatch(name) else None


def _offline_warning(what: str) -> None:
    warnings.warn(f"Revision lookup needs the Hugging Face Hub, which is not reachable from this machine: {what}.",
                  stacklevel=3)


def model_revision(model) -> str:
    """The revision a loaded model records (``core.load_model`` sets it): a Hub commit, 'random weights, seed N',
    'local folder ...'; :data:`NOT_RECORDED` for a model built elsewhere."""
    return str(getattr(model, "sna_revision", "") or NOT_RECORDED)


GPT2_TOKENIZER_HUB_ID = "openai-community/gpt2"


def gpt2_tokenizer(path: str | os.PathLike | None = None):
    """The GPT-2 BPE tokenizer from ``path``, ``$SNA_GPT2_TOKENIZER`` or the Hub (prepends BOS)."""
    from transformers import GPT2TokenizerFast

    path = path or os.environ.get("SNA_GPT2_TOKENIZER")
    if path:
        path = Path(path)
        if not (path / "vocab.json").is_file() or not (path / "merges.txt").is_file():
            raise SNAError(f"GPT-2 tokenizer folder {path} must contain vocab.json and merges.txt. {OFFLINE_HINT}")
        return GPT2TokenizerFast.from_pretrained(str(path), add_bos_token=True)
    require_hub(GPT2_TOKENIZER_HUB_ID, "vocab.json", "the GPT-2 tokenizer",
                 "Set SNA_GPT2_TOKENIZER to a folder with vocab.json and merges.txt.")
    return GPT2TokenizerFast.from_pretrained(GPT2_TOKENIZER_HUB_ID, revision=revision_to_load(GPT2_TOKENIZER_HUB_ID),
                                             add_bos_token=True)
