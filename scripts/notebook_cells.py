"""The two cells every notebook starts with: an "Open in Colab" badge and a guarded install cell.

    python scripts/run_notebooks.py --kit-cells    # insert or refresh them in every notebooks/*.ipynb

The install cell does nothing where ``sna_utils`` imports (the kit's own environment, `make lab`, papermill).
Elsewhere (Colab, another hosted Jupyter) it clones the kit, installs the pinned requirements without torch so
the hosted CUDA torch stays (``scripts/install.py hosted``), and moves into the clone's notebooks/ folder.
The cells are found by their tags, so running this again after any change to the notebooks is safe.
"""
from __future__ import annotations

import re
from pathlib import Path

REPO_URL = "https://github.com/sna-kit/sna-reproduction-kit"  # the kit's public repository (one place)
KIT_VERSION = re.search(r'^KIT_VERSION = "([^"]+)"', (Path(__file__).resolve().parents[1] / "sna_utils" / "core.py")
                        .read_text(), re.M)[1]
BRANCH = f"v{KIT_VERSION}"  # the release tag of this kit version: hosted installs never follow a moving branch
BADGE_TAG, INSTALL_TAG = "kit-badge", "kit-install"

BADGE = """[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url})

**In Colab or another hosted Jupyter?** The next cell installs the kit when `sna_utils` is missing (clone,
pinned requirements, the hosted CUDA torch kept) and does nothing in the kit's own environment. For the
`paper` profile choose a GPU runtime. If pip asks for a restart, restart the session and run the cells again."""

INSTALL = """# Hosted Jupyter (Colab, ...): install the kit when it is missing. Does nothing where sna_utils imports.
KIT_REPO = "{repo_url}"
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("sna_utils") is None:
    kit = os.path.abspath("sna-kit")
    if not os.path.isdir(os.path.join(kit, "sna_utils")):
        subprocess.run(["git", "clone", "--depth", "1", "--branch", "{branch}", KIT_REPO, kit], check=True)
    subprocess.run([sys.executable, os.path.join(kit, "scripts", "install.py"), "hosted"], check=True)
    sys.path.insert(0, kit)
    os.chdir(os.path.join(kit, "notebooks"))"""


def colab_url(notebook: str, repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
    """Colab's address of ``notebooks/<notebook>.ipynb`` in the repository ``repo_url`` (a GitHub address)."""
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(\.git)?/?", repo_url)
    if not match:
        raise ValueError(f"REPO_URL {repo_url!r} is not a GitHub repository address (https://github.com/OWNER/NAME)")
    return f"https://colab.research.google.com/github/{match[1]}/{match[2]}/blob/{branch}/notebooks/{notebook}.ipynb"


def kit_cells(notebook: str) -> list:
    """The badge (markdown) and install (code) cells for the notebook named ``notebook`` (its file stem)."""
    import nbformat

    cells = [nbformat.v4.new_markdown_cell(BADGE.format(colab_url=colab_url(notebook)),
                                           metadata={"tags": [BADGE_TAG]}),
             nbformat.v4.new_code_cell(INSTALL.format(repo_url=REPO_URL, branch=BRANCH),
                                       metadata={"tags": [INSTALL_TAG]})]
    for cell in cells:  # fixed ids (the tags), so inserting again changes nothing
        cell["id"] = cell.metadata["tags"][0]
    return cells


def _without_kit_cells(nb) -> list:
    return [c for c in nb.cells if not {BADGE_TAG, INSTALL_TAG} & set(c.metadata.get("tags", []))]


def kit_cell_problems(path: Path) -> list[str]:
    """Why ``path`` does not start with the current badge and install cells (empty: it does)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    want = kit_cells(path.stem)
    have = nb.cells[:2]
    if [(c.cell_type, c.source, c.metadata.get("tags")) for c in have] != \
            [(c.cell_type, c.source, c.metadata.get("tags")) for c in want]:
        return ["does not start with the current Colab badge and install cells"]
    if len(_without_kit_cells(nb)) != len(nb.cells) - 2:
        return ["has a Colab badge or install cell after its first two cells"]
    return []


def add_kit_cells(path: Path) -> bool:
    """Insert or refresh the two kit cells at the top of ``path`` (other cells untouched); True if it changed."""
    import nbformat

    text = path.read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=4)
    new = kit_cells(path.stem)
    nb.cells = new + _without_kit_cells(nb)
    out = nbformat.writes(nb) + "\n"
    if out != text:
        path.write_text(out, encoding="utf-8")
        return True
    return False
