"""The reproduction report: one self-contained HTML page (and a Markdown twin) from a run's saved results.

:func:`build_report` reads what ``make run`` saved, recomputing nothing of the study: the verdict table
(``verdict.csv``, notebook 06; every row it holds, whatever claims it has), the paper comparison
(``paper_comparison.csv``), the per-task summary of each saved sweep table, the key figures (PNG files,
embedded as data URIs) and the provenance record (``provenance.json``). It writes ``report.html`` (no
network request: every image is inline and a Content-Security-Policy forbids anything else) and
``report.md`` to ``runs/<profile>/``. A red banner tops both whenever a number comes from random weights; when
none does and the models include packaged ones (``run.packaged``), a banner says the weights are real pretrained
ones, quantized GGUF dequantized to float32, and the provenance section lists each one's package, file, SHA-256,
quantization and licence. The pages are Jinja2 templates in ``templates/``. Imports ``core``, ``errors``,
``run.standins``, ``run.packaged``, ``run.store``, ``run.profiles``, ``run.provenance``, ``judge.rules``,
``judge.analysis`` and ``show.style``.
"""

from __future__ import annotations

import base64
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import SNAError
from ..judge.analysis import task_summary
from ..judge.rules import VERDICT_COLUMNS
from ..core import KIT_ROOT
from ..run.profiles import results_dir
from ..run.packaged import DEQUANTIZED, PACKAGED_MODELS
from ..run.provenance import models_and_revisions, read_provenance
from ..run.standins import RANDOM_FLAG, is_random_model
from ..run.store import read_table, write_text_atomic
from .style import figures_dir

TEMPLATES = Path(__file__).with_name("templates")
KEY_FIGURES = ("fig3_confidence_vs_improvement", "fig4_sst2_zones", "golden_zone_map", "improvement_vs_k",
               "layer_multiplier_heatmaps_", "01_sna_vs_control", "07_confidence_vs_improvement")
TASK_COLUMNS = ["model", "task", "category", "p_base", "zone", "best_improvement_pct", "best_layer", "best_k",
                "best_multiplier", "gain_over_control_pct", "mean_improvement_pct"]
TASK_TABLES = ("sweep_", "pythia.parquet", "beyond_")  # notebook 01's validation grid repeats GPT-2 Small: left out
SECTIONS = ("verdict", "tasks", "figures", "provenance")  # the id of each section of the HTML page
REAL_WEIGHTS = f"real pretrained weights (quantized GGUF, {DEQUANTIZED})"  # the banner of packaged models
PACKAGED_COLUMNS = ["model", "hub_id", "package", "version", "installed", "file", "size", "sha256", "quantization",
                    "weights", "licence", "notice"]


@dataclass(frozen=True)
class Report:
    """The two files :func:`build_report` wrote, whether any of its numbers come from random weights, and the
    packaged pretrained models (quantized GGUF) they come from."""

    html: Path
    markdown: Path
    random_models: tuple[str, ...]
    packaged_models: tuple[str, ...] = ()


def report_dir(profile: str) -> Path:
    """Where a profile's report goes by default: ``runs/<profile>/``, beside the executed notebooks."""
    results_dir(profile)  # checks the profile name
    return KIT_ROOT / "runs" / profile


