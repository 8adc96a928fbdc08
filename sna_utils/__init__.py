"""Selective Neuron Amplification (SNA): the reproduction kit's library, imported as ``su``.

How to read it
--------------
The package is laid out by the question a reader brings. Each subpackage's ``__init__`` is its index.

==================  ======================================================================================
``core``            **what the method is**: the paper's method top to bottom (loading, tasks, input checks,
                    discovery, intervention, measurement, zones); the plain, hooked computation every fast
                    path is tested against
``sst2``            the external check on GLUE SST-2 (data, per-example study, its grid)
``errors``          ``SNAError``, the one exception every check raises
``run/``            **how it runs fast and at scale**: ``engine`` and ``decoder`` (the fast forward from layer
                    L), ``families``, ``standins``, ``hub``, ``flops``, ``store`` (the results dataset),
                    ``sweep``, ``cluster`` (Ray), ``profiles``, ``preflight``
``judge/``          **how a claim is judged**: ``claims`` (the one table: claim -> deciding function ->
                    rule), ``heldout``, ``stats``, ``rules``, ``verdict``, ``nulls``, ``saturation``,
                    ``choices``, ``sst2_heldout``, ``analysis`` (summaries)
``show/``           **how it is shown**: ``style``, ``plots``, ``explore`` (tables about tasks and neurons)
==================  ======================================================================================

Imports run one way: ``errors`` and the low machinery (``run.hub``, ``run.standins``, ``run.families``, ...)
under ``core``; ``core`` under every other module. No module imports one of its own layer or above
(``tests/test_package.py`` checks this, module by module, across subpackages).

Conventions. A *neuron* is one unit of ``blocks.{L}.mlp.hook_post`` (the MLP activation after
the nonlinearity, ``[batch, position, d_mlp]``). Prompts are right-padded and read at each
prompt's last real token, so batching never changes a number. Probabilities are plain floats in
[0, 1]; improvements are in percent of the baseline probability; KL divergences are in nats.

The names below are the public API (``__all__``). Internals stay reachable through their module,
e.g. ``su.run.engine.LayerState``. Names and module paths of earlier layouts (``su.engine``,
``sna_utils.verdict``, ``su.LayerState``) still resolve, with a DeprecationWarning naming their new home.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from . import core, errors, judge, run, show, sst2
from .judge.analysis import (PAPER_BEST_LAYERS, PAPER_NUMBERS, best_per_task, best_shared_config,
                       confidence_gain_correlation, control_comparison, golden_zone, golden_zone_summary,
                       interference_summary, layer_profile, layer_specialisation, paper_comparison, round_for_reading,
                       task_summary, zone_summary, zones_by_model)
from .core import (DATA_DIR, HUB_MODELS, KIT_ROOT, KIT_VERSION, MODEL_NAMES, SCORE_METHODS, ZONE_HIGH, ZONE_LOW,
                   ZONE_NAMES, Baseline, Batch, Intervention, Item, NeutralSet, Outcome, Positions, Task, amplify,
                   baseline_of, check_k, check_layer, check_multiplier, check_neurons, check_positions, check_prompts,
                   check_device, check_score_method, d_mlp, default_device, encode_prompts, gpt2_tokenizer,
                   prompt_convention, prompt_tokens,
                   hook_name, improvement_pct, kit_model_name, kl_divergence, last_token_activations, load_model,
                   load_neutral, load_task, load_tasks, measure, model_device, model_name,
                   n_layers, neuron_scores, next_token_logits, outcome_of, random_neurons, rank_neurons,
                   restrict_to_single_token, run_and_capture, scores_from_activations, split_half, split_neutral,
                   split_selection_test, target_probs, target_token_ids, target_tokens, top_neurons, wrap_hf_model,
                   zone_of)
from .run.flops import grid_flop_floor, matmul_rate
from .judge.heldout import arm_column, choose_on_selection, part_column
from .judge.choices import golden_zone_heldout, layer_specialisation_heldout, shared_config_heldout
from .judge.saturation import chosen_prompts, prompt_level, saturation_claims, saturation_rhos, zone_shares
from .errors import ModelUnavailableError, SNAError
from .show.explore import (discovery_scores, load_neutral_formats, neuron_overlap, prompt_pool, task_baselines,
                      task_table,
                      top_activating_prompts, top_neurons_by_task)
from .show.plots import (plot_baseline_zones, plot_confidence_vs_improvement, plot_golden_zone, plot_improvement_vs_k,
                    plot_interference, plot_layer_multiplier_heatmaps, plot_layer_specialisation,
                    plot_model_comparison, plot_neuron_overlap, plot_score_distributions, plot_sna_vs_control,
                    plot_sst2_zones)
from .run.profiles import (PAPER_KS, PAPER_MULTIPLIERS, best_depth, beyond_table_name, depth_matched_layers,
                       first_available_table, get_profile, interference_table_name, n_layers_of, notebook_defaults,
                       null_table_name, results_dir, results_table, safe_name, sweep_grid, sweep_table_name)
from .sst2 import (SST2_LABEL_WORDS, SST2_TEMPLATE, discovery_overlap, load_sst2, run_sst2, run_sst2_grid, score_sst2,
                   sst2_prompts, sst2_split, sst2_zone_report)
from .judge.sst2_heldout import sst2_claims, sst2_study
from .run.standins import STANDINS, build_random_hf_model, model_note
from .run.cluster import RayExecutor
from .run.store import read_prompt_table, read_table, write_table_atomic
from .run.hub import PINNED_REVISIONS, model_revision
from .run.provenance import collect_provenance, read_provenance, write_provenance
from .show.report import build_report
from .show.style import FIGURES_DIR, ZONE_COLORS, figures_dir, save_figure
from .run.sweep import cross_task_interference, run_sweep
from .judge.nulls import matched_null, null_summary, reference_overlap
from .judge.verdict import VERDICT_COLUMNS, verdict
from .judge.baselines import baseline_claims, baseline_table, chosen_baselines
from .run.baselines import LEAN, STEER_ALPHAS, TEMPERATURES, steering_summary

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
    "Batch", "prompt_convention", "prompt_tokens", "encode_prompts",
    "hook_name", "run_and_capture", "last_token_activations", "scores_from_activations", "neuron_scores",
    "rank_neurons", "top_neurons", "random_neurons",
    "Intervention", "amplify",
    "next_token_logits", "target_probs", "kl_divergence", "improvement_pct", "Outcome", "Baseline", "baseline_of",
    "outcome_of", "measure",
    "ZONE_LOW", "ZONE_HIGH", "ZONE_NAMES", "zone_of",
    # standins
    "STANDINS", "build_random_hf_model", "model_note",
    # revisions, provenance and the report
    "PINNED_REVISIONS", "model_revision", "collect_provenance", "write_provenance", "read_provenance", "build_report",
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
    # the field's baselines (a steering vector, a temperature) and the lean sweep
    "STEER_ALPHAS", "TEMPERATURES", "LEAN", "steering_summary", "baseline_table", "chosen_baselines",
    "baseline_claims",
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
    # the modules and subpackages (each subpackage's modules: su.run.engine, su.judge.verdict, ...)
    "core", "errors", "sst2", "run", "judge", "show",
]

SUBPACKAGES = (run, judge, show)
for _package in SUBPACKAGES:  # every module, so that su.run.engine etc. resolve after `import sna_utils`
    for _module in _package.MODULES:
        importlib.import_module(f"{_package.__name__}.{_module}")

# Modules of the flat layout (kit 0.1.0 to the layout of issue 22): sna_utils.<module> -> its new home.
MOVED_MODULES = {m: f"{p.__name__.rpartition('.')[2]}.{m}" for p in SUBPACKAGES for m in p.MODULES}

# Names that were public at the top level before the kit became a package: where they live now.
MOVED = {
    **dict.fromkeys(["BlockWeights", "EngineWeights", "LengthGroup", "LayerState", "layer_state", "Config",
                     "engine_logits", "base_logits"], "run.engine"),
    **dict.fromkeys(["block_flops"], "run.flops"),
    **dict.fromkeys(["KEY_COLUMNS", "SweepSettings", "data_fingerprint"], "run.store"),
    **dict.fromkeys(["Profile", "PROFILES", "TABLE_MAKERS"], "run.profiles"),
    **dict.fromkeys(["SST2_FILES", "SST2_HUB_ID", "check_sst2_setup", "sst2_neurons"], "sst2"),
    **dict.fromkeys(["is_random_model"], "run.standins"),
    **dict.fromkeys(["GPT2_TOKENIZER_HUB_ID"], "core"),
    **dict.fromkeys(["PLOT_STYLE", "GOLDEN_COLOR", "CONTROL_COLOR", "ACCENT_COLOR", "MODEL_MARKERS", "MODEL_HATCHES",
                     "IMPROVEMENT_CMAP", "set_plot_style"], "show.style"),
}


def _warn_moved(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old path will be removed.", DeprecationWarning, stacklevel=3)


def __getattr__(name: str):
    """Resolve a module or name of an earlier layout, with a DeprecationWarning naming its new home."""
    if name in MOVED_MODULES:
        _warn_moved(f"su.{name}", f"su.{MOVED_MODULES[name]}")
        return importlib.import_module(f"{__name__}.{MOVED_MODULES[name]}")
    if name in MOVED:
        _warn_moved(f"su.{name}", f"su.{MOVED[name]}.{name}")
        return getattr(importlib.import_module(f"{__name__}.{MOVED[name]}"), name)
    raise AttributeError(f"module 'sna_utils' has no attribute {name!r}")


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import sna_utils.verdict`` (a flat-layout path) gives ``sna_utils.judge.verdict``, with a warning."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package == __name__ and name in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = f"{__name__}.{MOVED_MODULES[spec.name.rpartition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new}; the old path will be removed.", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module):
        """Nothing to run (the module is the one at its new home); give it back the spec of that home, which
        the import system replaced with the old path's."""
        module.__spec__ = importlib.util.spec_from_file_location(module.__name__, module.__file__)


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
