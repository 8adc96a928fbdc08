"""How a run was made: one small JSON file beside its tables, written once per run and read back by the report.

:func:`collect_provenance` gathers the kit's version and git commit (and whether the tree was dirty), the Python,
torch, transformers and TransformerLens versions, the device, the profile, the SHA-256 of every data file the run
reads (the tasks, the neutral prompts, the format-matched neutral prompts, the SST-2 files), where the GPT-2
tokenizer came from, the pinned Hub revisions, the settings each sweep table records (model, revision, precision,
seed), for each packaged pretrained model the run used (``run.packaged``) its package, file, SHA-256, quantization
and licence, and the start and end times. :func:`write_provenance` writes it atomically as ``provenance.json`` in the
profile's results folder (``results/<profile>/``, beside the tables). Imports ``core``, ``errors``, ``run.hub``,
``run.packaged``, ``run.store`` and ``run.profiles``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd

from ..core import DATA_DIR, GPT2_TOKENIZER_HUB_ID, KIT_ROOT, KIT_VERSION
from ..errors import SNAError
from .hub import NOT_RECORDED, PINNED_REVISIONS, hub_reachable, revision_to_load
from .packaged import PACKAGED_MODELS, packaged_record, sha256_of
from .profiles import get_profile
from .store import read_table, write_text_atomic

PROVENANCE_FILE = "provenance.json"
LIBRARIES = ("torch", "transformers", "transformer-lens", "numpy", "pandas", "datasets", "jinja2")
SWEEP_TABLES = ("validation.parquet", "sweep_", "pythia.parquet", "beyond_")  # tables with one row per configuration
SETTINGS_RECORDED = ("model", "revision", "precision", "seed", "positions", "score_method", "reference",
                     "kit_version", "data_sha", "settings_id")
SST2_FILES = ("dev.tsv", "train.tsv")


def now_utc() -> str:
    """The current time, ISO 8601 in UTC to the second ('2026-12-04T19:30:00+00:00')."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def data_files(data_dir: str | os.PathLike = DATA_DIR, sst2_dir: str | os.PathLike | None = None) -> list[Path]:
    """The data files a run reads: every task file, the neutral prose, the format-matched neutral prompts and,
    where ``sst2_dir`` (None: ``$SNA_SST2_DIR``; '': none) is set, GLUE SST-2's dev.tsv and train.tsv (read from
    the Hub's dataset cache otherwise, which has no file of its own to hash)."""
    data_dir = Path(data_dir)
    files = sorted((data_dir / "tasks").glob("*.json")) + [data_dir / "neutral.txt", data_dir / "neutral_formats.json"]
    sst2_dir = os.environ.get("SNA_SST2_DIR") if sst2_dir is None else sst2_dir
    files += [Path(sst2_dir) / name for name in SST2_FILES] if sst2_dir else []
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SNAError(f"Data file(s) not found: {', '.join(missing)}.")
    return files


def data_hashes(files: list[Path]) -> dict[str, str]:
    """Each file's SHA-256, by its path (relative to the kit when inside it)."""
    return {_shown(f): sha256_of(f) for f in files}


def _shown(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(KIT_ROOT)) if path.is_relative_to(KIT_ROOT) else str(path)


