"""The sweep engine against the plain per-configuration loop (the reference computation)."""
import math

import pytest
import torch

import sna_utils as su
from helpers import METRICS, assert_close, plain_rows, trim


@pytest.mark.parametrize("name", ["tiny", "tiny-pythia"])
def test_engine_reads_the_models_own_weights(name):
    """The engine's unembedding and MLP output weights are the very tensors of an independent HF copy."""
    model = su.load_model(name, device="cpu", seed=3)
    hf = su.build_random_hf_model(name, seed=3)
    weights = su.engine.engine_weights(model)
    torch.testing.assert_close(weights.w_u, hf.get_output_embeddings().weight, rtol=0, atol=0)
    assert weights is su.engine.engine_weights(model), "read once per model"


@pytest.fixture(scope="module", params=["tiny", "tiny-pythia"])
def tiny64(request):
    """Float64 copies: fp32 rounding (~1e-6) cannot hide or fake a difference between the two paths."""
    return su.load_model(request.param, device="cpu", dtype=torch.float64)


def _engine_vs_plain(model, tasks, neutral, positions, out):
    small, neu = trim(tasks, neutral, n_tasks=2)
    layers, ks, ms = [0, 1, 2], [1, 40], [0.0, 10.0]
    engine = su.run_sweep(model, small, layers, ks, ms, positions, out=out, neutral=neu, progress=False)
    plain = plain_rows(model, small, neu, layers, ks, ms, positions)
    assert len(engine) == len(plain) == 2 * 3 * 2 * 2
    assert engine[["task", "layer", "k", "multiplier"]].equals(plain[["task", "layer", "k", "multiplier"]])
    assert (engine["improvement_pct"].abs() > 1).any(), "the grid must actually move probabilities"
    assert (engine["side_effect_kl"] > 1e-4).any()
    return engine, plain


@pytest.mark.parametrize("positions", ["all", "last"])
def test_engine_equals_plain_loop(tiny64, tasks, neutral, positions, tmp_path):
    """Every metric of every configuration within a relative error of 1e-4 (float64 on both paths)."""
    engine, plain = _engine_vs_plain(tiny64, tasks, neutral, positions, tmp_path / "s.parquet")
    for col in METRICS:
        assert_close(engine, plain, col)


def test_engine_equals_plain_loop_float32(any_tiny, tasks, neutral, tmp_path):
    """The same in float32, the kit's working precision: probabilities to 1e-4 relative; differences
    of nearly equal probabilities (improvement %, KL) to float32 noise."""
    engine, plain = _engine_vs_plain(any_tiny, tasks, neutral, "all", tmp_path / "s.parquet")
    for col in METRICS:
        if "kl" in col:
            for x, y in zip(engine[col], plain[col]):
                assert math.isclose(x, y, rel_tol=1e-2, abs_tol=1e-6), (col, x, y)
        elif "improvement" in col:
            for x, y in zip(engine[col], plain[col]):
                assert math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-3), (col, x, y)
        else:
            assert_close(engine, plain, col)


def test_engine_reuses_topk_ordering(tiny, tasks, neutral):
    """Top-k sets are nested prefixes of one ranking per (task, layer)."""
    t = tasks[0]
    scores = su.neuron_scores(tiny, [i.prompt for i in t.discovery], neutral.discovery, 2)
    ranking = su.rank_neurons(scores)
    for k in (1, 5, 50):
        assert su.top_neurons(scores, k) == ranking[:k].tolist()
