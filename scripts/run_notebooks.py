#!/usr/bin/env python
"""Run the notebook series in order with papermill, or keep the committed notebooks clean.

    python scripts/run_notebooks.py --profile smoke        # all of notebooks/0*.ipynb, executed copies in runs/smoke/
    python scripts/run_notebooks.py --profile paper --only 03,06
    python scripts/run_notebooks.py --report --profile smoke   # only (re)build runs/smoke/report.html and .md
    python scripts/run_notebooks.py --strip                # remove outputs and execution counts from notebooks/
    python scripts/run_notebooks.py --check-clean          # exit 1 if a committed notebook carries outputs
                                                           # or lacks the current Colab cells
    python scripts/run_notebooks.py --kit-cells            # insert/refresh the Colab badge + install cells

Tables go to results/<profile>/ (or $SNA_RESULTS_DIR/<profile>), figures to figures/<profile>/ (or
$SNA_FIGURES_DIR/<profile>);
--results-dir and --figures-dir set those variables for the run.

Before anything runs, a pre-flight (sna_utils.run.preflight) prints the device, the models to download and the
estimated time of the chosen notebooks on this machine; the `paper` profile on a CPU-only machine stops there
unless $SNA_PAPER_ON_CPU=1. The run writes its provenance (results/<profile>/provenance.json: versions, git commit,
device, data hashes, revisions, start and end) and ends by building the report, runs/<profile>/report.html (one
self-contained page: verdict, figures, provenance) and report.md, and printing their paths. Runs are quiet (no kernel log lines, no dependency deprecation warnings);
$SNA_VERBOSE=1 shows them and streams the cells' output.

The notebooks name Jupyter's standard kernel, `python3`, so that they open in any Jupyter; here that kernel is always
the Python running this script (the kit's .venv under `make run`), whatever kernel of that name $JUPYTER_PATH, the
user or another environment has registered (:func:`kernel_manager_class`).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_cells import add_kit_cells, kit_cell_problems  # noqa: E402  (the Colab badge and install cells)

KIT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = KIT_ROOT / "notebooks"
PROFILES = ("local", "smoke", "quick", "paper")  # sna_utils.run.profiles.PROFILES (tests/test_profiles.py)
KERNEL = "python3"
QUIET_KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]  # the kernel's own log: TCP transport warning, ...
QUIET_WARNINGS = "ignore::DeprecationWarning,ignore::FutureWarning,ignore::PendingDeprecationWarning"


def verbose() -> bool:
    """True when $SNA_VERBOSE asks for the kernels' logs, dependency warnings and the cells' output."""
    return os.environ.get("SNA_VERBOSE", "") not in ("", "0")


def quiet_warnings() -> None:
    """Unless verbose (or $PYTHONWARNINGS is set): no dependency deprecation warnings here or in the kernels."""
    if not verbose() and "PYTHONWARNINGS" not in os.environ:
        os.environ["PYTHONWARNINGS"] = QUIET_WARNINGS  # read by the kernels at their start
        for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
            warnings.simplefilter("ignore", category)


def kernel_manager_class() -> type:
    """The kernel manager papermill starts kernels with: its :data:`KERNEL` (`python3`) is this interpreter
    (``sys.executable``, the .venv's), never another one registered under that name (a ``$JUPYTER_PATH`` kernelspec
    comes first otherwise, and a ``--user`` one outside a virtual environment); other names are looked up as usual."""
    from ipykernel.kernelspec import RESOURCES, get_kernel_dict
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpec

    class ThisPythonKernelManager(AsyncKernelManager):
        @property
        def kernel_spec(self) -> KernelSpec | None:
            if self._kernel_spec is None and self.kernel_name == KERNEL:
                self._kernel_spec = KernelSpec(resource_dir=RESOURCES, **get_kernel_dict())  # sys.executable
            return super().kernel_spec

    return ThisPythonKernelManager


class NotebookFailed(RuntimeError):
    """A notebook of the series raised; the message names it and the executed copy to open."""


def notebook_paths(only: str | list[str] | None = None, folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The series ``folder/0*.ipynb`` in order; ``only`` keeps those whose number or name is listed ('01,03')."""
    paths = sorted(folder.glob("0*.ipynb"))
    if not paths:
        raise NotebookFailed(f"No notebooks (0*.ipynb) in {folder}.")
    if not only:
        return paths
    wanted = [w.strip() for w in (only.split(",") if isinstance(only, str) else only) if w.strip()]
    chosen = [p for p in paths if any(p.stem == w or p.stem.split("_")[0] == w.zfill(2) for w in wanted)]
    unknown = [w for w in wanted if not any(p.stem == w or p.stem.split("_")[0] == w.zfill(2) for p in paths)]
    if unknown:
        raise NotebookFailed(f"--only {','.join(unknown)}: no such notebook; the series is "
                             f"{', '.join(p.stem for p in paths)}.")
    return chosen


