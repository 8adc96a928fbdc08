"""The sweep engine against the plain per-configuration loop (the reference computation)."""
import math
import subprocess
import sys

import pytest
import torch

import sna_utils as su
from helpers import METRICS, assert_close, plain_rows, trim


@pytest.mark.parametrize("name", ["tiny", "tiny-pythia"])
def test_engine_reads_the_models_own_weights(name):
    """The engine's unembedding and MLP output weights are the very tensors of an independent HF copy."""
    model = su.load_model(name, device="cpu", seed=3)
    hf = su.build_random_hf_model(name, seed=3)
    weights = su.run.engine.engine_weights(model)
    torch.testing.assert_close(weights.w_u, hf.get_output_embeddings().weight, rtol=0, atol=0)
    assert weights is su.run.engine.engine_weights(model), "read once per model"


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


def test_gpt2_hand_written_path_equals_the_general_one(tasks, monkeypatch):
    """GPT-2's hand-written blocks (kept for speed) against the same model run through its own Hugging Face
    layers (the path every other family takes): every metric, both positions, float64."""
    t = tasks[0]
    fast = su.load_model("tiny", device="cpu", dtype=torch.float64)
    assert isinstance(su.run.engine.engine_weights(fast), su.run.engine.EngineWeights)
    monkeypatch.setattr(su.run.engine, "HAND_WRITTEN", {})
    general = su.load_model("tiny", device="cpu", dtype=torch.float64)
    assert isinstance(su.run.engine.engine_weights(general), su.run.decoder.Decoder)
    ids = su.target_token_ids(fast, t.evaluation)
    configs = [su.run.engine.Config((3, 7, 11), m) for m in (0.0, 5.0)] + [su.run.engine.Config(tuple(range(60)), 3.0)]
    for layer in (0, 1, 2):
        out = []
        for model in (fast, general):
            state = su.run.engine.layer_state(model, su.encode_prompts(model, [i.prompt for i in t.evaluation]), layer)
            ref = su.run.engine.reference(model, state, layer)
            out.append([su.run.engine.engine_metrics(model, state, layer, configs, pos, ids, ref) for pos in ("all", "last")])
        for a, b in zip(*out):
            torch.testing.assert_close(a.p, b.p, rtol=1e-6, atol=0)
            torch.testing.assert_close(a.kl, b.kl, rtol=1e-5, atol=1e-12)
            assert torch.equal(a.top1, b.top1)
        assert (out[0][0].p[1] / out[0][0].p[0] - 1).abs().max() > 1e-2, "the configurations move probabilities"


def test_engine_reuses_topk_ordering(tiny, tasks, neutral):
    """Top-k sets are nested prefixes of one ranking per (task, layer)."""
    t = tasks[0]
    scores = su.neuron_scores(tiny, [i.prompt for i in t.discovery], neutral.discovery, 2)
    ranking = su.rank_neurons(scores)
    for k in (1, 5, 50):
        assert su.top_neurons(scores, k) == ranking[:k].tolist()


def _rel(a, b):
    return float(((a - b).abs() / b.abs().clamp_min(1e-12)).max())


@pytest.fixture(scope="module")
def precision_grid(tiny64, tasks, neutral):
    """A grid run in float64 on ``tiny64``, and a function running it at another precision."""
    small, neu = trim(tasks, neutral, n_tasks=2)
    grid = dict(layers=[0, 2], ks=[1, 40], multipliers=[0.0, 10.0], neutral=neu, progress=False)
    return su.run_sweep(tiny64, small, precision="float64", **grid), lambda p: su.run_sweep(tiny64, small,
                                                                                           precision=p, **grid)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_precision_agreement_with_float64(precision_grid, precision):
    """Each precision against float64 on the same model: target probabilities, improvements, KL, top-1.
    float32 agrees to float32 noise; bfloat16 visibly departs (so the option takes effect) but stays near."""
    ref, run = precision_grid
    got = run(precision)
    col = {c: (torch.tensor(got[c].to_numpy()), torch.tensor(ref[c].to_numpy()))
           for c in ["p_base", "p_sna", "improvement_pct", "side_effect_kl"]}
    points = float((col["improvement_pct"][0] - col["improvement_pct"][1]).abs().max())  # percentage points
    flips = float((got["top1_sna"] != ref["top1_sna"]).mean())
    if precision == "float32":
        assert _rel(*col["p_sna"]) < 1e-5 and _rel(*col["p_base"]) < 1e-5
        assert _rel(*col["side_effect_kl"]) < 1e-4 and points < 1e-2 and flips == 0.0
    else:
        assert 1e-3 < _rel(*col["p_sna"]) < 0.1, "bfloat16 rounds (~3 significant digits) but stays close"
        assert _rel(*col["side_effect_kl"]) < 3.0 and float(col["side_effect_kl"][0].max()) > 0
        assert points < 20 and flips <= 0.05


