"""The notebook series: clean committed notebooks, a papermill run of the whole series in the smoke profile,
and clear failures. The executed copies of the series run are what `make test` then hands to nbval.

The series run goes to $SNA_TEST_RUN_DIR when set (the Makefile sets runs/test-smoke, for nbval), else to a
temporary folder; tables and figures go under that folder, never into the kit's results/ or figures/.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import sna_utils as su

KIT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = KIT_ROOT / "notebooks"
SERIES = ["01_gpt2_small_validation", "02_neuron_discovery", "03_gpt2_medium_sweep", "04_sst2_zone_analysis",
          "05_pythia_160m", "06_figures", "07_beyond_gpt2"]
SMOKE_FIGURES = [
    "01_baseline_zones", "01_sna_vs_control", "01_layer_profile", "02_score_distributions", "02_neuron_overlap",
    "03_layer_specialisation_tiny", "03_interference_tiny", "04_sst2_confidence_bands",
    "fig3_confidence_vs_improvement", "fig4_sst2_zones", "layer_multiplier_heatmaps_tiny", "improvement_vs_k",
    "golden_zone_map", "05_pythia_vs_gpt2", "07_baseline_zones", "07_sna_vs_control", "07_confidence_vs_improvement",
    "07_beyond_vs_gpt2",
]
SMOKE_TABLES = ["validation.parquet", "sweep_tiny.parquet", "interference_tiny.parquet", "sst2_examples.parquet",
                "sst2_grid.parquet", "sst2_claims.parquet", "pythia.parquet", "paper_comparison.csv",
                "beyond_tiny-qwen2.parquet"]


def _runner():
    spec = importlib.util.spec_from_file_location("run_notebooks", KIT_ROOT / "scripts" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rn = _runner()


def _committed():
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


# --- (1) the committed notebooks ---------------------------------------------------

def test_series_is_numbered_in_order():
    assert [p.stem for p in _committed()] == SERIES
    assert [p.stem for p in rn.notebook_paths()] == SERIES


@pytest.mark.parametrize("path", _committed(), ids=lambda p: p.stem)
def test_committed_notebook_is_clean_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert rn.clean_problems(nb) == [], "run `python scripts/run_notebooks.py --strip`"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    title = nb.cells[2]  # after the Colab badge and install cells (tests/test_setup.py)
    assert title.cell_type == "markdown" and title.source.startswith(f"# {path.stem[:2]} ")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    params = tagged[0].source
    for name in ("profile", "model_name", "results_root", "figures_dir"):
        assert f"\n{name} = " in params, name
    assert 'os.environ.get("SNA_PROFILE"' in params and 'os.environ.get("SNA_RESULTS_DIR"' in params
    assert any("# NBVAL_CHECK_OUTPUT" in c.source for c in nb.cells if c.cell_type == "code")
    for i, cell in enumerate(nb.cells):  # prose before every code cell: what it shows and why
        if cell.cell_type == "code":
            assert nb.cells[i - 1].cell_type == "markdown", f"cell {i} has no markdown before it"
    assert "import sna_utils as su" in "\n".join(c.source for c in nb.cells if c.cell_type == "code")


OWN_MODEL_VARIABLE = {"05_pythia_160m": "SNA_PYTHIA_MODEL", "07_beyond_gpt2": "SNA_BEYOND_MODEL"}


def test_model_override_from_environment():
    """`SNA_MODEL=... make run` sets every notebook's model; the Pythia and the beyond-GPT-2 notebooks have their
    own variables, so one override never makes a GPT-2 model stand in for Pythia or a modern model."""
    for path in _committed():
        nb = nbformat.read(path, as_version=4)
        params = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        var = OWN_MODEL_VARIABLE.get(path.stem, "SNA_MODEL")
        assert f'\nmodel_name = os.environ.get("{var}", "")' in params, path.stem


def test_figures_notebook_reads_only_tables_of_earlier_notebooks():
    """06_figures ran last until 07 came: it may run before 07 only because it reads no table that 07 (or any
    later notebook) writes, so a first run's comparison still has every row."""
    source = "\n".join(c.source for c in nbformat.read(NOTEBOOK_DIR / "06_figures.ipynb", as_version=4).cells
                       if c.cell_type == "code")
    by_function = {"sweep_": "sweep_table_name(", "interference_": "interference_table_name(",
                   "beyond_": "beyond_table_name("}
    read = {key: maker for key, maker in su.run.profiles.TABLE_MAKERS.items() if by_function.get(key, key) in source}
    assert {"sweep_", "sst2_examples.parquet", "pythia.parquet"} <= set(read)
    assert all(maker < "06" for maker in read.values() if not maker.startswith("06")), read  # 06 writes verdict.csv


