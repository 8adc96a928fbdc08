"""Where researchers work: the torch build `make setup` picks, the Colab badge and guarded install cell of every
notebook, the hosted install, and `make lab` (a JupyterLab with the kit's kernel registered)."""
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

import sna_utils as su

KIT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = KIT_ROOT / "notebooks"


def _script(name):
    spec = importlib.util.spec_from_file_location(name, KIT_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cells = _script("notebook_cells")
install = _script("install")


def _fake_command(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


# --- the Colab cells ---------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(NOTEBOOK_DIR.glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_notebook_starts_with_the_current_kit_cells(path):
    assert cells.kit_cell_problems(path) == [], "run `python scripts/run_notebooks.py --kit-cells`"
    nb = nbformat.read(path, as_version=4)
    assert f"/blob/{cells.BRANCH}/notebooks/{path.stem}.ipynb)" in nb.cells[0].source  # the badge opens this one
    assert cells.BRANCH == f"v{su.KIT_VERSION}" and f'"--branch", "v{su.KIT_VERSION}"' in nb.cells[1].source
    assert nb.cells[1].cell_type == "code" and f'KIT_REPO = "{cells.REPO_URL}"' in nb.cells[1].source
    assert nb.cells[2].cell_type == "markdown" and nb.cells[2].source.startswith(f"# {path.stem[:2]} ")


def test_kit_cells_are_inserted_once_and_touch_nothing_else(tmp_path):
    source = NOTEBOOK_DIR / "06_figures.ipynb"
    nb = nbformat.read(source, as_version=4)
    rest = nb.cells[2:]
    nb.cells = [rest[0], nb.cells[1], *rest[1:]]  # an install cell in the wrong place, no badge
    path = tmp_path / "06_figures.ipynb"
    nbformat.write(nb, path)
    assert cells.kit_cell_problems(path)
    assert cells.add_kit_cells(path) is True
    assert cells.kit_cell_problems(path) == []
    assert nbformat.read(path, as_version=4).cells[2:] == rest
    assert cells.add_kit_cells(path) is False  # idempotent
    assert path.read_text() == source.read_text()


def test_colab_url_from_the_repository_address():
    assert cells.colab_url("01_x", "https://github.com/me/kit.git", "dev") == \
        "https://colab.research.google.com/github/me/kit/blob/dev/notebooks/01_x.ipynb"
    with pytest.raises(ValueError, match="not a GitHub repository"):
        cells.colab_url("01_x", "https://example.org/kit")


def _run_install_cell(tmp_path, python_flags):
    """Execute the install cell's code in a fresh interpreter in ``tmp_path`` with a fake ``git`` on PATH whose
    "clone" makes a kit with a fake scripts/install.py; returns (final cwd, calls recorded)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    (tmp_path / "install.py").write_text(f"import sys\nwith open({str(log)!r}, 'a') as f:\n"
                                         f"    f.write('install ' + ' '.join(sys.argv[1:]) + '\\n')\n")
    _fake_command(bin_dir, "git", f'echo "git $*" >> {log}; for a; do dest=$a; done; '
                                  f'mkdir -p "$dest/sna_utils" "$dest/notebooks" "$dest/scripts"; '
                                  f'cp {tmp_path / "install.py"} "$dest/scripts/install.py"')
    work = tmp_path / "work"
    work.mkdir()
    code = cells.kit_cells("01_x")[1].source + "\nprint('CWD=' + os.getcwd())"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, *python_flags, "-c", code], cwd=work, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    cwd = next(line[4:] for line in proc.stdout.splitlines() if line.startswith("CWD="))
    return Path(cwd), (log.read_text().splitlines() if log.exists() else []), work


def test_install_cell_does_nothing_in_the_kits_environment(tmp_path):
    cwd, calls, work = _run_install_cell(tmp_path, [])
    assert calls == [] and cwd == work and list(work.iterdir()) == []


def test_install_cell_clones_installs_and_moves_in_where_the_kit_is_missing(tmp_path):
    """The same cell in an interpreter without site-packages (`python -S`: sna_utils not importable)."""
    cwd, calls, work = _run_install_cell(tmp_path, ["-S"])
    assert calls == [f"git clone --depth 1 --branch {cells.BRANCH} {cells.REPO_URL} {work / 'sna-kit'}",
                     "install hosted"]
    assert cwd == work / "sna-kit" / "notebooks"


def test_hosted_install_keeps_the_hosted_torch_and_jupyter(tmp_path):
    args = install.hosted_files(KIT_ROOT / "requirements.txt", "2.9.0+cu126", tmp_path)
    reqs = Path(args[args.index("-r") + 1]).read_text().splitlines()
    names = {line.split("==")[0] for line in reqs if "==" in line}
    assert {"transformer-lens", "transformers", "numpy", "pandas", "matplotlib"} <= names
    assert not names & {"torch", "ipykernel", "jupyterlab", "pytest"}
    assert Path(args[args.index("-c") + 1]).read_text() == "torch==2.9.0+cu126\n"
    args = install.hosted_files(KIT_ROOT / "requirements.txt", None, tmp_path)  # no torch there: the pinned one
    assert "-c" not in args and f"torch=={install.pinned_torch()}" in Path(args[1]).read_text().splitlines()


# --- the torch build `make setup` installs ------------------------------------------------

@pytest.mark.parametrize("nvidia_smi,build", [
    ('echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"', "cuda"),
    ('echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver" >&2; exit 9', "cpu"),
    (None, "cpu"),
])
def test_setup_picks_the_torch_build_by_nvidia_smi(tmp_path, nvidia_smi, build):
    if nvidia_smi is not None:
        _fake_command(tmp_path, "nvidia-smi", nvidia_smi)
    env = {k: v for k, v in os.environ.items() if k not in ("SNA_TORCH_BUILD", "TORCH_CUDA", "TORCH_INDEX_URL")}
    env["PATH"] = str(tmp_path)  # only the fake nvidia-smi (or none)
    proc = subprocess.run([sys.executable, str(KIT_ROOT / "scripts" / "install.py"), "torch", "--dry-run"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    version = install.pinned_torch()
    assert version == "2.13.0"  # requirements.txt's pin, the one `make setup` installs
    if build == "cuda":
        assert "installing the CUDA build" in proc.stdout
        assert f"pip install -q torch=={version}+cu128 --index-url https://download.pytorch.org/whl/cu128" in proc.stdout
    else:
        assert "installing the CPU build" in proc.stdout
        assert proc.stdout.rstrip().endswith(f"pip install -q torch=={version}")


def test_torch_build_overrides(monkeypatch):
    monkeypatch.setenv("SNA_TORCH_BUILD", "cuda")
    monkeypatch.setenv("TORCH_CUDA", "cu126")
    assert install.has_nvidia_gpu() is True
    assert install.torch_command(True, "2.13.0", "py")[-3:] == [
        "torch==2.13.0+cu126", "--index-url", "https://download.pytorch.org/whl/cu126"]
    monkeypatch.setenv("SNA_TORCH_BUILD", "cpu")
    assert install.has_nvidia_gpu() is False
    monkeypatch.setenv("TORCH_INDEX_URL", "https://download.pytorch.org/whl/cpu")
    assert install.torch_command(False, "2.13.0", "py")[-3:] == [
        "torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cpu"]
    assert install.report().startswith("torch 2.13.0")


# --- make lab ------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_make_lab_registers_the_kernel_and_serves_the_notebooks(tmp_path):
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    port, token = _free_port(), "sna-test"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    env["HOME"] = str(tmp_path)  # the kernel registration (--user) lands here, not in the real home
    args = f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={token}"
    args += " --allow-root" if os.geteuid() == 0 else ""  # Jupyter refuses root otherwise (CI containers)
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_ARGS={args}"], cwd=KIT_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def get(path):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}?token={token}", timeout=5) as r:
                return json.load(r)

        for _ in range(120):
            try:
                specs = get("/api/kernelspecs")
                break
            except OSError:
                assert proc.poll() is None, "make lab exited"
                time.sleep(1)
        else:
            pytest.fail("JupyterLab did not answer within 120 s")
        spec = specs["kernelspecs"]["sna-kit"]["spec"]
        assert spec["argv"][0].startswith(str(KIT_ROOT / ".venv"))
        assert (tmp_path / ".local" / "share" / "jupyter" / "kernels" / "sna-kit" / "kernel.json").is_file()
        names = {c["name"] for c in get("/api/contents/")["content"]}
        assert {p.name for p in NOTEBOOK_DIR.glob("0*.ipynb")} <= names
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)  # make and the JupyterLab it started (their own session)
            proc.wait(timeout=30)