def cell(value) -> str:
    """One table cell as text: whole numbers as they are (24192), other floats to 4 significant digits, NaN and
    None as empty."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    return str(value)


def table_rows(table: pd.DataFrame | None, first: list[str]) -> tuple[list[str], list[list[str]]]:
    """(header, rows as text) of ``table``: the ``first`` columns it has, in that order, then every other one."""
    if table is None or table.empty:
        return [], []
    columns = [c for c in first if c in table.columns] + [c for c in table.columns if c not in first]
    return columns, [[cell(v) for v in row] for row in table[columns].itertuples(index=False)]


def read_csv_if_present(path: Path) -> pd.DataFrame | None:
    """A saved CSV table, or None when the run has not written it."""
    return pd.read_csv(path) if path.is_file() else None


def task_table(results: Path) -> pd.DataFrame | None:
    """The per-task summary (best and mean improvement, zone, best configuration) of every saved sweep table."""
    tables = [read_table(p) for p in sorted(results.iterdir())
              if p.name.startswith(TASK_TABLES) and p.suffix in (".parquet", ".csv")]
    tables = [t for t in tables if len(t) and "improvement_pct" in t]
    return pd.concat([task_summary(t) for t in tables], ignore_index=True) if tables else None


def figure_files(figures: Path) -> list[Path]:
    """The key figures' PNG files present in ``figures``, in :data:`KEY_FIGURES` order (a name ending in '_' is a
    prefix: one figure per model)."""
    pngs = sorted(figures.glob("*.png")) if figures.is_dir() else []
    chosen = []
    for key in KEY_FIGURES:
        chosen += [p for p in pngs if (p.stem.startswith(key) if key.endswith("_") else p.stem == key)]
    return list(dict.fromkeys(chosen))


def data_uri(path: Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def random_models(*tables: pd.DataFrame | None) -> tuple[str, ...]:
    """The offline stand-ins (random weights) among the ``model`` values of ``tables``, or whose recorded
    ``revision`` says random weights."""
    found = set()
    for t in tables:
        if t is None or t.empty or "model" not in t:
            continue
        found |= {str(m) for m in t["model"].dropna() if is_random_model(str(m))}
        if "revision" in t:
            found |= {str(m) for m, r in zip(t["model"], t["revision"]) if str(r).startswith("random weights")}
    return tuple(sorted(found))


def packaged_models(*tables: pd.DataFrame | None) -> tuple[str, ...]:
    """The packaged pretrained models (``run.packaged``) among the ``model`` values of ``tables``, or whose
    recorded ``revision`` says dequantized GGUF."""
    found = set()
    for t in tables:
        if t is None or t.empty or "model" not in t:
            continue
        found |= {str(m) for m in t["model"].dropna() if str(m) in PACKAGED_MODELS}
        if "revision" in t:
            found |= {str(m) for m, r in zip(t["model"], t["revision"]) if DEQUANTIZED in str(r)}
    return tuple(sorted(found))


def packaged_table(record: dict | None) -> pd.DataFrame | None:
    """One row per packaged model of a provenance record (its ``packaged_models``), or None."""
    rows = list(((record or {}).get("packaged_models") or {}).values())
    rows = [{k: ", ".join(map(str, v)) if isinstance(v, list) else v for k, v in r.items()} for r in rows]
    return pd.DataFrame(rows) if rows else None


def provenance_items(record: dict | None) -> list[tuple[str, str]]:
    """The provenance record as (label, text) pairs for the page (nested values flattened as 'a: b; c: d')."""
    if not record:
        return []
    def text(v) -> str:
        if isinstance(v, dict):
            return "; ".join(f"{k}: {text(x)}" for k, x in v.items())
        if isinstance(v, list):
            return f"{len(v)} entries (below)" if v and isinstance(v[0], dict) else ", ".join(map(str, v))
        return cell(v) if v is not None else "not recorded"
    return [(k.replace("_", " "), text(v)) for k, v in record.items() if k not in ("tables", "packaged_models")]


def report_context(profile: str, results: Path, figures: Path) -> dict:
    """Everything the templates show, read from the saved results of ``profile``."""
    verdict = read_csv_if_present(results / "verdict.csv")
    comparison = read_csv_if_present(results / "paper_comparison.csv")
    tasks = task_table(results)
    record = read_provenance(results)
    models = models_and_revisions(record)
    figs = figure_files(figures)
    packaged = packaged_table(record)
    return dict(
        profile=profile, results=str(results), figures_dir=str(figures), flag=RANDOM_FLAG,
        random_models=random_models(verdict, tasks, models), real_weights=REAL_WEIGHTS,
        packaged_models=packaged_models(verdict, tasks, models, packaged),
        packaged=table_rows(packaged, PACKAGED_COLUMNS),
        verdict=table_rows(verdict, VERDICT_COLUMNS),
        comparison=table_rows(comparison, []),
        tasks=table_rows(tasks, TASK_COLUMNS),
        figures=[dict(name=p.stem, file=p.name, uri=data_uri(p)) for p in figs],
        provenance=provenance_items(record), models=table_rows(models, []),
        data_files=sorted((record or {}).get("data_sha256", {}).items()),
    )


def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html.j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["md"] = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    return env


def build_report(profile: str, results_root: str | os.PathLike | None = None,
                 figures_root: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None) -> Report:
    """Write ``report.html`` and ``report.md`` of ``profile`` into ``out_dir`` (default :func:`report_dir`), from
    its saved results (``results_dir``/``figures_dir`` of the roots); raises SNAError when the run saved nothing
    to report (no verdict, no sweep table)."""
    results, figures = results_dir(profile, results_root), figures_dir(profile, figures_root)
    context = report_context(profile, results, figures)
    if not context["verdict"][1] and not context["tasks"][1]:
        raise SNAError(f"Nothing to report for profile {profile!r}: {results} holds no verdict.csv and no sweep "
                       f"table. Run `make run PROFILE={profile}` first.")
    out = Path(out_dir) if out_dir is not None else report_dir(profile)
    out.mkdir(parents=True, exist_ok=True)
    env = _environment()
    html, md = out / "report.html", out / "report.md"
    write_text_atomic(env.get_template("report.html.j2").render(**context), html)
    write_text_atomic(env.get_template("report.md.j2").render(**context), md)
    return Report(html, md, context["random_models"], context["packaged_models"])
