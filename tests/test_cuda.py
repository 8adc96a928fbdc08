"""The kit on a CUDA device: every path gives the CPU's numbers (runs only where a GPU exists)."""
import math

import pytest
import torch

import sna_utils as su
from helpers import METRICS, trim

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch on this "
                                 "machine; these tests run where a GPU exists")]


@pytest.fixture(scope="module", params=["tiny", "tiny-pythia"])
def pair(request):
    """The same stand-in on the CPU and on CUDA."""
    return su.load_model(request.param, device="cpu"), su.load_model(request.param, device="cuda")


def test_loading_discovery_and_target_probs_on_cuda(pair, tasks, neutral):
    cpu, gpu = pair
    assert su.model_device(gpu).type == "cuda"
    t = tasks[0]
    prompts, targets = [i.prompt for i in t.evaluation], [i.target for i in t.evaluation]
    s_cpu = su.neuron_scores(cpu, [i.prompt for i in t.discovery], neutral.discovery[:20], 1)
    s_gpu = su.neuron_scores(gpu, [i.prompt for i in t.discovery], neutral.discovery[:20], 1)
    torch.testing.assert_close(s_gpu, s_cpu, rtol=1e-3, atol=1e-4)
    iv = su.Intervention(1, su.top_neurons(s_cpu, 5), 5.0)
    for intervention in (None, iv):
        torch.testing.assert_close(su.target_probs(gpu, prompts, targets, intervention),
                                   su.target_probs(cpu, prompts, targets, intervention), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("precision,rtol", [("float32", 1e-3), ("tf32", 2e-2), ("bfloat16", 1e-1)])
@pytest.mark.parametrize("positions", ["all", "last"])
def test_sweep_on_cuda_matches_cpu(pair, tasks, neutral, precision, rtol, positions):
    cpu, gpu = pair
    small, neu = trim(tasks, neutral, n_tasks=2)
    grid = dict(layers=[0, 1, 2], ks=[1, 40], multipliers=[0.0, 10.0], positions=positions, neutral=neu,
                progress=False)
    ref = su.run_sweep(cpu, small, **grid)
    got = su.run_sweep(gpu, small, precision=precision, **grid)
    for col in ["p_base", "p_sna", "control_p_sna"]:
        for x, y in zip(got[col], ref[col]):
            assert math.isclose(x, y, rel_tol=rtol, abs_tol=1e-6), (precision, col, x, y)
    for col in ["side_effect_kl", "control_side_effect_kl"]:
        for x, y in zip(got[col], ref[col]):
            assert math.isclose(x, y, rel_tol=max(rtol, 1e-2) * 10, abs_tol=1e-4), (precision, col, x, y)
    assert set(METRICS) <= set(got.columns)


def test_interference_and_sst2_on_cuda(pair, small):
    cpu, gpu = pair
    t, neu = small
    a = su.cross_task_interference(cpu, t, 1, 5, 5.0, neutral=neu)
    b = su.cross_task_interference(gpu, t, 1, 5, 5.0, neutral=neu)
    for x, y in zip(b["p_sna"], a["p_sna"]):
        assert math.isclose(x, y, rel_tol=1e-3, abs_tol=1e-6)
    data = su.load_sst2("validation").head(12)
    iv = su.Intervention(1, list(range(5)), 5.0)
    sa, sb = su.score_sst2(cpu, data, iv), su.score_sst2(gpu, data, iv)
    assert (sa["pred"] == sb["pred"]).mean() >= 0.9
    for x, y in zip(sb["p_correct"], sa["p_correct"]):
        assert math.isclose(x, y, rel_tol=1e-3, abs_tol=1e-6)


def test_chunks_follow_free_gpu_memory(pair):
    _, gpu = pair
    eng = su.run.engine.engine_weights(gpu)
    free = torch.cuda.mem_get_info()[0]
    tokens = su.run.engine.chunk_tokens(eng, su.model_device(gpu), torch.float32)
    assert tokens * 4 * (3 * su.d_mlp(gpu) + 10 * gpu.cfg.d_model) <= free
