"""The package's shape: the public API, names that moved, one-way imports, and modules small enough to read."""
import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import sna_utils as su

PACKAGE = Path(su.__file__).parent

# Every public name of the single-module sna_utils.py (kit 0.1.0): none may disappear silently.
NAMES_BEFORE_THE_PACKAGE = [
    "ACCENT_COLOR", "Baseline", "Batch", "BlockWeights", "CONTROL_COLOR", "Config", "DATA_DIR",
    "EngineWeights", "FIGURES_DIR", "GOLDEN_COLOR", "GPT2_TOKENIZER_HUB_ID", "HUB_MODELS", "IMPROVEMENT_CMAP",
    "Intervention", "Item", "KEY_COLUMNS", "KIT_ROOT", "KIT_VERSION", "LayerState", "LengthGroup",
    "MODEL_HATCHES", "MODEL_MARKERS", "MODEL_NAMES", "ModelUnavailableError", "NeutralSet", "Outcome",
    "PAPER_BEST_LAYERS", "PAPER_KS", "PAPER_MULTIPLIERS", "PAPER_NUMBERS", "PLOT_STYLE", "PROFILES",
    "Positions", "Profile", "SCORE_METHODS", "SNAError", "SST2_FILES", "SST2_HUB_ID", "SST2_LABEL_WORDS",
    "SST2_TEMPLATE", "STANDINS", "SweepSettings", "TABLE_MAKERS", "Task", "ZONE_COLORS", "ZONE_HIGH",
    "ZONE_LOW", "ZONE_NAMES", "amplify", "base_logits", "baseline_of", "best_per_task", "best_shared_config",
    "block_flops", "build_random_hf_model", "check_k", "check_layer", "check_multiplier", "check_neurons",
    "check_positions", "check_prompts", "check_score_method", "check_sst2_setup",
    "confidence_gain_correlation", "control_comparison", "cross_task_interference", "d_mlp",
    "data_fingerprint", "default_device", "discovery_scores", "encode_prompts", "engine_logits",
    "first_available_table", "get_profile", "golden_zone", "golden_zone_summary", "gpt2_tokenizer",
    "grid_flop_floor", "hook_name", "improvement_pct", "interference_summary", "interference_table_name",
    "is_random_model", "kl_divergence", "last_token_activations", "layer_profile", "layer_specialisation",
    "layer_state", "load_model", "load_neutral", "load_sst2", "load_task", "load_tasks", "matmul_rate",
    "measure", "model_device", "model_name", "model_note", "n_layers", "n_layers_of", "neuron_overlap",
    "neuron_scores", "next_token_logits", "notebook_defaults", "outcome_of", "paper_comparison",
    "plot_baseline_zones", "plot_confidence_vs_improvement", "plot_golden_zone", "plot_improvement_vs_k",
    "plot_interference", "plot_layer_multiplier_heatmaps", "plot_layer_specialisation",
    "plot_model_comparison", "plot_neuron_overlap", "plot_score_distributions", "plot_sna_vs_control",
    "plot_sst2_zones", "prompt_pool", "random_neurons", "rank_neurons", "read_table",
    "restrict_to_single_token", "results_dir", "results_table", "run_and_capture", "run_sst2", "run_sweep",
    "safe_name", "save_figure", "score_sst2", "scores_from_activations", "set_plot_style", "split_half",
    "split_neutral", "sst2_neurons", "sst2_prompts", "sst2_zone_report", "sweep_grid", "sweep_table_name",
    "target_probs", "target_token_ids", "target_tokens", "task_baselines", "task_summary", "task_table",
    "top_activating_prompts", "top_neurons", "top_neurons_by_task", "wrap_hf_model", "write_table_atomic",
    "zone_of", "zone_summary", "zones_by_model",
]

# Lower layers first: a module (named by its path in the package) may import only modules of a lower layer.
LAYERS = [
    {"errors"},
    {"run.hub", "run.standins", "run.packaged", "run.cluster", "judge.heldout", "run.decoder", "run.handwritten", "judge.rules", "judge.claims"},
    {"run.families"},
    {"core"},
    {"run.engine", "run.store", "show.explore", "judge.analysis", "judge.stats", "show.style"},
    {"run.flops", "run.baselines", "run.prompt_run", "judge.sst2_heldout", "judge.choices"},
    {"run.sweep", "sst2", "show.plots", "run.profiles", "judge.saturation"},
    {"run.preflight", "judge.nulls", "judge.baselines", "run.provenance"},
    {"judge.verdict"},
    {"show.report"},
]
SUBPACKAGES = ("run", "judge", "show")


def _layer(module: str) -> int:
    return next(i for i, group in enumerate(LAYERS) if module in group)


