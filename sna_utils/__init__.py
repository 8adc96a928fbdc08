"""Selective Neuron Amplification (SNA): the reproduction kit's library, imported as ``su``.

How to read it
--------------
Start with ``core.py``: the paper's method, top to bottom (loading, tasks, input checks,
discovery, intervention, measurement, zones). Everything else is machinery built on it:

==============  ==========================================================================
``core``        the method itself; the plain, hooked computation everything is tested against
``engine``      the fast forward from layer L for many configurations at once, metrics on the device
``decoder``     the engine's general path: any family's own Hugging Face decoder layers from layer L
``families``    which architectures the kit runs, read from a model's config before any weights load
``flops``       the FLOP model: a grid's floor, the measured matmul rate, the engine's overhead
``store``       the results table: a dataset of one file per unit, settings that must not mix
``sweep``       the grid (``run_sweep``, one unit per task and layer) and cross-task interference
``cluster``     units of work as Ray tasks (optional), a GPU each, retried if a worker dies
``heldout``     choosing on selection prompts, reporting on test prompts (every best-of choice)
``nulls``       the matched null: many random neuron sets like SNA's, at each task's chosen configuration
``verdict``     ``verdict()``: every claim of the paper in-sample and held out (its interval), beside the controls
``rules``       the verdict table's columns and its three plain-words rules (a gain, a rho, "rarely")
``explore``     tables about tasks and neurons (baselines, scores, overlap, top prompts)
``analysis``    statistics on results tables: summaries, zones, rho, golden zones, paper numbers
``stats``       per-prompt metrics, bootstrap intervals, paired tests (Holm), rho over tasks, nulls
``choices``     every other best-of choice held out: best layer (bootstrapped), golden zones, interference
``saturation``  the saturation artefact: rho of three metrics held out, per prompt, zone shares; verdict rows
``sst2``        the external check on GLUE SST-2
``sst2_heldout`` SST-2 chosen on selection examples, reported on test ones; the bias-only control; claims
``profiles``    smoke / quick / paper, the results folder and table names, notebook defaults
``preflight``   what a profile will cost on this machine (device, downloads, estimated time), before it runs
``style``       the figure style and the helpers plots share; ``plots``: the figures
``standins``    random-weight models of the real architectures, for tests and offline runs
``hub``         one fast check that the Hugging Face Hub is reachable; ``errors``: SNAError
==============  ==========================================================================

Imports run one way: ``errors`` and ``hub``/``standins``/``cluster`` under ``core``; ``core`` under every
other module; ``analysis`` and ``style`` under ``plots`` and ``profiles``. No module imports
one above it (``tests/test_package.py`` checks this).

Conventions. A *neuron* is one unit of ``blocks.{L}.mlp.hook_post`` (the MLP activation after
the nonlinearity, ``[batch, position, d_mlp]``). Prompts are right-padded and read at each
prompt's last real token, so batching never changes a number. Probabilities are plain floats in
[0, 1]; improvements are in percent of the baseline probability; KL divergences are in nats.

The names below are the public API (``__all__``). Internals stay reachable through their module,
e.g. ``su.engine.LayerState``; names that used to live at the top level still resolve there,
with a DeprecationWarning naming their new home.
"""

from __future__ import annotations

import importlib
import warnings

from . import (analysis, choices, cluster, core, engine, errors, explore, flops, heldout, hub, nulls, plots,
               preflight, profiles, rules, saturation, sst2, sst2_heldout, standins, stats, store, style, sweep)
from .analysis import (PAPER_BEST_LAYERS, PAPER_NUMBERS, best_per_task, best_shared_config,
                       confidence_gain_correlation, control_comparison, golden_zone, golden_zone_summary,
                       interference_summary, layer_profile, layer_specialisation, paper_comparison, round_for_reading,
                       task_summary, zone_summary, zones_by_model)
