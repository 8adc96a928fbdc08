"""The sweep's results table: its key, the settings that must not mix, and writes that never corrupt it.

A table is Parquet or CSV; every row carries the ``settings_id`` of :class:`SweepSettings`, and a
table written with other settings is refused rather than mixed. Imports only ``core``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from .core import KIT_VERSION, NeutralSet, Task
from .errors import SNAError


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


def existing_rows(out: Path | None, settings: SweepSettings) -> pd.DataFrame | None:
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