def run_notebook(path: Path, out_dir: Path, profile: str, parameters: dict | None = None) -> float:
    """Execute one notebook with papermill into ``out_dir``; returns its wall time in seconds."""
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(path), str(out), parameters={"profile": profile, **(parameters or {})},
                            kernel_name=KERNEL, kernel_manager_class=kernel_manager_class(), cwd=str(path.parent),
                            progress_bar=sys.stderr.isatty(),
                            log_output=False, stdout_file=sys.stdout if verbose() else None,
                            stderr_file=sys.stderr if verbose() else None,
                            extra_arguments=[] if verbose() else QUIET_KERNEL_ARGS)
    except pm.PapermillExecutionError as e:
        raise NotebookFailed(f"Notebook {path.stem} failed in profile {profile!r} (cell {e.exec_count}): "
                             f"{e.ename}: {e.evalue}\nOpen the executed copy to see where: {out}") from None
    except Exception as e:  # kernel died, bad notebook file, ...
        raise NotebookFailed(f"Notebook {path.stem} could not run in profile {profile!r}: "
                             f"{type(e).__name__}: {e}\nExecuted copy (if any): {out}") from None
    return time.perf_counter() - start


def _log(message: str) -> None:
    print(message, flush=True)


def preflight(profile: str, paths: list[Path], log=_log) -> None:
    """Print what the run will cost on this machine; raises SNAError (before anything runs) for `paper` on a CPU."""
    from sna_utils.run import preflight as pf

    plan = pf.plan(profile, [p.stem for p in paths])
    for line in plan.lines():
        log(line)
    pf.check_can_start(plan)


def run_series(profile: str, out_dir: Path | None = None, only: str | None = None,
               log=_log, folder: Path = NOTEBOOK_DIR, check: bool = True) -> list[tuple[str, float]]:
    """Run the series in order after the pre-flight (``check``); stops at the first failure (raises NotebookFailed)."""
    if profile not in PROFILES:
        raise NotebookFailed(f"Unknown profile {profile!r}: choose one of {', '.join(PROFILES)}.")
    out_dir = Path(out_dir or KIT_ROOT / "runs" / profile)
    paths = notebook_paths(only, folder)
    from sna_utils.run.profiles import get_profile

    prof = get_profile(profile)
    for path in [p for p in paths if prof.skip_reason(p.stem)]:
        log(f"{path.stem} is left out of profile {profile!r}: {prof.skip_reason(path.stem)}.")
    paths = [p for p in paths if not prof.skip_reason(p.stem)]
    if check:
        preflight(profile, paths, log)
    log(f"Running {len(paths)} notebook(s) in profile {profile!r}; executed copies go to {out_dir}")
    started = record_run(profile)
    times = []
    for i, path in enumerate(paths, 1):
        log(f"[{i}/{len(paths)}] {path.stem} ...")
        seconds = run_notebook(path, out_dir, profile)
        times.append((path.stem, seconds))
        log(f"[{i}/{len(paths)}] {path.stem} done in {seconds:.1f} s")
    log(f"All {len(paths)} notebook(s) ran in {sum(t for _, t in times):.1f} s. "
        f"Tables: {os.environ.get('SNA_RESULTS_DIR') or KIT_ROOT / 'results'}/{profile}/, "
        f"figures: {os.environ.get('SNA_FIGURES_DIR') or KIT_ROOT / 'figures'}/{profile}/")
    print_verdict(profile, log)
    record_run(profile, started, log)
    build_report(profile, out_dir, log)
    return times


def record_run(profile: str, started: str | None = None, log=None) -> str:
    """Write the run's provenance beside its tables (at the start, then again with the end time); its start."""
    from sna_utils import results_dir
    from sna_utils.run.provenance import collect_provenance, now_utc, write_provenance

    started = started or now_utc()
    end = now_utc() if log else None
    path = write_provenance(collect_provenance(profile, started, end, results_dir(profile)), results_dir(profile))
    if log:
        log(f"Provenance: {path}")
    return started


def build_report(profile: str, out_dir: Path | None = None, log=_log) -> bool:
    """Build the report of ``profile`` from its saved results into ``out_dir`` (default runs/<profile>) and print
    where it is; False if there is nothing to report."""
    from sna_utils import SNAError
    from sna_utils.show.report import build_report as build

    try:
        report = build(profile, out_dir=out_dir)
    except SNAError as e:
        log(f"No report: {e}")
        return False
    if report.random_models:
        log(f"(The report is flagged RANDOM WEIGHTS: {', '.join(report.random_models)}.)")
    log(f"Report: {report.html} (opens from disk; Markdown: {report.markdown})")
    return True