from .core import (DATA_DIR, HUB_MODELS, KIT_ROOT, KIT_VERSION, MODEL_NAMES, SCORE_METHODS, ZONE_HIGH, ZONE_LOW,
                   ZONE_NAMES, Baseline, Batch, Intervention, Item, NeutralSet, Outcome, Positions, Task, amplify,
                   baseline_of, check_k, check_layer, check_multiplier, check_neurons, check_positions, check_prompts,
                   check_device, check_score_method, d_mlp, default_device, encode_prompts, gpt2_tokenizer,
                   hook_name, improvement_pct, kit_model_name, kl_divergence, last_token_activations, load_model,
                   load_neutral, load_task, load_tasks, measure, model_device, model_name,
                   n_layers, neuron_scores, next_token_logits, outcome_of, random_neurons, rank_neurons,
                   restrict_to_single_token, run_and_capture, scores_from_activations, split_half, split_neutral,
                   split_selection_test, target_probs, target_token_ids, target_tokens, top_neurons, wrap_hf_model,
                   zone_of)
from .flops import grid_flop_floor, matmul_rate
from .heldout import arm_column, choose_on_selection, part_column
from .choices import golden_zone_heldout, layer_specialisation_heldout, shared_config_heldout
from .saturation import chosen_prompts, prompt_level, saturation_claims, saturation_rhos, zone_shares
from .errors import ModelUnavailableError, SNAError
from .explore import (discovery_scores, load_neutral_formats, neuron_overlap, prompt_pool, task_baselines,
                      task_table,
                      top_activating_prompts, top_neurons_by_task)
from .plots import (plot_baseline_zones, plot_confidence_vs_improvement, plot_golden_zone, plot_improvement_vs_k,
                    plot_interference, plot_layer_multiplier_heatmaps, plot_layer_specialisation,
                    plot_model_comparison, plot_neuron_overlap, plot_score_distributions, plot_sna_vs_control,
                    plot_sst2_zones)
from .profiles import (PAPER_KS, PAPER_MULTIPLIERS, best_depth, beyond_table_name, depth_matched_layers,
                       first_available_table, get_profile, interference_table_name, n_layers_of, notebook_defaults,
                       null_table_name, results_dir, results_table, safe_name, sweep_grid, sweep_table_name)
from .sst2 import (SST2_LABEL_WORDS, SST2_TEMPLATE, discovery_overlap, load_sst2, run_sst2, run_sst2_grid, score_sst2,
                   sst2_prompts, sst2_split, sst2_zone_report)
from .sst2_heldout import sst2_claims, sst2_study
from .standins import STANDINS, build_random_hf_model, model_note
from .cluster import RayExecutor
from .store import read_prompt_table, read_table, write_table_atomic
from .style import FIGURES_DIR, ZONE_COLORS, figures_dir, save_figure
from .sweep import cross_task_interference, run_sweep
from .nulls import matched_null, null_summary, reference_overlap
from .verdict import VERDICT_COLUMNS, verdict