def _name(path: Path) -> str:
    """A module's dotted name inside the package: 'core', 'run.engine'."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def _package_imports(path: Path) -> set[str]:
    """Dotted names (as in ``LAYERS``) of the package's modules that ``path`` imports with a relative import
    (``from .x import``, ``from ..run.x import``, ``from . import x``, ``from ..run import x``), anywhere in it."""
    here = _name(path).split(".")[:-1]  # the subpackage the module sits in ([] at the top)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[:len(here) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            dotted = ".".join(base)
            if dotted and (PACKAGE / Path(*base)).with_suffix(".py").exists():
                found.add(dotted)
            else:  # from <package> import module, ...
                found |= {".".join([*base, a.name]) for a in node.names}
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def test_every_module_has_a_layer():
    assert {_name(p) for p in _modules()} == set().union(*LAYERS)


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_each_subpackage_indexes_its_modules(package):
    """A subpackage's ``MODULES`` (its reading order) lists exactly its files, and its docstring names each."""
    sub = getattr(su, package)
    files = {p.stem for p in (PACKAGE / package).glob("*.py") if p.name != "__init__.py"}
    assert set(sub.MODULES) == files and len(sub.MODULES) == len(files)
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
    positions = [doc.index(f"``{m}``") for m in sub.MODULES]
    assert positions == sorted(positions), f"{package}'s docstring lists its modules out of MODULES' order"


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_imports_run_one_way(path):
    """No module imports one at its own layer or above, so there can be no import cycle."""
    imported = _package_imports(path)
    unknown = [m for m in imported if not any(m in g for g in LAYERS) and m not in SUBPACKAGES]
    assert not unknown, f"{_name(path)} imports {unknown}, which are not modules of the package"
    assert not [m for m in imported if m in SUBPACKAGES], f"{_name(path)} imports a whole subpackage"
    upward = [m for m in imported if _layer(m) >= _layer(_name(path))]
    assert not upward, f"{_name(path)} imports {upward}, which are not below it"


def test_the_import_check_sees_every_form():
    """The layer check reads ``from .x``, ``from ..run.x`` and ``from ..run import x`` alike."""
    found = _package_imports(PACKAGE / "judge" / "verdict.py")
    assert {"core", "errors", "judge.stats", "judge.rules"} <= found
    assert "run.engine" in _package_imports(PACKAGE / "run" / "flops.py")
    assert "run.decoder" in _package_imports(PACKAGE / "run" / "engine.py")  # `from . import decoder`


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_modules_are_small_and_say_what_they_hold(path):
    limit = 700 if _name(path) == "core" else 500
    n = len(path.read_text().splitlines())
    assert n <= limit, f"{path.name} has {n} lines (limit {limit}): split it by concern"
    assert ast.get_docstring(ast.parse(path.read_text())), f"{path.name} has no module docstring"


def test_each_module_imports_alone():
    """Every module imports on its own in a fresh interpreter (no hidden reliance on import order)."""
    for path in _modules():
        res = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c",
                              f"import sna_utils.{_name(path)}"], capture_output=True, text=True)
        assert res.returncode == 0, f"sna_utils.{_name(path)}: {res.stderr[-500:]}"


# su.__all__ of the flat layout (before issue 22): every name still resolves (a module with a warning).
ALL_BEFORE_THE_LAYOUT = [
    "core", "engine", "flops", "store", "sweep", "cluster", "explore", "heldout", "choices", "saturation", "nulls",
    "rules", "analysis", "stats", "sst2", "sst2_heldout", "profiles", "preflight", "style", "plots", "standins", "hub",
    "errors",
]


def test_old_module_names_resolve_and_warn():
    for name in ALL_BEFORE_THE_LAYOUT:
        if name in ("core", "errors", "sst2"):
            assert getattr(su, name).__name__ == f"sna_utils.{name}"
            continue
        home = su.MOVED_MODULES[name]
        with pytest.warns(DeprecationWarning, match=f"su.{name} moved to su.{home}"):
            module = getattr(su, name)
        assert module.__name__ == f"sna_utils.{home}"


@pytest.mark.parametrize("name", ["verdict", "stats", "engine", "plots"])
def test_old_module_paths_import_and_warn(name):
    """``import sna_utils.<module>`` of the flat layout gives the module at its new home, with a warning."""
    code = (f"import warnings; warnings.simplefilter('error')\n"
            f"try:\n    import sna_utils.{name}\nexcept DeprecationWarning as e:\n    print(e)\n"
            f"warnings.simplefilter('ignore')\nimport sna_utils.{name} as m, sna_utils as su\n"
            f"assert m is su.{su.MOVED_MODULES[name]}, m\n"
            f"assert m.__spec__.name == m.__name__ == 'sna_utils.{su.MOVED_MODULES[name]}'\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-800:]
    assert f"sna_utils.{name} moved to sna_utils.{su.MOVED_MODULES[name]}" in res.stdout


def test_public_api_resolves():
    assert len(su.__all__) == len(set(su.__all__))
    missing = [n for n in su.__all__ if not hasattr(su, n)]
    assert not missing


def test_no_name_disappeared():
    for name in NAMES_BEFORE_THE_PACKAGE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            assert getattr(su, name) is not None, name
        assert name in su.__all__ or name in su.MOVED, f"{name} is neither public nor listed as moved"


@pytest.mark.parametrize("name", sorted(su.MOVED))
def test_moved_names_warn_and_point_home(name):
    with pytest.warns(DeprecationWarning, match=f"su.{su.MOVED[name]}.{name}"):
        value = getattr(su, name)
    assert value is getattr(importlib.import_module(f"sna_utils.{su.MOVED[name]}"), name)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        su.no_such_thing
