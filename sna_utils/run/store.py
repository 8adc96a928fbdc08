"""The sweep's results table: its key, the settings that must not mix, and writes that never lose rows.

A sweep's table is a dataset: a folder (named like a file, ``sweep_gpt2-medium.parquet``) holding one
Parquet or CSV file per unit of work (model, task, layer). Each unit file is written under a unique hidden
temporary name, fsynced and renamed (the folder fsynced too), so concurrent writers never touch each other's
files and a reader sees only complete units. A unit is done only when its file and its per-prompt file both
read with every row (:func:`unit_problem`); a resume moves any other aside and recomputes it. Every row
carries the ``settings_id`` of :class:`SweepSettings`; rows made with other settings are refused rather than
mixed. Single-file tables of earlier kit versions still read, and a sweep
into one turns it into a dataset first. The per-prompt table (``_prompts/``) has one column list
(:data:`PROMPT_COLUMNS`) and one check (:func:`check_prompt_table`), which every analysis calls.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..core import KIT_VERSION, NeutralSet, Task
from ..errors import SNAError
from ..judge.heldout import ARMS, BASELINE_ARMS, PARTS
from .hub import NOT_RECORDED


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
    precision: str = "float32"  # the engine's (engine.PRECISIONS): it changes the numbers, so it keys the table
    reference: str = "neutral"  # discovery's reference set (sweep.REFERENCES): it changes the neurons
    revision: str = NOT_RECORDED  # the model's weights: Hub commit, 'random weights, seed N' (hub.model_revision)
    baseline_grids: str = "none"  # the baselines' alpha and T grids (baselines.baseline_grids): they choose the rivals

    @property
    def settings_id(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def data_fingerprint(tasks: Sequence[Task], neutral: NeutralSet, formats: dict[str, NeutralSet] | None = None) -> str:
    """Hash of every prompt, target and split the sweep uses (the format-matched neutral sets, if any, too)."""
    payload = json.dumps([[t.name, [dataclasses.astuple(i) for i in t.discovery],
                           [dataclasses.astuple(i) for i in t.evaluation]] for t in tasks]
                         + [list(neutral.discovery), list(neutral.heldout)]
                         + [[n, list(f.discovery), list(f.heldout)] for n, f in sorted((formats or {}).items())])
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


SETTING_LABELS = {"model": "model", "positions": "positions", "score_method": "score method", "seed": "seed",
                  "data_sha": "data", "kit_version": "kit version", "precision": "precision",
                  "reference": "discovery reference", "revision": "model revision",
                  "baseline_grids": "baseline grids"}


def read_table(path: str | os.PathLike, warn_holes: bool = True) -> pd.DataFrame:
    """Read a results table: a Parquet/CSV file (by extension) or a dataset folder of unit files (with a
    warning naming the units missing from its grid, :func:`grid_holes`, unless ``warn_holes`` is False)."""
    path = Path(path)
    if path.is_dir():
        frames = [_read_file(f) for f in unit_files(path)]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        key = KEY_COLUMNS + ["settings_id"]
        df = df.drop_duplicates(key, ignore_index=True) if set(key) <= set(df.columns) else df
        holes = grid_holes(df) if warn_holes else []
        if holes:
            warnings.warn(f"{path} has holes in its grid: {'; '.join(holes)}. A sweep into the same `out` "
                          f"computes exactly what is missing.", stacklevel=2)
        return df
    if not path.is_file():
        raise SNAError(f"Results table not found: {path}")
    return _read_file(path)


def grid_holes(table: pd.DataFrame, limit: int = 5) -> list[str]:
    """What a sweep table lacks to be a whole grid, per model and settings: the (task, layer) units absent
    although the task and the layer are both there, and units without every (k, multiplier) the others have
    (up to ``limit`` named per kind); empty when whole."""
    if table.empty or not {"task", "layer", "k", "multiplier"} <= set(table.columns):
        return []
    keys = [c for c in ("model", "settings_id") if c in table.columns]
    found = []
    for who, t in table.groupby(keys, sort=True) if keys else [((), table)]:
        units = {u: set(zip(g["k"], g["multiplier"])) for u, g in t.groupby(["task", "layer"], sort=True)}
        absent = [f"{task} at layer {layer}" for task in sorted(set(t["task"])) for layer in sorted(set(t["layer"]))
                  if (task, layer) not in units]
        grid = set().union(*units.values())
        short = [f"{task} at layer {layer} ({len(grid - c)} of {len(grid)} (k, multiplier) missing)"
                 for (task, layer), c in units.items() if c != grid]
        where = f"{' '.join(map(str, who if isinstance(who, tuple) else (who,)))}: " if keys else ""
        for kind, items in (("units missing", absent), ("units short", short)):
            if items:
                more = f" and {len(items) - limit} more" if len(items) > limit else ""
                found.append(f"{where}{kind}: {', '.join(items[:limit])}{more}")
    return found


def _read_file(path: Path) -> pd.DataFrame:
    """One Parquet/CSV file; a damaged one raises naming it (and is left as it is)."""
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as e:  # pyarrow and pandas raise many types for a damaged file
        raise SNAError(f"{path} is not a readable {path.suffix.lstrip('.') or 'table'} file "
                       f"({type(e).__name__}: {str(e)[:200]}). It was left untouched: move or delete it, "
                       f"or choose another `out` path.") from e


def unit_files(folder: Path, suffix: str | None = None) -> list[Path]:
    """The complete unit files of a dataset folder (hidden temporaries and ``_``-files excluded), by name;
    ``suffix``: the files' extension (default: the folder's own, ``.parquet`` for ``sweep_x.parquet``)."""
    suffix = Path(folder).suffix if suffix is None else suffix
    return sorted(f for f in Path(folder).iterdir()
                  if f.is_file() and f.suffix == suffix and not f.name.startswith((".", "_")))


def write_table_atomic(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write Parquet/CSV to a unique temporary file in the same folder, fsync it, rename it over ``path`` and
    fsync the folder: a cut-off write, a power cut or two writers at once never leave a damaged ``path``."""
    path = Path(path)
    if path.suffix == ".parquet":
        _write_atomic(path, lambda f: df.to_parquet(f, index=False))
    else:
        _write_atomic(path, lambda f: f.write(df.to_csv(index=False).encode()))


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` (UTF-8) to ``path`` the way :func:`write_table_atomic` writes a table."""
    _write_atomic(Path(path), lambda f: f.write(text.encode("utf-8")))


def _write_atomic(path: Path, write) -> None:
    """``write(binary file)`` into a unique temporary file beside ``path``, fsynced, renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _fsync_folder(path.parent)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, as on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def unit_problem(path: Path) -> str | None:
    """Why the unit file ``path`` is not done (None if it is): its main file and its per-prompt file must both
    read, and the per-prompt file must hold, for every configuration of the main file, each arm's prompts."""
    try:
        rows = _read_file(path)
    except SNAError:
        return "its file is not readable"
    if rows.empty or not {"k", "multiplier"} <= set(rows.columns):
        return "its file holds no rows"
    if "prompt_table" in str(rows["dropped"].iloc[0] if "dropped" in rows else ""):
        return None  # a lean sweep (prompt_table=False) writes no per-prompt file
    prompts_path = path.parent / PROMPTS_FOLDER / path.name
    if not prompts_path.is_file():
        return f"its per-prompt file {PROMPTS_FOLDER}/{path.name} is missing"
    try:
        prompts = _read_file(prompts_path)
    except SNAError:
        return f"its per-prompt file {PROMPTS_FOLDER}/{path.name} is not readable"
    if prompts.empty or not {"k", "multiplier", "arm", "prompt_id"} <= set(prompts.columns):
        return f"its per-prompt file {PROMPTS_FOLDER}/{path.name} holds no rows"
    prompts = prompts[prompts["arm"].isin(ARMS)]  # the baselines (no neurons) are not per configuration
    configs = set(zip(rows["k"].astype(int), rows["multiplier"].astype(float)))
    counts = prompts.groupby([prompts["k"].astype(int), prompts["multiplier"].astype(float), "arm"]).size()
    covered = {(k, m) for k, m, _ in counts.index}
    if covered != configs or counts.nunique() != 1 or len(counts) != len(configs) * prompts["arm"].nunique():
        return f"its per-prompt file {PROMPTS_FOLDER}/{path.name} lacks rows ({len(prompts)} read)"
    return None


def set_aside_incomplete_units(folder: Path) -> list[Path]:
    """Move every unit of the dataset ``folder`` that is not done (:func:`unit_problem`) aside, its per-prompt
    file too, under hidden ``.name.set-aside-<time>`` names kept for inspection; one warning line each.

    Returns the units moved, which the sweep then recomputes."""
    moved = []
    for path in unit_files(folder):
        problem = unit_problem(path)
        if problem is None:
            continue
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for f in (path, path.parent / PROMPTS_FOLDER / path.name):
            if f.is_file():
                os.replace(f, f.with_name(f".{f.name}.set-aside-{stamp}"))
        warnings.warn(f"{path}: {problem}; moved aside (kept as .{path.name}.set-aside-{stamp}) and "
                      f"recomputed.", stacklevel=2)
        moved.append(path)
    return moved


def unit_file_name(task: str, layer: int, settings_id: str, rows: pd.DataFrame, suffix: str) -> str:
    """Deterministic name of one unit's file: the same unit computed twice overwrites, never duplicates."""
    configs = json.dumps(sorted(zip(rows["k"].astype(int).tolist(), rows["multiplier"].astype(float).tolist())))
    grid = hashlib.sha256(configs.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9.-]+', '-', task)}__layer{int(layer):03d}__{settings_id}__{grid}{suffix}"


def write_unit(rows: pd.DataFrame, folder: Path, settings_id: str, prompts: pd.DataFrame | None) -> Path:
    """Add one (task, layer) unit's rows to the dataset ``folder`` (atomic; refuses other settings' folders).

    ``prompts``, the unit's per-prompt table, is written first (under ``folder/_prompts/``, same file name),
    so a unit whose rows are in the table always has its per-prompt file (None: a lean sweep keeps none).
    """
    (task,), (layer,) = rows["task"].unique(), rows["layer"].unique()
    folder.mkdir(parents=True, exist_ok=True)
    other = [f.name for f in unit_files(folder) if f"__{settings_id}__" not in f.name]
    if other:
        raise SNAError(f"{folder} now holds units made with other settings ({other[0]}, ...), written by "
                       f"another run; rows of different settings are never mixed. Choose another `out` path.")
    path = folder / unit_file_name(task, layer, settings_id, rows, folder.suffix)
    if prompts is not None:
        write_table_atomic(prompts[PROMPT_COLUMNS], folder / PROMPTS_FOLDER / path.name)
    write_table_atomic(rows, path)
    return path


PROMPTS_FOLDER = "_prompts"
PROMPT_COLUMNS = ["model", "settings_id", "task", "layer", "k", "multiplier", "arm", "strength", "prompt_id", "part",
                  "p_base", "p", "top1"]  # strength: a baseline's alpha or T (NaN for SNA and the controls)
PROMPT_KEY = ["model", "settings_id", "task", "layer", "k", "multiplier", "arm", "strength", "prompt_id"]
OPTIONAL = ("strength",)  # absent from tables of earlier kit versions (read as NaN)
RECORD_ONLY = ("settings_id", "top1")  # written with every row; the analyses do not need them


def check_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """SNAError naming the columns ``table`` lacks (``what`` names the table), before any work."""
    if not isinstance(table, pd.DataFrame):
        raise SNAError(f"The {what} must be a pandas DataFrame, got {type(table).__name__}.")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise SNAError(f"The {what} has no column(s) {missing}: rerun the sweep with this kit version "
                       f"(it records metrics per part and per prompt).")
    if table.empty:
        raise SNAError(f"The {what} is empty.")


def check_prompt_table(prompts: pd.DataFrame) -> pd.DataFrame:
    """The per-prompt table after checks: ``PROMPT_COLUMNS`` (those the analyses read), known arms and parts,
    probabilities in [0, 1], each (model, task, configuration, arm, prompt) once (several settings mixed in one
    table would repeat it)."""
    check_columns(prompts, [c for c in PROMPT_COLUMNS if c not in RECORD_ONLY + OPTIONAL], "per-prompt table")
    bad_arm = set(prompts["arm"]) - set(ARMS) - set(BASELINE_ARMS)
    bad_part = set(prompts["part"]) - set(PARTS)
    if bad_arm or bad_part:
        raise SNAError(f"Unknown arm(s) {sorted(bad_arm)} or part(s) {sorted(bad_part)} in the per-prompt table.")
    probs = prompts[["p_base", "p"]].to_numpy(dtype=float)
    if not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
        raise SNAError("The per-prompt table's p_base and p must be finite probabilities in [0, 1].")
    if prompts.duplicated([c for c in PROMPT_KEY if c not in RECORD_ONLY and c in prompts]).any():
        raise SNAError("The per-prompt table repeats a (model, task, configuration, arm, prompt): "
                       "mixed settings? Keep one settings_id per model.")
    return prompts


def read_prompt_table(path: str | os.PathLike) -> pd.DataFrame:
    """The per-prompt table of a sweep (its dataset folder, or that folder's ``_prompts``): one row per task,
    layer, k, multiplier, arm ("sna" | "control" | "control_b", and the baselines "steer" | "steer_matched" |
    "temperature" at their ``strength``) and evaluation prompt (``prompt_id``, its index in
    ``task.evaluation``), with its ``part`` ("selection" | "test"), ``p_base``, ``p`` and ``top1``."""
    path = Path(path)
    folder = path if path.name == PROMPTS_FOLDER else path / PROMPTS_FOLDER
    suffix = path.suffix if path.name != PROMPTS_FOLDER else path.parent.suffix
    if folder.parent.is_dir() and (not folder.is_dir()
                                   or len(unit_files(folder.parent)) > len(unit_files(folder, suffix))):
        _refuse_lean(folder.parent)
    if not folder.is_dir():
        raise SNAError(f"No per-prompt table in {path}: sweeps of this kit version save one per unit under "
                       f"{PROMPTS_FOLDER}/ when given an `out` path; rerun the sweep into a new folder.")
    files = unit_files(folder, suffix)
    missing = sorted({f.name for f in unit_files(folder.parent)} - {f.name for f in files})
    if missing:
        raise SNAError(f"The per-prompt table of {folder.parent} lacks {len(missing)} unit(s): "
                       f"{', '.join(missing)}. Run the sweep into the same `out` again: it recomputes exactly those "
                       f"units.")
    if not files:
        return pd.DataFrame(columns=PROMPT_COLUMNS)
    df = pd.concat([_read_file(f) for f in files], ignore_index=True)
    if "strength" not in df:
        df.insert(PROMPT_COLUMNS.index("strength"), "strength", np.nan)
    df = df.drop_duplicates(PROMPT_KEY, ignore_index=True)
    return df.astype({"arm": str, "part": str, "p_base": "float64", "p": "float64", "top1": bool,
                      "prompt_id": int})


def _refuse_lean(main: Path) -> None:
    """SNAError naming the option when the sweep in ``main`` was run without its per-prompt table."""
    if main.is_dir() and any("prompt_table" in str(d) for d in read_table(main).get("dropped", pd.Series([]))):
        raise SNAError(f"{main} was swept with prompt_table=False (lean mode): it has no per-prompt table, which "
                       f"the verdict and every held-out analysis need. Rerun the sweep with prompt_table=True.")


def as_dataset(out: Path) -> None:
    """Turn a single-file sweep table at ``out`` into a dataset folder of the same name, unit by unit.

    The file is read first (a damaged one raises and stays untouched), moved aside, split into unit files,
    then removed; a run cut off in between finishes the move the next time.
    """
    aside = out.with_name(f".{out.stem}.single-file{out.suffix}")
    if out.is_file():
        old = read_table(out)
        if not {"task", "layer", "settings_id"} <= set(old.columns):
            raise SNAError(f"{out} is not a sweep table (no task, layer or settings_id column); left untouched.")
        try:
            os.replace(out, aside)
        except OSError:  # another process moved it first; it finishes the split
            return
    if not aside.is_file():
        return
    old = read_table(aside)
    out.mkdir(parents=True, exist_ok=True)
    for _, unit in old.groupby(["settings_id", "task", "layer"], sort=False):
        write_table_atomic(unit, out / unit_file_name(unit["task"].iloc[0], unit["layer"].iloc[0],
                                                      unit["settings_id"].iloc[0], unit, out.suffix))
    aside.unlink(missing_ok=True)


def settings_differences(old: pd.DataFrame, settings: SweepSettings) -> list[str]:
    """Each setting whose value in the table ``old`` differs from ``settings``: 'name: old vs new'."""
    found = []
    for field, label in SETTING_LABELS.items():
        new = str(getattr(settings, field))
        was = sorted(set(old[field].astype(str))) if field in old else None
        if was is None:
            found.append(f"{label}: not recorded in the table, {new} now")
        elif was != [new]:
            found.append(f"{label}: {', '.join(was)} in the table, {new} now")
    return found


def check_made_for(table: pd.DataFrame, sweep: pd.DataFrame, what: str, fix: str) -> None:
    """SNAError when ``table`` (a null, an interference table: ``what``) records a ``settings_id`` other than the
    ``sweep`` rows' (tables that record none, "not recorded", pass); ``fix`` says how to remake it."""
    if "settings_id" not in table or "settings_id" not in sweep:
        return
    made_for = sorted(set(table["settings_id"].astype(str)) - {"not recorded"})
    sweep_ids = sorted(set(sweep["settings_id"].astype(str)))
    if made_for and made_for != sweep_ids:
        raise SNAError(f"The {what} was made for the sweep with settings_id {', '.join(made_for)}; this sweep's is "
                       f"{', '.join(sweep_ids)}. {fix}")


def existing_rows(out: Path | None, settings: SweepSettings) -> pd.DataFrame | None:
    """The rows already in the dataset ``out`` (None if there are none); raises if made with other settings."""
    if out is None:
        return None
    as_dataset(out)
    if not out.is_dir():
        return None
    set_aside_incomplete_units(out)
    old = read_table(out, warn_holes=False)  # the resume fills the holes
    if old.empty:
        return None
    ids = set(old["settings_id"]) if "settings_id" in old else {"?"}
    if ids != {settings.settings_id}:
        diff = "; ".join(settings_differences(old, settings)) or "settings_id " + ", ".join(sorted(map(str, ids)))
        raise SNAError(f"{out} holds results made with other settings ({diff}). Choose another `out` path or "
                       f"delete the folder; rows of different settings are never mixed.")
    return old