def git_state(root: str | os.PathLike = KIT_ROOT) -> dict:
    """The kit's git commit and whether its tree has uncommitted changes (None for both outside a checkout)."""
    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def library_versions() -> dict[str, str]:
    """Python's version and each of :data:`LIBRARIES`' installed versions ('not installed' where absent)."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_name(device: str | None = None) -> str:
    """The device a run computes on, in words ('NVIDIA H100 80GB HBM3 (cuda)', 'x86_64 CPU, 16 cores')."""
    import torch

    device = device or os.environ.get("SNA_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))} (cuda)"
    return f"{platform.machine() or 'unknown'} CPU, {os.cpu_count()} cores ({platform.system()})"


def tokenizer_source() -> dict:
    """Where the GPT-2 tokenizer comes from: the folder ``$SNA_GPT2_TOKENIZER`` (with its files' SHA-256) or the
    Hub at the pinned revision."""
    folder = os.environ.get("SNA_GPT2_TOKENIZER")
    if folder:
        files = [Path(folder) / n for n in ("vocab.json", "merges.txt") if (Path(folder) / n).is_file()]
        return {"source": "local folder", "path": str(Path(folder).resolve()), "sha256": data_hashes(files)}
    return {"source": "Hugging Face Hub", "hub_id": GPT2_TOKENIZER_HUB_ID,
            "revision": revision_to_load(GPT2_TOKENIZER_HUB_ID)}


def recorded_settings(results: str | os.PathLike) -> list[dict]:
    """The settings each sweep table of a results folder records (:data:`SETTINGS_RECORDED`), one dict per table
    and settings; tables of earlier kit versions show what they lack as 'not recorded'."""
    found = []
    for path in sorted(Path(results).iterdir()) if Path(results).is_dir() else []:
        if not path.name.startswith(SWEEP_TABLES) or path.suffix not in (".parquet", ".csv"):
            continue
        table = read_table(path)
        if table.empty or "settings_id" not in table:
            continue
        table = table.assign(**{c: NOT_RECORDED for c in SETTINGS_RECORDED if c not in table})
        for row in table[list(SETTINGS_RECORDED)].astype(str).drop_duplicates().to_dict("records"):
            found.append({"table": path.name, **row})
    return found


def packaged_records(models: list[str] | tuple[str, ...]) -> dict[str, dict]:
    """:func:`run.packaged.packaged_record` of each packaged model among ``models`` (kit names), by name."""
    return {m: packaged_record(m) for m in dict.fromkeys(map(str, models)) if m in PACKAGED_MODELS}


def collect_provenance(profile: str, started: str, ended: str | None = None,
                       results: str | os.PathLike | None = None, device: str | None = None,
                       models: list[str] | tuple[str, ...] = ()) -> dict:
    """Everything :mod:`provenance` records about one run of ``profile`` (times as :func:`now_utc` gives them);
    ``models``: names the run uses beyond those its tables record (their packaged records are kept too)."""
    get_profile(profile)  # an unknown profile raises here
    tables = recorded_settings(results) if results is not None else []
    return {
        "kit_version": KIT_VERSION,
        "git": git_state(),
        "versions": library_versions(),
        "device": device_name(device),
        "profile": profile,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "started": started,
        "ended": ended,
        "hub": "reachable" if hub_reachable() else "not reachable (revision lookup needs the Hub: the pinned "
                                                   "revisions are recorded unchecked)",
        "pinned_revisions": dict(PINNED_REVISIONS),
        "tokenizer": tokenizer_source(),
        "data_sha256": data_hashes(data_files()),
        "tables": tables,
        "packaged_models": packaged_records([*models, *(t["model"] for t in tables)]),
    }


def write_provenance(record: dict, results: str | os.PathLike) -> Path:
    """Write ``record`` as ``<results>/provenance.json`` (atomic: a reader never sees half a file)."""
    path = Path(results) / PROVENANCE_FILE
    write_text_atomic(json.dumps(record, indent=2, sort_keys=False) + "\n", path)
    return path


def read_provenance(results: str | os.PathLike) -> dict | None:
    """The provenance record of a results folder, or None if the run wrote none."""
    path = Path(results) / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SNAError(f"{path} is not valid JSON ({e}); rerun `make run` to write it again.") from None


def models_and_revisions(record: dict | None) -> pd.DataFrame:
    """One row per (table, model, revision, precision, seed) of a provenance record's ``tables``."""
    rows = (record or {}).get("tables", [])
    return pd.DataFrame(rows, columns=["table", *SETTINGS_RECORDED]) if rows else pd.DataFrame()
