"""Shared fixtures: offline stand-in models, built once per test session."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

import sna_utils as su

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_report_header(config):
    return (f"SNA_GPT2_TOKENIZER={os.environ.get('SNA_GPT2_TOKENIZER')} "
            f"SNA_SST2_DIR={os.environ.get('SNA_SST2_DIR')}")


@pytest.fixture(scope="session")
def tiny():
    """3-layer GPT-2-architecture model, random weights at initializer_range=0.2."""
    return su.load_model("tiny", device="cpu")


@pytest.fixture(scope="session")
def tiny_pythia():
    """3-layer GPT-NeoX (Pythia) architecture, parallel attention/MLP, random weights."""
    return su.load_model("tiny-pythia", device="cpu")


@pytest.fixture(scope="session", params=["tiny", "tiny-pythia"])
def any_tiny(request, tiny, tiny_pythia):
    return {"tiny": tiny, "tiny-pythia": tiny_pythia}[request.param]


@pytest.fixture(scope="session")
def real_model():
    """``real_model(name)``: packaged pretrained model ``name`` (``su.run.packaged``) in the bridge on the CPU, loaded
    once per session (from the kit's cache after the very first load). Skips, naming the pip command, when its
    packages are not installed; fails instead where ``SNA_REQUIRE_PACKAGED_MODELS=1`` (CI installs them)."""
    from sna_utils.run.packaged import part_paths

    loaded = {}

    def get(name: str):
        if name not in loaded:
            try:
                part_paths(name)
            except su.SNAError as e:
                if os.environ.get("SNA_REQUIRE_PACKAGED_MODELS") == "1":
                    pytest.fail(f"SNA_REQUIRE_PACKAGED_MODELS=1 but: {e}")
                pytest.skip(f"packaged model {name} not installed: {e}")
            loaded[name] = su.load_model(name, device="cpu")
        return loaded[name]

    return get


@pytest.fixture(scope="session")
def tasks():
    return su.load_tasks()


@pytest.fixture(scope="session")
def neutral():
    return su.split_neutral(su.load_neutral())


@pytest.fixture(scope="session")
def small(tasks, neutral):
    """Three tasks with trimmed prompt sets."""
    from helpers import trim

    return trim(tasks, neutral)


@pytest.fixture(scope="session")
def sweep(tiny, small):
    """A small real sweep of the tiny model: three tasks, every layer, two k, two multipliers."""
    t, neu = small
    return su.run_sweep(tiny, t, [0, 1, 2], [1, 5], [2.0, 5.0], neutral=neu, progress=False)
