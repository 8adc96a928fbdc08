"""Is the Hugging Face Hub reachable, or the file already cached? One fast check before slow retries.

Loading (``core``) and SST-2 (``sst2``) call :func:`require_hub` so that an offline machine gets one
clear error within seconds instead of minutes of retries. Imports only ``errors``.
"""

from __future__ import annotations

import os
import socket

from ..errors import ModelUnavailableError

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


def hub_cached(hub_id: str, filename: str, repo_type: str = "model") -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(hub_id, filename, repo_type=repo_type), str)


def require_hub(hub_id: str, filename: str, what: str, fix: str, repo_type: str = "model") -> None:
    """Raise one clear error, at once, when ``hub_id`` is neither cached nor reachable."""
    if not hub_cached(hub_id, filename, repo_type) and not hub_reachable():
        raise _hub_unavailable(what, hub_id, fix)