def test_engine_metrics_do_not_depend_on_chunking(tiny, tasks, neutral):
    """Tiny chunks (one configuration at a time, a few logit rows) give the numbers of the default chunks."""
    t = tasks[0]
    state = su.run.engine.layer_state(tiny, su.encode_prompts(tiny, [i.prompt for i in t.evaluation]), 1)
    ids = su.target_token_ids(tiny, t.evaluation)
    configs = [su.run.engine.Config((3, 7, 11), m) for m in (0.0, 2.0, 5.0)] + [su.run.engine.Config((1,), 3.0)]
    ref = su.run.engine.reference(tiny, state, 1)
    for positions in ("all", "last"):
        a = su.run.engine.engine_metrics(tiny, state, 1, configs, positions, ids, ref)
        old = su.run.engine.logit_rows
        su.run.engine.logit_rows = lambda eng, dev: 3
        try:
            b = su.run.engine.engine_metrics(tiny, state, 1, configs, positions, ids, ref, max_tokens=5)
        finally:
            su.run.engine.logit_rows = old
        torch.testing.assert_close(a.p, b.p, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(a.kl, b.kl, rtol=1e-4, atol=1e-7)
        assert torch.equal(a.top1, b.top1)


def test_chunks_follow_the_device(tiny, monkeypatch):
    """CPU: the fixed cache-friendly size; CUDA: a share of the free memory (here a 24 GB GPU, GPT-2 Medium shape)."""
    eng = su.run.engine.engine_weights(tiny)
    cpu = torch.device("cpu")
    assert su.run.engine.chunk_tokens(eng, cpu, torch.float32) == su.run.engine.CPU_CHUNK_TOKENS
    assert su.run.engine.logit_rows(eng, cpu) * eng.w_u.shape[0] * 32 <= su.run.engine.CPU_LOGIT_BYTES
    free = int(0.4 * 22e9)
    monkeypatch.setattr(su.run.engine, "_free_bytes", lambda device: free)
    medium = su.run.engine.EngineWeights("gpt2", [su.run.engine.BlockWeights(*[torch.empty(0)] * 8, torch.empty(4096, 1024),
                                                                     torch.empty(0))],
                                     (None, None), torch.empty(50257, 1024), 16, 1e-5, None)
    gpu = torch.device("cuda")
    for dtype in (torch.float32, torch.bfloat16):
        tokens = su.run.engine.chunk_tokens(medium, gpu, dtype)
        activations = tokens * dtype.itemsize * (3 * 4096 + 10 * 1024)
        assert 16384 <= tokens and activations <= free / 2, (dtype, tokens)
    assert su.run.engine.logit_rows(medium, gpu) * 50257 * 32 <= free / 2


@pytest.mark.parametrize("precision,message", [("float16", "not one of"), ("tf32", "needs a CUDA device")])
def test_precision_rejected_before_work(tiny, tasks, neutral, tmp_path, precision, message):
    small, neu = trim(tasks, neutral, n_tasks=1)
    with pytest.raises(su.SNAError, match=message):
        su.run_sweep(tiny, small, [0], [1], [2.0], out=tmp_path / "x.parquet", neutral=neu, precision=precision)
    assert not (tmp_path / "x.parquet").exists()
    with pytest.raises(su.SNAError, match=message):
        su.cross_task_interference(tiny, small, 0, 1, 2.0, neutral=neu, precision=precision)


PEAK_SCRIPT = r"""
import resource, sys, threading, time
import torch
import sna_utils as su
torch.set_num_threads(2)
model = su.load_model("random:gpt2-small", device="cpu")
task, neutral = su.load_tasks(["addition"])[0], su.split_neutral(su.load_neutral())
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
base, peak, done = rss(), [0], threading.Event()
def poll():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)
threading.Thread(target=poll, daemon=True).start()
df = su.run_sweep(model, [task], [int(sys.argv[1])], su.PAPER_KS, su.PAPER_MULTIPLIERS, neutral=neutral,
                  progress=False)
done.set()
assert len(df) == 56 and df["control_side_effect_kl"].notna().all()
print("PEAK_GB", (max(peak[0], rss()) - base) / 1e9)
"""


@pytest.mark.slow
def test_paper_size_task_layer_stays_small_in_host_memory(tmp_path):
    """One paper-size (task, layer) of random:gpt2-small (56 (k, m) pairs with controls, every evaluation and
    held-out neutral prompt) raises peak host memory by at most 0.6 GB over the loaded model: no logits on the host.
    (Before the metrics moved to the device: +2.2 GB.) Layer 8: four blocks after it, the same chunk sizes."""
    script = tmp_path / "peak.py"
    script.write_text(PEAK_SCRIPT)
    run = subprocess.run([sys.executable, str(script), "8"], capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    peak = float(run.stdout.split("PEAK_GB")[-1])
    assert 0.0 < peak <= 0.6, f"peak host memory rose by {peak:.2f} GB"