def print_verdict(profile: str, log=_log) -> bool:
    """Print the saved verdict table (``results/<profile>/verdict.csv``, written by notebook 06) after one line
    naming its models and the weights each ran with; False if absent."""
    import pandas as pd
    from sna_utils import results_dir
    from sna_utils.judge.verdict import weights_line

    path = results_dir(profile) / "verdict.csv"
    if not path.is_file():
        log(f"No verdict yet ({path} is written by notebook 06).")
        return False
    table = pd.read_csv(path)
    cols = ["claim", "paper", "in_sample", "held_out", "ci_low", "ci_high", "control", "control_b", "null_p", "verdict"]
    with pd.option_context("display.width", 250, "display.max_colwidth", 70, "display.max_rows", 500):
        log(f"\n{weights_line(table)}\nThe verdict ({path}; profile {profile}):\n"
            f"{table[cols].to_string(index=False)}")
    return True


# --- clean committed notebooks ---------------------------------------------

def clean_problems(nb) -> list[str]:
    """What keeps a notebook from being clean: outputs, execution counts, papermill leftovers."""
    problems = []
    if "papermill" in nb.metadata:
        problems.append("notebook metadata has a 'papermill' entry (an executed copy?)")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i} has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i} has execution_count {cell.execution_count}")
        if "injected-parameters" in cell.metadata.get("tags", []):
            problems.append(f"cell {i} is papermill's injected-parameters cell")
        if "papermill" in cell.metadata or "execution" in cell.metadata:
            problems.append(f"cell {i} has execution metadata")
    return problems


def strip_notebook(path: Path) -> bool:
    """Remove outputs, execution counts and execution metadata in place; True if the file changed."""
    import nbformat

    text = path.read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=4)
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    new = nbformat.writes(nb) + "\n"
    if new != text:
        path.write_text(new, encoding="utf-8")
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="local", choices=PROFILES, help="scale of the study (default: local)")
    ap.add_argument("--out", type=Path, help="folder for the executed copies (default: runs/<profile>)")
    ap.add_argument("--only", help="comma-separated notebook numbers or names, e.g. 01,03")
    ap.add_argument("--results-dir", help="sets SNA_RESULTS_DIR (tables go to <dir>/<profile>/)")
    ap.add_argument("--figures-dir", help="sets SNA_FIGURES_DIR (figures go to <dir>/<profile>/)")
    ap.add_argument("--report", action="store_true", help="only build the report from the saved results, then exit")
    ap.add_argument("--strip", action="store_true", help="strip outputs from notebooks/*.ipynb in place, then exit")
    ap.add_argument("--check-clean", action="store_true",
                    help="exit 1 if a committed notebook carries outputs or lacks the current Colab cells")
    ap.add_argument("--kit-cells", action="store_true",
                    help="insert or refresh the Colab badge and install cells of notebooks/*.ipynb, then exit")
    args = ap.parse_args(argv)
    import nbformat

    if args.strip:
        for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
            print(f"{'stripped' if strip_notebook(path) else 'clean   '} {path.relative_to(KIT_ROOT)}")
    if args.kit_cells:
        for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
            print(f"{'updated ' if add_kit_cells(path) else 'current '} {path.relative_to(KIT_ROOT)}")
    if args.strip or args.kit_cells:
        return 0
    if args.check_clean:
        bad = {p: clean_problems(nbformat.read(p, as_version=4)) + kit_cell_problems(p)
               for p in sorted(NOTEBOOK_DIR.glob("*.ipynb"))}
        bad = {p: v for p, v in bad.items() if v}
        for p, v in bad.items():
            print(f"{p.relative_to(KIT_ROOT)}: {'; '.join(v)}")
        if bad:
            print("Committed notebooks must carry no outputs and start with the current Colab cells: run "
                  "`python scripts/run_notebooks.py --strip --kit-cells`.")
            return 1
        print("All committed notebooks are clean.")
        return 0
    for var, value in (("SNA_RESULTS_DIR", args.results_dir), ("SNA_FIGURES_DIR", args.figures_dir)):
        if value:
            os.environ[var] = str(Path(value).resolve())
    quiet_warnings()
    from sna_utils import SNAError

    if args.report:
        return 0 if build_report(args.profile, args.out) else 2
    try:
        run_series(args.profile, args.out, args.only)
    except NotebookFailed as e:
        print(f"\nFAILED. {e}", file=sys.stderr)
        return 1
    except SNAError as e:
        print(f"\nSTOPPED. {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
