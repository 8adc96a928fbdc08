"""One style for every figure, and the helpers the plots share.

The zone colours wherever a zone appears, probabilities on log axes, improvements in % of the
baseline (symlog once they span orders of magnitude), KL in nats. :func:`save_figure` writes PNG
and PDF to ``figures/<profile>/`` with the model note under the figure (and, for random weights, the
flag on it). Imports ``core`` (the zone bounds) and ``standins`` (the random-weights flag).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..core import KIT_ROOT, ZONE_HIGH, ZONE_LOW, ZONE_NAMES
from ..errors import SNAError
from ..run.standins import RANDOM_FLAG


FIGURES_DIR = KIT_ROOT / "figures"


PLOT_STYLE = {
    "figure.dpi": 100, "savefig.dpi": 200, "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 8.5, "legend.frameon": False,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25,
}


ZONE_COLORS = {1: "#d95f02", 2: "#7570b3", 3: "#1b9e77"}


GOLDEN_COLOR = "#e6ab02"


BAND_COLORS = ("#9ecae1", "#4292c6", "#08519c")  # SST-2's 2-way confidence bands, uncertain -> confident:
# one blue ramp, never the zone colours, so a band is not read as a zone


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


def figures_dir(profile: str, root: str | os.PathLike | None = None) -> Path:
    """Where a profile's figures go: ``<root or $SNA_FIGURES_DIR or figures/>/<profile>``, as tables go to
    ``results/<profile>``, so one profile's run never replaces another's figures."""
    if not profile or any(c in str(profile) for c in "/\\"):
        raise SNAError(f"Profile {profile!r} must be a plain name such as 'smoke', 'quick' or 'paper'.")
    path = Path(root or os.environ.get("SNA_FIGURES_DIR") or FIGURES_DIR) / profile
    path.mkdir(parents=True, exist_ok=True)
    return path


def flag_random_weights(fig) -> None:
    """Mark a figure made by a random-weight stand-in where cropping cannot remove it: a banner at the top
    and a watermark across the middle."""
    fig.text(0.5, 0.5, RANDOM_FLAG, ha="center", va="center", rotation=25, fontsize=44, color="red",
             alpha=0.10, weight="bold", zorder=100)
    fig.text(0.5, 1.0, f"{RANDOM_FLAG}: not GPT-2", ha="center", va="bottom", fontsize=9, color="red",
             weight="bold")


def save_figure(fig, name: str, folder: str | os.PathLike | None = None, note: str | None = None,
                profile: str | None = None) -> list[Path]:
    """Write ``<name>.png`` and ``<name>.pdf`` to ``folder``, or else to :func:`figures_dir` of ``profile``;
    ``note`` (e.g. :func:`model_note`) is printed small under the figure, and a note that flags random
    weights also puts that flag on the figure (:func:`flag_random_weights`)."""
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise SNAError(f"Figure name {name!r} must be a plain file name without folders or extension.")
    if folder is None and profile is None:
        raise SNAError("save_figure needs a folder or a profile (figures go to figures/<profile>/).")
    folder = Path(folder) if folder is not None else figures_dir(profile)
    folder.mkdir(parents=True, exist_ok=True)
    if note:
        fig.text(0.995, -0.01, note, ha="right", va="top", fontsize=7, color="0.4")
        if RANDOM_FLAG in note:
            flag_random_weights(fig)
    paths = [folder / f"{name}.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, bbox_inches="tight")
    return paths


def place_labels(ax, texts: list) -> None:
    """Move text labels (e.g. task names beside points) apart so that none overlaps another nor covers the
    points they name (adjustText), with a thin line back to the point when a label moved far."""
    from adjustText import adjust_text

    if len(texts) > 1:
        ax.figure.canvas.draw()
        x, y = zip(*(t.get_position() for t in texts))
        adjust_text(texts, x=list(x), y=list(y), ax=ax, arrowprops=dict(arrowstyle="-", color="0.6", lw=0.5),
                    time_lim=5)


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