def test_strip_and_clean_check(tmp_path):
    nb = nbformat.read(NOTEBOOK_DIR / "06_figures.ipynb", as_version=4)
    dirty = tmp_path / "dirty.ipynb"
    nb.metadata["papermill"] = {"parameters": {}}
    nb.cells.insert(1, nbformat.v4.new_code_cell('profile = "smoke"', metadata={"tags": ["injected-parameters"]}))
    code = next(c for c in nb.cells if c.cell_type == "code" and "injected" not in str(c.metadata))
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="0.123\n")]
    code.execution_count = 3
    code.metadata["papermill"] = {"duration": 1.0}
    nbformat.write(nb, dirty)
    problems = rn.clean_problems(nbformat.read(dirty, as_version=4))
    assert any("outputs" in p for p in problems) and any("execution_count" in p for p in problems)
    assert rn.strip_notebook(dirty) is True
    assert rn.clean_problems(nbformat.read(dirty, as_version=4)) == []
    assert rn.strip_notebook(dirty) is False  # idempotent
    assert dirty.read_text() == (NOTEBOOK_DIR / "06_figures.ipynb").read_text()


def _other_python3_kernel(tmp_path: Path, monkeypatch) -> Path:
    """Register, first on $JUPYTER_PATH, a `python3` kernel that is some other interpreter (here: none at all), as
    a Jupyter set up outside the kit may; returns that interpreter's path."""
    other = tmp_path / "elsewhere" / "bin" / "python3"
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps(dict(argv=[str(other), "-m", "ipykernel_launcher", "-f",
                                                            "{connection_file}"],
                                                      display_name="Python 3 (elsewhere)", language="python")))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return other


def test_the_python3_kernel_is_this_python(tmp_path, monkeypatch):
    """The notebooks name the standard `python3` kernel; the runner starts it as this interpreter (the .venv's under
    `make run`), even where another `python3` kernel is registered first."""
    from jupyter_client import AsyncKernelManager

    other = _other_python3_kernel(tmp_path, monkeypatch)
    assert AsyncKernelManager(kernel_name="python3").format_kernel_cmd()[0] == str(other)  # what Jupyter picks
    cmd = rn.kernel_manager_class()(kernel_name=rn.KERNEL).format_kernel_cmd()
    assert rn.KERNEL == "python3" and cmd[:3] == [sys.executable, "-m", "ipykernel_launcher"]


