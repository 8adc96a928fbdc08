"""One style for every figure, and the helpers the plots share.

The zone colours wherever a zone appears, probabilities on log axes, improvements in % of the
baseline (symlog once they span orders of magnitude), KL in nats. :func:`save_figure` writes PNG
and PDF with the model note under the figure. Imports only ``core`` (the zone bounds).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .core import KIT_ROOT, ZONE_HIGH, ZONE_LOW, ZONE_NAMES
from .errors import SNAError


FIGURES_DIR = KIT_ROOT / "figures"


PLOT_STYLE = {
    "figure.dpi": 100, "savefig.dpi": 200, "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 8.5, "legend.frameon": False,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25,
}


ZONE_COLORS = {1: "#d95f02", 2: "#7570b3", 3: "#1b9e77"}


GOLDEN_COLOR = "#e6ab02"


CONTROL_COLOR = "0.35"


ACCENT_COLOR = "#2c7fb8"


MODEL_MARKERS = ("o", "s", "^", "D", "v")


MODEL_HATCHES = ("", "///", "...", "xxx")


IMPROVEMENT_CMAP = "RdBu_r"


def set_plot_style() -> None:
    """Apply the kit's one figure style (matplotlib rcParams)."""
    import matplotlib as mpl

    mpl.rcParams.update(PLOT_STYLE)


def subplots(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6.4, 4.2), **kw):
    """A styled figure and a 2-D array of axes; ``size`` is per panel (inches)."""
    import matplotlib.pyplot as plt

    set_plot_style()
    return plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False,
                        layout="constrained", **kw)


def save_figure(fig, name: str, figures_dir: str | os.PathLike | None = None, note: str | None = None) -> list[Path]:
    """Write ``<name>.png`` and ``<name>.pdf`` to ``figures_dir``, ``$SNA_FIGURES_DIR`` or ``figures/``;
    ``note`` (e.g. :func:`model_note`) is printed small under the figure."""
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise SNAError(f"Figure name {name!r} must be a plain file name without folders or extension.")
    folder = Path(figures_dir or os.environ.get("SNA_FIGURES_DIR") or FIGURES_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    if note:
        fig.text(0.995, -0.01, note, ha="right", va="top", fontsize=7, color="0.4")
    paths = [folder / f"{name}.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, bbox_inches="tight")
    return paths


def zone_handles(zones: Iterable[int] = (1, 2, 3)) -> list:
    from matplotlib.patches import Patch

    return [Patch(color=ZONE_COLORS[z], label=ZONE_NAMES[z]) for z in zones]


def p_floor(values) -> float:
    """Left end of a log probability axis: a power of ten below the data and below Zone 1's edge."""
    v = np.asarray(values, float)
    v = v[v > 0]
    return float(10 ** np.floor(np.log10(min(v.min() if len(v) else 1e-4, ZONE_LOW) / 2)))


def shade_zones(ax, lo: float) -> None:
    """Shade the three zones on a log-x probability axis from ``lo`` to 1."""
    ax.set_xscale("log")
    for z, (a, b) in {1: (lo, ZONE_LOW), 2: (ZONE_LOW, ZONE_HIGH), 3: (ZONE_HIGH, 1.0)}.items():
        ax.axvspan(a, b, color=ZONE_COLORS[z], alpha=0.13, lw=0, zorder=0)
    ax.set_xlim(lo, 1.0)


def improvement_axis(ax, values, axis: str = "y") -> None:
    """Linear when improvements stay within a few hundred %, symlog beyond."""
    v = np.abs(np.asarray(values, float))
    if len(v) and np.nanmax(v) > 500:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("symlog", linthresh=10)


def symlog_norm(values, linthresh: float = 10.0):
    from matplotlib.colors import SymLogNorm

    v = np.asarray(values, float)
    vmax = max(float(np.nanmax(np.abs(v))) if np.isfinite(v).any() else 1.0, 2 * linthresh)
    return SymLogNorm(linthresh=linthresh, vmin=-vmax, vmax=vmax, base=10)


def color_ticklabels(labels, zones) -> None:
    for label, z in zip(labels, zones):
        label.set_color(ZONE_COLORS[int(z)])


def one_model(df: pd.DataFrame, model: str | None) -> tuple[str, pd.DataFrame]:
    models = list(dict.fromkeys(df["model"]))
    model = model or models[0]
    if model not in models:
        raise SNAError(f"Model {model!r} is not in the table (it has {models}).")
    return model, df[df["model"] == model]