__all__ = [
    # errors
    "SNAError", "ModelUnavailableError",
    # core: the method
    "KIT_VERSION", "KIT_ROOT", "DATA_DIR", "HUB_MODELS", "MODEL_NAMES", "Positions", "default_device",
    "gpt2_tokenizer", "wrap_hf_model", "kit_model_name", "load_model", "model_name", "model_device", "n_layers", "d_mlp",
    "Item", "Task", "NeutralSet", "split_half", "load_task", "load_tasks", "load_neutral", "split_neutral",
    "split_selection_test", "load_neutral_formats",
    "restrict_to_single_token",
    "check_prompts", "check_device", "check_layer", "check_k", "check_multiplier", "check_positions", "SCORE_METHODS",
    "check_score_method", "check_neurons", "target_tokens", "target_token_ids",
    "Batch", "encode_prompts",
    "hook_name", "run_and_capture", "last_token_activations", "scores_from_activations", "neuron_scores",
    "rank_neurons", "top_neurons", "random_neurons",
    "Intervention", "amplify",
    "next_token_logits", "target_probs", "kl_divergence", "improvement_pct", "Outcome", "Baseline", "baseline_of",
    "outcome_of", "measure",
    "ZONE_LOW", "ZONE_HIGH", "ZONE_NAMES", "zone_of",
    # standins
    "STANDINS", "build_random_hf_model", "model_note",
    # engine, store, sweep
    "grid_flop_floor", "matmul_rate", "read_table", "read_prompt_table", "write_table_atomic", "run_sweep", "cross_task_interference",
    "RayExecutor",
    # explore
    "task_table", "task_baselines", "discovery_scores", "top_neurons_by_task", "neuron_overlap",
    "top_activating_prompts", "prompt_pool",
    # heldout
    "choose_on_selection", "arm_column", "part_column",
    # choices and saturation: the other best-of choices held out, the saturation artefact
    "layer_specialisation_heldout", "golden_zone_heldout", "shared_config_heldout", "chosen_prompts",
    "saturation_rhos", "prompt_level", "zone_shares", "saturation_claims",
    "matched_null", "null_summary", "reference_overlap", "VERDICT_COLUMNS", "verdict",
    # analysis
    "PAPER_NUMBERS", "PAPER_BEST_LAYERS", "best_per_task", "task_summary", "confidence_gain_correlation",
    "zone_summary", "zones_by_model", "golden_zone", "golden_zone_summary", "control_comparison", "layer_profile",
    "layer_specialisation", "best_shared_config", "interference_summary", "paper_comparison", "round_for_reading",
    # sst2
    "SST2_TEMPLATE", "SST2_LABEL_WORDS", "load_sst2", "sst2_prompts", "score_sst2", "run_sst2", "sst2_zone_report",
    "sst2_split", "run_sst2_grid", "discovery_overlap", "sst2_study", "sst2_claims",
    # profiles
    "PAPER_KS", "PAPER_MULTIPLIERS", "get_profile", "results_dir", "safe_name", "sweep_table_name",
    "interference_table_name", "beyond_table_name", "results_table", "first_available_table", "n_layers_of",
    "depth_matched_layers", "best_depth", "sweep_grid", "notebook_defaults", "null_table_name",
    # style and plots
    "FIGURES_DIR", "ZONE_COLORS", "figures_dir", "save_figure", "plot_baseline_zones", "plot_sna_vs_control",
    "plot_layer_specialisation", "plot_interference", "plot_score_distributions", "plot_neuron_overlap",
    "plot_confidence_vs_improvement", "plot_sst2_zones", "plot_layer_multiplier_heatmaps", "plot_improvement_vs_k",
    "plot_golden_zone", "plot_model_comparison",
    # the modules
    "core", "engine", "flops", "store", "sweep", "cluster", "explore", "heldout", "choices", "saturation", "nulls", "rules",
    "analysis", "stats", "sst2", "sst2_heldout", "profiles", "preflight",
    "style", "plots", "standins", "hub", "errors",
]

# Names that were public at the top level before the kit became a package: where they live now.
MOVED = {
    **dict.fromkeys(["BlockWeights", "EngineWeights", "LengthGroup", "LayerState", "layer_state", "Config",
                     "engine_logits", "base_logits"], "engine"),
    **dict.fromkeys(["block_flops"], "flops"),
    **dict.fromkeys(["KEY_COLUMNS", "SweepSettings", "data_fingerprint"], "store"),
    **dict.fromkeys(["Profile", "PROFILES", "TABLE_MAKERS"], "profiles"),
    **dict.fromkeys(["SST2_FILES", "SST2_HUB_ID", "check_sst2_setup", "sst2_neurons"], "sst2"),
    **dict.fromkeys(["is_random_model"], "standins"),
    **dict.fromkeys(["GPT2_TOKENIZER_HUB_ID"], "core"),
    **dict.fromkeys(["PLOT_STYLE", "GOLDEN_COLOR", "CONTROL_COLOR", "ACCENT_COLOR", "MODEL_MARKERS", "MODEL_HATCHES",
                     "IMPROVEMENT_CMAP", "set_plot_style"], "style"),
}


def __getattr__(name: str):
    """Resolve a name that moved into a submodule, with a DeprecationWarning naming its new home."""
    if name in MOVED:
        warnings.warn(f"su.{name} moved to su.{MOVED[name]}.{name}; the top-level name will be removed.",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(f"{__name__}.{MOVED[name]}"), name)
    raise AttributeError(f"module 'sna_utils' has no attribute {name!r}")