@pytest.mark.notebooks
def test_a_notebook_runs_on_this_python(tmp_path, monkeypatch):
    """One small notebook run by the runner, with another `python3` kernel registered first: its kernel is this
    interpreter."""
    _other_python3_kernel(tmp_path, monkeypatch)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("profile = 'paper'",
                                                                   metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell("import sys\nprint(sys.executable)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "01_which.ipynb")
    rn.run_notebook(tmp_path / "01_which.ipynb", tmp_path / "out", "smoke")
    ran = nbformat.read(tmp_path / "out" / "01_which.ipynb", as_version=4)
    assert ran.cells[-1].outputs[0].text.strip() == sys.executable


def test_only_selects_and_rejects():
    assert [p.stem for p in rn.notebook_paths("01,5")] == [SERIES[0], SERIES[4]]
    assert [p.stem for p in rn.notebook_paths(["05_pythia_160m"])] == [SERIES[4]]
    with pytest.raises(rn.NotebookFailed, match="--only 09: no such notebook"):
        rn.notebook_paths("01,09")
    with pytest.raises(rn.NotebookFailed, match="Unknown profile"):
        rn.run_series("huge")


def test_paper_on_a_cpu_stops_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SNA_DEVICE", "cpu")
    monkeypatch.delenv("SNA_PAPER_ON_CPU", raising=False)
    monkeypatch.setenv("PYTHONWARNINGS", "default")  # keep main() from changing this process's environment
    assert rn.main(["--profile", "paper", "--out", str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert "Pre-flight, profile 'paper'" in out and "device    cpu" in out and "estimate" in out
    assert "gpt2-medium (openai-community/gpt2-medium)" in out
    assert "STOPPED." in err and "PROFILE=quick" in err and "SNA_PAPER_ON_CPU=1" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.notebooks
def test_failure_names_notebook_and_executed_copy(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    for name, source in [("01_ok", "x = 1"), ("02_fails", 'raise ValueError("boom")'), ("03_never", "y = 2")]:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("profile = 'paper'",
                                                                       metadata={"tags": ["parameters"]}),
                                             nbformat.v4.new_code_cell(source)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / f"{name}.ipynb")
    lines = []
    with pytest.raises(rn.NotebookFailed) as info:
        rn.run_series("smoke", tmp_path / "out", folder=folder, log=lines.append)
    message = str(info.value)
    assert "Notebook 02_fails failed" in message and "ValueError: boom" in message
    assert str(tmp_path / "out" / "02_fails.ipynb") in message
    assert (tmp_path / "out" / "02_fails.ipynb").is_file() and not (tmp_path / "out" / "03_never.ipynb").exists()
    assert any(line.startswith("[1/3] 01_ok done in") for line in lines)


# --- (2) the whole series in the smoke profile -----------------------------------------

@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """Run scripts/run_notebooks.py --profile smoke once; returns (run dir, completed process)."""
    run_dir = Path(os.environ.get("SNA_TEST_RUN_DIR") or tmp_path_factory.mktemp("smoke-run")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    for old in run_dir.glob("*.ipynb"):
        old.unlink()
    for sub in ("results", "figures"):
        shutil.rmtree(run_dir / sub, ignore_errors=True)
    env = {**os.environ, "SNA_RESULTS_DIR": str(run_dir / "results"), "SNA_FIGURES_DIR": str(run_dir / "figures")}
    proc = subprocess.run([sys.executable, str(KIT_ROOT / "scripts" / "run_notebooks.py"), "--profile", "smoke",
                           "--out", str(run_dir)], env=env, cwd=KIT_ROOT, capture_output=True, text=True,
                          timeout=1800)
    return run_dir, proc


@pytest.mark.notebooks
def test_smoke_series_runs(smoke_run):
    run_dir, proc = smoke_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for i, name in enumerate(SERIES, 1):
        assert f"[{i}/{len(SERIES)}] {name} done in" in proc.stdout
    for name in SERIES:
        nb = nbformat.read(run_dir / f"{name}.ipynb", as_version=4)
        assert nb.metadata["papermill"]["parameters"]["profile"] == "smoke"
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert outputs and not [o for o in outputs if o.output_type == "error"], name
    text = (run_dir / "01_gpt2_small_validation.ipynb").read_text()
    assert "RANDOM WEIGHTS" in text  # the smoke numbers say which model made them


@pytest.mark.notebooks
def test_smoke_series_output_is_quiet(smoke_run):
    """Progress and results only: no kernel log lines (TCP transport warning), no dependency warnings."""
    _, proc = smoke_run
    output = proc.stdout + proc.stderr
    assert "Pre-flight, profile 'smoke'" in proc.stdout and "models    none to download" in proc.stdout
    noisy = [line for line in output.splitlines() if "WARNING" in line or "Warning" in line or "[IPKernelApp]" in line]
    assert not noisy, noisy


@pytest.mark.notebooks
def test_smoke_series_writes_every_figure_and_table(smoke_run):
    run_dir, proc = smoke_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in SMOKE_FIGURES:
        for ext in ("png", "pdf"):
            path = run_dir / "figures" / "smoke" / f"{name}.{ext}"  # figures/<profile>/, like results/
            assert path.is_file() and path.stat().st_size > 1000, path
    import pandas as pd

    for name in SMOKE_TABLES:
        path = run_dir / "results" / "smoke" / name
        assert path.exists(), path
        table = su.read_table(path)
        assert "model" in table.columns and len(table), name
    sweep_dir = run_dir / "results" / "smoke" / "sweep_tiny.parquet"
    assert len(su.run.store.unit_files(sweep_dir)) == 12 * 3  # one file per (task, layer)
    sweep = pd.read_parquet(sweep_dir)
    assert len(sweep) == 12 * 3 * 2 * 2 and set(sweep["model"]) == {"tiny"}
    assert set(pd.read_parquet(run_dir / "results" / "smoke" / "pythia.parquet")["model"]) == {"tiny-pythia"}
    beyond = pd.read_parquet(run_dir / "results" / "smoke" / "beyond_tiny-qwen2.parquet")
    assert set(beyond["model"]) == {"tiny-qwen2"} and len(beyond) == 12 * 3 * 2 * 2  # the Qwen2 family's stand-in
    assert "GPT-2 side from sweep_tiny.parquet" in (run_dir / "07_beyond_gpt2.ipynb").read_text()
    assert not list((run_dir / "figures").glob("*.png")), "figures belong in figures/<profile>/"


# Every claim of the paper comparison (sna_utils.judge.analysis.paper_comparison), by its opening words.
COMPARISON_CLAIMS = ["configurations in the grid", "Spearman rho", "Spearman p-value", "Zone 1 mean improvement",
                     "Zone 1 best configuration", "Zone 3 best improvement",
                     *[f"best layer: {category}" for category in su.PAPER_BEST_LAYERS],
                     "SST-2 accuracy change, Zone 1", "SST-2 accuracy change, Zone 3",
                     "Pythia Zone 1 mean improvement"]


@pytest.mark.notebooks
def test_first_run_comparison_has_every_row(smoke_run):
    """The figures-and-comparison notebook runs last, so the first run's comparison has Pythia's row too."""
    import pandas as pd

    run_dir, proc = smoke_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.index("05_pythia_160m done") < proc.stdout.index("06_figures done")
    comparison = pd.read_csv(run_dir / "results" / "smoke" / "paper_comparison.csv")
    for claim in COMPARISON_CLAIMS:
        rows = comparison[comparison["claim"].str.startswith(claim)]
        assert len(rows), f"no row {claim!r} in the first run's comparison"
    pythia = comparison[comparison["claim"].str.startswith("Pythia")]
    assert set(pythia["model"]) == {"tiny-pythia"} and pythia["this_run"].notna().all()
    assert pythia["paper"].tolist() == [su.PAPER_NUMBERS["pythia_zone1_mean_improvement_pct"]]  # as published
    assert "Missing results table" not in (run_dir / "06_figures.ipynb").read_text()


# --- (3) notebook 06 fails clearly without its tables --------------------------------------

@pytest.mark.notebooks
@pytest.mark.parametrize("keep,missing,maker", [
    ([], "sweep_tiny.parquet", "03_gpt2_medium_sweep"),
    (["sweep_tiny.parquet"], "sst2_examples.parquet", "04_sst2_zone_analysis"),
])
def test_figures_notebook_names_missing_table(smoke_run, tmp_path, monkeypatch, keep, missing, maker):
    run_dir, _ = smoke_run
    (tmp_path / "results" / "smoke").mkdir(parents=True)
    for name in keep:  # a sweep table is a folder of unit files
        shutil.copytree(run_dir / "results" / "smoke" / name, tmp_path / "results" / "smoke" / name)
    monkeypatch.setenv("SNA_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("SNA_FIGURES_DIR", str(tmp_path / "figures"))
    with pytest.raises(rn.NotebookFailed) as info:
        rn.run_notebook(NOTEBOOK_DIR / "06_figures.ipynb", tmp_path / "out", "smoke")
    message = str(info.value)
    assert "Notebook 06_figures failed" in message and "SNAError: Missing results table" in message
    assert missing in message and f"written by notebook {maker}" in message


@pytest.mark.notebooks
def test_smoke_run_ends_with_the_verdict(smoke_run):
    """Notebook 03 saves the matched null, notebook 06 the verdict, and run_notebooks prints it last."""
    import pandas as pd

    run_dir, proc = smoke_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = run_dir / "results" / "smoke"
    for kind in ("draws", "other_tasks", "push"):
        assert su.read_table(results / su.null_table_name("tiny", kind))["model"].eq("tiny").all()
    verdict = pd.read_csv(results / "verdict.csv")
    assert list(verdict.columns) == su.judge.rules.VERDICT_TABLE_COLUMNS and (verdict["profile"] == "smoke").all()
    assert verdict["claim"].str.startswith("SNA beats the random control on").sum() == 12
    assert set(verdict["weights"]) == {"random weights, seed 0"}
    assert proc.stdout.index("06_figures done") < proc.stdout.index("The verdict (")
    assert "\nModels and weights: tiny (random weights, seed 0)\nThe verdict (" in proc.stdout


@pytest.mark.notebooks
def test_smoke_run_ends_with_the_report(smoke_run, tmp_path):
    """The run's last line is the report's path; the report of the real smoke run renders in headless Chromium
    with every section, its figures and the RANDOM WEIGHTS banner, and makes no request; provenance is recorded."""
    from test_report import check_report_in_browser

    run_dir, proc = smoke_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == (f"Report: {run_dir / 'report.html'} (opens from disk; "
                                                    f"Markdown: {run_dir / 'report.md'})")
    record = su.read_provenance(run_dir / "results" / "smoke")
    assert record["profile"] == "smoke" and record["started"] <= record["ended"]
    assert {t["model"] for t in record["tables"]} == {"tiny", "tiny-pythia", "tiny-qwen2"}
    assert {t["revision"] for t in record["tables"]} == {"random weights, seed 0"}
    state = check_report_in_browser(run_dir / "report.html", tmp_path)
    assert state["banner"] and len(state["images"]) >= 5
    assert "SNA beats the random control on addition" in state["text"]
